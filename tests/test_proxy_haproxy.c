/* SPDX-License-Identifier: MIT */
/* The PROXY protocol parser on the bytes a live HAProxy sends: haproxy (Debian's package) is
 * started on loopback ports with send-proxy, send-proxy-v2 (+ crc32c) servers and health checks
 * that point at this program's listeners; each header must give the real client's endpoints. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "support.h"
#include "proxy_internal.h"
#include "support/daemon.h"

#define WAIT_MS 5000 /* every wait is bounded by this */

enum { B_V1, B_V2, B_V2CRC, B_CHK_V1, B_CHK_V2, NB };

typedef struct {
    t_daemon hp;
    int backend[NB]; /* our listeners, one per HAProxy server */
    unsigned short backend_port[NB];
    unsigned short front_port[3]; /* frontends to B_V1, B_V2, B_V2CRC */
    int have_v6;
} fixture;

static fixture fx;

static int listen_on(int family, unsigned short *port)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        len = sizeof *a;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                    : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

static int wait_fd(int fd, short events, int ms)
{
    struct pollfd pf = {fd, events, 0};
    int r;
    do
        r = poll(&pf, 1, ms);
    while (r < 0 && errno == EINTR);
    return r;
}

static int connect_to(int family, unsigned short port, struct sockaddr_storage *local)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a->sin_port = htons(port);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons(port);
        len = sizeof *a;
    }
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
        close(fd);
        return -1;
    }
    socklen_t ll = sizeof *local;
    if (local) getsockname(fd, (struct sockaddr *)local, &ll);
    return fd;
}

static int write_config(FILE *f)
{
    if (!f) return -1;
    fprintf(f, "global\n  log stderr local0 info\n"
               "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 5s\n"
               "  timeout server 5s\n");
    static const char *opts[3] = {"send-proxy", "send-proxy-v2",
                                  "send-proxy-v2 proxy-v2-options crc32c"};
    for (int i = 0; i < 3; i++) {
        fprintf(f, "frontend f%d\n  bind 127.0.0.1:%u\n", i, fx.front_port[i]);
        if (fx.have_v6) fprintf(f, "  bind [::1]:%u\n", fx.front_port[i]);
        fprintf(f, "  default_backend b%d\nbackend b%d\n  server s 127.0.0.1:%u %s\n", i, i,
                fx.backend_port[i], opts[i]);
    }
    fprintf(f,
            "backend chk1\n  server s 127.0.0.1:%u send-proxy check inter 300ms "
            "check-send-proxy\n",
            fx.backend_port[B_CHK_V1]);
    fprintf(f,
            "backend chk2\n  server s 127.0.0.1:%u send-proxy-v2 check inter 300ms "
            "check-send-proxy\n",
            fx.backend_port[B_CHK_V2]);
    return fclose(f);
}

/* Ready when every frontend accepts. */
static int frontends_accept(void *ctx)
{
    (void)ctx;
    for (int i = 0; i < 3; i++) {
        int c = connect_to(AF_INET, fx.front_port[i], NULL);
        if (c < 0) return 0;
        close(c);
    }
    return 1;
}

static int start_haproxy(const char *bin)
{
    if (write_config(t_haproxy_config(&fx.hp)) < 0) return -1;
    return t_haproxy_start(&fx.hp, bin, WAIT_MS, frontends_accept, NULL);
}

/* Connections HAProxy opened for the readiness probes reach the backends too: accepts one and
 * reads it until the header is complete or it ends; returns the parse result. */
static int accept_and_parse(int lfd, pkm__proxy_info *in, uint8_t *rest, size_t *rest_len,
                            size_t want_rest)
{
    if (wait_fd(lfd, POLLIN, WAIT_MS) <= 0) return -1000;
    int c = accept(lfd, NULL, NULL);
    if (c < 0) return -1001;
    static pkm__proxy_acc acc;
    pkm__proxy_acc_init(&acc);
    int rc = PKM_EAGAIN;
    *rest_len = 0;
    for (;;) {
        if (wait_fd(c, POLLIN, WAIT_MS) <= 0) break;
        uint8_t buf[512];
        ssize_t n = recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        size_t used = (size_t)n;
        if (rc == PKM_EAGAIN)
            rc = pkm__proxy_acc_feed(&acc, buf, (size_t)n, in, &used);
        else
            used = 0;
        if (rc < 0 && rc != PKM_EAGAIN) break;
        if (rc > 0) {
            size_t m = (size_t)n - used;
            memcpy(rest + *rest_len, buf + used, m);
            *rest_len += m;
            if (*rest_len >= want_rest) break;
        }
    }
    close(c);
    return rc;
}

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof fx);
    for (int i = 0; i < NB; i++)
        fx.backend[i] = -1;
    const char *bin = t_haproxy_find();
    if (!bin) {
        *state = NULL;
        return 0;
    }
    if (t_daemon_init(&fx.hp, "/tmp/pkm_haproxy_XXXXXX") != 0) return -1;
    for (int i = 0; i < NB; i++)
        if ((fx.backend[i] = listen_on(AF_INET, &fx.backend_port[i])) < 0) return -1;
    unsigned short p6;
    int s6 = listen_on(AF_INET6, &p6);
    fx.have_v6 = s6 >= 0;
    if (s6 >= 0) close(s6);
    for (int attempt = 0; attempt < 3; attempt++) {
        for (int i = 0; i < 3; i++)
            fx.front_port[i] = t_free_port();
        if (start_haproxy(bin) == 0) {
            *state = &fx;
            return 0;
        }
    }
    return -1;
}

