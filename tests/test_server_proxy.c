/* SPDX-License-Identifier: MIT */
/* The libuv server behind a PROXY-protocol load balancer (config.proxy_trusted), end to end over
 * loopback: v1 and v2 headers set the source every limit and callback sees, LOCAL keeps the
 * socket's, health checks cost no RSA and log nothing, malformed or untrusted headers close. */
#include "support.h"
#include "support/clients.h"
#include <errno.h>
#include <pthread.h>
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
#include "support/server_fixture.h"

static uint64_t st_checks(const pkm_server_stats_t *st)
{
    return st->proxy_checks;
}
static uint64_t st_prefused(const pkm_server_stats_t *st)
{
    return st->proxy_refused;
}

/* The server behind a proxy trusted at `trusted`, its every callback counted in o. */
static void base_config(pkm_server_config_t *cfg, t_obs *o, const char *trusted)
{
    t_srv_config(cfg, t_shared_keys.server_key);
    cfg->proxy_trusted = trusted;
    t_obs_config(cfg, o, T_OBS_ECHO | T_OBS_CONNECT | T_OBS_LOG);
}

static void start(t_srv *f, const pkm_server_config_t *cfg, t_obs *o)
{
    t_srv_new(f, cfg, t_obs_job_hook, o);
    t_obs_reset_logs(o); /* the start's own lines (the open-file limit) */
    t_srv_run(f);
}

static void send_exact(int fd, const void *p, size_t n)
{
    assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void send_str(int fd, const char *s)
{
    send_exact(fd, s, strlen(s));
}

/* A v2 header: command (0 LOCAL, 1 PROXY); family 4 or 6 (or 0: AF_UNSPEC) with the source
 * address and port (the destination is loopback, port 443). Returns its length. */
static size_t v2_header(uint8_t *out, int command, int family, const char *src, uint16_t sport)
{
    static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    memcpy(out, sig, 12);
    out[12] = (uint8_t)(0x20 | command);
    size_t alen = 0;
    uint8_t *a = out + 16;
    if (family == 4) {
        out[13] = 0x11;
        assert_int_equal(inet_pton(AF_INET, src, a), 1);
        assert_int_equal(inet_pton(AF_INET, "127.0.0.1", a + 4), 1);
        a[8] = (uint8_t)(sport >> 8), a[9] = (uint8_t)sport, a[10] = 1, a[11] = 0xBB;
        alen = 12;
    } else if (family == 6) {
        out[13] = 0x21;
        assert_int_equal(inet_pton(AF_INET6, src, a), 1);
        assert_int_equal(inet_pton(AF_INET6, "::1", a + 16), 1);
        a[32] = (uint8_t)(sport >> 8), a[33] = (uint8_t)sport, a[34] = 1, a[35] = 0xBB;
        alen = 36;
    } else {
        out[13] = 0x00;
    }
    out[14] = (uint8_t)(alen >> 8);
    out[15] = (uint8_t)alen;
    return 16 + alen;
}

/* 1 when the server ends the stream (or resets it) without sending a byte. */
static int closed_without_a_byte(int fd)
{
    uint8_t b[4096];
    ssize_t n = recv(fd, b, sizeof b, 0);
    if (n < 0) assert_true(errno == ECONNRESET); /* not the 10 s timeout */
    return n <= 0;
}

/* The server ends the stream (after whatever it sent). */
static void wait_closed(int fd)
{
    uint8_t b[4096];
    ssize_t n;
    while ((n = recv(fd, b, sizeof b, 0)) > 0)
        ;
    if (n < 0) assert_true(errno == ECONNRESET);
}

/* ---- the source a header gives ---- */

static void v1_header_sets_the_source(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o, "127.0.0.1/32, ::1");
    t_srv f;
    start(&f, &cfg, &o);
    int fd = t_tcp_connect(f.port, NULL, 10);
    send_str(fd, "PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n");
    assert_true(t_cli_session(fd, NULL, NULL));
    char peer[PKM_SERVER_PEER_SIZE];
    t_obs_peer(&o, peer);
    assert_string_equal(peer, "203.0.113.7:40000");
    close(fd);
    fd = t_tcp_connect(f.port, NULL, 10);
    send_str(fd, "PROXY TCP6 2001:db8::5 ::1 40002 443\r\n");
    assert_true(t_cli_session(fd, NULL, NULL));
    t_obs_peer(&o, peer);
    assert_string_equal(peer, "[2001:db8::5]:40002");
    close(fd);
    t_srv_stop(&f);
    assert_int_equal(o.connects, 2);
    assert_int_equal(o.queued, 2);
    assert_int_equal(o.logs, 0);
}

