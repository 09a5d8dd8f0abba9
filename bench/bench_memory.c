/* SPDX-License-Identifier: MIT */
/* Benchmark 5: heap and RSS per established idle connection of the libuv server at 10,000
 * connections (server in this process, clients in a forked child, as tests/test_server_scale.c
 * does), beside the same per bare established engine (no server around it), measured here. */
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <pkmcom/pkmcom.h>
#include "bench_common.h"
/* The many-clients driver of the server tests (one libuv loop of client engines), compiled in:
 * it depends only on the library and libuv. */
#include "../tests/support/clients.c"

#define CONNS   10000
#define WARMUP  16
#define ENGINES 500 /* bare engines of the anchor */
#define NKEYS   2

static _Noreturn void die(const char *what, int err)
{
    fprintf(stderr, "bench_memory: %s: %s\n", what, err ? pkm_errname(err) : "failed");
    exit(1);
}

/* The child: a warm-up round, then CONNS clients held open (each after one 64-byte echo) until
 * the parent closes its pipe. */
static int child_main(int from_parent, int to_parent, pkm_key_t **keys)
{
    tcl_raise_nofile();
    uint8_t pb[2];
    if (read(from_parent, pb, 2) != 2) return 10;
    tcl_opts_t o;
    memset(&o, 0, sizeof o);
    o.port = (uint16_t)(pb[0] << 8 | pb[1]);
    o.keys = keys;
    o.nkeys = NKEYS;
    o.echoes = 1;
    o.payload = 64;
    o.ready_fd = o.release_fd = -1;
    o.timeout_ms = 60000;
    o.nclients = WARMUP;
    tcl_result_t r;
    if (tcl_run(&o, &r) != 0 || r.echoed != WARMUP) return 11;
    if (write(to_parent, "w", 1) != 1) return 12;
    if (tcl_read_byte(from_parent, 60000) != 'g') return 13;
    o.nclients = CONNS;
    o.ready_fd = to_parent;
    o.release_fd = from_parent;
    o.timeout_ms = 140000;
    o.max_pending = 256;
    if (tcl_run(&o, &r) != 0) return 14;
    if (r.established != CONNS || r.echoed != CONNS) {
        fprintf(stderr, "bench_memory: child: %zu established, %zu echoed, first error %s\n",
                r.established, r.echoed, pkm_errname(r.first_err));
        return 15;
    }
    return 0;
}

static void *server_thread(void *arg)
{
    pkm_server_run(arg);
    return NULL;
}

static void quiet_log(void *user, int level, const char *msg)
{
    (void)user;
    if (level <= PKM_LOG_WARN) fprintf(stderr, "server: %s\n", msg);
}

static void echo(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt)
{
    (void)user;
    pkm_server_send(conn, pkt->id, pkt->hash, pkt->content, pkt->size);
}

/* Moves what `from` has queued into `to`. */
static void pass(pkm_engine_t *from, pkm_engine_t *to)
{
    size_t len = 0;
    const uint8_t *p = pkm_engine_send_buf(from, &len);
    if (len && pkm_engine_feed(to, p, len) != 0) die("in-memory handshake", pkm_engine_error(to));
    pkm_engine_send_ack(from, len);
}

/* The anchor: heap and RSS per established server engine alone (handshake done in memory, one
 * 64-byte packet each way, then trimmed as the server's idle sweep does), over ENGINES. */
static void bare_engines(const pkm_key_t *server_key, pkm_key_t *client_key, double *heap,
                         double *rss)
{
    static pkm_engine_t *eng[ENGINES];
    uint8_t msg[64] = {0};
    size_t h0 = tcl_heap_in_use(), r0 = tcl_rss_bytes();
    for (int i = 0; i < ENGINES; i++) {
        pkm_engine_config_t sc, cc;
        pkm_engine_t *c = NULL;
        pkm_engine_config_init(&sc, PKM_ROLE_SERVER);
        sc.server_key = server_key;
        pkm_engine_config_init(&cc, PKM_ROLE_CLIENT);
        cc.client_key = pkm_key_ref(client_key);
        if (pkm_engine_new(&sc, &eng[i]) != 0 || pkm_engine_new(&cc, &c) != 0) die("engine", 0);
        for (int k = 0; k < 3; k++) {
            pass(eng[i], c);
            pass(c, eng[i]);
        }
        pkm_packet_t pkt;
        if (pkm_engine_queue_packet(c, 1, 0, msg, sizeof msg) != 0) die("queue", 0);
        pass(c, eng[i]);
        if (pkm_engine_next_packet(eng[i], &pkt) != 1) die("receive", 0);
        if (pkm_engine_queue_packet(eng[i], 1, 0, msg, sizeof msg) != 0) die("queue", 0);
        pass(eng[i], c);
        pkm_engine_free(c);
        pkm_engine_trim(eng[i]);
    }
    size_t h1 = tcl_heap_in_use(), r1 = tcl_rss_bytes();
    for (int i = 0; i < ENGINES; i++)
        pkm_engine_free(eng[i]);
    *heap = (double)(h1 - h0) / ENGINES;
    *rss = r1 > r0 ? (double)(r1 - r0) / ENGINES : 0;
}

