/* SPDX-License-Identifier: MIT */
/* Scale test of the libuv server: 10,000 concurrent established connections (clients in a forked
 * child, to stay under the 20,000 open-file hard limit), heap and RSS per idle connection printed.
 */
#include "support.h"
#include "support/clients.h"
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include "pkmcom/pkmcom.h"
#include "support/server_fixture.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define WARMUP_CONNS 16

/* The child: a warm-up round, then n clients held open until the parent says so. */
static int child_main(int from_parent, int to_parent, pkm_key_t **keys, size_t n)
{
    tcl_raise_nofile();
    uint8_t pb[2];
    if (read(from_parent, pb, 2) != 2) return 10;
    tcl_opts_t o;
    memset(&o, 0, sizeof o);
    o.port = (uint16_t)(pb[0] << 8 | pb[1]);
    o.keys = keys;
    o.nkeys = 2;
    o.echoes = 1;
    o.payload = 64;
    o.ready_fd = o.release_fd = -1;
    o.timeout_ms = 60000;
    o.nclients = WARMUP_CONNS;
    tcl_result_t r;
    if (tcl_run(&o, &r) != 0 || r.echoed != WARMUP_CONNS) return 11;
    if (write(to_parent, "w", 1) != 1) return 12;
    if (tcl_read_byte(from_parent, 60000) != 'g') return 13;
    o.nclients = n;
    o.ready_fd = to_parent;
    o.release_fd = from_parent;
    o.timeout_ms = 600000;
    o.max_pending = 256;
    if (tcl_run(&o, &r) != 0) return 14;
    if (r.established != n || r.echoed != n || r.bad_replies) {
        fprintf(stderr, "child: established %zu echoed %zu failed %zu bad %zu first_err %s\n",
                r.established, r.echoed, r.failed, r.bad_replies, pkm_errname(r.first_err));
        return 15;
    }
    return 0;
}

static void test_10k_idle_connections(void **state)
{
    (void)state;
    const char *vg = getenv("PKM_VALGRIND");
    if (UNDER_ASAN || (vg && strcmp(vg, "1") == 0)) {
        /* 10,000 handshakes under ASan or valgrind take too long, and mallinfo2 counts nothing
         * useful under ASan's allocator: the scale test runs in the plain build only. */
        print_message("skipped under ASan/valgrind\n");
        skip();
    }
    size_t n = 10000;
    const char *env = getenv("PKM_SCALE_CONNS");
    if (env && atoi(env) > 0) n = (size_t)atoi(env);

    /* Keys first, and fork before any thread exists (server loop, thread pool). */
    pkm_key_t *server_key = NULL, *ck[2] = {NULL, NULL};
    assert_int_equal(pkm_key_generate(&server_key), 0);
    assert_int_equal(pkm_key_generate(&ck[0]), 0);
    assert_int_equal(pkm_key_generate(&ck[1]), 0);
    int p2c[2], c2p[2];
    assert_int_equal(pipe(p2c), 0);
    assert_int_equal(pipe(c2p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p2c[1]);
        close(c2p[0]);
        _exit(child_main(p2c[0], c2p[1], ck, n));
    }
    close(p2c[0]);
    close(c2p[1]);

    pkm_server_config_t cfg;
    t_srv_config(&cfg, server_key);
    cfg.trim_after_ms = 200;
    cfg.max_conns = n + WARMUP_CONNS;
    cfg.on_log = t_srv_log_warnings;
    cfg.on_packet = t_srv_echo;
    t_srv fx;
    t_srv_new(&fx, &cfg, NULL, NULL); /* raises RLIMIT_NOFILE to the hard limit */
    pkm_server_t *srv = fx.srv;
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < n + 64)
        fail_msg("open-file limit %llu is too low for %zu connections",
                 (unsigned long long)rl.rlim_cur, n);
    uint16_t port = pkm_server_port(srv);
    uint8_t pb[2] = {(uint8_t)(port >> 8), (uint8_t)port};
    assert_int_equal(write(p2c[1], pb, 2), 2);
    t_srv_run(&fx);

    /* Baseline once the warm-up round (thread pool started, OpenSSL initialised) is over. */
    assert_int_equal(tcl_read_byte(c2p[0], 60000), 'w');
    pkm_server_stats_t s;
    for (int i = 0; i < 2000; i++) {
        pkm_server_stats(srv, &s);
        if (s.conns_open == 0 && s.accepted == WARMUP_CONNS) break;
        tcl_sleep_ms(5);
    }
    assert_int_equal(s.conns_open, 0);
    size_t heap0 = tcl_heap_in_use(), rss0 = tcl_rss_bytes();

    assert_int_equal(write(p2c[1], "g", 1), 1);
    int ready = tcl_read_byte(c2p[0], 600000);
    assert_int_equal(ready, 'k');
    pkm_server_stats(srv, &s);
    assert_int_equal(s.conns_established, n);
    assert_int_equal(s.conns_open, n);
    /* Idle: let the sweep trim every connection (trim_after 200 ms). */
    tcl_sleep_ms(1000);
    size_t heap1 = tcl_heap_in_use(), rss1 = tcl_rss_bytes();
    pkm_server_stats(srv, &s);
    assert_int_equal(s.conns_established, n);
    size_t heap_per = (heap1 - heap0) / n;
    size_t rss_per = rss1 > rss0 ? (rss1 - rss0) / n : 0;
    print_message("%zu idle established connections: heap per idle connection: %zu bytes, RSS per "
                  "connection: %zu bytes (heap %zu -> %zu, RSS %zu -> %zu)\n",
                  n, heap_per, rss_per, heap0, heap1, rss0, rss1);
    /* The goal: under 16 KiB of heap per idle established connection. */
    assert_true(heap_per < 16384);

    /* Release the clients; the server sees every one close. */
    close(p2c[1]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    for (int i = 0; i < 6000; i++) {
        pkm_server_stats(srv, &s);
        if (s.conns_open == 0) break;
        tcl_sleep_ms(5);
    }
    assert_int_equal(s.conns_open, 0);
    assert_int_equal(s.handshakes_ok, n + WARMUP_CONNS);
    assert_int_equal(s.handshakes_failed, 0);
    assert_int_equal(s.rejected, 0);
    t_srv_stop(&fx);
    close(c2p[0]);
    pkm_key_free(server_key);
    pkm_key_free(ck[0]);
    pkm_key_free(ck[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_10k_idle_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
