/* SPDX-License-Identifier: MIT */
/* A pkm_server behind a live HAProxy (Debian's package, started on loopback ports by this test
 * and stopped after): send-proxy-v2 and send-proxy backends with health checks; the server sees
 * each client's own address (127.0.0.x), its per-source cap counts that address, and the health
 * checks cost no RSA job, no callback and no log line. */
#include "support.h"
#include "support/clients.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include "pkmcom/pkmcom.h"
#include "server_internal.h"

#define WAIT_MS 10000 /* every wait is bounded by this */

typedef struct obs {
    pthread_mutex_t mu;
    int jobs, connects, closes, logs;
    char peer[PKM_SERVER_PEER_SIZE];
    char last_log[512];
} obs_t;

static void job_hook(void *ctx, int event)
{
    obs_t *o = ctx;
    pthread_mutex_lock(&o->mu);
    if (event == PKM__JOB_QUEUED) o->jobs++;
    pthread_mutex_unlock(&o->mu);
}

static void on_connect(void *user, pkm_server_conn_t *conn)
{
    obs_t *o = user;
    pthread_mutex_lock(&o->mu);
    o->connects++;
    assert_true(pkm_server_conn_peer(conn, o->peer, sizeof o->peer) > 0);
    pthread_mutex_unlock(&o->mu);
}

static void on_close(void *user, pkm_server_conn_t *conn, int err, const char *step)
{
    obs_t *o = user;
    (void)conn, (void)err, (void)step;
    pthread_mutex_lock(&o->mu);
    o->closes++;
    pthread_mutex_unlock(&o->mu);
}

static void on_log(void *user, int level, const char *msg)
{
    obs_t *o = user;
    (void)level;
    pthread_mutex_lock(&o->mu);
    o->logs++;
    snprintf(o->last_log, sizeof o->last_log, "%s", msg);
    pthread_mutex_unlock(&o->mu);
}

static void on_packet(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt)
{
    (void)user;
    (void)pkm_server_send(conn, pkt->id, pkt->hash, pkt->content, pkt->size);
}

static void *run_thread(void *arg)
{
    return (void *)(intptr_t)pkm_server_run(arg);
}

/* ---- the fixture: the server, then HAProxy in front of it ---- */

typedef struct fixture {
    obs_t o;
    pkm_server_t *srv;
    pthread_t th;
    int running;
    pid_t pid;
    char dir[64];
    unsigned short front_v2, front_v1;
} fixture_t;

static fixture_t fx;

static const char *find_haproxy(void)
{
    static const char *paths[] = {"/usr/sbin/haproxy", "/usr/local/sbin/haproxy",
                                  "/usr/bin/haproxy"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (access(paths[i], X_OK) == 0) return paths[i];
    return NULL;
}

/* A port the kernel picks on 127.0.0.1, released for haproxy to bind (a race with other
 * programs: the caller retries with new ports when haproxy exits). */
static unsigned short free_port(void)
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

static void stop_haproxy(void)
{
    if (fx.pid <= 0) return;
    kill(fx.pid, SIGTERM);
    int st;
    for (int i = 0; i < 100 && waitpid(fx.pid, &st, WNOHANG) == 0; i++)
        tcl_sleep_ms(20);
    if (waitpid(fx.pid, &st, WNOHANG) == 0) {
        kill(fx.pid, SIGKILL);
        waitpid(fx.pid, &st, 0);
    }
    fx.pid = 0;
}

static uint64_t checks(void)
{
    pkm_server_stats_t st;
    pkm_server_stats(fx.srv, &st);
    return st.proxy_checks;
}

/* Starts haproxy on two fresh frontend ports: ready once health checks of both backends have
 * reached the server (its listeners are bound by then). Returns 0, or -1 (it exited: retry). */
static int start_haproxy(const char *bin)
{
    char cfg[128], log[128];
    snprintf(cfg, sizeof cfg, "%s/haproxy.cfg", fx.dir);
    snprintf(log, sizeof log, "%s/haproxy.log", fx.dir);
    fx.front_v2 = free_port();
    fx.front_v1 = free_port();
    FILE *f = fopen(cfg, "w");
    if (!f) return -1;
    unsigned port = pkm_server_port(fx.srv);
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
    fx.pid = pid;
    for (int t = 0; t < WAIT_MS / 20; t++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) { /* exited: a port taken meanwhile */
            fx.pid = 0;
            return -1;
        }
        if (checks() >= before + 4) return 0;
        tcl_sleep_ms(20);
    }
    stop_haproxy();
    return -1;
}