int main(void)
{
    pkm_key_t *server_key = NULL, *ck[NKEYS];
    if (pkm_key_generate(&server_key) != 0) die("key generation", 0);
    for (int i = 0; i < NKEYS; i++)
        if (pkm_key_generate(&ck[i]) != 0) die("key generation", 0);

    /* The anchor first, in a child of its own, so that neither measurement reuses memory the
     * other freed. */
    double anchor[2] = {0, 0};
    int ap[2];
    if (pipe(ap) != 0) die("pipe", 0);
    pid_t apid = fork();
    if (apid < 0) die("fork", 0);
    if (apid == 0) {
        close(ap[0]);
        bare_engines(server_key, ck[0], &anchor[0], &anchor[1]);
        _exit(write(ap[1], anchor, sizeof anchor) == (ssize_t)sizeof anchor ? 0 : 1);
    }
    close(ap[1]);
    int ast = 0;
    if (read(ap[0], anchor, sizeof anchor) != (ssize_t)sizeof anchor ||
        waitpid(apid, &ast, 0) != apid || !WIFEXITED(ast) || WEXITSTATUS(ast) != 0)
        die("bare engine measurement", 0);
    close(ap[0]);
    double heap_e = anchor[0]; /* anchor[1], their RSS, is not clean: see below */

    /* Fork before any thread exists (server loop, thread pool). */
    int p2c[2], c2p[2];
    if (pipe(p2c) != 0 || pipe(c2p) != 0) die("pipe", 0);
    pid_t pid = fork();
    if (pid < 0) die("fork", 0);
    if (pid == 0) {
        close(p2c[1]);
        close(c2p[0]);
        _exit(child_main(p2c[0], c2p[1], ck));
    }
    close(p2c[0]);
    close(c2p[1]);

    pkm_server_config_t cfg;
    pkm_server_config_init(&cfg);
    cfg.host = "127.0.0.1";
    cfg.engine.server_key = server_key;
    cfg.trim_after_ms = 200;
    cfg.max_conns = CONNS + WARMUP;
    cfg.handshake_timeout_ms = 120000;
    cfg.on_log = quiet_log;
    cfg.on_packet = echo;
    pkm_server_t *srv = NULL;
    int r = pkm_server_new(&cfg, &srv); /* raises RLIMIT_NOFILE to the hard limit */
    if (r != 0) die("pkm_server_new", r);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < CONNS + 64) {
        fprintf(stderr, "bench_memory: open-file limit %llu too low for %d connections\n",
                (unsigned long long)rl.rlim_cur, CONNS);
        return 1;
    }
    uint16_t port = pkm_server_port(srv);
    uint8_t pb[2] = {(uint8_t)(port >> 8), (uint8_t)port};
    pthread_t th;
    if (write(p2c[1], pb, 2) != 2 || pthread_create(&th, NULL, server_thread, srv) != 0)
        die("server start", 0);

    /* Baseline once the warm-up round is over (thread pool started, OpenSSL initialised). */
    if (tcl_read_byte(c2p[0], 60000) != 'w') die("warm-up round", 0);
    pkm_server_stats_t s;
    for (int i = 0; i < 2000; i++) {
        pkm_server_stats(srv, &s);
        if (s.conns_open == 0 && s.accepted == WARMUP) break;
        tcl_sleep_ms(5);
    }
    if (s.conns_open != 0) die("warm-up connections still open", 0);
    size_t heap0 = tcl_heap_in_use(), rss0 = tcl_rss_bytes();
    double t0 = bench_now();
    if (write(p2c[1], "g", 1) != 1) die("go", 0);
    if (tcl_read_byte(c2p[0], 150000) != 'k') die("clients", 0);
    double t1 = bench_now();
    tcl_sleep_ms(1000); /* idle: the sweep trims every connection (trim_after_ms 200) */
    pkm_server_stats(srv, &s);
    if (s.conns_established != CONNS) die("not every connection is established", 0);
    size_t heap1 = tcl_heap_in_use(), rss1 = tcl_rss_bytes();
    fprintf(stderr,
            "bench_memory: %d connections established in %.1f s; heap %zu -> %zu, RSS %zu -> %zu\n",
            CONNS, t1 - t0, heap0, heap1, rss0, rss1);

    close(p2c[1]); /* release the clients */
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("client process", 0);
    pkm_server_stop(srv);
    pthread_join(th, NULL);
    pkm_server_free(srv);

    if (!(heap_e > 0)) die("bare engine measurement", 0);
    double heap_per = (double)(heap1 - heap0) / CONNS;
    double rss_per = rss1 > rss0 ? (double)(rss1 - rss0) / CONNS : 0;
    char hn[96], rn[96], ha[128], ra[128];
    snprintf(hn, sizeof hn, "heap per idle connection, %d connections", CONNS);
    snprintf(rn, sizeof rn, "RSS per idle connection, %d connections", CONNS);
    snprintf(ha, sizeof ha, "heap per bare established engine (%d, in memory, trimmed)", ENGINES);
    /* The bare engines' RSS is not a clean anchor (their in-memory peers' freed memory stays
     * resident in that process): RSS too is set against the engines' heap. */
    snprintf(ra, sizeof ra, "heap per bare established engine (%d, in memory, trimmed)", ENGINES);
    struct bench_figure fh = {hn, heap_per, "bytes", ha, heap_e, 5, "value <= 16384"};
    struct bench_figure fr = {rn, rss_per, "bytes", ra, heap_e, 5, "value <= 16384"};
    bench_emit(&fh);
    bench_emit(&fr);
    close(c2p[0]);
    pkm_key_free(server_key);
    for (int i = 0; i < NKEYS; i++)
        pkm_key_free(ck[i]);
    return 0;
}
