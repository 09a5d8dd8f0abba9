/* SPDX-License-Identifier: MIT
 * A line chat client: reads stdin and the connection together (pkm_conn_wait with stdin as the
 * extra descriptor), sends each line as a typed packet 0x10 {text: String} in one call
 * (pkm_conn_send_msg) and prints every packet 0x10 that arrives (pkm_conn_recv_msg).
 * Usage: chat_client HOST PORT [SHA256:FINGERPRINT]   (against `pkmcom serve`, which echoes) */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pkmcom/pkmcom.h>

static const pkm_field_t say_fields[] = {{.name = "text", .type = PKM_T_STRING}};
static const pkm_schema_t say = {"Say", say_fields, 1};

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s HOST PORT [SHA256:FINGERPRINT]\n", argv[0]);
        return 2;
    }
    pkm_registry_t *reg = pkm_registry_new();
    if (!reg || pkm_registry_register(reg, 0x10, &say) < 0) return 1;

    char err[PKM_ERRMSG_SIZE] = "";
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    if (argc == 4) cfg.engine.pin_fingerprint = argv[3];
    cfg.engine.verify = pkm_registry_verify_hook; /* every packet received is checked */
    cfg.engine.verify_ctx = reg;
    cfg.errbuf = err;
    cfg.errbuf_size = sizeof err;
    pkm_conn_t *c;
    int rc = pkm_connect(argv[1], atoi(argv[2]), &cfg, &c);
    if (rc < 0) {
        fprintf(stderr, "chat: %s\n", err[0] ? err : pkm_strerror(rc));
        pkm_registry_free(reg);
        return 1;
    }
    fprintf(stderr, "connected to %s (%s); type lines, end with Ctrl-D\n", pkm_conn_peer_addr(c),
            pkm_conn_peer_fingerprint(c));

    char line[1024];
    size_t have = 0;
    rc = 0;
    for (;;) {
        int rev = 0;
        int w = pkm_conn_wait(c, STDIN_FILENO, POLLIN, &rev, -1);
        if (w < 0) break;
        if (w & PKM_CONN_READY) { /* one or more packets, or the connection's end */
            pkm_msg_t *m;
            while ((rc = pkm_conn_recv_msg(c, reg, &m, 0)) == 1) {
                const pkm_value_t *text = pkm_msg_get(m, "text");
                printf("> %.*s\n", (int)text->str.len, text->str.ptr);
                pkm_msg_free(m);
            }
            fflush(stdout);
            if (rc != PKM_EAGAIN) break; /* closed: pkm_conn_errmsg says why */
        }
        if (w & PKM_CONN_EXTRA) { /* stdin: read what is there, send each complete line */
            ssize_t n = read(STDIN_FILENO, line + have, sizeof line - 1 - have);
            int eof = n <= 0;
            if (n > 0) have += (size_t)n;
            char *nl;
            rc = 0;
            while (rc >= 0 && have > 0 &&
                   ((nl = memchr(line, '\n', have)) || eof || have == sizeof line - 1)) {
                size_t len = nl ? (size_t)(nl - line) : have;
                pkm_value_t v = {.str = {line, len}};
                rc = pkm_conn_send_msg(c, reg, 0x10, &v, 1, 5000); /* encode + Hash + send */
                size_t used = nl ? len + 1 : len;
                memmove(line, line + used, have - used);
                have -= used;
            }
            if (rc < 0 || eof) break; /* an error, or the end of input */
        }
    }
    /* At the end of input: print what is still on the way back, for up to a second. */
    pkm_msg_t *m;
    while (rc >= 0 && (rc = pkm_conn_recv_msg(c, reg, &m, 1000)) == 1) {
        const pkm_value_t *text = pkm_msg_get(m, "text");
        printf("> %.*s\n", (int)text->str.len, text->str.ptr);
        pkm_msg_free(m);
    }
    int bad = rc < 0 && rc != PKM_EAGAIN && rc != PKM_EEOF;
    if (bad)
        fprintf(stderr, "chat: %s\n",
                pkm_conn_errmsg(c)[0] ? pkm_conn_errmsg(c) : pkm_strerror(rc));
    pkm_conn_close(c);
    pkm_registry_free(reg);
    return bad ? 1 : 0;
}