static int setup(void **state)
{
    if (t_keys_setup(state) != 0) return -1;
    memset(&fx, 0, sizeof fx);
    pthread_mutex_init(&fx.o.mu, NULL);
    const char *bin = find_haproxy();
    *state = NULL;
    if (!bin) return 0;
    snprintf(fx.dir, sizeof fx.dir, "/tmp/pkm_srv_haproxy_XXXXXX");
    if (!mkdtemp(fx.dir)) return -1;
    pkm_server_config_t cfg;
    pkm_server_config_init(&cfg);
    cfg.loops = t_server_loops();
    cfg.host = "127.0.0.1";
    cfg.engine.server_key = t_shared_keys.server_key;
    cfg.proxy_trusted = "127.0.0.1/32"; /* HAProxy's address towards the server */
    cfg.max_conns_per_source = 1;
    cfg.on_connect = on_connect;
    cfg.on_close = on_close;
    cfg.on_packet = on_packet;
    cfg.on_log = on_log;
    cfg.user = &fx.o;
    if (pkm_server_new(&cfg, &fx.srv) != 0) return -1;
    pkm__server_set_job_hook(fx.srv, job_hook, &fx.o);
    fx.o.logs = 0; /* the start's own lines (the open-file limit) */
    if (pthread_create(&fx.th, NULL, run_thread, fx.srv) != 0) return -1;
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
    stop_haproxy();
    if (fx.running) {
        pkm_server_stop(fx.srv);
        pthread_join(fx.th, NULL);
    }
    pkm_server_free(fx.srv);
    if (fx.dir[0]) {
        char path[128];
        snprintf(path, sizeof path, "%s/haproxy.cfg", fx.dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/haproxy.log", fx.dir);
        unlink(path);
        rmdir(fx.dir);
    }
    pthread_mutex_destroy(&fx.o.mu);
    return t_keys_teardown(state);
}

/* ---- a client ---- */

/* Handshake and one echoed packet: 1 when both worked, 0 when the connection ended first
 * (*got_bytes: whether anything at all arrived). */
static int session(int fd, int *got_bytes)
{
    pkm_engine_t *e = t_client(&t_shared_keys, NULL);
    int sent = 0, ok = 0;
    *got_bytes = 0;
    for (;;) {
        size_t len = 0;
        const uint8_t *out;
        while ((out = pkm_engine_send_buf(e, &len)) != NULL && len) {
            ssize_t n = send(fd, out, len, MSG_NOSIGNAL);
            if (n <= 0) break;
            pkm_engine_send_ack(e, (size_t)n);
        }
        int st = pkm_engine_state(e);
        if (st == PKM_STATE_CLOSED) break;
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
            if (r < 0) break;
            if (r == 1) {
                ok = pkt.id == 0x20 && pkt.size == 2;
                break;
            }
            continue;
        }
        size_t cap = 0;
        uint8_t *p = pkm_engine_recv_buf(e, &cap);
        ssize_t n = recv(fd, p, cap, 0);
        if (n <= 0 || pkm_engine_recv_ack(e, (size_t)n) < 0) break;
        *got_bytes = 1;
    }
    pkm_engine_free(e);
    return ok;
}

static void peer_is(int fd, const char *ip)
{
    char want[64], got[PKM_SERVER_PEER_SIZE];
    snprintf(want, sizeof want, "%s:%u", ip, (unsigned)t_local_port(fd));
    pthread_mutex_lock(&fx.o.mu);
    memcpy(got, fx.o.peer, sizeof got);
    pthread_mutex_unlock(&fx.o.mu);
    assert_string_equal(got, want);
}

static int obs_get(const int *field)
{
    pthread_mutex_lock(&fx.o.mu);
    int v = *field;
    pthread_mutex_unlock(&fx.o.mu);
    return v;
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
    pkm_server_stats(fx.srv, &st);
    assert_int_equal(st.accepted, 0);
    assert_int_equal(st.proxy_refused, 0);
    assert_int_equal(obs_get(&fx.o.jobs), 0);
    assert_int_equal(obs_get(&fx.o.closes), 0);
    assert_int_equal(obs_get(&fx.o.logs), 0);
}

/* Clients through HAProxy from 127.0.0.5 and 127.0.0.6 are seen with their own addresses and
 * ports, through v2 and v1; the per-source cap of 1 refuses a second client from 127.0.0.5
 * (HAProxy's own address, 127.0.0.1, carries them all). */
static void clients_are_seen_through_haproxy(void **state)
{
    if (!*state) skip();
    int got = 0;
    int a = t_tcp_connect(fx.front_v2, "127.0.0.5", WAIT_MS / 1000);
    assert_true(session(a, &got));
    peer_is(a, "127.0.0.5");
    int b = t_tcp_connect(fx.front_v1, "127.0.0.6", WAIT_MS / 1000);
    assert_true(session(b, &got));
    peer_is(b, "127.0.0.6");
    int c =
        t_tcp_connect(fx.front_v2, "127.0.0.5", WAIT_MS / 1000); /* a stays open: over the cap */
    assert_false(session(c, &got));
    assert_int_equal(got, 0); /* not a byte */
    pkm_server_stats_t st;
    pkm_server_stats(fx.srv, &st);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.accepted, 2);
    pthread_mutex_lock(&fx.o.mu);
    assert_non_null(strstr(fx.o.last_log, "127.0.0.5"));
    pthread_mutex_unlock(&fx.o.mu);
    close(a), close(b), close(c);
    assert_int_equal(obs_get(&fx.o.connects), 2);
    assert_int_equal(obs_get(&fx.o.jobs), 2);
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
