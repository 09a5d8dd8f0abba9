/* SPDX-License-Identifier: MIT
 * The lobby chat client (protocol: lobby.h): joins as NAME, sends each line of stdin, prints
 * "from: text" for what the others say, waiting on stdin and the connection together.
 * Usage: lobby_client HOST PORT NAME [SHA256:FINGERPRINT]; ends a second after end of input. */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lobby.h"

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5)
        return fprintf(stderr, "usage: %s HOST PORT NAME [PIN]\n", argv[0]), 2;
    char err[PKM_ERRMSG_SIZE] = "", buf[1024];
    pkm_registry_t *reg = NULL;
    pkm_conn_t *c = NULL;
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    cfg.engine.pin_fingerprint = argc == 5 ? argv[4] : NULL;
    cfg.engine.verify = pkm_registry_verify_hook; /* a packet off its schema closes */
    cfg.errbuf = err; /* e.g. "pkm_connect: invalid argument: port: expected 1..65535, got 0" */
    cfg.errbuf_size = sizeof err;
    int rc = pkm_registry_new_from(lobby_packets, 3, &reg);
    cfg.engine.verify_ctx = reg;
    if (rc == 0) rc = pkm_connect(argv[1], atoi(argv[2]), &cfg, &c);
    pkm_value_t name = {.str = {argv[3], strlen(argv[3])}};
    if (rc == 0) rc = pkm_conn_send_msg(c, reg, LOBBY_JOIN, &name, 1, 5000);
    size_t have = 0;
    for (int eof = 0, w; rc >= 0;) {
        w = pkm_conn_wait(c, eof ? -1 : STDIN_FILENO, POLLIN, NULL, eof ? 1000 : -1);
        if (w < 0) break; /* PKM_EAGAIN: a second passed after the end of input */
        pkm_msg_t *m;
        while ((w & PKM_CONN_READY) && (rc = pkm_conn_recv_msg(c, reg, &m, 0)) == 1) {
            printf("%s: %s\n", pkm_msg_field(m, 0)->str.ptr, pkm_msg_field(m, 1)->str.ptr);
            fflush(stdout);
            pkm_msg_free(m);
        }
        if (rc == PKM_EAGAIN) rc = 0;
        if (rc < 0 || !(w & PKM_CONN_EXTRA)) continue;
        ssize_t n = read(STDIN_FILENO, buf + have, sizeof buf - 1 - have);
        eof = n <= 0;
        have += n > 0 ? (size_t)n : 0;
        /* Every whole line; at the end of input also the last one, even without its newline. */
        for (char *nl; rc >= 0 && have && ((nl = memchr(buf, '\n', have)) || eof);) {
            size_t line = nl ? (size_t)(nl - buf) : have, used = nl ? line + 1 : line;
            pkm_value_t text = {.str = {buf, line}};
            rc = pkm_conn_send_msg(c, reg, LOBBY_SAY, &text, 1, 5000); /* encode, Hash, send */
            have -= used;
            memmove(buf, buf + used, have);
        }
        if (have == sizeof buf - 1) have = 0; /* a line too long for the buffer is dropped */
    }
    if (rc < 0 && rc != PKM_EEOF) /* the sentence: what failed, which side closed, at which step */
        fprintf(stderr, "lobby: %s\n", c ? pkm_conn_errmsg(c) : err[0] ? err : pkm_strerror(rc));
    pkm_conn_close(c);
    pkm_registry_free(reg);
    return rc < 0 && rc != PKM_EEOF ? 1 : 0;
}
