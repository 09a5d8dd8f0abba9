/* SPDX-License-Identifier: MIT */
/* Tests of the libuv server (server.h): handshakes and checked echoes, wrong secrets, handshake
 * timeout, send queue overflow, the connection cap, relay, re-establishment, stop, 1,000 clients.
 */
#include "support.h"
#include "support/clients.h"
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>
#include "pkmcom/pkmcom.h"
#include "support/server_fixture.h"

static pkm_key_t *g_server_key;
static pkm_key_t *g_ckeys[2];

/* ------------------------------------------------------------------------------------------ */
/* A server on 127.0.0.1:0 in a thread, recording its callbacks                              */

enum fx_mode { FX_ECHO, FX_RELAY, FX_REKEY, FX_TYPED, FX_CROSS };

#define FX_MAX_CLOSES 64

typedef struct fx {
    t_srv s; /* the server and its thread */
    enum fx_mode mode;
    pthread_mutex_t mu;
    int connects, closes;
    int close_err[FX_MAX_CLOSES];
    char close_step[FX_MAX_CLOSES][32];
    int peer_ok; /* on_connect saw a "127.0.0.1:<port>" peer and a fingerprint */
    /* FX_CROSS: the established connections, their loops and peer ports (under mu) */
    pkm_server_conn_t *conns[FX_MAX_CLOSES];
    unsigned conn_loop[FX_MAX_CLOSES];
    uint16_t conn_port[FX_MAX_CLOSES];
    int nconns, sent_across;
} fx_t;

static void fx_on_connect(void *user, pkm_server_conn_t *conn)
{
    fx_t *f = user;
    char peer[PKM_SERVER_PEER_SIZE];
    int n = pkm_server_conn_peer(conn, peer, sizeof peer);
    const char *fp = pkm_server_conn_fingerprint(conn);
    pthread_mutex_lock(&f->mu);
    f->connects++;
    if (n > 10 && strncmp(peer, "127.0.0.1:", 10) == 0 && fp && strncmp(fp, "SHA256:", 7) == 0 &&
        pkm_server_conn_id(conn) > 0 && pkm_server_conn_established(conn) &&
        pkm_server_conn_server(conn) == f->s.srv)
        f->peer_ok++;
    if (f->nconns < FX_MAX_CLOSES) {
        f->conns[f->nconns] = conn;
        f->conn_loop[f->nconns] = pkm_server_conn_loop(conn);
        f->conn_port[f->nconns] = (uint16_t)atoi(strrchr(peer, ':') + 1);
        f->nconns++;
    }
    pthread_mutex_unlock(&f->mu);
}

static const uint8_t k_rekey_secret[] = "second secret";

/* FX_TYPED: packet 0x31 {size: Unsigned Int, tag: String}, through a registry. */
static const pkm_field_t k_typed_fields[] = {
    {.name = "size", .type = PKM_T_UINT},
    {.name = "tag", .type = PKM_T_STRING},
};
static const pkm_schema_t k_typed = {"Typed", k_typed_fields, 2};
static pkm_registry_t *g_typed_reg;
static atomic_int g_typed_errors; /* FX_TYPED: results that were not what the test expects */

static void fx_on_packet(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt)
{
    fx_t *f = user;
    switch (f->mode) {
    case FX_ECHO: pkm_server_send(conn, pkt->id, pkt->hash, pkt->content, pkt->size); break;
    case FX_RELAY:
        pkm_server_broadcast(pkm_server_conn_server(conn), conn, pkt->id, pkt->hash, pkt->content,
                             pkt->size);
        break;
    case FX_REKEY:
        /* Id 0x05 asks for a re-establishment: answer with the trigger, then rekey. */
        pkm_server_send(conn, pkt->id, pkt->hash, pkt->content, pkt->size);
        if (pkt->id == 0x05) pkm_server_conn_rekey(conn, k_rekey_secret, sizeof k_rekey_secret - 1);
        break;
    case FX_CROSS:
        if (pkt->id == 0x21) {
            pkm_server_broadcast(pkm_server_conn_server(conn), conn, pkt->id, pkt->hash,
                                 pkt->content, pkt->size);
            break;
        }
        /* 0x22: to every connection on another loop, straight from this one. A connection
         * is in the table until its on_close, which takes the lock: it is open while we hold
         * it. */
        pthread_mutex_lock(&f->mu);
        for (int i = 0; i < f->nconns; i++) {
            if (!f->conns[i] || f->conn_loop[i] == pkm_server_conn_loop(conn)) continue;
            if (pkm_server_send(f->conns[i], pkt->id, pkt->hash, pkt->content, pkt->size) == 0)
                f->sent_across++;
        }
        pthread_mutex_unlock(&f->mu);
        break;
    case FX_TYPED: {
        /* Answers with a typed 0x31 {size of the packet, "one"}, then broadcasts {size, "all"}
         * to everyone (the sender included); an encoding error sends nothing. */
        pkm_value_t v[2] = {{.u64 = pkt->size}, {.str = {"one", 3}}};
        size_t queued = 99;
        if (pkm_server_send_msg(conn, g_typed_reg, 0x31, v, 2) != 0) g_typed_errors++;
        if (pkm_server_send_msg(conn, g_typed_reg, 0x32, v, 2) != PKM_EUNKNOWNID) g_typed_errors++;
        v[0].i64 = -1; /* out of an Unsigned Int's range */
        if (pkm_server_broadcast_msg(pkm_server_conn_server(conn), NULL, g_typed_reg, 0x31, v, 2,
                                     &queued) != PKM_ERANGE ||
            queued != 0)
            g_typed_errors++;
        v[0].u64 = pkt->size;
        v[1].str = (pkm_str_t){"all", 3};
        if (pkm_server_broadcast_msg(pkm_server_conn_server(conn), NULL, g_typed_reg, 0x31, v, 2,
                                     &queued) != 0 ||
            queued != 1)
            g_typed_errors++;
        break;
    }
    }
}

static void fx_on_close(void *user, pkm_server_conn_t *conn, int err, const char *step)
{
    fx_t *f = user;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->nconns; i++)
        if (f->conns[i] == conn) f->conns[i] = NULL;
    if (f->closes < FX_MAX_CLOSES) {
        f->close_err[f->closes] = err;
        snprintf(f->close_step[f->closes], sizeof f->close_step[0], "%s", step ? step : "");
    }
    f->closes++;
    pthread_mutex_unlock(&f->mu);
}

/* Rejects packets with Id 0x66 (PKM_EHASH, as a schema check would). */
static int fx_verify(void *ctx, const pkm_packet_t *pkt)
{
    (void)ctx;
    return pkt->id == 0x66 ? PKM_EHASH : 0;
}

