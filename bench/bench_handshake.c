/* SPDX-License-Identifier: MIT */
/* Benchmark 3: handshakes. Server CPU time per handshake (a server engine driven in memory, its
 * calls alone timed on the thread's CPU clock) against the floor of two RSA-2048 private-key
 * operations; and handshakes per second with many concurrent clients against the libuv server. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <pkmcom/pkmcom.h>
#include "bench_common.h"
/* The many-clients driver of the server tests (one libuv loop of client engines), compiled in:
 * it depends only on the library and libuv. */
#include "../tests/support/clients.c"

#define NKEYS          4   /* pre-generated client key pairs, reused round robin */
#define ENGINE_ROUNDS  8   /* rounds of the in-memory measurement, the best kept */
#define ENGINE_HS      40  /* handshakes per round */
#define SERVER_WARMUP  16  /* handshakes before the libuv measurement starts */
#define SERVER_CLIENTS 600 /* clients of the libuv measurement */
#define SERVER_PENDING 128 /* of which connecting or handshaking at once */

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double process_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static _Noreturn void die(const char *what, int err)
{
    fprintf(stderr, "bench_handshake: %s: %s\n", what, err ? pkm_errname(err) : "failed");
    exit(1);
}

/* Moves what `from` has queued into `to`; the time spent in the server's calls is added to
 * *srv_cpu (from_server says which side is the server). */
static void pass(pkm_engine_t *from, pkm_engine_t *to, int from_server, double *srv_cpu)
{
    size_t len = 0;
    double t0 = from_server ? thread_cpu() : 0;
    const uint8_t *p = pkm_engine_send_buf(from, &len);
    if (from_server) *srv_cpu += thread_cpu() - t0;
    if (!len) return;
    if (!from_server) t0 = thread_cpu();
    int r = pkm_engine_feed(to, p, len); /* the copy into `to` happens before `from` is acked */
    if (!from_server) *srv_cpu += thread_cpu() - t0;
    if (r < 0) die("handshake", r);
    if (from_server) t0 = thread_cpu();
    pkm_engine_send_ack(from, len);
    if (from_server) *srv_cpu += thread_cpu() - t0;
}

/* One full handshake in memory; returns the server's CPU time: its engine's creation, every call
 * made on it, and its freeing. The client's calls are not counted. */
static double one_handshake(const pkm_key_t *server_key, pkm_key_t *client_key)
{
    pkm_engine_config_t sc, cc;
    pkm_engine_t *s = NULL, *c = NULL;
    double srv = 0;
    pkm_engine_config_init(&cc, PKM_ROLE_CLIENT);
    cc.client_key = pkm_key_ref(client_key);
    if (pkm_engine_new(&cc, &c) != 0) die("client engine", 0);
    pkm_engine_config_init(&sc, PKM_ROLE_SERVER);
    sc.server_key = server_key;
    double t0 = thread_cpu();
    int r = pkm_engine_new(&sc, &s);
    srv += thread_cpu() - t0;
    if (r != 0) die("server engine", r);
    pass(s, c, 1, &srv); /* ServerKey */
    pass(c, s, 0, &srv); /* ClientKey + KeyShare: the server answers with its KeyShare */
    pass(s, c, 1, &srv); /* the server's KeyShare: the client sends its 0xFF */
    pass(c, s, 0, &srv); /* the client's 0xFF: the server answers */
    pass(s, c, 1, &srv);
    if (pkm_engine_state(s) != PKM_STATE_ESTABLISHED ||
        pkm_engine_state(c) != PKM_STATE_ESTABLISHED)
        die("handshake did not complete",
            pkm_engine_error(s) ? pkm_engine_error(s) : pkm_engine_error(c));
    t0 = thread_cpu();
    pkm_engine_free(s);
    srv += thread_cpu() - t0;
    pkm_engine_free(c);
    return srv;
}

/* ---- the libuv server with many clients (clients in a forked child) ---- */

static int read_byte(int fd, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return -1;
    char b;
    return read(fd, &b, 1) == 1 ? (unsigned char)b : -1;
}

