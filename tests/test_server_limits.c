/* SPDX-License-Identifier: MIT */
/* The libuv server's limits (issue 13), end to end over loopback: handshake admission holds its
 * caps under a burst and a waiting handshake that goes away never runs RSA work; the
 * partial-packet deadline and budget close the right connections and give their memory back;
 * the failed-secret ban engages and expires. Functional: waits have generous bounds, nothing
 * asserts a duration. */
#include "support.h"
#include "support/clients.h"
#include <pthread.h>
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
#include "support/server_fixture.h"

/* The stats the waits pick (t_srv_wait_stat). */
static uint64_t st_waiting(const pkm_server_stats_t *st)
{
    return st->handshakes_waiting;
}
static uint64_t st_in_flight(const pkm_server_stats_t *st)
{
    return st->handshakes_in_flight;
}
/* Handshakes the admission has seen: in flight, waiting or refused. */
static uint64_t st_seen(const pkm_server_stats_t *st)
{
    return st->handshakes_in_flight + st->handshakes_waiting + st->refused;
}
static uint64_t st_partial(const pkm_server_stats_t *st)
{
    return st->partial_bytes;
}
/* A server with the shared key that echoes, its callbacks counted in o. */
static void base_config(pkm_server_config_t *cfg, t_obs *o)
{
    t_srv_config(cfg, t_shared_keys.server_key);
    t_obs_config(cfg, o, T_OBS_ECHO);
}

/* Sends `sent` bytes of the wire form of a packet with `size` bytes of content. */
static void send_partial(pkm_engine_t *e, int fd, size_t size, size_t sent)
{
    uint8_t *content = calloc(1, size);
    assert_non_null(content);
    assert_int_equal(pkm_engine_queue_packet(e, 0x20, 0, content, size), 0);
    free(content);
    size_t len = 0;
    const uint8_t *out = pkm_engine_send_buf(e, &len);
    assert_true(len > sent);
    size_t off = 0;
    while (off < sent) {
        ssize_t n = send(fd, out + off, sent - off, MSG_NOSIGNAL);
        assert_true(n > 0);
        off += (size_t)n;
    }
}

/* 1 when the server ends the stream (or resets it) before sending anything more. */
static int closed_by_server(int fd)
{
    uint8_t b[4096];
    for (;;) {
        ssize_t n = recv(fd, b, sizeof b, 0);
        if (n <= 0) return 1;
    }
}

/* ---- admission ---- */

/* A burst of 8 handshakes against caps of 2 in flight: exactly 2 get RSA work submitted, 6
 * wait; 3 of the waiting ones leave and never get RSA work; the other 5 all get theirs once the
 * first ones end. */
static void admission_caps_hold_under_a_burst(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 0);
    pkm_server_config_t cfg;
    base_config(&cfg, &o);
    cfg.handshake_timeout_ms = 0;
    cfg.max_handshakes = 2;
    cfg.max_handshakes_per_source = 2;
    t_srv f;
    t_srv_start(&f, &cfg, t_obs_job_hook, &o);

    enum { N = 8 };
    int fd[N];
    pkm_engine_t *e[N];
    for (int i = 0; i < N; i++) {
        fd[i] = t_tcp_connect(f.port, NULL, 0);
        e[i] = t_cli_to_keyshare(fd[i], NULL);
        /* One at a time: with several loops the next could be seen first. */
        t_srv_wait_stat(f.srv, st_seen, (uint64_t)i + 1, "handshakes seen by the admission");
    }
    t_srv_wait_stat(f.srv, st_waiting, N - 2, "handshakes waiting");
    t_srv_wait_stat(f.srv, st_in_flight, 2, "handshakes in flight");
    t_obs_wait(&o, &o.queued, 2, "jobs submitted");
    assert_int_equal(t_obs_get(&o, &o.queued), 2); /* the cap holds: no RSA work for the others */

    /* Three waiting clients leave (the last ones: waiting for sure). */
    for (int i = N - 3; i < N; i++)
        close(fd[i]);
    t_obs_wait(&o, &o.closes, 3, "the leavers closed");
    t_srv_wait_stat(f.srv, st_waiting, N - 5, "handshakes waiting");

    t_obs_open_gate(&o);
    t_obs_wait(&o, &o.run, N - 3, "jobs run");
    t_srv_wait_stat(f.srv, st_waiting, 0, "handshakes waiting");
    t_srv_wait_stat(f.srv, st_in_flight, 0, "handshakes in flight");
    t_srv_stop(&f);
    assert_int_equal(o.queued, N - 3); /* the leavers never had RSA work submitted */
    assert_int_equal(o.run, N - 3);
    assert_int_equal(o.cancelled + o.orphaned, 0);
    for (int i = 0; i < N; i++) {
        if (i < N - 3) close(fd[i]);
        pkm_engine_free(e[i]);
    }
    t_obs_done(&o);
}