static void v2_header_sets_the_source(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o, "127.0.0.0/8");
    t_srv f;
    start(&f, &cfg, &o);
    uint8_t h[64];
    int fd = t_tcp_connect(f.port, NULL, 10);
    send_exact(fd, h, v2_header(h, 1, 6, "2001:db8::7", 40001));
    assert_true(t_cli_session(fd, NULL, NULL));
    char peer[PKM_SERVER_PEER_SIZE];
    t_obs_peer(&o, peer);
    assert_string_equal(peer, "[2001:db8::7]:40001");
    close(fd);
    /* the header in two parts */
    fd = t_tcp_connect(f.port, NULL, 10);
    size_t n = v2_header(h, 1, 4, "198.51.100.20", 5555);
    send_exact(fd, h, 10);
    tcl_sleep_ms(50);
    send_exact(fd, h + 10, n - 10);
    assert_true(t_cli_session(fd, NULL, NULL));
    t_obs_peer(&o, peer);
    assert_string_equal(peer, "198.51.100.20:5555");
    close(fd);
    t_srv_stop(&f);
    assert_int_equal(o.connects, 2);
    assert_int_equal(o.logs, 0);
}

/* The bytes after the header in the same segment are the PkmCom stream's: here the client's
 * ClientKey and KeyShare, made from the server's known public key before the server has said
 * anything, go out in one send() with the header. */
static void bytes_after_the_header_are_kept(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o, "127.0.0.1");
    t_srv f;
    start(&f, &cfg, &o);
    /* The ServerKey the server will send: Int n, then its public key's DER. */
    uint8_t sk[4 + 1024];
    int dn = pkm_key_public_der(t_shared_keys.server_key, sk + 4, sizeof sk - 4);
    assert_true(dn > 0);
    sk[0] = 0, sk[1] = 0, sk[2] = (uint8_t)(dn >> 8), sk[3] = (uint8_t)dn;
    pkm_engine_t *e = t_client(&t_shared_keys, NULL);
    assert_int_equal(pkm_engine_feed(e, sk, 4 + (size_t)dn), 0);
    while (pkm_engine_wants(e) & PKM_WANT_JOB)
        assert_int_equal(t_run_job(e), 0);
    size_t len = 0;
    const uint8_t *out = pkm_engine_send_buf(e, &len);
    assert_true(len > 256); /* ClientKey and KeyShare */
    static const char hdr[] = "PROXY TCP4 192.0.2.33 127.0.0.1 41000 443\r\n";
    uint8_t *msg = malloc(sizeof hdr - 1 + len);
    assert_non_null(msg);
    memcpy(msg, hdr, sizeof hdr - 1);
    memcpy(msg + sizeof hdr - 1, out, len);
    int fd = t_tcp_connect(f.port, NULL, 10);
    send_exact(fd, msg, sizeof hdr - 1 + len);
    pkm_engine_send_ack(e, len);
    free(msg);
    /* The server's ServerKey (the same bytes) comes first, then the rest of the handshake. */
    uint8_t got[4 + 1024];
    size_t have = 0;
    while (have < 4 + (size_t)dn) {
        ssize_t r = recv(fd, got + have, 4 + (size_t)dn - have, 0);
        assert_true(r > 0);
        have += (size_t)r;
    }
    assert_memory_equal(got, sk, have);
    assert_true(t_cli_session_on(e, fd, NULL));
    pkm_engine_free(e);
    char peer[PKM_SERVER_PEER_SIZE];
    t_obs_peer(&o, peer);
    assert_string_equal(peer, "192.0.2.33:41000");
    close(fd);
    t_srv_stop(&f);
}

/* ---- per-source limits see the header's source ---- */

/* max_conns_per_source 1: a second connection "from" 203.0.113.7 is refused without a byte,
 * one from 203.0.113.8 is served: all three come from 127.0.0.1. */
static void per_source_cap_counts_the_header_source(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o, "127.0.0.1/32");
    cfg.max_conns_per_source = 1;
    t_srv f;
    start(&f, &cfg, &o);
    int a = t_tcp_connect(f.port, NULL, 10);
    send_str(a, "PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n");
    assert_true(t_cli_session(a, NULL, NULL)); /* stays open */
    int b = t_tcp_connect(f.port, NULL, 10);
    send_str(b, "PROXY TCP4 203.0.113.7 127.0.0.1 40001 443\r\n");
    assert_true(closed_without_a_byte(b));
    t_srv_wait_stat(f.srv, t_st_refused, 1, "refusals");
    int c = t_tcp_connect(f.port, NULL, 10);
    send_str(c, "PROXY TCP4 203.0.113.8 127.0.0.1 40002 443\r\n");
    assert_true(t_cli_session(c, NULL, NULL));
    pthread_mutex_lock(&o.mu);
    assert_non_null(strstr(o.last_log, "203.0.113.7"));
    pthread_mutex_unlock(&o.mu);
    close(a), close(b), close(c);
    t_srv_stop(&f);
    assert_int_equal(o.connects, 2);
    assert_int_equal(o.closes, 2); /* the refused one got no callback */
}