static void fx_config(pkm_server_config_t *cfg)
{
    t_srv_config(cfg, g_server_key);
    cfg->engine.verify = fx_verify;
    /* Under valgrind every thread shares one core and RSA is ~50x slower. */
    if (t_under_valgrind()) cfg->handshake_timeout_ms = 600000;
}

static void fx_start(fx_t *f, pkm_server_config_t *cfg, enum fx_mode mode)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->mode = mode;
    cfg->on_connect = fx_on_connect;
    cfg->on_packet = fx_on_packet;
    cfg->on_close = fx_on_close;
    cfg->on_log = t_srv_log_warnings;
    cfg->user = f;
    t_srv_new(&f->s, cfg, NULL, NULL);
    assert_true(pkm_server_port(f->s.srv) > 0);
    assert_ptr_equal(pkm_server_user(f->s.srv), f);
    t_srv_run(&f->s);
}

static void fx_stop(fx_t *f)
{
    pkm_server_stop(f->s.srv);
    t_srv_stop(&f->s); /* stops it again (twice is fine), joins and frees it */
    /* (f->mu stays usable: tests read the recorded closes after the stop) */
}

static pkm_server_stats_t fx_stats(fx_t *f)
{
    pkm_server_stats_t s;
    pkm_server_stats(f->s.srv, &s);
    return s;
}

/* Waits (up to 20 s) until the server has closed `n` connections in all. */
static void fx_wait_closes(fx_t *f, int n)
{
    for (int i = 0; i < 4000; i++) {
        pthread_mutex_lock(&f->mu);
        int c = f->closes;
        pthread_mutex_unlock(&f->mu);
        if (c >= n) return;
        tcl_sleep_ms(5);
    }
    fail_msg("the server closed fewer than %d connections", n);
}

static void fx_wait_established(fx_t *f, uint64_t n)
{
    for (int i = 0; i < 4000; i++) {
        if (fx_stats(f).conns_established >= n) return;
        tcl_sleep_ms(5);
    }
    fail_msg("fewer than %llu connections established", (unsigned long long)n);
}

/* How many recorded closes have this error (and step, if step is not NULL). */
static int fx_count_closes(fx_t *f, int err, const char *step)
{
    int n = 0;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->closes && i < FX_MAX_CLOSES; i++)
        if (f->close_err[i] == err && (!step || strcmp(f->close_step[i], step) == 0)) n++;
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* A blocking client (one engine over a blocking socket), for the special cases               */

typedef struct sc {
    int fd;
    pkm_engine_t *e;
} sc_t;

/* Waits up to 10 s for fd to be readable; 1 if readable. */
static int wait_readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 10000) == 1;
}

static int sc_flush(sc_t *c)
{
    size_t len;
    const uint8_t *p;
    while ((p = pkm_engine_send_buf(c->e, &len)) != NULL) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) return PKM_EIO;
        pkm_engine_send_ack(c->e, (size_t)n);
    }
    return 0;
}

/* Reads once from the socket into the engine. */
static int sc_read(sc_t *c)
{
    if (!wait_readable(c->fd)) return PKM_ETIMEOUT;
    size_t cap;
    uint8_t *p = pkm_engine_recv_buf(c->e, &cap);
    if (!p) return pkm_engine_error(c->e) ? pkm_engine_error(c->e) : PKM_EINTERNAL;
    ssize_t n = recv(c->fd, p, cap, 0);
    if (n < 0) return PKM_EIO;
    if (n == 0) return pkm_engine_recv_eof(c->e) < 0 ? pkm_engine_error(c->e) : PKM_EEOF;
    return pkm_engine_recv_ack(c->e, (size_t)n);
}

/* Connects and runs the handshake; returns 0 when established or the error. */
static int sc_connect(uint16_t port, const char *secret, int rcvbuf, sc_t *c)
{
    pkm_engine_config_t ec;
    pkm_engine_config_init(&ec, PKM_ROLE_CLIENT);
    ec.client_key = pkm_key_ref(g_ckeys[1]);
    if (secret) {
        ec.secret = (const uint8_t *)secret;
        ec.secret_len = strlen(secret);
    }
    c->fd = t_tcp_connect_rcvbuf(port, NULL, 0, rcvbuf);
    assert_int_equal(pkm_engine_new(&ec, &c->e), 0);
    for (;;) {
        int r = sc_flush(c);
        if (r < 0) return r;
        if (pkm_engine_state(c->e) == PKM_STATE_ESTABLISHED) return 0;
        if ((r = sc_read(c)) < 0) return r;
    }
}

static void sc_close(sc_t *c)
{
    close(c->fd);
    pkm_engine_free(c->e);
}

static int sc_send(sc_t *c, uint8_t id, const uint8_t *p, size_t n)
{
    int r = pkm_engine_queue_packet(c->e, id, pkm_packet_hash(id, pkm_hashsum_bytes(p, n)), p, n);
    return r < 0 ? r : sc_flush(c);
}

/* Next packet (content valid until the next call on the engine). */
static int sc_recv(sc_t *c, pkm_packet_t *pkt)
{
    for (;;) {
        int r = pkm_engine_next_packet(c->e, pkt);
        if (r != 0) return r;
        if ((r = sc_read(c)) < 0) return r;
    }
}