/* Past the queue caps a handshake is refused and its connection closed at once. */
static void admission_refuses_past_the_queue(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 0);
    pkm_server_config_t cfg;
    base_config(&cfg, &o);
    cfg.handshake_timeout_ms = 0;
    cfg.max_handshakes = 1;
    cfg.max_queued_per_source = 1;
    t_srv f;
    t_srv_start(&f, &cfg, t_obs_job_hook, &o);
    int fd[3];
    pkm_engine_t *e[3];
    for (int i = 0; i < 3; i++) {
        fd[i] = t_tcp_connect(f.port, NULL, 0);
        e[i] = t_cli_to_keyshare(fd[i], NULL);
        /* One at a time: with several loops the next could be seen first. */
        t_srv_wait_stat(f.srv, st_seen, (uint64_t)i + 1, "handshakes seen by the admission");
    }
    /* The first in flight, the second waiting, the third refused. */
    assert_true(closed_by_server(fd[2]));
    t_obs_wait(&o, &o.eagain, 1, "the refusal");
    t_srv_wait_stat(f.srv, t_st_refused, 1, "refusals");
    t_srv_wait_stat(f.srv, st_waiting, 1, "handshakes waiting");
    t_obs_open_gate(&o);
    t_srv_stop(&f);
    assert_int_equal(o.queued, o.run + o.cancelled); /* each job ran, or was cancelled */
    assert_true(o.queued <= 2);
    for (int i = 0; i < 3; i++) {
        close(fd[i]);
        pkm_engine_free(e[i]);
    }
    t_obs_done(&o);
}

/* max_conns_per_source counts per source: a third connection from 127.0.0.1 is refused without
 * a byte, one from 127.0.0.2 is served. */
static void per_source_connection_cap(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o);
    cfg.max_conns_per_source = 2;
    t_srv f;
    t_srv_start(&f, &cfg, t_obs_job_hook, &o);
    int a = t_tcp_connect(f.port, "127.0.0.1", 0), b = t_tcp_connect(f.port, "127.0.0.1", 0);
    int got = 0;
    pkm_engine_t *ea = t_cli_establish(a, NULL, &got);
    assert_non_null(ea);
    int c = t_tcp_connect(f.port, "127.0.0.1", 0);
    pkm_engine_t *ec = t_cli_establish(c, NULL, &got);
    assert_null(ec);
    assert_int_equal(got, 0); /* not a byte */
    int d = t_tcp_connect(f.port, "127.0.0.2", 0);
    pkm_engine_t *ed = t_cli_establish(d, NULL, &got);
    assert_non_null(ed);
    pkm_server_stats_t st;
    pkm_server_stats(f.srv, &st);
    assert_int_equal(st.refused, 1);
    t_srv_stop(&f);
    assert_int_equal(o.closes, 3); /* the refused one got no callback */
    assert_int_equal(o.queued, 2); /* RSA jobs: the two established ones', none for the refused */
    close(a), close(b), close(c), close(d);
    pkm_engine_free(ea);
    pkm_engine_free(ed);
    t_obs_done(&o);
}

/* conn_rate_per_source refuses at accept: past the burst a connection from the source is closed
 * without a byte, gets no engine, no callback and no RSA job (the job hook counts the accepted
 * ones' jobs only); another source is served meanwhile. Rate 1 a second, burst 2: of 6
 * connections made within `elapsed` seconds at most 2 + elapsed are accepted. */
static void per_source_connection_rate(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o);
    cfg.conn_rate_per_source = 1;
    cfg.conn_burst_per_source = 2;
    t_srv f;
    t_srv_start(&f, &cfg, t_obs_job_hook, &o);
    enum { N = 6 };
    int fd[N], served = 0, refused = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++)
        fd[i] = t_tcp_connect(f.port, "127.0.0.2", 0);
    /* Whatever the server sends first: the ServerKey, or the end of the stream. */
    for (int i = 0; i < N; i++) {
        uint8_t b[4];
        ssize_t n = recv(fd[i], b, sizeof b, 0);
        if (n > 0)
            served++;
        else
            refused++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long elapsed = (long)(t1.tv_sec - t0.tv_sec) + 1;
    assert_true(served >= 2);
    assert_true(served <= 2 + elapsed);
    int other = t_tcp_connect(f.port, "127.0.0.1", 0);
    int got = 0;
    pkm_engine_t *e = t_cli_establish(other, NULL, &got);
    assert_non_null(e);
    pkm_server_stats_t st;
    pkm_server_stats(f.srv, &st);
    assert_int_equal(st.refused, (uint64_t)refused);
    assert_int_equal(st.accepted, (uint64_t)served + 1);
    t_srv_stop(&f);
    assert_int_equal(o.queued, 1); /* the established one's; none for the refused */
    assert_int_equal(o.closes, served + 1);
    for (int i = 0; i < N; i++)
        close(fd[i]);
    close(other);
    pkm_engine_free(e);
    t_obs_done(&o);
}

