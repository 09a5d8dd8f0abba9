/* SPDX-License-Identifier: MIT */
/* Test helper (server_fixture.h): the server-on-a-thread fixture, the callback observer and the
 * blocking client shared by the test_server* programs. */
#include "support/server_fixture.h"
#include "support.h"
#include "support/clients.h"
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* ---- the server on a thread ---- */

static void *srv_thread(void *arg)
{
    t_srv *s = arg;
    s->run_rc = pkm_server_run(s->srv);
    return NULL;
}

void t_srv_config(pkm_server_config_t *cfg, pkm_key_t *key)
{
    pkm_server_config_init(cfg);
    cfg->loops = t_server_loops();
    cfg->host = "127.0.0.1";
    cfg->engine.server_key = key;
}

void t_srv_new(t_srv *s, const pkm_server_config_t *cfg, pkm__job_hook_fn hook, void *hook_ctx)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(pkm_server_new(cfg, &s->srv), 0);
    if (hook) pkm__server_set_job_hook(s->srv, hook, hook_ctx);
    s->port = pkm_server_port(s->srv);
}

void t_srv_run(t_srv *s)
{
    assert_int_equal(pthread_create(&s->th, NULL, srv_thread, s), 0);
}

void t_srv_start(t_srv *s, const pkm_server_config_t *cfg, pkm__job_hook_fn hook, void *hook_ctx)
{
    t_srv_new(s, cfg, hook, hook_ctx);
    t_srv_run(s);
}

void t_srv_join(t_srv *s)
{
    assert_int_equal(pthread_join(s->th, NULL), 0);
    assert_int_equal(s->run_rc, 0);
    pkm_server_free(s->srv);
    s->srv = NULL;
}

void t_srv_stop(t_srv *s)
{
    pkm_server_stop(s->srv);
    t_srv_join(s);
}

void t_srv_echo(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt)
{
    (void)user;
    (void)pkm_server_send(conn, pkt->id, pkt->hash, pkt->content, pkt->size);
}

void t_srv_log_warnings(void *user, int level, const char *msg)
{
    (void)user;
    if (level <= PKM_LOG_WARN) fprintf(stderr, "server log: %s\n", msg);
}

void t_srv_wait_stat(pkm_server_t *srv, t_stat_fn f, uint64_t n, const char *what)
{
    pkm_server_stats_t st;
    for (int i = 0; i < 4000; i++) {
        pkm_server_stats(srv, &st);
        if (f(&st) == n) return;
        tcl_sleep_ms(5);
    }
    fail_msg("waited in vain for %s to be %llu (it is %llu)", what, (unsigned long long)n,
             (unsigned long long)f(&st));
}

uint64_t t_st_refused(const pkm_server_stats_t *st)
{
    return st->refused;
}

/* ---- the observer ---- */

void t_obs_init(t_obs *o, int gate_open)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    o->gate_open = gate_open;
}

void t_obs_done(t_obs *o)
{
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
}

void t_obs_job_hook(void *ctx, int event)
{
    t_obs *o = ctx;
    pthread_mutex_lock(&o->mu);
    switch (event) {
    case PKM__JOB_QUEUED: o->queued++; break;
    case PKM__JOB_RUN:
        o->run++;
        while (!o->gate_open)
            pthread_cond_wait(&o->cv, &o->mu);
        break;
    case PKM__JOB_CANCELLED: o->cancelled++; break;
    case PKM__JOB_ORPHANED: o->orphaned++; break;
    }
    pthread_mutex_unlock(&o->mu);
}