/* 1 when the server closed the socket (EOF or reset) within 10 s. */
static int closed_by_peer(int fd)
{
    uint8_t buf[4096];
    for (;;) {
        if (!wait_readable(fd)) return 0;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) return 1;
        if (n < 0) return 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Runs tcl clients against the server                                                         */

static tcl_result_t run_clients(uint16_t port, size_t n, size_t echoes, size_t payload,
                                const char *secret)
{
    tcl_opts_t o;
    memset(&o, 0, sizeof o);
    o.port = port;
    o.nclients = n;
    o.keys = g_ckeys;
    o.nkeys = 2;
    o.echoes = echoes;
    o.payload = payload;
    o.ready_fd = o.release_fd = -1;
    o.timeout_ms = t_under_valgrind() ? 600000 : 120000;
    if (secret) {
        o.secret = (const uint8_t *)secret;
        o.secret_len = strlen(secret);
    }
    tcl_result_t res;
    assert_int_equal(tcl_run(&o, &res), 0);
    return res;
}

/* ------------------------------------------------------------------------------------------ */
/* Tests                                                                                      */

static int group_setup(void **state)
{
    (void)state;
    if (pkm_key_generate(&g_server_key) != 0) return -1;
    for (int i = 0; i < 2; i++)
        if (pkm_key_generate(&g_ckeys[i]) != 0) return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pkm_key_free(g_server_key);
    pkm_key_free(g_ckeys[0]);
    pkm_key_free(g_ckeys[1]);
    tcl_pool_thread_cleanup();
    return 0;
}

/* Engine trim (the server's idle sweep): buffers go, the connection keeps working. */
static void test_engine_trim(void **state)
{
    (void)state;
    pkm_engine_config_t sc, cc;
    pkm_engine_t *s, *c;
    pkm_engine_config_init(&sc, PKM_ROLE_SERVER);
    sc.server_key = g_server_key;
    pkm_engine_config_init(&cc, PKM_ROLE_CLIENT);
    cc.client_key = pkm_key_ref(g_ckeys[0]);
    assert_int_equal(pkm_engine_new(&sc, &s), 0);
    assert_int_equal(pkm_engine_new(&cc, &c), 0);
    pkm_engine_trim(s); /* ServerKey is unsent: the send buffer stays */
    for (int i = 0; i < 8; i++) {
        size_t n;
        const uint8_t *p;
        if ((p = pkm_engine_send_buf(s, &n))) {
            assert_int_equal(pkm_engine_feed(c, p, n), 0);
            pkm_engine_send_ack(s, n);
        }
        if ((p = pkm_engine_send_buf(c, &n))) {
            assert_int_equal(pkm_engine_feed(s, p, n), 0);
            pkm_engine_send_ack(c, n);
        }
    }
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    pkm_engine_trim(s);
    pkm_engine_trim(c);
    pkm_engine_trim(NULL);
    size_t n;
    assert_null(pkm_engine_send_buf(s, &n));
    const uint8_t msg[3] = {1, 2, 3};
    assert_int_equal(pkm_engine_queue_packet(c, 0x10, 7, msg, 3), 0);
    const uint8_t *p = pkm_engine_send_buf(c, &n);
    assert_int_equal(n, 16); /* ((9 + 3) / 16 + 1) * 16 */
    /* Half a packet stays buffered through a trim. */
    assert_int_equal(pkm_engine_feed(s, p, 8), 0);
    pkm_engine_trim(s);
    assert_int_equal(pkm_engine_feed(s, p + 8, 8), 0);
    pkm_engine_send_ack(c, n);
    pkm_packet_t pkt;
    assert_int_equal(pkm_engine_next_packet(s, &pkt), 1);
    assert_int_equal(pkt.id, 0x10);
    assert_int_equal(pkt.size, 3);
    assert_memory_equal(pkt.content, msg, 3);
    pkm_engine_free(s);
    pkm_engine_free(c);
}

static void test_config_errors(void **state)
{
    (void)state;
    pkm_server_config_t cfg;
    pkm_server_t *srv = (pkm_server_t *)&cfg;
    pkm_server_config_init(&cfg);
    assert_int_equal(cfg.handshake_timeout_ms, 10000);
    assert_int_equal(cfg.engine.role, PKM_ROLE_SERVER);
    assert_int_equal(cfg.engine.max_packet_size, PKM_DEFAULT_MAX_SIZE);
    assert_int_equal(cfg.engine.max_send_buffer, PKM_SERVER_DEFAULT_MAX_SEND_BUFFER);
    assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EINVAL); /* no key */
    assert_null(srv);
    assert_int_equal(pkm_server_new(NULL, &srv), PKM_EINVAL);
    fx_config(&cfg);
    cfg.engine.max_packet_size = 0;
    assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EINVAL);
    fx_config(&cfg);
    cfg.engine.max_send_buffer = 0;
    assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EINVAL);
    fx_config(&cfg);
    cfg.engine.pin_fingerprint = "SHA256:"; /* a client-only field */
    assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EINVAL);
    fx_config(&cfg);
    cfg.idle_timeout_ms = -1;
    assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EINVAL);
    fx_config(&cfg);
    cfg.trim_after_ms = -5;
    assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EINVAL);
    pkm_key_t *pub = NULL;
    uint8_t der[PKM_MAX_KEY_DER];
    int dl = pkm_key_public_der(g_server_key, der, sizeof der);
    assert_true(dl > 0);
    assert_int_equal(pkm_key_from_der(der, (size_t)dl, &pub), 0);
    fx_config(&cfg);
    cfg.engine.server_key = pub; /* public only */
    assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EINVAL);
    pkm_key_free(pub);
    fx_config(&cfg);
    cfg.host = "no such host.invalid";
    cfg.on_log = t_srv_log_warnings;
    assert_int_equal(pkm_server_new(&cfg, &srv), PKM_ERESOLVE);

    /* The port is known on return; a second bind to it fails with PKM_EIO. */
    pkm_server_t *a = NULL, *b = NULL;
    fx_config(&cfg);
    assert_int_equal(pkm_server_new(&cfg, &a), 0);
    cfg.port = pkm_server_port(a);
    assert_true(cfg.port > 0);
    cfg.on_log = NULL; /* the bind failure goes to stderr */
    assert_int_equal(pkm_server_new(&cfg, &b), PKM_EIO);
    /* Stop before run: run returns at once, and a second run is refused. */
    pkm_server_stop(a);
    assert_int_equal(pkm_server_run(a), 0);
    assert_int_equal(pkm_server_run(a), PKM_ESTATE);
    pkm_server_free(a);
    pkm_server_free(NULL);
    pkm_server_stop(NULL);
}

/* Full handshakes and echoes, every reply checked; the server counts what it saw. */
static void test_echo(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    fx_start(&f, &cfg, FX_ECHO);
    tcl_result_t r = run_clients(pkm_server_port(f.s.srv), 4, 5, 300, NULL);
    assert_int_equal(r.established, 4);
    assert_int_equal(r.echoed, 4);
    assert_int_equal(r.failed, 0);
    fx_wait_closes(&f, 4);
    pkm_server_stats_t s = fx_stats(&f);
    assert_int_equal(s.accepted, 4);
    assert_int_equal(s.handshakes_ok, 4);
    assert_int_equal(s.handshakes_failed, 0);
    assert_int_equal(s.packets_in, 20);
    assert_int_equal(s.packets_out, 20);
    /* Each packet: ((9 + 300) / 16 + 1) * 16 = 320 bytes each way, plus the handshakes. */
    assert_true(s.bytes_in > 20 * 320 && s.bytes_out > 20 * 320);
    assert_int_equal(s.conns_open, 0);
    assert_int_equal(f.connects, 4);
    assert_int_equal(f.peer_ok, 4);
    /* The clients closed cleanly after their last reply. */
    assert_int_equal(fx_count_closes(&f, PKM_EEOF, ""), 4);
    fx_stop(&f);
}

