/* SPDX-License-Identifier: MIT */
/* Sentences for a failed handshake (pkm_handshake_failure, engine.h): which side closed, at which
 * step, waiting for what, and the usual causes; used by conn.c, the server's users and the tool. */
#include <stdio.h>
#include <string.h>
#include "pkmcom/engine.h"

/* At each step (engine.c's step names, numbered as in WIRE-PROFILE section 3): what this side
 * waits for, what the peer had not done when it closed, and the likely causes. */
struct step_info {
    const char *step;
    int num;
    const char *awaited; /* for a timeout: "still waiting ... for <awaited>" */
    const char *closed;  /* for a close: "the peer closed the connection ..., <closed>" */
};

static const struct step_info server_steps[] = {
    {"ClientKey", 2, "the client's ClientKey",
     "before sending its ClientKey: it may have refused this server's key (a pin or known_hosts "
     "entry for another key), or given up"},
    {"KeyShare", 3, "the client's KeyShare", "before sending its KeyShare: it may have given up"},
    {"confirmation (0xFF)", 5, "the client's confirmation (0xFF)",
     "before sending its confirmation (0xFF): it may have timed out"},
};

static const struct step_info client_steps[] = {
    {"ServerKey", 1, "the server's ServerKey",
     "before sending its ServerKey: it may be refusing connections (a connection cap, a "
     "per-source limit or a ban)"},
    {"ClientKey", 2, "this client's own key to be made", "while this client was making its key"},
    {"KeyShare", 3, "the server's KeyShare",
     "before sending its KeyShare: it may have refused this client's key, hit a limit or timed "
     "out"},
    {"confirmation (0xFF)", 5, "the server's answer to the client's confirmation (0xFF)",
     "instead of answering the client's confirmation (0xFF): the secret differs (a server "
     "refuses a wrong confirmation by closing), or the server timed out"},
};

size_t pkm_handshake_failure(int role, int err, const char *fail_step, char *buf, size_t n)
{
    if (buf && n) buf[0] = '\0';
    if (!fail_step || !buf || n == 0) return 0;
    int server = role == PKM_ROLE_SERVER;
    if (!server && role != PKM_ROLE_CLIENT) return 0;
    const struct step_info *t = server ? server_steps : client_steps;
    size_t count = server ? sizeof server_steps / sizeof server_steps[0]
                          : sizeof client_steps / sizeof client_steps[0];
    const struct step_info *s = NULL;
    for (size_t i = 0; i < count && !s; i++)
        if (strcmp(t[i].step, fail_step) == 0) s = &t[i];
    if (!s) return 0;
    const char *peer = server ? "client" : "server";
    int w;
    switch (err) {
    case PKM_EEOF:
    case PKM_ECONNRESET:
        w = snprintf(buf, n, "the %s %s the connection during handshake step %d (%s), %s", peer,
                     err == PKM_EEOF ? "closed" : "reset", s->num, s->step, s->closed);
        break;
    case PKM_ETIMEOUT:
        w = snprintf(buf, n, "still waiting at handshake step %d (%s) for %s", s->num, s->step,
                     s->awaited);
        break;
    case PKM_EHANDSHAKE:
        if (!server || s->num != 5) return 0;
        w = snprintf(buf, n,
                     "the client's confirmation (0xFF) did not check at handshake step 5: its "
                     "secret differs from this server's (or it speaks wire profile 1)");
        break;
    default: return 0;
    }
    if (w < 0) return 0;
    return (size_t)w < n ? (size_t)w : n - 1;
}
