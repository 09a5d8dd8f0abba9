/* SPDX-License-Identifier: MIT */
/* Benchmarks 1 and 2: the PkmCom channel over one loopback TCP connection (client engine -> server
 * engine after a real handshake, raw packets): throughput by content size against AES-256-CBC,
 * and 32-byte packets per second pipelined, interleaved with the TLS 1.3 peer in this process. */
#include <pkmcom/pkmcom.h>
#include "tls_peer.h"

#define ID 0x42
/* Figure 1: rounds per size, seconds per round; figure 2: rounds, seconds per round. */
#define TP_ROUNDS   3
#define TP_SECONDS  0.25
#define SP_ROUNDS   5
#define SP_SECONDS  0.3
#define SMALL_BYTES 32

/* The keys, made once: a server key pair and a pre-generated client key pair (each connection
 * takes a reference to it, so no connection pays for key generation). */
struct pkm_cfg {
    pkm_key_t *server_key;
    pkm_key_t *client_key;
};

struct pkm_side {
    pkm_engine_t *e;
};

/* Blocking handshake over fd, over what the engine wants: write what it has queued, read when it
 * needs more. */
static int pkm_drive_handshake(pkm_engine_t *e, int fd)
{
    for (;;) {
        unsigned w = pkm_engine_wants(e);
        if (w & PKM_WANT_CLOSED) {
            fprintf(stderr, "pkmcom: handshake failed: %s at %s\n",
                    pkm_errname(pkm_engine_error(e)), pkm_engine_fail_step(e));
            return -1;
        }
        if (w & PKM_WANT_SEND) {
            size_t len = 0;
            const uint8_t *out = pkm_engine_send_buf(e, &len);
            if (bench_write_all(fd, out, len) != 0) return -1;
            pkm_engine_send_ack(e, len);
            continue;
        }
        if (pkm_engine_state(e) == PKM_STATE_ESTABLISHED) return 0;
        size_t cap = 0;
        uint8_t *in = pkm_engine_recv_buf(e, &cap);
        if (!in) return -1;
        ssize_t got = read(fd, in, cap);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            fprintf(stderr, "pkmcom: connection ended during the handshake\n");
            return -1;
        }
        if (pkm_engine_recv_ack(e, (size_t)got) < 0) continue; /* reported above */
    }
}

static void *pkm_open(struct pkm_cfg *cfg, int fd, int role)
{
    pkm_engine_config_t ec;
    pkm_engine_config_init(&ec, role);
    if (role == PKM_ROLE_SERVER)
        ec.server_key = cfg->server_key;
    else
        ec.client_key = pkm_key_ref(cfg->client_key);
    ec.max_packet_size = 2u << 20;  /* room for the 1 MiB packets */
    ec.max_send_buffer = 16u << 20; /* the harness flushes at 64 KiB: never reached */
    struct pkm_side *s = calloc(1, sizeof *s);
    if (!s || pkm_engine_new(&ec, &s->e) != 0 || pkm_drive_handshake(s->e, fd) != 0) {
        if (s) pkm_engine_free(s->e);
        free(s);
        return NULL;
    }
    return s;
}

static void *pkm_client_open(void *cfg, int fd)
{
    return pkm_open(cfg, fd, PKM_ROLE_CLIENT);
}

static void *pkm_server_open(void *cfg, int fd)
{
    return pkm_open(cfg, fd, PKM_ROLE_SERVER);
}

/* Every packet carries its APL hashcode, computed by the sender and checked by the receiver, as
 * real traffic does: a packet of one Byte Array-like run of content. */
static uint32_t pkm_hash(const uint8_t *msg, size_t len)
{
    return pkm_packet_hash(ID, pkm_hashsum_bytes(msg, len));
}

static int pkm_send(void *p, const uint8_t *msg, size_t len)
{
    struct pkm_side *s = p;
    return pkm_engine_queue_packet(s->e, ID, pkm_hash(msg, len), msg, len) == 0 ? 0 : -1;
}