/* Can this machine use IPv6 loopback? (Containers often lack it.) */
static int have_ipv6_loopback(void)
{
    int s = socket(AF_INET6, SOCK_STREAM, 0);
    if (s < 0) return 0;
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    int ok = bind(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

/* NULL host means what it means for pkm_listen: every interface, dual-stack where IPv6 exists.
 * IPv4 clients are then reported as IPv4 ("127.0.0.1:port", not "[::ffff:127.0.0.1]:port"). */
static void test_any_host(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    cfg.host = NULL;
    fx_start(&f, &cfg, FX_ECHO);
    tcl_result_t r = run_clients(pkm_server_port(f.s.srv), 2, 1, 10, NULL);
    assert_int_equal(r.established, 2);
    fx_wait_closes(&f, 2);
    assert_int_equal(f.peer_ok, 2);
    if (have_ipv6_loopback()) {
        int s = socket(AF_INET6, SOCK_STREAM, 0);
        assert_true(s >= 0);
        struct sockaddr_in6 a;
        memset(&a, 0, sizeof a);
        a.sin6_family = AF_INET6;
        a.sin6_addr = in6addr_loopback;
        a.sin6_port = htons(pkm_server_port(f.s.srv));
        assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof a), 0);
        close(s);
        int i = 0;
        while (fx_stats(&f).accepted < 3 && i++ < 4000)
            tcl_sleep_ms(5);
        assert_int_equal(fx_stats(&f).accepted, 3); /* the server took it: dual-stack */
    }
    fx_stop(&f);
}

/* A client with the wrong secret fails at step 5; the server goes on serving others. */
static void test_wrong_secret(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    cfg.engine.secret = (const uint8_t *)"right";
    cfg.engine.secret_len = 5;
    fx_start(&f, &cfg, FX_ECHO);
    tcl_result_t bad = run_clients(pkm_server_port(f.s.srv), 1, 1, 10, "wrong");
    assert_int_equal(bad.established, 0);
    assert_int_equal(bad.failed, 1);
    fx_wait_closes(&f, 1);
    assert_int_equal(fx_count_closes(&f, PKM_EHANDSHAKE, "confirmation (0xFF)"), 1);
    tcl_result_t good = run_clients(pkm_server_port(f.s.srv), 3, 2, 50, "right");
    assert_int_equal(good.established, 3);
    assert_int_equal(good.echoed, 3);
    fx_wait_closes(&f, 4);
    pkm_server_stats_t s = fx_stats(&f);
    assert_int_equal(s.handshakes_failed, 1);
    assert_int_equal(s.handshakes_ok, 3);
    fx_stop(&f);
}

/* A silent client is closed by the handshake timeout while others are served meanwhile. */
static void test_handshake_timeout(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    cfg.handshake_timeout_ms = t_under_valgrind() ? 3000 : 300;
    fx_start(&f, &cfg, FX_ECHO);
    int silent = t_tcp_connect(pkm_server_port(f.s.srv), NULL, 0);
    tcl_result_t r = run_clients(pkm_server_port(f.s.srv), 2, 3, 20, NULL);
    assert_int_equal(r.echoed, 2);
    assert_true(closed_by_peer(silent)); /* after it received the ServerKey */
    close(silent);
    fx_wait_closes(&f, 3);
    assert_int_equal(fx_count_closes(&f, PKM_ETIMEOUT, "ClientKey"), 1);
    pkm_server_stats_t s = fx_stats(&f);
    assert_int_equal(s.timeouts, 1);
    assert_int_equal(s.handshakes_failed, 1);
    assert_int_equal(s.handshakes_ok, 2);
    fx_stop(&f);
}

/* A client that sends but never reads overflows its bounded send queue and is dropped. */
typedef struct flood {
    uint16_t port;
    int established, write_failed;
    size_t sent_bytes;
} flood_t;

static void *flood_thread(void *arg)
{
    flood_t *fl = arg;
    sc_t c;
    if (sc_connect(fl->port, NULL, 4096, &c) != 0) return NULL;
    fl->established = 1;
    static uint8_t payload[16384];
    memset(payload, 0x5A, sizeof payload);
    /* At most 512 MiB: the server must drop us long before (its queue is 64 KiB). */
    while (fl->sent_bytes < (512u << 20)) {
        if (pkm_engine_queue_packet(c.e, 0x30, 0, payload, sizeof payload) < 0) break;
        struct pollfd p = {c.fd, POLLOUT, 0};
        if (poll(&p, 1, 10000) != 1 || sc_flush(&c) < 0) {
            fl->write_failed = 1;
            break;
        }
        fl->sent_bytes += sizeof payload;
    }
    sc_close(&c);
    return NULL;
}

static void test_send_queue_overflow(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    cfg.engine.max_send_buffer = 64 * 1024;
    fx_start(&f, &cfg, FX_ECHO);
    flood_t fl = {pkm_server_port(f.s.srv), 0, 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, flood_thread, &fl), 0);
    tcl_result_t r = run_clients(pkm_server_port(f.s.srv), 2, 5, 1000, NULL);
    assert_int_equal(r.echoed, 2);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(fl.established);
    assert_true(fl.write_failed);
    fx_wait_closes(&f, 3);
    assert_int_equal(fx_count_closes(&f, PKM_EQUEUE, ""), 1);
    assert_int_equal(fx_stats(&f).dropped_queue, 1);
    fx_stop(&f);
}

/* max_conns: the connection beyond the cap is closed at once; room frees up when one closes. */
static void test_max_conns(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    cfg.max_conns = 2;
    fx_start(&f, &cfg, FX_ECHO);
    uint16_t port = pkm_server_port(f.s.srv);
    sc_t a, b;
    assert_int_equal(sc_connect(port, NULL, 0, &a), 0);
    assert_int_equal(sc_connect(port, NULL, 0, &b), 0);
    int third = t_tcp_connect(port, NULL, 0);
    assert_true(closed_by_peer(third));
    close(third);
    assert_int_equal(fx_stats(&f).rejected, 1);
    /* The two admitted ones still work. */
    const uint8_t msg[5] = {'h', 'e', 'l', 'l', 'o'};
    pkm_packet_t pkt;
    assert_int_equal(sc_send(&b, 0x11, msg, 5), 0);
    assert_int_equal(sc_recv(&b, &pkt), 1);
    assert_memory_equal(pkt.content, msg, 5);
    sc_close(&a);
    fx_wait_closes(&f, 1);
    tcl_result_t r = run_clients(port, 1, 1, 5, NULL);
    assert_int_equal(r.echoed, 1);
    sc_close(&b);
    fx_wait_closes(&f, 3);
    assert_int_equal(fx_stats(&f).rejected, 1);
    fx_stop(&f);
}