static int teardown(void **state)
{
    (void)state;
    t_haproxy_done(&fx.hp);
    for (int i = 0; i < NB; i++)
        if (fx.backend[i] >= 0) close(fx.backend[i]);
    return 0;
}

/* A client connects through frontend `front` and sends "hello"; the backend's connection whose
 * header names the client's source port is its own. Connections of setup's readiness probes
 * (IPv4, other ports) may be queued before it and are skipped. */
static void relayed_header(int b, int family, unsigned short front, int version,
                           pkm__proxy_family fam)
{
    struct sockaddr_storage local;
    int cli = connect_to(family, front, &local);
    assert_true(cli >= 0);
    assert_int_equal(send(cli, "hello", 5, 0), 5);
    unsigned short cport = ntohs(family == AF_INET ? ((struct sockaddr_in *)&local)->sin_port
                                                   : ((struct sockaddr_in6 *)&local)->sin6_port);
    int found = 0;
    for (int tries = 0; tries < 20 && !found; tries++) {
        pkm__proxy_info in;
        uint8_t rest[1024];
        size_t rest_len = 0;
        int rc = accept_and_parse(fx.backend[b], &in, rest, &rest_len, 5);
        assert_true(rc > 0 || rc == PKM_EAGAIN); /* a probe closed before sending is EAGAIN */
        if (rc < 0) continue;
        assert_int_equal(in.version, version);
        assert_int_equal(in.command, PKM__PROXY_CMD_PROXY);
        if (in.family != fam) { /* an IPv4 readiness probe still queued */
            assert_int_equal(in.family, PKM__PROXY_TCP4);
            continue;
        }
        unsigned short sport, dport;
        if (fam == PKM__PROXY_TCP4) {
            const struct sockaddr_in *s = (const struct sockaddr_in *)&in.src;
            const struct sockaddr_in *d = (const struct sockaddr_in *)&in.dst;
            assert_int_equal(ntohl(s->sin_addr.s_addr), INADDR_LOOPBACK);
            assert_int_equal(ntohl(d->sin_addr.s_addr), INADDR_LOOPBACK);
            sport = ntohs(s->sin_port);
            dport = ntohs(d->sin_port);
        } else {
            const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&in.src;
            const struct sockaddr_in6 *d = (const struct sockaddr_in6 *)&in.dst;
            assert_memory_equal(&s->sin6_addr, &in6addr_loopback, 16);
            assert_memory_equal(&d->sin6_addr, &in6addr_loopback, 16);
            sport = ntohs(s->sin6_port);
            dport = ntohs(d->sin6_port);
        }
        assert_int_equal(dport, front);
        if (sport != cport) continue; /* a readiness probe's connection */
        assert_int_equal(rest_len, 5);
        assert_memory_equal(rest, "hello", 5);
        found = 1;
    }
    assert_true(found);
    close(cli);
}

static void haproxy_relayed_connections(void **state)
{
    if (!*state) skip(); /* haproxy is not installed (scripts/deps.sh test installs it) */
    relayed_header(B_V1, AF_INET, fx.front_port[0], 1, PKM__PROXY_TCP4);
    relayed_header(B_V2, AF_INET, fx.front_port[1], 2, PKM__PROXY_TCP4);
    relayed_header(B_V2CRC, AF_INET, fx.front_port[2], 2, PKM__PROXY_TCP4);
    if (fx.have_v6) {
        relayed_header(B_V1, AF_INET6, fx.front_port[0], 1, PKM__PROXY_TCP6);
        relayed_header(B_V2, AF_INET6, fx.front_port[1], 2, PKM__PROXY_TCP6);
        relayed_header(B_V2CRC, AF_INET6, fx.front_port[2], 2, PKM__PROXY_TCP6);
    }
}

static void haproxy_health_checks(void **state)
{
    if (!*state) skip();
    pkm__proxy_info in;
    uint8_t rest[1024];
    size_t rest_len;
    /* v2: LOCAL, no address */
    int rc = accept_and_parse(fx.backend[B_CHK_V2], &in, rest, &rest_len, 0);
    assert_int_equal(rc, 16);
    assert_int_equal(in.command, PKM__PROXY_CMD_LOCAL);
    assert_int_equal(in.family, PKM__PROXY_UNSPEC);
    /* v1: the check connection's own endpoints (the specification's advice) */
    rc = accept_and_parse(fx.backend[B_CHK_V1], &in, rest, &rest_len, 0);
    assert_true(rc > 0);
    assert_int_equal(in.version, 1);
    assert_int_equal(in.family, PKM__PROXY_TCP4);
    assert_int_equal(ntohs(((struct sockaddr_in *)&in.dst)->sin_port), fx.backend_port[B_CHK_V1]);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(haproxy_relayed_connections),
        cmocka_unit_test(haproxy_health_checks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