/* The failed-secret ban bans the header's source, not the proxy. */
static void secret_ban_hits_the_header_source(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o, "127.0.0.1/32");
    cfg.engine.secret = (const uint8_t *)"right";
    cfg.engine.secret_len = 5;
    cfg.secret_fails = 1;
    t_srv f;
    start(&f, &cfg, &o);
    int a = t_tcp_connect(f.port, NULL, 10);
    send_str(a, "PROXY TCP4 203.0.113.9 127.0.0.1 40000 443\r\n");
    assert_false(t_cli_session(a, "wrong", NULL));
    t_obs_wait(&o, &o.closes, 1, "the failed handshake closed");
    int b = t_tcp_connect(f.port, NULL, 10);
    send_str(b, "PROXY TCP4 203.0.113.9 127.0.0.1 40001 443\r\n");
    assert_true(closed_without_a_byte(b)); /* banned */
    int c = t_tcp_connect(f.port, NULL, 10);
    send_str(c, "PROXY TCP4 203.0.113.10 127.0.0.1 40002 443\r\n");
    assert_true(t_cli_session(c, "right", NULL));
    close(a), close(b), close(c);
    t_srv_stop(&f);
    assert_int_equal(o.connects, 1);
}

/* ---- LOCAL, health checks ---- */

/* LOCAL (and v1 UNKNOWN) connects with the socket's own address. */
static void local_connects_with_the_socket_address(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o, "127.0.0.1/32");
    t_srv f;
    start(&f, &cfg, &o);
    uint8_t h[64];
    char want[64], peer[PKM_SERVER_PEER_SIZE];
    int fd = t_tcp_connect(f.port, NULL, 10);
    send_exact(fd, h, v2_header(h, 0, 0, NULL, 0));
    assert_true(t_cli_session(fd, NULL, NULL));
    snprintf(want, sizeof want, "127.0.0.1:%u", (unsigned)t_local_port(fd));
    t_obs_peer(&o, peer);
    assert_string_equal(peer, want);
    close(fd);
    fd = t_tcp_connect(f.port, NULL, 10);
    send_str(fd, "PROXY UNKNOWN\r\n");
    assert_true(t_cli_session(fd, NULL, NULL));
    snprintf(want, sizeof want, "127.0.0.1:%u", (unsigned)t_local_port(fd));
    t_obs_peer(&o, peer);
    assert_string_equal(peer, want);
    close(fd);
    t_srv_stop(&f);
    assert_int_equal(o.connects, 2);
    assert_int_equal(o.logs, 0);
}

/* Health checks: a connect closed at once, a LOCAL header then silence, a LOCAL header then
 * close, a reset, a connect that stays silent past the deadline, a v1 header naming the
 * connection itself: no RSA job, no callback, no log line, none admitted; each counted in
 * stats.proxy_checks. */
static void health_checks_cost_nothing(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o, "127.0.0.1/32");
    cfg.handshake_timeout_ms = 300; /* also the header's deadline */
    t_srv f;
    start(&f, &cfg, &o);
    uint8_t h[64];
    size_t hn = v2_header(h, 0, 0, NULL, 0);

    int fd = t_tcp_connect(f.port, NULL, 10);
    close(fd);
    t_srv_wait_stat(f.srv, st_checks, 1, "health checks");

    fd = t_tcp_connect(f.port, NULL, 10);
    send_exact(fd, h, hn);
    wait_closed(fd); /* LOCAL, then silence: the ServerKey, then closed at the deadline */
    close(fd);
    t_srv_wait_stat(f.srv, st_checks, 2, "health checks");

    fd = t_tcp_connect(f.port, NULL, 10);
    send_exact(fd, h, hn);
    tcl_sleep_ms(20);
    close(fd); /* LOCAL, then gone before the deadline */
    t_srv_wait_stat(f.srv, st_checks, 3, "health checks");

    fd = t_tcp_connect(f.port, NULL, 10);
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd); /* a reset */
    t_srv_wait_stat(f.srv, st_checks, 4, "health checks");

    fd = t_tcp_connect(f.port, NULL, 10);
    assert_true(closed_without_a_byte(fd)); /* silent: closed at the deadline */
    close(fd);
    t_srv_wait_stat(f.srv, st_checks, 5, "health checks");

    /* v1 has no LOCAL: HAProxy's v1 checks name the check connection's own endpoints. */
    fd = t_tcp_connect(f.port, NULL, 10);
    char self[128];
    snprintf(self, sizeof self, "PROXY TCP4 127.0.0.1 127.0.0.1 %u %u\r\n",
             (unsigned)t_local_port(fd), (unsigned)f.port);
    send_str(fd, self);
    wait_closed(fd); /* the ServerKey, then closed at the deadline */
    close(fd);
    t_srv_wait_stat(f.srv, st_checks, 6, "health checks");

    pkm_server_stats_t st;
    pkm_server_stats(f.srv, &st);
    assert_int_equal(st.accepted, 0);
    assert_int_equal(st.conns_open, 0);
    assert_int_equal(st.proxy_refused, 0);
    assert_int_equal(st.timeouts, 0);
    t_srv_stop(&f);
    assert_int_equal(o.queued, 0);
    assert_int_equal(o.closes, 0);
    assert_int_equal(o.connects, 0);
    assert_int_equal(o.logs, 0);
}

