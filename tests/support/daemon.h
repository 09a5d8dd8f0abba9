/* SPDX-License-Identifier: MIT */
/* Test helper: a server program (haproxy, redis-server) run as a child on loopback ports, its
 * files in a temporary directory, waited for and stopped; HAProxy's wrappers on top. */
#ifndef PKM_TEST_DAEMON_H
#define PKM_TEST_DAEMON_H

#include <stdio.h>
#include <sys/types.h>

typedef struct t_daemon {
    pid_t pid;    /* 0 when not running */
    char dir[64]; /* a temporary directory for its files ("" before t_daemon_init) */
} t_daemon;

/* The first executable of paths (NULL-terminated), or NULL: not installed (scripts/deps.sh
 * test installs what the tests need). */
const char *t_daemon_find(const char *const *paths);
/* Makes d's temporary directory (from `tmpl`, ending in XXXXXX). Returns 0, or -1. */
int t_daemon_init(t_daemon *d, const char *tmpl);
/* Writes dir/name into out (cap bytes). */
void t_daemon_path(const t_daemon *d, const char *name, char *out, size_t cap);
/* Runs argv (argv[0] the program) as a child that dies with the test, its stdout and stderr in
 * dir/log (appended to when append, else truncated). Then polls every 20 ms, up to wait_ms:
 * ready(ready_ctx) returning 1 means it is up (0 is returned). Returns -1 when it exited (a
 * port taken meanwhile: retry with a new one) or was not ready in time (it is stopped). */
int t_daemon_start(t_daemon *d, const char *log, int append, char *const argv[], int wait_ms,
                   int (*ready)(void *ctx), void *ready_ctx);
/* SIGTERM, then SIGKILL if it has not exited within wait_ms; nothing when it is not running. */
void t_daemon_stop(t_daemon *d, int wait_ms);
/* Removes the files named in `files` (NULL-terminated) from d's directory, then the directory
 * (stop the program first). */
void t_daemon_done(t_daemon *d, const char *const *files);
/* A port the kernel picks on 127.0.0.1, released for the program to bind (0 on failure). */
unsigned short t_free_port(void);

/* HAProxy: the binary (or NULL); haproxy.cfg in h's directory opened for writing (the caller
 * writes the whole config and closes it); started on it (-db, output in haproxy.log) as
 * t_daemon_start; stopped (2 s before SIGKILL); stopped and its files and directory removed. */
const char *t_haproxy_find(void);
FILE *t_haproxy_config(t_daemon *h);
int t_haproxy_start(t_daemon *h, const char *bin, int wait_ms, int (*ready)(void *ctx),
                    void *ready_ctx);
void t_haproxy_stop(t_daemon *h);
void t_haproxy_done(t_daemon *h);

#endif