/* Relay (broadcast to every other client): A's packet reaches B, not A. */
static void test_relay(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    fx_start(&f, &cfg, FX_RELAY);
    uint16_t port = pkm_server_port(f.s.srv);
    sc_t a, b;
    assert_int_equal(sc_connect(port, NULL, 0, &a), 0);
    assert_int_equal(sc_connect(port, NULL, 0, &b), 0);
    fx_wait_established(&f, 2);
    const uint8_t ma[3] = {'A', 'A', 'A'}, mb[2] = {'B', 'B'};
    pkm_packet_t pkt;
    assert_int_equal(sc_send(&a, 0x21, ma, 3), 0);
    assert_int_equal(sc_recv(&b, &pkt), 1);
    assert_int_equal(pkt.id, 0x21);
    assert_int_equal(pkt.size, 3);
    assert_memory_equal(pkt.content, ma, 3);
    assert_int_equal(sc_send(&b, 0x22, mb, 2), 0);
    /* A's first packet is B's: its own was not sent back to it. */
    assert_int_equal(sc_recv(&a, &pkt), 1);
    assert_int_equal(pkt.id, 0x22);
    assert_memory_equal(pkt.content, mb, 2);
    sc_close(&a);
    sc_close(&b);
    fx_wait_closes(&f, 2);
    fx_stop(&f);
}

/* Server-initiated re-establishment with a new secret, then packets under the new key. */
static void test_rekey(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    fx_start(&f, &cfg, FX_REKEY);
    sc_t c;
    assert_int_equal(sc_connect(pkm_server_port(f.s.srv), NULL, 0, &c), 0);
    const uint8_t trig[1] = {0};
    pkm_packet_t pkt;
    assert_int_equal(sc_send(&c, 0x05, trig, 1), 0);
    assert_int_equal(sc_recv(&c, &pkt), 1);
    assert_int_equal(pkt.id, 0x05);
    assert_int_equal(pkm_engine_rekey(c.e, k_rekey_secret, sizeof k_rekey_secret - 1), 0);
    while (pkm_engine_state(c.e) == PKM_STATE_REKEYING) {
        assert_int_equal(sc_flush(&c), 0);
        if (pkm_engine_state(c.e) != PKM_STATE_REKEYING) break;
        assert_int_equal(sc_read(&c), 0);
    }
    assert_int_equal(pkm_engine_state(c.e), PKM_STATE_ESTABLISHED);
    const uint8_t msg[4] = {9, 8, 7, 6};
    assert_int_equal(sc_send(&c, 0x06, msg, 4), 0);
    assert_int_equal(sc_recv(&c, &pkt), 1);
    assert_int_equal(pkt.id, 0x06);
    assert_memory_equal(pkt.content, msg, 4);
    sc_close(&c);
    fx_wait_closes(&f, 1);
    assert_int_equal(fx_count_closes(&f, PKM_EEOF, ""), 1);
    fx_stop(&f);
}

/* Stop from another thread: established and handshaking connections are all closed, run
 * returns 0, on_close ran for each with err 0. */
static void test_stop(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    fx_start(&f, &cfg, FX_ECHO);
    uint16_t port = pkm_server_port(f.s.srv);
    sc_t a, b;
    assert_int_equal(sc_connect(port, NULL, 0, &a), 0);
    assert_int_equal(sc_connect(port, NULL, 0, &b), 0);
    int silent = t_tcp_connect(port, NULL, 0);
    fx_wait_established(&f, 2);
    for (int i = 0; i < 4000 && fx_stats(&f).conns_open < 3; i++)
        tcl_sleep_ms(5);
    assert_int_equal(fx_stats(&f).conns_open, 3);
    fx_stop(&f); /* joins: run returned 0 */
    assert_int_equal(f.closes, 3);
    assert_int_equal(fx_count_closes(&f, 0, ""), 3);
    assert_true(closed_by_peer(a.fd));
    assert_true(closed_by_peer(b.fd));
    assert_true(closed_by_peer(silent));
    close(silent);
    sc_close(&a);
    sc_close(&b);
}

/* An established client that sends nothing is closed by the idle timeout (no fail step). */
static void test_idle_timeout(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    cfg.idle_timeout_ms = t_under_valgrind() ? 3000 : 300;
    cfg.trim_after_ms = 100; /* trimmed first, then timed out from the trimmed list */
    fx_start(&f, &cfg, FX_ECHO);
    sc_t c;
    assert_int_equal(sc_connect(pkm_server_port(f.s.srv), NULL, 0, &c), 0);
    const uint8_t msg[2] = {1, 2};
    pkm_packet_t pkt;
    assert_int_equal(sc_send(&c, 0x01, msg, 2), 0);
    assert_int_equal(sc_recv(&c, &pkt), 1);
    assert_true(closed_by_peer(c.fd));
    fx_wait_closes(&f, 1);
    assert_int_equal(fx_count_closes(&f, PKM_ETIMEOUT, ""), 1);
    assert_int_equal(fx_stats(&f).timeouts, 1);
    assert_int_equal(fx_stats(&f).handshakes_failed, 0);
    sc_close(&c);
    fx_stop(&f);
}

/* The verify hook's error closes the connection with that error. */
static void test_verify_hook(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    fx_start(&f, &cfg, FX_ECHO);
    sc_t c;
    assert_int_equal(sc_connect(pkm_server_port(f.s.srv), NULL, 0, &c), 0);
    const uint8_t msg[1] = {7};
    assert_int_equal(sc_send(&c, 0x66, msg, 1), 0);
    assert_true(closed_by_peer(c.fd));
    fx_wait_closes(&f, 1);
    assert_int_equal(fx_count_closes(&f, PKM_EHASH, ""), 1);
    sc_close(&c);
    fx_stop(&f);
}

/* A send queue below the largest accepted packet's encrypted size is logged at creation; the
 * defaults are consistent (no such line). */
static int g_queue_warnings;
static void count_queue_warning(void *user, int level, const char *msg)
{
    (void)user;
    if (level == PKM_LOG_WARN && strstr(msg, "max_send_buffer")) g_queue_warnings++;
}

static void test_send_queue_default(void **state)
{
    (void)state;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    cfg.on_log = count_queue_warning;
    assert_true(cfg.engine.max_send_buffer >= pkm_engine_wire_size(cfg.engine.max_packet_size));
    pkm_server_t *srv = NULL;
    g_queue_warnings = 0;
    assert_int_equal(pkm_server_new(&cfg, &srv), 0);
    pkm_server_free(srv);
    assert_int_equal(g_queue_warnings, 0);
    cfg.engine.max_send_buffer = cfg.engine.max_packet_size; /* L(Size) is larger than Size */
    assert_int_equal(pkm_server_new(&cfg, &srv), 0);
    pkm_server_free(srv);
    assert_int_equal(g_queue_warnings, 1);
}

