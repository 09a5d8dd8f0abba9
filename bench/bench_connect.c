/* SPDX-License-Identifier: MIT */
/* Benchmark 4: pkm_connect latency on loopback (TCP connect + full handshake, until established)
 * with a warmed client key pool, against the same without it (a key generated per connect);
 * the server is the libuv server in a thread of this process. */
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>
#include <pkmcom/pkmcom.h>
#include "bench_common.h"

#define WITH_POOL    15 /* connects with the pool */
#define WITHOUT_POOL 9  /* connects without it (each generates an RSA-2048 key) */
#define POOL_SIZE    4

static _Noreturn void die(const char *what, int err)
{
    fprintf(stderr, "bench_connect: %s: %s\n", what, err ? pkm_errname(err) : "failed");
    exit(1);
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

/* One pkm_connect until established, in seconds; the connection is closed afterwards. */
static double one_connect(uint16_t port, pkm_keypool_t *pool)
{
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    cfg.engine.keypool = pool;
    char err[PKM_ERRMSG_SIZE];
    cfg.errbuf = err;
    cfg.errbuf_size = sizeof err;
    pkm_conn_t *c = NULL;
    double t0 = bench_now();
    int r = pkm_connect("127.0.0.1", port, &cfg, &c);
    double t = bench_now() - t0;
    if (r != 0) {
        fprintf(stderr, "bench_connect: %s\n", err);
        die("pkm_connect", r);
    }
    pkm_conn_close(c);
    return t;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The p-th percentile (0..100) of n sorted values, nearest rank. */
static double percentile(const double *v, size_t n, double p)
{
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

/* Waits (bounded) until the pool is full again, so that every measured connect finds it warm
 * and no key generation runs beside it. */
static void wait_full(pkm_keypool_t *pool)
{
    for (int i = 0; i < 3000 && pkm_keypool_ready(pool) < POOL_SIZE; i++)
        usleep(2000);
}

int main(void)
{
    pkm_key_t *server_key = NULL;
    if (pkm_key_generate(&server_key) != 0) die("key generation", 0);
    pkm_server_config_t scfg;
    pkm_server_config_init(&scfg);
    scfg.host = "127.0.0.1";
    scfg.engine.server_key = server_key;
    scfg.on_log = quiet_log;
    pkm_server_t *srv = NULL;
    int r = pkm_server_new(&scfg, &srv);
    if (r != 0) die("pkm_server_new", r);
    uint16_t port = pkm_server_port(srv);
    pthread_t th;
    if (pthread_create(&th, NULL, server_thread, srv) != 0) die("server thread", 0);
    pkm_keypool_t *pool = NULL;
    if ((r = pkm_keypool_new(POOL_SIZE, &pool)) != 0) die("pkm_keypool_new", r);

    /* Warm-up: the server's thread pool, OpenSSL's lazy initialisation, the loopback path. */
    wait_full(pool);
    one_connect(port, pool);

    /* The two kinds in separate blocks, the pooled ones first: a connect right after one that
     * spent ~100 ms generating a key finds the scheduler favouring this machine's other tasks,
     * which is the key generation's doing, not the pool's. */
    double with[WITH_POOL], without[WITHOUT_POOL];
    size_t nw = 0, no = 0;
    while (nw < WITH_POOL) {
        wait_full(pool);
        with[nw++] = one_connect(port, pool);
    }
    while (no < WITHOUT_POOL)
        without[no++] = one_connect(port, NULL);
    pkm_keypool_free(pool);
    pkm_server_stop(srv);
    pthread_join(th, NULL);
    pkm_server_free(srv);
    pkm_key_free(server_key);

    qsort(with, nw, sizeof with[0], cmp_double);
    qsort(without, no, sizeof without[0], cmp_double);
    double w50 = percentile(with, nw, 50) * 1e3, w90 = percentile(with, nw, 90) * 1e3;
    double o50 = percentile(without, no, 50) * 1e3, o90 = percentile(without, no, 90) * 1e3;
    char n50[96], n90[96], a50[96], a90[96];
    snprintf(n50, sizeof n50, "connect latency with key pool, median of %d", WITH_POOL);
    snprintf(n90, sizeof n90, "connect latency with key pool, p90 of %d", WITH_POOL);
    snprintf(a50, sizeof a50, "without key pool (key generated per connect), median of %d",
             WITHOUT_POOL);
    snprintf(a90, sizeof a90, "without key pool (key generated per connect), p90 of %d",
             WITHOUT_POOL);
    struct bench_figure f50 = {n50, w50, "ms", a50, o50, 4, "value < 5"};
    struct bench_figure f90 = {n90, w90, "ms", a90, o90, 4, NULL};
    bench_emit(&f50);
    bench_emit(&f90);
    return 0;
}
