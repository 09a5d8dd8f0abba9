/* SPDX-License-Identifier: MIT */
/* Test helper (daemon.h): runs a server program as a child with its output in a temporary
 * directory, waits until a test's readiness check passes, stops it and cleans up. */
#include "support/daemon.h"
#include "support/clients.h"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

const char *t_daemon_find(const char *const *paths)
{
    for (; *paths; paths++)
        if (access(*paths, X_OK) == 0) return *paths;
    return NULL;
}

int t_daemon_init(t_daemon *d, const char *tmpl)
{
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "%s", tmpl);
    if (!mkdtemp(d->dir)) {
        d->dir[0] = 0;
        return -1;
    }
    return 0;
}

void t_daemon_path(const t_daemon *d, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", d->dir, name);
}

int t_daemon_start(t_daemon *d, const char *log, int append, char *const argv[], int wait_ms,
                   int (*ready)(void *ctx), void *ready_ctx)
{
    char path[128];
    t_daemon_path(d, log, path, sizeof path);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the test */
        int fd = open(path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    d->pid = pid;
    for (int t = 0; t < wait_ms / 20; t++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) { /* exited: a port taken meanwhile */
            d->pid = 0;
            return -1;
        }
        if (ready(ready_ctx)) return 0;
        tcl_sleep_ms(20);
    }
    t_daemon_stop(d, 2000);
    return -1;
}

void t_daemon_stop(t_daemon *d, int wait_ms)
{
    if (d->pid <= 0) return;
    kill(d->pid, SIGTERM);
    int st;
    for (int i = 0; i < wait_ms / 20 && waitpid(d->pid, &st, WNOHANG) == 0; i++)
        tcl_sleep_ms(20);
    if (waitpid(d->pid, &st, WNOHANG) == 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, &st, 0);
    }
    d->pid = 0;
}

void t_daemon_done(t_daemon *d, const char *const *files)
{
    if (!d->dir[0]) return;
    char path[128];
    for (; *files; files++) {
        t_daemon_path(d, *files, path, sizeof path);
        unlink(path);
    }
    rmdir(d->dir);
    d->dir[0] = 0;
}

unsigned short t_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    unsigned short p = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        p = ntohs(a.sin_port);
    close(fd);
    return p;
}

/* ---- HAProxy ---- */

const char *t_haproxy_find(void)
{
    static const char *const paths[] = {"/usr/sbin/haproxy", "/usr/local/sbin/haproxy",
                                        "/usr/bin/haproxy", NULL};
    return t_daemon_find(paths);
}

FILE *t_haproxy_config(t_daemon *h)
{
    char cfg[128];
    t_daemon_path(h, "haproxy.cfg", cfg, sizeof cfg);
    return fopen(cfg, "w");
}

int t_haproxy_start(t_daemon *h, const char *bin, int wait_ms, int (*ready)(void *ctx),
                    void *ready_ctx)
{
    char cfg[128];
    t_daemon_path(h, "haproxy.cfg", cfg, sizeof cfg);
    char *const argv[] = {(char *)bin, "-f", cfg, "-db", NULL};
    return t_daemon_start(h, "haproxy.log", 0, argv, wait_ms, ready, ready_ctx);
}

void t_haproxy_stop(t_daemon *h)
{
    t_daemon_stop(h, 2000);
}

void t_haproxy_done(t_daemon *h)
{
    static const char *const files[] = {"haproxy.cfg", "haproxy.log", NULL};
    t_haproxy_stop(h);
    t_daemon_done(h, files);
}