/* pkm_server_send_msg and pkm_server_broadcast_msg: typed packets that pass the registry's
 * verification on the client's side, and encoding errors that send nothing. */
static void test_typed_send(void **state)
{
    (void)state;
    g_typed_reg = pkm_registry_new();
    assert_non_null(g_typed_reg);
    assert_int_equal(pkm_registry_register(g_typed_reg, 0x31, &k_typed), 0);
    g_typed_errors = 0;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    fx_start(&f, &cfg, FX_TYPED);
    sc_t c;
    assert_int_equal(sc_connect(pkm_server_port(f.s.srv), NULL, 0, &c), 0);
    const uint8_t msg[4] = {1, 2, 3, 4};
    assert_int_equal(sc_send(&c, 0x10, msg, 4), 0);
    const char *tags[2] = {"one", "all"};
    for (int i = 0; i < 2; i++) {
        pkm_packet_t pkt;
        assert_int_equal(sc_recv(&c, &pkt), 1);
        assert_int_equal(pkt.id, 0x31);
        assert_int_equal(pkm_registry_verify_hook(g_typed_reg, &pkt), 0); /* Hash included */
        pkm_msg_t *m = NULL;
        assert_int_equal(pkm_registry_decode(g_typed_reg, &pkt, &m), 0);
        assert_int_equal(pkm_msg_get(m, "size")->u64, 4);
        assert_string_equal(pkm_msg_get(m, "tag")->str.ptr, tags[i]);
        pkm_msg_free(m);
    }
    assert_int_equal(g_typed_errors, 0);
    assert_int_equal(fx_stats(&f).packets_out, 2);
    sc_close(&c);
    fx_wait_closes(&f, 1);
    fx_stop(&f);
    pkm_registry_free(g_typed_reg);
    g_typed_reg = NULL;
}

/* A client that sends its packets and shuts down its sending side still gets every reply
 * before the server closes (PKM_EEOF). With trim_after_ms 0 the buffers go after every turn. */
static void test_half_close(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    cfg.trim_after_ms = 0;
    fx_start(&f, &cfg, FX_ECHO);
    sc_t c;
    assert_int_equal(sc_connect(pkm_server_port(f.s.srv), NULL, 0, &c), 0);
    static uint8_t big[40000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 13);
    for (int i = 0; i < 3; i++)
        assert_int_equal(sc_send(&c, (uint8_t)(0x40 + i), big, sizeof big - (size_t)i), 0);
    assert_int_equal(shutdown(c.fd, SHUT_WR), 0);
    pkm_packet_t pkt;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sc_recv(&c, &pkt), 1);
        assert_int_equal(pkt.id, 0x40 + i);
        assert_int_equal(pkt.size, sizeof big - (size_t)i);
        assert_memory_equal(pkt.content, big, sizeof big - (size_t)i);
    }
    assert_int_equal(sc_recv(&c, &pkt), PKM_EEOF);
    fx_wait_closes(&f, 1);
    assert_int_equal(fx_count_closes(&f, PKM_EEOF, ""), 1);
    sc_close(&c);
    fx_stop(&f);
}

/* Bad handshake bytes: a ClientKey length out of range fails at "ClientKey" (PKM_EKEYLEN), an
 * early disconnect at "ClientKey" (PKM_EEOF: the client closed). Neither disturbs the server. */
static void test_bad_handshake(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    fx_start(&f, &cfg, FX_ECHO);
    uint16_t port = pkm_server_port(f.s.srv);
    int fd = t_tcp_connect(port, NULL, 0);
    const uint8_t bad_len[4] = {0x00, 0x00, 0x04, 0x01}; /* 1025 > 1024 */
    assert_int_equal(send(fd, bad_len, 4, MSG_NOSIGNAL), 4);
    assert_true(closed_by_peer(fd));
    close(fd);
    fd = t_tcp_connect(port, NULL, 0);
    close(fd);
    fx_wait_closes(&f, 2);
    assert_int_equal(fx_count_closes(&f, PKM_EKEYLEN, "ClientKey"), 1);
    assert_int_equal(fx_count_closes(&f, PKM_EEOF, "ClientKey") +
                         fx_count_closes(&f, PKM_ECONNRESET, "ClientKey"),
                     1);
    tcl_result_t r = run_clients(port, 1, 1, 1, NULL);
    assert_int_equal(r.echoed, 1);
    assert_int_equal(fx_stats(&f).handshakes_failed, 2);
    fx_stop(&f);
}

/* 1,000 concurrent clients through full handshakes and echoes, every reply checked. Under
 * valgrind (PKM_VALGRIND=1) RSA is ~50x slower: 50 clients there. */
static void test_many_clients(void **state)
{
    (void)state;
    size_t n = t_under_valgrind() ? 50 : 1000;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    fx_start(&f, &cfg, FX_ECHO);
    tcl_result_t r = run_clients(pkm_server_port(f.s.srv), n, 3, 200, NULL);
    assert_int_equal(r.timed_out, 0);
    assert_int_equal(r.established, n);
    assert_int_equal(r.echoed, n);
    assert_int_equal(r.bad_replies, 0);
    assert_int_equal(r.failed, 0);
    fx_wait_closes(&f, (int)n);
    pkm_server_stats_t s = fx_stats(&f);
    assert_int_equal(s.handshakes_ok, n);
    assert_int_equal(s.packets_in, 3 * n);
    assert_int_equal(s.packets_out, 3 * n);
    assert_int_equal(s.conns_open, 0);
    fx_stop(&f);
}

/* ------------------------------------------------------------------------------------------ */
/* pkm_server_post: from several threads, each thread's posts run in order on the loop thread */

#define POST_THREADS 4
#define POST_EACH    500

typedef struct post_ctx {
    fx_t *f;
    pthread_mutex_t mu;
    int next[POST_THREADS]; /* the sequence number each thread's next post must carry */
    int ran, out_of_order, wrong_thread, broadcast_to;
} post_ctx_t;

typedef struct post_item {
    post_ctx_t *ctx;
    int thread, seq;
} post_item_t;

static post_item_t g_post_items[POST_THREADS][POST_EACH];

