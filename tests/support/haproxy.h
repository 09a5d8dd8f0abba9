/* SPDX-License-Identifier: MIT */
/* Test helper: HAProxy (Debian's package) started on loopback ports with a config a test writes,
 * waited for and stopped; shared by test_proxy_haproxy and test_server_haproxy. */
#ifndef PKM_TEST_HAPROXY_H
#define PKM_TEST_HAPROXY_H

#include <stdio.h>
#include <sys/types.h>

typedef struct t_haproxy {
    pid_t pid;    /* 0 when not running */
    char dir[64]; /* a temporary directory for its config and log ("" before t_haproxy_init) */
} t_haproxy;

/* The haproxy binary, or NULL when it is not installed (scripts/deps.sh test installs it). */
const char *t_haproxy_find(void);
/* Makes h's temporary directory (from `tmpl`, ending in XXXXXX). Returns 0, or -1. */
int t_haproxy_init(t_haproxy *h, const char *tmpl);
/* Opens h's haproxy.cfg for writing (NULL on failure): the caller writes the whole config and
 * closes it (fclose), then calls t_haproxy_start. */
FILE *t_haproxy_config(t_haproxy *h);
/* Starts bin on the config written to h's directory, its output to haproxy.log there. Then polls
 * every 20 ms, up to wait_ms: ready(ready_ctx) returning 1 means it is up (0 is returned).
 * Returns -1 when it exited (a port taken meanwhile: retry with new ports) or was not ready in
 * time (it is stopped). */
int t_haproxy_start(t_haproxy *h, const char *bin, int wait_ms, int (*ready)(void *ctx),
                    void *ready_ctx);
/* Stops it (SIGTERM, then SIGKILL after 2 s); nothing when it is not running. */
void t_haproxy_stop(t_haproxy *h);
/* t_haproxy_stop, then removes the directory and its files. */
void t_haproxy_done(t_haproxy *h);
/* A port the kernel picks on 127.0.0.1, released for haproxy to bind (0 on failure). */
unsigned short t_free_port(void);

#endif