/* Writer-thread mode: the packet is encrypted straight into the harness's buffer. */
static long pkm_seal(void *p, const uint8_t *msg, size_t len, uint8_t *out, size_t cap)
{
    struct pkm_side *s = p;
    size_t got = 0;
    int r = pkm_engine_seal_packet(s->e, ID, pkm_hash(msg, len), msg, len, out, cap, &got);
    if (r < 0) {
        fprintf(stderr, "pkmcom: sealing failed: %s\n", pkm_errname(r));
        return -1;
    }
    return (long)got;
}

static size_t pkm_pending(void *p, const uint8_t **wire)
{
    size_t len = 0;
    *wire = pkm_engine_send_buf(((struct pkm_side *)p)->e, &len);
    return len;
}

static void pkm_written(void *p)
{
    struct pkm_side *s = p;
    size_t len = 0;
    pkm_engine_send_buf(s->e, &len);
    pkm_engine_send_ack(s->e, len);
}

static int pkm_feed(void *p, const uint8_t *wire, size_t n, struct bench_sink *sink)
{
    struct pkm_side *s = p;
    if (pkm_engine_feed(s->e, wire, n) != 0) return -1;
    pkm_packet_t pkt;
    int r;
    while ((r = pkm_engine_next_packet(s->e, &pkt)) == 1) {
        if (pkt.id != ID || pkt.size != sink->msg_len ||
            pkt.hash != pkm_hash(pkt.content, pkt.size)) {
            fprintf(stderr, "pkmcom: a packet arrived with the wrong id, size or hashcode\n");
            return -1;
        }
        bench_sink_data(sink, pkt.content, pkt.size);
    }
    if (r < 0) fprintf(stderr, "pkmcom: receiving failed: %s\n", pkm_errname(r));
    return r;
}

static void pkm_close(void *p)
{
    struct pkm_side *s = p;
    if (s) pkm_engine_free(s->e);
    free(s);
}

static const struct bench_proto pkm_proto = {
    "PkmCom",    pkm_client_open, pkm_server_open, pkm_send,  pkm_pending,
    pkm_written, pkm_feed,        pkm_close,       pkm_close, pkm_seal,
};

/* One run's rates: per second of CPU time of the busiest thread (the pipeline's bottleneck, as
 * `openssl speed` counts CPU time too), and per second of wall-clock time. Messages/s, or
 * content MB/s when bytes is set. The best of the runs is kept in best[0] and best[1]. */
static void run_once(const struct bench_proto *p, void *cfg, size_t len, double seconds, int mode,
                     int bytes, double best[2])
{
    struct bench_run r;
    if (bench_pipeline(p, cfg, len, seconds, mode, &r) != 0) {
        fprintf(stderr, "bench_channel: %s with %zu-byte messages failed\n", p->name, len);
        exit(1);
    }
    double amount = bytes ? (double)r.bytes / 1e6 : (double)r.msgs;
    double cpu = r.client_cpu > r.server_cpu ? r.client_cpu : r.server_cpu;
    if (r.writer_cpu > cpu) cpu = r.writer_cpu;
    double v_cpu = amount / cpu, v_wall = amount / r.seconds;
    fprintf(stderr,
            "%s %zu B%s: %.3f s, CPU: client %.3f s, writer %.3f s, server %.3f s: %.4g per CPU s, "
            "%.4g per s\n",
            p->name, len, mode == BENCH_WRITER_THREAD ? " (writer thread)" : "", r.seconds,
            r.client_cpu, r.writer_cpu, r.server_cpu, v_cpu, v_wall);
    if (v_cpu > best[0]) best[0] = v_cpu;
    if (v_wall > best[1]) best[1] = v_wall;
}

/* Without arguments: every figure. With content sizes as arguments (for profiling): figure 1 at
 * those sizes only. */
