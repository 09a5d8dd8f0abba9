/* SPDX-License-Identifier: MIT */
/* Test helper (haproxy.h): runs haproxy on a config in a temporary directory, waits until a
 * test's readiness check passes, stops it and cleans up. */
#include "support/haproxy.h"
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

const char *t_haproxy_find(void)
{
    static const char *paths[] = {"/usr/sbin/haproxy", "/usr/local/sbin/haproxy",
                                  "/usr/bin/haproxy"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (access(paths[i], X_OK) == 0) return paths[i];
    return NULL;
}

int t_haproxy_init(t_haproxy *h, const char *tmpl)
{
    memset(h, 0, sizeof *h);
    snprintf(h->dir, sizeof h->dir, "%s", tmpl);
    if (!mkdtemp(h->dir)) {
        h->dir[0] = 0;
        return -1;
    }
    return 0;
}

FILE *t_haproxy_config(t_haproxy *h)
{
    char cfg[128];
    snprintf(cfg, sizeof cfg, "%s/haproxy.cfg", h->dir);
    return fopen(cfg, "w");
}

int t_haproxy_start(t_haproxy *h, const char *bin, int wait_ms, int (*ready)(void *ctx),
                    void *ready_ctx)
{
    char cfg[128], log[128];
    snprintf(cfg, sizeof cfg, "%s/haproxy.cfg", h->dir);
    snprintf(log, sizeof log, "%s/haproxy.log", h->dir);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the test */
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(bin, bin, "-f", cfg, "-db", (char *)NULL);
        _exit(127);
    }
    h->pid = pid;
    for (int t = 0; t < wait_ms / 20; t++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) { /* exited: a port taken meanwhile */
            h->pid = 0;
            return -1;
        }
        if (ready(ready_ctx)) return 0;
        tcl_sleep_ms(20);
    }
    t_haproxy_stop(h);
    return -1;
}

void t_haproxy_stop(t_haproxy *h)
{
    if (h->pid <= 0) return;
    kill(h->pid, SIGTERM);
    int st;
    for (int i = 0; i < 100 && waitpid(h->pid, &st, WNOHANG) == 0; i++)
        tcl_sleep_ms(20);
    if (waitpid(h->pid, &st, WNOHANG) == 0) {
        kill(h->pid, SIGKILL);
        waitpid(h->pid, &st, 0);
    }
    h->pid = 0;
}

void t_haproxy_done(t_haproxy *h)
{
    t_haproxy_stop(h);
    if (!h->dir[0]) return;
    char path[128];
    snprintf(path, sizeof path, "%s/haproxy.cfg", h->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/haproxy.log", h->dir);
    unlink(path);
    rmdir(h->dir);
    h->dir[0] = 0;
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