void t_obs_open_gate(t_obs *o)
{
    pthread_mutex_lock(&o->mu);
    o->gate_open = 1;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

int t_obs_get(t_obs *o, const int *field)
{
    pthread_mutex_lock(&o->mu);
    int v = *field;
    pthread_mutex_unlock(&o->mu);
    return v;
}

void t_obs_wait(t_obs *o, const int *field, int n, const char *what)
{
    for (int i = 0; i < 4000; i++) {
        if (t_obs_get(o, field) >= n) return;
        tcl_sleep_ms(5);
    }
    fail_msg("waited in vain for %s to reach %d", what, n);
}

void t_obs_peer(t_obs *o, char *out)
{
    pthread_mutex_lock(&o->mu);
    memcpy(out, o->peer, sizeof o->peer);
    pthread_mutex_unlock(&o->mu);
}

void t_obs_reset_logs(t_obs *o)
{
    pthread_mutex_lock(&o->mu);
    o->logs = o->proxy_logs = 0;
    pthread_mutex_unlock(&o->mu);
}

static void obs_on_connect(void *user, pkm_server_conn_t *conn)
{
    t_obs *o = user;
    pthread_mutex_lock(&o->mu);
    o->connects++;
    assert_true(pkm_server_conn_peer(conn, o->peer, sizeof o->peer) > 0);
    pthread_mutex_unlock(&o->mu);
}

static void obs_on_close(void *user, pkm_server_conn_t *conn, int err, const char *step)
{
    t_obs *o = user;
    (void)step;
    pthread_mutex_lock(&o->mu);
    o->closes++;
    if (err) {
        o->close_errs++;
        o->last_err_port = conn->peer_port;
    }
    if (err == PKM_ENOMEM) o->enomem++;
    if (err == PKM_ETIMEOUT) o->etimeout++;
    if (err == PKM_EAGAIN) o->eagain++;
    pthread_mutex_unlock(&o->mu);
}

static void obs_on_log(void *user, int level, const char *msg)
{
    t_obs *o = user;
    (void)level;
    pthread_mutex_lock(&o->mu);
    o->logs++;
    if (strstr(msg, "PROXY")) o->proxy_logs++;
    snprintf(o->last_log, sizeof o->last_log, "%s", msg);
    pthread_mutex_unlock(&o->mu);
}

void t_obs_config(pkm_server_config_t *cfg, t_obs *o, unsigned what)
{
    cfg->on_close = obs_on_close;
    cfg->user = o;
    if (what & T_OBS_ECHO) cfg->on_packet = t_srv_echo;
    if (what & T_OBS_CONNECT) cfg->on_connect = obs_on_connect;
    if (what & T_OBS_LOG) cfg->on_log = obs_on_log;
}

/* ---- a blocking client ---- */

void t_cli_send_all(pkm_engine_t *e, int fd)
{
    size_t len = 0;
    const uint8_t *out;
    while ((out = pkm_engine_send_buf(e, &len)) != NULL && len) {
        ssize_t n = send(fd, out, len, MSG_NOSIGNAL);
        if (n <= 0) return;
        pkm_engine_send_ack(e, (size_t)n);
    }
}

ssize_t t_cli_recv_once(pkm_engine_t *e, int fd)
{
    size_t cap = 0;
    uint8_t *p = pkm_engine_recv_buf(e, &cap);
    if (!p) return -1;
    ssize_t n = recv(fd, p, cap, 0);
    if (n > 0 && pkm_engine_recv_ack(e, (size_t)n) < 0) return -1;
    return n;
}

static pkm_engine_t *new_client(const char *secret)
{
    t_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.secret = secret;
    return t_client(&t_shared_keys, &opts);
}

pkm_engine_t *t_cli_to_keyshare(int fd, const char *secret)
{
    pkm_engine_t *e = new_client(secret);
    while (!(pkm_engine_wants(e) & PKM_WANT_SEND))
        assert_true(t_cli_recv_once(e, fd) > 0);
    size_t len = 0;
    const uint8_t *out;
    while ((out = pkm_engine_send_buf(e, &len)) != NULL && len) {
        ssize_t n = send(fd, out, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        pkm_engine_send_ack(e, (size_t)n);
    }
    return e;
}

pkm_engine_t *t_cli_establish(int fd, const char *secret, int *got_bytes)
{
    pkm_engine_t *e = new_client(secret);
    if (got_bytes) *got_bytes = 0;
    for (;;) {
        t_cli_send_all(e, fd);
        int st = pkm_engine_state(e);
        if (st == PKM_STATE_ESTABLISHED) return e;
        if (st == PKM_STATE_CLOSED) break;
        if (pkm_engine_wants(e) & PKM_WANT_JOB) {
            assert_int_equal(t_run_job(e), 0);
            continue;
        }
        ssize_t n = t_cli_recv_once(e, fd);
        if (n <= 0) break;
        if (got_bytes) *got_bytes = 1;
    }
    pkm_engine_free(e);
    return NULL;
}

int t_cli_session_on(pkm_engine_t *e, int fd, int *got_bytes)
{
    if (got_bytes) *got_bytes = 0;
    int sent = 0;
    for (;;) {
        t_cli_send_all(e, fd);
        int st = pkm_engine_state(e);
        if (st == PKM_STATE_CLOSED) return 0;
        if (st == PKM_STATE_ESTABLISHED && !sent) {
            assert_int_equal(pkm_engine_queue_packet(e, 0x20, 7, (const uint8_t *)"hi", 2), 0);
            sent = 1;
            continue;
        }
        if (pkm_engine_wants(e) & PKM_WANT_JOB) {
            assert_int_equal(t_run_job(e), 0);
            continue;
        }
        if (pkm_engine_wants(e) & PKM_WANT_PACKET) {
            pkm_packet_t pkt;
            int r = pkm_engine_next_packet(e, &pkt);
            if (r < 0) return 0;
            if (r == 1) return pkt.id == 0x20 && pkt.size == 2;
            continue;
        }
        ssize_t n = t_cli_recv_once(e, fd);
        if (n <= 0) return 0;
        if (got_bytes) *got_bytes = 1;
    }
}

int t_cli_session(int fd, const char *secret, int *got_bytes)
{
    pkm_engine_t *e = new_client(secret);
    int ok = t_cli_session_on(e, fd, got_bytes);
    pkm_engine_free(e);
    return ok;
}