int main(int argc, char **argv)
{
    static const size_t all_sizes[] = {64, 256, 1024, 4096, 16384, 65536, 262144, 1048576};
    size_t sizes[32], nsizes = 0;
    for (int i = 1; i < argc && nsizes < 32; i++)
        sizes[nsizes++] = strtoul(argv[i], NULL, 10);
    if (nsizes == 0)
        for (size_t i = 0; i < sizeof all_sizes / sizeof all_sizes[0]; i++)
            sizes[nsizes++] = all_sizes[i];
    struct pkm_cfg cfg = {NULL, NULL};
    struct bench_tls tls;
    if (pkm_key_generate(&cfg.server_key) != 0 || pkm_key_generate(&cfg.client_key) != 0 ||
        bench_tls_init(&tls) != 0) {
        fprintf(stderr, "bench_channel: key generation failed\n");
        return 1;
    }

    /* Figure 1. The anchor is `openssl speed` from this run's anchors (measured just before the
     * programs run, on the same machine), which counts CPU time: so does the figure. The sender
     * seals packets into buffers a writer thread sends (the figure, and its wall-clock rate), and
     * beside it, without goal, queues and sends them from one thread; the two alternate round by
     * round. */
    for (size_t i = 0; i < nsizes; i++) {
        size_t n = sizes[i], block = 0;
        double anchor = bench_anchor_aes_cbc(n, &block), best[2] = {0, 0}, one[2] = {0, 0};
        for (int round = 0; round < TP_ROUNDS; round++) {
            run_once(&pkm_proto, &cfg, n, TP_SECONDS, BENCH_WRITER_THREAD, 1, best);
            run_once(&pkm_proto, &cfg, n, TP_SECONDS, BENCH_ONE_THREAD, 1, one);
        }
        char name[64], wname[80], oname[80], aname[96];
        snprintf(name, sizeof name, "throughput %zu B", n);
        snprintf(wname, sizeof wname, "throughput %zu B, wall clock", n);
        snprintf(oname, sizeof oname, "throughput %zu B, one thread", n);
        snprintf(aname, sizeof aname, "openssl speed -evp aes-256-cbc %zu B", block);
        struct bench_figure f = {
            name, best[0], "MB/s", aname, anchor, 1, n >= 16384 ? "ratio >= 0.85" : NULL};
        struct bench_figure w = {wname, best[1], "MB/s", aname, anchor, 0, NULL};
        struct bench_figure o = {oname, one[0], "MB/s", aname, anchor, 0, NULL};
        bench_emit(&f);
        bench_emit(&w);
        bench_emit(&o);
    }

    /* Figure 2: PkmCom and TLS alternate round by round, so a noisy neighbour hurts both alike;
     * the best round of each is kept. */
    double pkm[2] = {0, 0}, tls_rate[2] = {0, 0};
    for (int round = 0; round < (argc > 1 ? 0 : SP_ROUNDS); round++) {
        run_once(&pkm_proto, &cfg, SMALL_BYTES, SP_SECONDS, BENCH_ONE_THREAD, 0, pkm);
        run_once(&bench_tls_proto, &tls, SMALL_BYTES, SP_SECONDS, BENCH_ONE_THREAD, 0, tls_rate);
    }
    if (argc == 1) {
        struct bench_figure small = {"pipelined 32 B packets",
                                     pkm[0],
                                     "packets/s",
                                     "TLS 1.3 pipelined 32 B messages, same harness, interleaved",
                                     tls_rate[0],
                                     2,
                                     "value >= 1e6 and ratio > 1"};
        struct bench_figure wall = {"pipelined 32 B packets, wall clock",
                                    pkm[1],
                                    "packets/s",
                                    "TLS 1.3 pipelined 32 B messages, wall clock",
                                    tls_rate[1],
                                    0,
                                    NULL};
        bench_emit(&small);
        bench_emit(&wall);
    }

    bench_tls_free(&tls);
    pkm_key_free(cfg.server_key);
    pkm_key_free(cfg.client_key);
    return 0;
}