/* The child: a warm-up round, then the measured round when told; 'k' when all succeeded. */
static int child_main(int from_parent, int to_parent, pkm_key_t **keys)
{
    uint8_t pb[2];
    if (read(from_parent, pb, 2) != 2) return 10;
    tcl_opts_t o;
    memset(&o, 0, sizeof o);
    o.port = (uint16_t)(pb[0] << 8 | pb[1]);
    o.keys = keys;
    o.nkeys = NKEYS;
    o.ready_fd = o.release_fd = -1;
    o.timeout_ms = 120000;
    o.nclients = SERVER_WARMUP;
    tcl_result_t r;
    if (tcl_run(&o, &r) != 0 || r.established != SERVER_WARMUP) return 11;
    if (write(to_parent, "w", 1) != 1) return 12;
    if (read_byte(from_parent, 60000) != 'g') return 13;
    o.nclients = SERVER_CLIENTS;
    o.max_pending = SERVER_PENDING;
    if (tcl_run(&o, &r) != 0) return 14;
    if (r.established != SERVER_CLIENTS) {
        fprintf(stderr, "bench_handshake: child: %zu of %d established, first error %s\n",
                r.established, SERVER_CLIENTS, pkm_errname(r.first_err));
        return 15;
    }
    return write(to_parent, "k", 1) == 1 ? 0 : 16;
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

int main(void)
{
    pkm_key_t *server_key = NULL, *ck[NKEYS];
    if (pkm_key_generate(&server_key) != 0) die("key generation", 0);
    for (int i = 0; i < NKEYS; i++)
        if (pkm_key_generate(&ck[i]) != 0) die("key generation", 0);
    double floor_s = 2 * bench_anchor_rsa2048_sign();

    /* The child is forked before any thread exists (server loop, thread pool). */
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

    /* Server CPU per handshake, in memory: best round (a noisy neighbour only adds). */
    double best = 1e9;
    for (int round = 0; round < ENGINE_ROUNDS; round++) {
        double sum = 0;
        for (int i = 0; i < ENGINE_HS; i++)
            sum += one_handshake(server_key, ck[i % NKEYS]);
        double per = sum / ENGINE_HS;
        fprintf(stderr, "bench_handshake: round %d: server CPU %.1f us per handshake\n", round,
                per * 1e6);
        if (per < best) best = per;
    }

    /* Many concurrent clients against the libuv server. */
    pkm_server_config_t cfg;
    pkm_server_config_init(&cfg);
    cfg.host = "127.0.0.1";
    cfg.engine.server_key = server_key;
    cfg.on_log = quiet_log;
    cfg.handshake_timeout_ms = 60000;
    pkm_server_t *srv = NULL;
    int r = pkm_server_new(&cfg, &srv);
    if (r != 0) die("pkm_server_new", r);
    uint16_t port = pkm_server_port(srv);
    uint8_t pb[2] = {(uint8_t)(port >> 8), (uint8_t)port};
    pthread_t th;
    if (write(p2c[1], pb, 2) != 2 || pthread_create(&th, NULL, server_thread, srv) != 0)
        die("server start", 0);
    if (read_byte(c2p[0], 120000) != 'w') die("warm-up round", 0);
    pkm_server_stats_t st0, st1;
    pkm_server_stats(srv, &st0);
    double t0 = bench_now(), cpu0 = process_cpu();
    if (write(p2c[1], "g", 1) != 1) die("go", 0);
    int done = read_byte(c2p[0], 120000);
    double t1 = bench_now(), cpu1 = process_cpu();
    pkm_server_stats(srv, &st1);
    int status = 0;
    if (done != 'k' || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        die("clients", 0);
    pkm_server_stop(srv);
    pthread_join(th, NULL);
    pkm_server_free(srv);
    uint64_t hs = st1.handshakes_ok - st0.handshakes_ok;
    if (hs != SERVER_CLIENTS) die("server handshake count", 0);
    /* Every handshake costs four RSA-2048 private-key operations in all (two on each side), and
     * clients and server share this machine's cores: that bounds the rate. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    double hs_rate = (double)hs / (t1 - t0);
    double hs_bound = (double)(cores > 0 ? cores : 1) / (2 * floor_s);
    double srv_cpu = (cpu1 - cpu0) / (double)hs;
    fprintf(stderr,
            "bench_handshake: libuv server: %llu handshakes in %.2f s, server process CPU %.2f s\n",
            (unsigned long long)hs, t1 - t0, cpu1 - cpu0);

    struct bench_figure engine = {"server CPU per handshake (engine)",
                                  best * 1e6,
                                  "us",
                                  "2 x openssl speed rsa2048 sign",
                                  floor_s * 1e6,
                                  3,
                                  "ratio <= 1.2"};
    char sname[96], name[96], aname[128];
    snprintf(sname, sizeof sname, "server CPU per handshake (libuv server, %d clients)",
             SERVER_CLIENTS);
    struct bench_figure server = {
        sname, srv_cpu * 1e6, "us", "2 x openssl speed rsa2048 sign", floor_s * 1e6, 3, NULL};
    snprintf(name, sizeof name, "handshakes/s (libuv server, %d clients, %d at once)",
             SERVER_CLIENTS, SERVER_PENDING);
    snprintf(aname, sizeof aname,
             "%ld cores / (4 x openssl speed rsa2048 sign): clients on the same machine", cores);
    struct bench_figure rate = {name, hs_rate, "handshakes/s", aname, hs_bound, 3, NULL};
    bench_emit(&engine);
    bench_emit(&server);
    bench_emit(&rate);

    close(p2c[1]);
    close(c2p[0]);
    pkm_key_free(server_key);
    for (int i = 0; i < NKEYS; i++)
        pkm_key_free(ck[i]);
    return 0;
}