/* ---- refusals ---- */

/* A malformed header (of several kinds), one cut short, or one not complete at the deadline
 * closes the connection without a byte and without a callback; the log says so once for the
 * proxy's address. */
static void malformed_headers_close(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o, "127.0.0.1/32");
    cfg.handshake_timeout_ms = 300; /* also the header's deadline */
    t_srv f;
    start(&f, &cfg, &o);
    uint8_t h[64];
    const char *bad[] = {"PROXY TCP4 bogus 127.0.0.1 1 2\r\n", "GET / HTTP/1.0\r\n\r\n",
                         "PROXY TCP4 203.0.113.7 127.0.0.1 040000 443\r\n", NULL};
    int n = 0;
    for (; bad[n]; n++) {
        int fd = t_tcp_connect(f.port, NULL, 10);
        send_str(fd, bad[n]);
        assert_true(closed_without_a_byte(fd));
        close(fd);
    }
    int fd = t_tcp_connect(f.port, NULL, 10);
    size_t hn = v2_header(h, 1, 4, "203.0.113.7", 1);
    h[12] = 0x31; /* version 3 */
    send_exact(fd, h, hn);
    assert_true(closed_without_a_byte(fd));
    close(fd);
    n++;
    fd = t_tcp_connect(f.port, NULL, 10);
    send_str(fd, "PROXY TCP4 203.0.11"); /* cut short */
    tcl_sleep_ms(20);
    shutdown(fd, SHUT_WR);
    assert_true(closed_without_a_byte(fd));
    close(fd);
    n++;
    fd = t_tcp_connect(f.port, NULL, 10);
    send_str(fd, "PROXY TCP6 2001:db8::"); /* never completed: closed at the deadline */
    assert_true(closed_without_a_byte(fd));
    close(fd);
    n++;
    t_srv_wait_stat(f.srv, st_prefused, (uint64_t)n, "refused headers");
    pkm_server_stats_t st;
    pkm_server_stats(f.srv, &st);
    assert_int_equal(st.accepted, 0);
    assert_int_equal(st.proxy_checks, 0);
    t_srv_stop(&f);
    assert_int_equal(o.closes, 0);
    assert_int_equal(o.queued, 0);
    assert_int_equal(o.logs, 1); /* once for 127.0.0.1 within the log interval */
    assert_int_equal(o.proxy_logs, 1);
    assert_non_null(strstr(o.last_log, "127.0.0.1"));
}

/* From an address not trusted, a PROXY signature is a forged source: closed (after the ServerKey
 * the server sends any direct client), logged once; a plain client from there is served. */
static void untrusted_header_closes(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o, "127.0.0.1/32");
    t_srv f;
    start(&f, &cfg, &o);
    int fd = t_tcp_connect(f.port, "127.0.0.2", 10);
    send_str(fd, "PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n");
    wait_closed(fd);
    close(fd);
    uint8_t h[64];
    fd = t_tcp_connect(f.port, "127.0.0.2", 10);
    send_exact(fd, h, v2_header(h, 1, 4, "203.0.113.7", 2));
    wait_closed(fd);
    close(fd);
    t_srv_wait_stat(f.srv, st_prefused, 2, "refused headers");
    t_obs_wait(&o, &o.closes, 2, "the forgers closed");
    fd = t_tcp_connect(f.port, "127.0.0.2", 10);
    assert_true(t_cli_session(fd, NULL, NULL));
    char peer[PKM_SERVER_PEER_SIZE], want[64];
    snprintf(want, sizeof want, "127.0.0.2:%u", (unsigned)t_local_port(fd));
    t_obs_peer(&o, peer);
    assert_string_equal(peer, want);
    close(fd);
    t_srv_stop(&f);
    assert_int_equal(o.eagain, 2);
    assert_int_equal(o.connects, 1);
    assert_int_equal(o.queued, 1); /* the forgers cost no RSA */
    assert_int_equal(o.proxy_logs, 1);
    assert_non_null(strstr(o.last_log, "127.0.0.2"));
}