/* on_packet that holds the loop thread until the test opens the gate (obs.gate_open). */
static void on_packet_hold(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt)
{
    t_obs *o = user;
    (void)conn;
    (void)pkt;
    pthread_mutex_lock(&o->mu);
    o->run++; /* (the loop is held) */
    pthread_cond_broadcast(&o->cv);
    while (!o->gate_open)
        pthread_cond_wait(&o->cv, &o->mu);
    pthread_mutex_unlock(&o->mu);
}

/* A burst of connections waiting in the listener at once (made while a packet callback holds
 * the loop), more than the server accepts in one loop turn (PKM__ACCEPT_BATCH): each is
 * accepted in a later turn and gets its ServerKey, none is left in the listener. */
static void accept_burst_beyond_one_turn(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o);
    cfg.on_packet = on_packet_hold;
    t_srv f;
    t_srv_start(&f, &cfg, t_obs_job_hook, &o);
    int holder = t_tcp_connect(f.port, NULL, 0);
    pkm_engine_t *eh = t_cli_establish(holder, NULL, NULL);
    assert_non_null(eh);
    pthread_mutex_lock(&o.mu);
    o.gate_open = 0;
    pthread_mutex_unlock(&o.mu);
    assert_int_equal(pkm_engine_queue_packet(eh, 0x20, 0, NULL, 0), 0);
    t_cli_send_all(eh, holder);
    t_obs_wait(&o, &o.run, 1, "the loop held in on_packet");
    enum { N = 3 * PKM__ACCEPT_BATCH + 5 };
    int fd[N];
    for (int i = 0; i < N; i++) /* all wait in the listener: the loop is held */
        fd[i] = t_tcp_connect(f.port, NULL, 0);
    t_obs_open_gate(&o);
    for (int i = 0; i < N; i++) {
        uint8_t b[4];
        struct timeval tv = {20, 0}; /* a connection left in the listener fails, not hangs */
        assert_int_equal(setsockopt(fd[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
        ssize_t n = recv(fd[i], b, sizeof b, MSG_WAITALL);
        assert_int_equal(n, 4); /* the ServerKey's length prefix */
    }
    pkm_server_stats_t st;
    pkm_server_stats(f.srv, &st);
    assert_int_equal(st.accepted, N + 1);
    assert_int_equal(st.conns_open, N + 1);
    int last = t_tcp_connect(f.port, NULL, 0); /* the listener is still watched */
    int got = 0;
    pkm_engine_t *e = t_cli_establish(last, NULL, &got);
    assert_non_null(e);
    t_srv_stop(&f);
    for (int i = 0; i < N; i++)
        close(fd[i]);
    close(last);
    close(holder);
    pkm_engine_free(e);
    pkm_engine_free(eh);
    t_obs_done(&o);
}

/* ---- memory a peer can pin ---- */

/* A started packet that does not complete within the deadline closes its connection, and its
 * memory is counted back; a connection that sends whole packets stays. */
static void partial_packet_deadline(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o);
    cfg.partial_deadline_ms = 300;
    t_srv f;
    t_srv_start(&f, &cfg, t_obs_job_hook, &o);
    int a = t_tcp_connect(f.port, NULL, 0), b = t_tcp_connect(f.port, NULL, 0);
    pkm_engine_t *ea = t_cli_establish(a, NULL, NULL), *eb = t_cli_establish(b, NULL, NULL);
    assert_non_null(ea);
    assert_non_null(eb);
    send_partial(ea, a, 200000, 150000);
    t_obs_wait(&o, &o.etimeout, 1, "the deadline");
    assert_true(closed_by_server(a));
    pkm_server_stats_t st;
    pkm_server_stats(f.srv, &st);
    assert_int_equal(st.partial_closed, 1);
    t_srv_wait_stat(f.srv, st_partial, 0, "bytes held by partial packets");
    assert_int_equal(o.last_err_port, t_local_port(a));
    /* b still echoes */
    uint8_t msg[5] = {1, 2, 3, 4, 5};
    assert_int_equal(pkm_engine_queue_packet(eb, 0x21, 7, msg, sizeof msg), 0);
    t_cli_send_all(eb, b);
    pkm_packet_t pkt;
    int r;
    while ((r = pkm_engine_next_packet(eb, &pkt)) == 0)
        assert_true(t_cli_recv_once(eb, b) > 0);
    assert_int_equal(r, 1);
    assert_int_equal(pkt.size, sizeof msg);
    t_srv_stop(&f);
    assert_int_equal(o.closes, 2);
    close(a), close(b);
    pkm_engine_free(ea);
    pkm_engine_free(eb);
    t_obs_done(&o);
}

/* Past the budget the connection holding the most is closed (PKM_ENOMEM), and only it. */
static void partial_packet_budget(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o);
    cfg.partial_deadline_ms = 0;
    cfg.partial_budget = 400000;
    t_srv f;
    t_srv_start(&f, &cfg, t_obs_job_hook, &o);
    int a = t_tcp_connect(f.port, NULL, 0), b = t_tcp_connect(f.port, NULL, 0);
    pkm_engine_t *ea = t_cli_establish(a, NULL, NULL), *eb = t_cli_establish(b, NULL, NULL);
    assert_non_null(ea);
    assert_non_null(eb);
    send_partial(eb, b, 100000, 60000); /* the smaller one first */
    pkm_server_stats_t st;
    for (int i = 0; i < 4000; i++) {
        pkm_server_stats(f.srv, &st);
        if (st.partial_bytes >= 60000) break;
        tcl_sleep_ms(5);
    }
    assert_true(st.partial_bytes >= 60000 && st.partial_bytes < 400000);
    uint64_t b_held = st.partial_bytes;
    send_partial(ea, a, 390000, 350000);
    t_obs_wait(&o, &o.enomem, 1, "the budget");
    assert_true(closed_by_server(a));
    assert_int_equal(o.last_err_port, t_local_port(a));
    pkm_server_stats(f.srv, &st);
    assert_int_equal(st.partial_closed, 1);
    assert_int_equal(st.partial_bytes, b_held); /* a's memory is counted back, b's stays */
    t_srv_stop(&f);
    assert_int_equal(o.closes, 2);
    assert_int_equal(o.enomem, 1);
    close(a), close(b);
    pkm_engine_free(ea);
    pkm_engine_free(eb);
    t_obs_done(&o);
}