static void post_fn(pkm_server_t *srv, void *ud)
{
    post_item_t *it = ud;
    post_ctx_t *x = it->ctx;
    pthread_mutex_lock(&x->mu);
    if (!pthread_equal(pthread_self(), x->f->s.th)) x->wrong_thread++;
    if (it->seq != x->next[it->thread]) x->out_of_order++;
    x->next[it->thread] = it->seq + 1;
    x->ran++;
    pthread_mutex_unlock(&x->mu);
    if (it->seq == POST_EACH - 1) { /* every thread's last post: a broadcast, as in a callback */
        const uint8_t m[2] = {'P', (uint8_t)('0' + it->thread)};
        size_t n = pkm_server_broadcast(srv, NULL, 0x40, 0, m, 2);
        pthread_mutex_lock(&x->mu);
        x->broadcast_to += (int)n;
        pthread_mutex_unlock(&x->mu);
    }
}

static void *post_thread(void *arg)
{
    post_item_t *items = arg;
    for (int i = 0; i < POST_EACH; i++) {
        int r;
        while ((r = pkm_server_post(items[0].ctx->f->s.srv, post_fn, &items[i])) == PKM_ENOMEM)
            tcl_sleep_ms(1);
        if (r != 0) return (void *)1;
    }
    return NULL;
}

static void count_fn(pkm_server_t *srv, void *ud)
{
    (void)srv;
    (*(int *)ud)++;
}

static void test_post(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    fx_start(&f, &cfg, FX_ECHO);
    sc_t c;
    assert_int_equal(sc_connect(pkm_server_port(f.s.srv), NULL, 0, &c), 0);
    fx_wait_established(&f, 1);

    post_ctx_t x;
    memset(&x, 0, sizeof x);
    x.f = &f;
    pthread_mutex_init(&x.mu, NULL);
    pthread_t th[POST_THREADS];
    for (int t = 0; t < POST_THREADS; t++) {
        for (int i = 0; i < POST_EACH; i++)
            g_post_items[t][i] = (post_item_t){&x, t, i};
        assert_int_equal(pthread_create(&th[t], NULL, post_thread, g_post_items[t]), 0);
    }
    for (int t = 0; t < POST_THREADS; t++) {
        void *rv = (void *)2;
        assert_int_equal(pthread_join(th[t], &rv), 0);
        assert_null(rv);
    }
    /* Every thread's last post broadcast one packet: the client gets all of them. */
    int seen[POST_THREADS] = {0};
    for (int t = 0; t < POST_THREADS; t++) {
        pkm_packet_t pkt;
        assert_int_equal(sc_recv(&c, &pkt), 1);
        assert_int_equal(pkt.id, 0x40);
        assert_int_equal(pkt.size, 2);
        assert_true(pkt.content[1] >= '0' && pkt.content[1] < '0' + POST_THREADS);
        seen[pkt.content[1] - '0']++;
    }
    for (int t = 0; t < POST_THREADS; t++)
        assert_int_equal(seen[t], 1);
    pthread_mutex_lock(&x.mu);
    assert_int_equal(x.ran, POST_THREADS * POST_EACH);
    assert_int_equal(x.out_of_order, 0);
    assert_int_equal(x.wrong_thread, 0);
    assert_int_equal(x.broadcast_to, POST_THREADS);
    for (int t = 0; t < POST_THREADS; t++)
        assert_int_equal(x.next[t], POST_EACH);
    pthread_mutex_unlock(&x.mu);
    sc_close(&c);
    fx_wait_closes(&f, 1);
    pkm_server_stop(f.s.srv);
    assert_int_equal(pthread_join(f.s.th, NULL), 0);
    /* Stopped: refused, and the function is never called. */
    int calls = 0;
    assert_int_equal(pkm_server_post(f.s.srv, count_fn, &calls), PKM_ECLOSED);
    pkm_server_free(f.s.srv);
    assert_int_equal(calls, 0);
    pthread_mutex_destroy(&f.mu);
    pthread_mutex_destroy(&x.mu);

    /* A post accepted before the stop runs exactly once even if the server never ran: at the
     * latest in pkm_server_free. Bad arguments are refused. */
    pkm_server_t *a = NULL;
    fx_config(&cfg);
    assert_int_equal(pkm_server_new(&cfg, &a), 0);
    assert_int_equal(pkm_server_post(a, NULL, &calls), PKM_EINVAL);
    assert_int_equal(pkm_server_post(NULL, count_fn, &calls), PKM_EINVAL);
    assert_int_equal(pkm_server_post(a, count_fn, &calls), 0);
    assert_int_equal(pkm_server_post(a, count_fn, &calls), 0);
    pkm_server_stop(a);
    assert_int_equal(pkm_server_post(a, count_fn, &calls), PKM_ECLOSED);
    assert_int_equal(calls, 0);
    pkm_server_free(a);
    assert_int_equal(calls, 2);
}

/* ------------------------------------------------------------------------------------------ */
/* Two loops: connections spread over both; a broadcast and a send cross from one to the other */

static void expect_packet(sc_t *c, uint8_t id, uint8_t tag)
{
    pkm_packet_t pkt;
    assert_int_equal(sc_recv(c, &pkt), 1);
    assert_int_equal(pkt.id, id);
    assert_int_equal(pkt.size, 1);
    assert_int_equal(pkt.content[0], tag);
}

