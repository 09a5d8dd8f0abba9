/* SPDX-License-Identifier: MIT */
/* A pkm_server behind a live HAProxy (Debian's package, started on loopback ports by this test
 * and stopped after): send-proxy-v2 and send-proxy backends with health checks; the server sees
 * each client's own address (127.0.0.x), its per-source cap counts that address, and the health
 * checks cost no RSA job, no callback and no log line. */
#include "support.h"
#include "support/clients.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include "pkmcom/pkmcom.h"
#include "server_internal.h"
#include "support/daemon.h"
#include "support/server_fixture.h"

#define WAIT_MS 10000 /* every wait is bounded by this */

/* ---- the fixture: the server, then HAProxy in front of it ---- */

typedef struct fixture {
    t_obs o;
    t_srv s;
    int running;
    t_daemon hp;
    unsigned short front_v2, front_v1;
} fixture_t;

static fixture_t fx;

static uint64_t checks(void)
{
    pkm_server_stats_t st;
    pkm_server_stats(fx.s.srv, &st);
    return st.proxy_checks;
}

/* Ready once health checks of both backends have reached the server since `before`. */
static int checks_arrived(void *before)
{
    return checks() >= *(uint64_t *)before + 4;
}

/* Starts haproxy on two fresh frontend ports: ready once health checks of both backends have
 * reached the server (its listeners are bound by then). Returns 0, or -1 (it exited: retry). */
static int start_haproxy(const char *bin)
{
    fx.front_v2 = t_free_port();
    fx.front_v1 = t_free_port();
    FILE *f = t_haproxy_config(&fx.hp);
    if (!f) return -1;
    unsigned port = fx.s.port;
    fprintf(f,
            "global\n  log stderr local0 info\n"
            "defaults\n  mode tcp\n  log global\n  timeout connect 2s\n  timeout client 10s\n"
            "  timeout server 10s\n"
            "frontend fv2\n  bind 127.0.0.1:%u\n  default_backend bv2\n"
            "frontend fv1\n  bind 127.0.0.1:%u\n  default_backend bv1\n"
            "backend bv2\n  server s 127.0.0.1:%u send-proxy-v2 check inter 200ms\n"
            "backend bv1\n  server s 127.0.0.1:%u send-proxy check inter 200ms\n",
            fx.front_v2, fx.front_v1, port, port);
    if (fclose(f) != 0) return -1;
    uint64_t before = checks();
    return t_haproxy_start(&fx.hp, bin, WAIT_MS, checks_arrived, &before);
}

static int setup(void **state)
{
    if (t_keys_setup(state) != 0) return -1;
    memset(&fx, 0, sizeof fx);
    t_obs_init(&fx.o, 1);
    const char *bin = t_haproxy_find();
    *state = NULL;
    if (!bin) return 0;
    if (t_daemon_init(&fx.hp, "/tmp/pkm_srv_haproxy_XXXXXX") != 0) return -1;
    pkm_server_config_t cfg;
    t_srv_config(&cfg, t_shared_keys.server_key);
    cfg.proxy_trusted = "127.0.0.1/32"; /* HAProxy's address towards the server */
    cfg.max_conns_per_source = 1;
    t_obs_config(&cfg, &fx.o, T_OBS_ECHO | T_OBS_CONNECT | T_OBS_LOG);
    t_srv_new(&fx.s, &cfg, t_obs_job_hook, &fx.o);
    t_obs_reset_logs(&fx.o); /* the start's own lines (the open-file limit) */
    t_srv_run(&fx.s);
    fx.running = 1;
    for (int attempt = 0; attempt < 3; attempt++)
        if (start_haproxy(bin) == 0) {
            *state = &fx;
            return 0;
        }
    return -1;
}

static int teardown(void **state)
{
    t_haproxy_done(&fx.hp);
    if (fx.running) t_srv_stop(&fx.s);
    t_obs_done(&fx.o);
    return t_keys_teardown(state);
}

/* ---- a client ---- */

static void peer_is(int fd, const char *ip)
{
    char want[64], got[PKM_SERVER_PEER_SIZE];
    snprintf(want, sizeof want, "%s:%u", ip, (unsigned)t_local_port(fd));
    t_obs_peer(&fx.o, got);
    assert_string_equal(got, want);
}

/* HAProxy's health checks (send-proxy-v2: LOCAL; send-proxy: a v1 header naming the check
 * connection itself) have been arriving since setup: none was admitted, none cost an RSA job,
 * called back or logged. */
static void health_checks_are_silent(void **state)
{
    if (!*state) skip(); /* haproxy is not installed (scripts/deps.sh test installs it) */
    uint64_t n = checks();
    for (int i = 0; i < WAIT_MS / 20 && checks() < n + 4; i++)
        tcl_sleep_ms(20);
    assert_true(checks() >= n + 4);
    pkm_server_stats_t st;
    pkm_server_stats(fx.s.srv, &st);
    assert_int_equal(st.accepted, 0);
    assert_int_equal(st.proxy_refused, 0);
    assert_int_equal(t_obs_get(&fx.o, &fx.o.queued), 0);
    assert_int_equal(t_obs_get(&fx.o, &fx.o.closes), 0);
    assert_int_equal(t_obs_get(&fx.o, &fx.o.logs), 0);
}

/* Clients through HAProxy from 127.0.0.5 and 127.0.0.6 are seen with their own addresses and
 * ports, through v2 and v1; the per-source cap of 1 refuses a second client from 127.0.0.5
 * (HAProxy's own address, 127.0.0.1, carries them all). */
static void clients_are_seen_through_haproxy(void **state)
{
    if (!*state) skip();
    int got = 0;
    int a = t_tcp_connect(fx.front_v2, "127.0.0.5", WAIT_MS / 1000);
    assert_true(t_cli_session(a, NULL, &got));
    peer_is(a, "127.0.0.5");
    int b = t_tcp_connect(fx.front_v1, "127.0.0.6", WAIT_MS / 1000);
    assert_true(t_cli_session(b, NULL, &got));
    peer_is(b, "127.0.0.6");
    int c =
        t_tcp_connect(fx.front_v2, "127.0.0.5", WAIT_MS / 1000); /* a stays open: over the cap */
    assert_false(t_cli_session(c, NULL, &got));
    assert_int_equal(got, 0); /* not a byte */
    pkm_server_stats_t st;
    pkm_server_stats(fx.s.srv, &st);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.accepted, 2);
    pthread_mutex_lock(&fx.o.mu);
    assert_non_null(strstr(fx.o.last_log, "127.0.0.5"));
    pthread_mutex_unlock(&fx.o.mu);
    close(a), close(b), close(c);
    assert_int_equal(t_obs_get(&fx.o, &fx.o.connects), 2);
    assert_int_equal(t_obs_get(&fx.o, &fx.o.queued), 2);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(health_checks_are_silent),
        cmocka_unit_test(clients_are_seen_through_haproxy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