/* ---- failed secret ---- */

/* Two failures of the secret ban the source: its next connection is closed without a byte,
 * another source still gets in; the ban expires and the right secret then works. */
static void failed_secret_ban_engages_and_expires(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o);
    cfg.engine.secret = (const uint8_t *)"right";
    cfg.engine.secret_len = 5;
    cfg.secret_fails = 2;
    cfg.secret_window_ms = 60000;
    cfg.secret_ban_ms = 500;
    t_srv f;
    t_srv_start(&f, &cfg, t_obs_job_hook, &o);
    int got = 0;
    for (int i = 0; i < 2; i++) {
        int fd = t_tcp_connect(f.port, "127.0.0.2", 0);
        pkm_engine_t *e = t_cli_establish(fd, "wrong", &got);
        if (e) { /* the client only learns at the server's answer: read it */
            assert_true(closed_by_server(fd));
            pkm_engine_free(e);
        }
        close(fd);
        t_obs_wait(&o, &o.closes, i + 1, "the failed handshake");
    }
    int fd = t_tcp_connect(f.port, "127.0.0.2", 0);
    pkm_engine_t *e = t_cli_establish(fd, "right", &got);
    assert_null(e);
    assert_int_equal(got, 0); /* banned: not a byte */
    close(fd);
    pkm_server_stats_t st;
    pkm_server_stats(f.srv, &st);
    assert_int_equal(st.refused, 1);
    fd = t_tcp_connect(f.port, "127.0.0.1", 0); /* another source */
    e = t_cli_establish(fd, "right", &got);
    assert_non_null(e);
    pkm_engine_free(e);
    close(fd);
    /* The ban expires: retry until the server answers again (bounded, not timed). */
    int ok = 0;
    for (int i = 0; i < 400 && !ok; i++) {
        tcl_sleep_ms(50);
        fd = t_tcp_connect(f.port, "127.0.0.2", 0);
        e = t_cli_establish(fd, "right", &got);
        if (e) {
            ok = 1;
            pkm_engine_free(e);
        }
        close(fd);
    }
    assert_true(ok);
    t_srv_stop(&f);
    t_obs_done(&o);
}

int main(void)
{
    /* One pool thread, before libuv starts its pool. */
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(admission_caps_hold_under_a_burst),
        cmocka_unit_test(admission_refuses_past_the_queue),
        cmocka_unit_test(per_source_connection_cap),
        cmocka_unit_test(per_source_connection_rate),
        cmocka_unit_test(accept_burst_beyond_one_turn),
        cmocka_unit_test(partial_packet_deadline),
        cmocka_unit_test(partial_packet_budget),
        cmocka_unit_test(failed_secret_ban_engages_and_expires),
    };
    return cmocka_run_group_tests(tests, t_keys_setup, t_keys_teardown);
}