/* PROXY off: a header is just bytes a client sent (the engine refuses them), nothing of the
 * above applies, and a plain client is served with its socket address. */
static void proxy_off_is_unchanged(void **state)
{
    (void)state;
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o, NULL);
    t_srv f;
    start(&f, &cfg, &o);
    int fd = t_tcp_connect(f.port, NULL, 10);
    assert_true(t_cli_session(fd, NULL, NULL));
    char peer[PKM_SERVER_PEER_SIZE], want[64];
    snprintf(want, sizeof want, "127.0.0.1:%u", (unsigned)t_local_port(fd));
    t_obs_peer(&o, peer);
    assert_string_equal(peer, want);
    close(fd);
    fd = t_tcp_connect(f.port, NULL, 10);
    send_str(fd, "PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n");
    wait_closed(fd);
    close(fd);
    t_obs_wait(&o, &o.closes, 2, "both closed");
    pkm_server_stats_t st;
    pkm_server_stats(f.srv, &st);
    assert_int_equal(st.accepted, 2);
    assert_int_equal(st.proxy_refused, 0);
    assert_int_equal(st.proxy_checks, 0);
    t_srv_stop(&f);
    assert_int_equal(o.eagain, 0);
    assert_int_equal(o.proxy_logs, 0);
}

/* pkm_server_new refuses a malformed list with PKM_EINVAL and a line naming the entry. */
static void bad_lists_are_refused(void **state)
{
    (void)state;
    static const struct {
        const char *list, *named;
    } bad[] = {{"10.0.0.1/8", "10.0.0.1/8"},
               {"127.0.0.1,,::1", "empty entry"},
               {"", "empty"},
               {"127.0.0.1, nonsense", "nonsense"},
               {"::1/129", "::1/129"},
               {"127.0.0.1/", "127.0.0.1/"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t_obs o;
        t_obs_init(&o, 1);
        pkm_server_config_t cfg;
        base_config(&cfg, &o, bad[i].list);
        pkm_server_t *srv = (pkm_server_t *)&o;
        assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EINVAL);
        assert_null(srv);
        assert_int_equal(o.logs, 1);
        if (!strstr(o.last_log, bad[i].named))
            fail_msg("'%s': the message '%s' does not name '%s'", bad[i].list, o.last_log,
                     bad[i].named);
        /* With an errbuf the sentence goes there, and is not logged as well. */
        char eb[PKM_SERVER_ERRMSG_SIZE];
        t_obs_init(&o, 1);
        base_config(&cfg, &o, bad[i].list);
        cfg.errbuf = eb;
        cfg.errbuf_size = sizeof eb;
        assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EINVAL);
        assert_int_equal(o.logs, 0);
        if (!strstr(eb, bad[i].named))
            fail_msg("'%s': errbuf '%s' does not name '%s'", bad[i].list, eb, bad[i].named);
    }
    t_obs o;
    t_obs_init(&o, 1);
    pkm_server_config_t cfg;
    base_config(&cfg, &o, " 127.0.0.1/32, ::1 ,10.0.0.0/8,2001:db8::/32");
    pkm_server_t *srv = NULL;
    assert_int_equal(pkm_server_new(&cfg, &srv), 0);
    pkm_server_free(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v1_header_sets_the_source),
        cmocka_unit_test(v2_header_sets_the_source),
        cmocka_unit_test(bytes_after_the_header_are_kept),
        cmocka_unit_test(per_source_cap_counts_the_header_source),
        cmocka_unit_test(secret_ban_hits_the_header_source),
        cmocka_unit_test(local_connects_with_the_socket_address),
        cmocka_unit_test(health_checks_cost_nothing),
        cmocka_unit_test(malformed_headers_close),
        cmocka_unit_test(untrusted_header_closes),
        cmocka_unit_test(proxy_off_is_unchanged),
        cmocka_unit_test(bad_lists_are_refused),
    };
    return cmocka_run_group_tests(tests, t_keys_setup, t_keys_teardown);
}