static void test_two_loops(void **state)
{
    (void)state;
    enum { N = 4 };
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    cfg.loops = 2;
    fx_start(&f, &cfg, FX_CROSS);
    assert_int_equal(pkm_server_loops(f.s.srv), 2);
    uint16_t port = pkm_server_port(f.s.srv);
    sc_t c[N];
    unsigned loop_of[N];
    int on_loop[2] = {0, 0};
    for (int i = 0; i < N; i++) {
        assert_int_equal(sc_connect(port, NULL, 0, &c[i]), 0);
        fx_wait_established(&f, (uint64_t)i + 1);
    }
    pthread_mutex_lock(&f.mu);
    assert_int_equal(f.nconns, N);
    for (int i = 0; i < N; i++) {
        uint16_t lp = t_local_port(c[i].fd);
        int found = 0;
        for (int k = 0; k < f.nconns; k++)
            if (f.conn_port[k] == lp) {
                loop_of[i] = f.conn_loop[k];
                found++;
            }
        assert_int_equal(found, 1);
        assert_true(loop_of[i] < 2);
        on_loop[loop_of[i]]++;
    }
    pthread_mutex_unlock(&f.mu);
    /* Loop 0 hands each new connection to the least loaded loop: two each. */
    assert_int_equal(on_loop[0], 2);
    assert_int_equal(on_loop[1], 2);

    /* A broadcast from client 0's loop reaches every other client, on both loops. */
    const uint8_t t1 = 1, t2 = 2, t3 = 3, t4 = 4;
    assert_int_equal(sc_send(&c[0], 0x21, &t1, 1), 0);
    for (int i = 1; i < N; i++)
        expect_packet(&c[i], 0x21, t1);
    /* A send from client 0's loop to the connections of the other loop; then a broadcast
     * marker: the clients on the other loop get the send first, those on client 0's loop only
     * the marker. */
    assert_int_equal(sc_send(&c[0], 0x22, &t2, 1), 0);
    assert_int_equal(sc_send(&c[0], 0x21, &t3, 1), 0);
    for (int i = 1; i < N; i++) {
        if (loop_of[i] != loop_of[0]) expect_packet(&c[i], 0x22, t2);
        expect_packet(&c[i], 0x21, t3);
    }
    /* Client 0 heard nothing of its own: its next packet is client 1's. */
    assert_int_equal(sc_send(&c[1], 0x21, &t4, 1), 0);
    for (int i = 0; i < N; i++)
        if (i != 1) expect_packet(&c[i], 0x21, t4);
    pthread_mutex_lock(&f.mu);
    assert_int_equal(f.sent_across, 2);
    pthread_mutex_unlock(&f.mu);
    pkm_server_stats_t st = fx_stats(&f);
    assert_int_equal(st.conns_established, N);
    assert_int_equal(st.packets_in, 4);
    /* 3 + 2 + 3 + 3 queued (three broadcasts, two sends); each loop counts its own. */
    assert_int_equal(st.packets_out, 11);
    for (int i = 0; i < N; i++)
        sc_close(&c[i]);
    fx_wait_closes(&f, N);
    assert_int_equal(fx_count_closes(&f, PKM_EEOF, ""), N);
    fx_stop(&f);
}

/* ------------------------------------------------------------------------------------------ */
/* Timers on loop 0, and the application's own handle on pkm_server_loop()                   */

typedef struct timer_ctx {
    fx_t *f;
    pkm_server_timer_t *rep, *left; /* a repeating timer stopped by itself; one left running */
    atomic_int ticks, wrong_thread, left_ticks, uv_fired, started;
    uv_timer_t uvt;
} timer_ctx_t;

static void tick_fn(pkm_server_t *srv, void *ud)
{
    timer_ctx_t *x = ud;
    if (!pthread_equal(pthread_self(), x->f->s.th)) x->wrong_thread++;
    if (++x->ticks == 3) {
        const uint8_t m[1] = {'T'};
        pkm_server_broadcast(srv, NULL, 0x41, 0, m, 1);
        pkm_server_timer_stop(x->rep); /* inside its own callback */
        pkm_server_timer_stop(x->rep); /* twice: no-op */
    }
}

static void left_fn(pkm_server_t *srv, void *ud)
{
    (void)srv;
    ((timer_ctx_t *)ud)->left_ticks++;
}

static void uv_timer_fired(uv_timer_t *t)
{
    timer_ctx_t *x = t->data;
    if (!pthread_equal(pthread_self(), x->f->s.th)) x->wrong_thread++;
    x->uv_fired++;
    const uint8_t m[1] = {'U'};
    pkm_server_broadcast(x->f->s.srv, NULL, 0x42, 0, m, 1);
    uv_close((uv_handle_t *)t, NULL);
}

static void start_timers(pkm_server_t *srv, void *ud)
{
    timer_ctx_t *x = ud;
    int ok = pkm_server_timer_start(srv, 0, 2, tick_fn, x, &x->rep) == 0 &&
             pkm_server_timer_start(srv, 1, 1, left_fn, x, &x->left) == 0;
    /* The application's own libuv handle on the server's main loop. */
    uv_loop_t *loop = pkm_server_loop(srv);
    ok = ok && loop && uv_timer_init(loop, &x->uvt) == 0;
    x->uvt.data = x;
    ok = ok && uv_timer_start(&x->uvt, uv_timer_fired, 5, 0) == 0;
    x->started = ok ? 1 : -1;
}

static void test_timers(void **state)
{
    (void)state;
    fx_t f;
    pkm_server_config_t cfg;
    fx_config(&cfg);
    fx_start(&f, &cfg, FX_ECHO);
    sc_t c;
    assert_int_equal(sc_connect(pkm_server_port(f.s.srv), NULL, 0, &c), 0);
    fx_wait_established(&f, 1);
    timer_ctx_t x;
    memset(&x, 0, sizeof x);
    x.f = &f;
    pkm_server_timer_t *t = NULL;
    /* Not from this thread while the server runs; bad arguments refused. */
    assert_int_equal(pkm_server_timer_start(f.s.srv, 0, 0, tick_fn, &x, &t), PKM_ESTATE);
    assert_null(t);
    assert_int_equal(pkm_server_timer_start(f.s.srv, -1, 0, tick_fn, &x, &t), PKM_EINVAL);
    assert_int_equal(pkm_server_timer_start(f.s.srv, 0, 0, NULL, &x, &t), PKM_EINVAL);
    assert_int_equal(pkm_server_post(f.s.srv, start_timers, &x), 0);
    /* The repeating timer's third tick and the uv timer each broadcast one packet. */
    int got41 = 0, got42 = 0;
    for (int i = 0; i < 2; i++) {
        pkm_packet_t pkt;
        assert_int_equal(sc_recv(&c, &pkt), 1);
        assert_int_equal(pkt.size, 1);
        if (pkt.id == 0x41 && pkt.content[0] == 'T') got41++;
        if (pkt.id == 0x42 && pkt.content[0] == 'U') got42++;
    }
    assert_int_equal(got41, 1);
    assert_int_equal(got42, 1);
    assert_int_equal(x.started, 1);
    assert_int_equal(x.ticks, 3); /* stopped inside its third call: no fourth */
    assert_int_equal(x.uv_fired, 1);
    assert_int_equal(x.wrong_thread, 0);
    sc_close(&c);
    fx_wait_closes(&f, 1);
    /* x.left still runs: the stop ends it, pkm_server_free frees it. */
    fx_stop(&f);
    assert_int_equal(x.ticks, 3);
    assert_true(x.left_ticks >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_trim),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_any_host),
        cmocka_unit_test(test_wrong_secret),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_send_queue_overflow),
        cmocka_unit_test(test_max_conns),
        cmocka_unit_test(test_relay),
        cmocka_unit_test(test_rekey),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_verify_hook),
        cmocka_unit_test(test_typed_send),
        cmocka_unit_test(test_send_queue_default),
        cmocka_unit_test(test_half_close),
        cmocka_unit_test(test_bad_handshake),
        cmocka_unit_test(test_many_clients),
        cmocka_unit_test(test_post),
        cmocka_unit_test(test_two_loops),
        cmocka_unit_test(test_timers),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
