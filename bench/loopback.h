/* SPDX-License-Identifier: MIT */
/* The loopback harness shared by the channel and TLS benchmarks: one TCP connection on 127.0.0.1,
 * a client that pipelines fixed-size messages and a server thread that receives and checks them,
 * timed the same way for every protocol plugged in through struct bench_proto. */
#ifndef PKM_BENCH_LOOPBACK_H
#define PKM_BENCH_LOOPBACK_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include "bench_common.h"

/* How the harness moves bytes, identical for every protocol:
 * - one-thread mode (BENCH_ONE_THREAD): the client queues messages into the protocol, and writes
 *   the wire bytes queued so far to the socket with one send(2) (looping only on short sends)
 *   whenever they reach BENCH_BATCH bytes, and once more at the end; so every protocol pays the
 *   same syscalls per byte;
 * - writer-thread mode (BENCH_WRITER_THREAD, for protocols with client_seal): the client thread
 *   seals messages straight into one of BENCH_WBUFS buffers of its own and hands each buffer, once
 *   it holds BENCH_BATCH bytes, to a writer thread that send(2)s it as above, while the client
 *   seals the next: the sender's cipher work and its kernel work run on two cores, as a sender
 *   built for throughput would run them. Same batches, same syscalls, no extra copy;
 * - the server read(2)s up to BENCH_READ bytes at a time and hands them to the protocol, which
 *   passes the content it decrypts to a struct bench_sink.
 * Each message is msg_len bytes of content (msg_len >= 8) whose first 8 bytes are its sequence
 * number, little-endian, from 0; the sink checks every one, so a lost, repeated, reordered or
 * corrupted message fails the run. */
#define BENCH_BATCH (256u * 1024u)
#define BENCH_READ  (256u * 1024u)
#define BENCH_WBUFS 3
enum { BENCH_ONE_THREAD = 0, BENCH_WRITER_THREAD = 1 };

/* Receives the content stream and cuts it into messages (zero-copy: only the 8-byte header of
 * each message is looked at). Content may arrive in any split. */
struct bench_sink {
    size_t msg_len;
    size_t off; /* bytes of the current message seen */
    uint64_t msgs;
    uint64_t bytes;
    int bad;
    uint8_t hdr[8];
};

static inline void bench_put_seq(uint8_t *p, uint64_t seq)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(seq >> (8 * i));
}

static inline void bench_sink_data(struct bench_sink *s, const uint8_t *p, size_t n)
{
    s->bytes += n;
    while (n > 0) {
        size_t k = s->msg_len - s->off;
        if (k > n) k = n;
        if (s->off < 8) {
            size_t h = 8 - s->off;
            if (h > k) h = k;
            memcpy(s->hdr + s->off, p, h);
            if (s->off + h == 8) {
                uint64_t seq = 0;
                for (int i = 7; i >= 0; i--)
                    seq = seq << 8 | s->hdr[i];
                if (seq != s->msgs && !s->bad) {
                    fprintf(stderr, "loopback: message %llu arrived as %llu\n",
                            (unsigned long long)s->msgs, (unsigned long long)seq);
                    s->bad = 1;
                }
            }
        }
        s->off += k;
        p += k;
        n -= k;
        if (s->off == s->msg_len) {
            s->msgs++;
            s->off = 0;
        }
    }
}

/* A protocol under test. cfg is the caller's (keys, contexts), shared by both sides; each side
 * has its own state returned by its open function, used by one thread only. */
struct bench_proto {
    const char *name;
    /* Set up one side on the connected socket fd, handshake included (blocking reads and writes
     * on fd are fine: the other side runs concurrently). NULL on failure, said on stderr. */
    void *(*client_open)(void *cfg, int fd);
    void *(*server_open)(void *cfg, int fd);
    /* Queue one message; its wire bytes join the pending output. 0, or -1 on failure. */
    int (*client_send)(void *c, const uint8_t *msg, size_t len);
    /* The pending wire bytes: *wire stays valid until client_written or client_send. */
    size_t (*client_pending)(void *c, const uint8_t **wire);
    /* All pending bytes have been written to the socket: drop them. */
    void (*client_written)(void *c);
    /* Wire bytes read from the socket; content delivered goes to sink. 0, or -1 on failure. */
    int (*server_feed)(void *s, const uint8_t *wire, size_t n, struct bench_sink *sink);
    void (*client_close)(void *c);
    void (*server_close)(void *s);
    /* Optional (writer-thread mode): encrypt one message straight into out, which has cap bytes
     * of room (always at least len + 64), instead of queueing it. Returns the wire bytes
     * written, or -1 on failure. */
    long (*client_seal)(void *c, const uint8_t *msg, size_t len, uint8_t *out, size_t cap);
};

/* One timed run: messages delivered, content bytes, and seconds from the end of the client's
 * handshake to the server having processed the last byte; and the CPU time (user + system,
 * CLOCK_THREAD_CPUTIME_ID) each thread spent over that span, handshakes excluded: the client's
 * (queueing or sealing, and in one-thread mode its writes), the writer's (writer-thread mode
 * only, else 0) and the server's. On a shared machine the wall-clock time includes waiting for a
 * core; the CPU times do not. */
struct bench_run {
    uint64_t msgs;
    uint64_t bytes;
    double seconds;
    double client_cpu;
    double writer_cpu;
    double server_cpu;
};

static inline double bench_thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int bench_write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL); /* a failed peer: EPIPE, not SIGPIPE */
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            perror("loopback: send");
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* A connected pair of TCP sockets over 127.0.0.1 on an ephemeral port, TCP_NODELAY on both. */
static inline int bench_tcp_pair(int *client_fd, int *server_fd)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    int one = 1, c = -1, s = -1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &alen) != 0)
        goto fail;
    c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0) goto fail;
    s = accept(l, NULL, NULL);
    if (s < 0) goto fail;
    if (setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        goto fail;
    close(l);
    *client_fd = c;
    *server_fd = s;
    return 0;
fail:
    perror("loopback: socket setup");
    if (l >= 0) close(l);
    if (c >= 0) close(c);
    if (s >= 0) close(s);
    return -1;
}

struct bench_server_arg {
    const struct bench_proto *proto;
    void *cfg;
    int fd;
    struct bench_sink sink;
    double t_end;
    double cpu; /* thread CPU time from the end of the handshake to the end of the stream */
    int failed;
};

static inline void *bench_server_main(void *argp)
{
    struct bench_server_arg *a = argp;
    uint8_t *buf = malloc(BENCH_READ);
    void *s = buf ? a->proto->server_open(a->cfg, a->fd) : NULL;
    a->failed = 1;
    if (s) {
        double cpu0 = bench_thread_cpu_now();
        for (;;) {
            ssize_t r = read(a->fd, buf, BENCH_READ);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                perror("loopback: read");
                break;
            }
            if (r == 0) {
                a->t_end = bench_now();
                a->cpu = bench_thread_cpu_now() - cpu0;
                a->failed = 0;
                break;
            }
            if (a->proto->server_feed(s, buf, (size_t)r, &a->sink) != 0) {
                fprintf(stderr, "loopback: %s server failed on received bytes\n", a->proto->name);
                break;
            }
        }
        a->proto->server_close(s);
    }
    /* On failure, stop the client: it may be blocked writing to us. */
    if (a->failed) shutdown(a->fd, SHUT_RDWR);
    free(buf);
    return NULL;
}

static inline int bench_client_flush(const struct bench_proto *p, void *c, int fd)
{
    const uint8_t *wire;
    size_t n = p->client_pending(c, &wire);
    if (n == 0) return 0;
    if (bench_write_all(fd, wire, n) != 0) return -1;
    p->client_written(c);
    return 0;
}

/* The writer thread of writer-thread mode: buffer k (of BENCH_WBUFS, in turn) is the client's to
 * fill while k >= written, and the writer's to send while written <= k < filled. */
struct bench_writer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int fd;
    uint8_t *buf[BENCH_WBUFS];
    size_t len[BENCH_WBUFS];
    uint64_t filled, written;
    int done, failed;
    double cpu;
};

static inline void *bench_writer_main(void *argp)
{
    struct bench_writer *w = argp;
    double cpu0 = bench_thread_cpu_now();
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->written == w->filled && !w->done)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->written == w->filled) break; /* done, all sent */
        unsigned k = (unsigned)(w->written % BENCH_WBUFS);
        pthread_mutex_unlock(&w->mu);
        int rc = bench_write_all(w->fd, w->buf[k], w->len[k]);
        pthread_mutex_lock(&w->mu);
        if (rc != 0) {
            w->failed = 1;
            pthread_cond_broadcast(&w->cv);
            break;
        }
        w->written++;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    w->cpu = bench_thread_cpu_now() - cpu0;
    return NULL;
}

/* The client's side of writer-thread mode: seals messages until the deadline; 0, or -1. */
static inline int bench_client_sealing(const struct bench_proto *p, void *c, int fd, uint8_t *msg,
                                       size_t msg_len, double deadline, uint64_t *seq,
                                       double *writer_cpu)
{
    struct bench_writer w;
    size_t cap = BENCH_BATCH + msg_len + 64;
    int ok = 1;
    memset(&w, 0, sizeof w);
    w.fd = fd;
    for (int k = 0; k < BENCH_WBUFS; k++)
        if (!(w.buf[k] = malloc(cap))) ok = 0;
    pthread_t th;
    if (!ok || pthread_mutex_init(&w.mu, NULL) != 0) goto out;
    if (pthread_cond_init(&w.cv, NULL) != 0) {
        pthread_mutex_destroy(&w.mu);
        ok = 0;
        goto out;
    }
    if (pthread_create(&th, NULL, bench_writer_main, &w) != 0) {
        ok = 0;
        goto destroy;
    }
    for (int more = 1; more && ok;) {
        /* Wait for a free buffer. */
        pthread_mutex_lock(&w.mu);
        while (w.filled - w.written >= BENCH_WBUFS && !w.failed)
            pthread_cond_wait(&w.cv, &w.mu);
        if (w.failed) ok = 0;
        unsigned k = (unsigned)(w.filled % BENCH_WBUFS);
        pthread_mutex_unlock(&w.mu);
        if (!ok) break;
        size_t fill = 0;
        while (fill < BENCH_BATCH) {
            bench_put_seq(msg, *seq);
            long n = p->client_seal(c, msg, msg_len, w.buf[k] + fill, cap - fill);
            if (n <= 0) {
                fprintf(stderr, "loopback: %s client failed to seal\n", p->name);
                ok = 0;
                break;
            }
            fill += (size_t)n;
            (*seq)++;
        }
        more = bench_now() < deadline;
        pthread_mutex_lock(&w.mu);
        w.len[k] = fill;
        if (ok) w.filled++;
        if (!more || !ok) w.done = 1;
        pthread_cond_broadcast(&w.cv);
        pthread_mutex_unlock(&w.mu);
    }
    if (!ok) { /* let the writer end even if the loop stopped early */
        pthread_mutex_lock(&w.mu);
        w.done = 1;
        pthread_cond_broadcast(&w.cv);
        pthread_mutex_unlock(&w.mu);
    }
    pthread_join(th, NULL);
    if (w.failed) ok = 0;
    *writer_cpu = w.cpu;
destroy:
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
out:
    for (int k = 0; k < BENCH_WBUFS; k++)
        free(w.buf[k]);
    return ok ? 0 : -1;
}

/* Opens a connection, runs the protocol's handshake on both sides, pipelines msg_len-byte
 * messages for about `seconds` in `mode` (BENCH_ONE_THREAD, or BENCH_WRITER_THREAD when the
 * protocol has client_seal), and checks every one arrived in order. 0, or -1 (said on stderr). */
static inline int bench_pipeline(const struct bench_proto *p, void *cfg, size_t msg_len,
                                 double seconds, int mode, struct bench_run *out)
{
    int cfd, sfd, rc = -1;
    uint8_t *msg = calloc(1, msg_len);
    if (mode == BENCH_WRITER_THREAD && !p->client_seal) {
        fprintf(stderr, "loopback: %s has no writer-thread mode\n", p->name);
        free(msg);
        return -1;
    }
    if (!msg || msg_len < 8 || bench_tcp_pair(&cfd, &sfd) != 0) {
        free(msg);
        return -1;
    }
    for (size_t i = 8; i < msg_len; i++)
        msg[i] = (uint8_t)(i * 131u + 7u);
    struct bench_server_arg sa = {.proto = p, .cfg = cfg, .fd = sfd, .sink = {.msg_len = msg_len}};
    pthread_t th;
    if (pthread_create(&th, NULL, bench_server_main, &sa) != 0) {
        close(cfd);
        close(sfd);
        free(msg);
        return -1;
    }
    void *c = p->client_open(cfg, cfd);
    uint64_t seq = 0;
    double t0 = bench_now(), deadline = t0 + seconds, cpu0 = bench_thread_cpu_now();
    double writer_cpu = 0;
    int ok = c != NULL;
    if (ok && mode == BENCH_WRITER_THREAD) {
        ok = bench_client_sealing(p, c, cfd, msg, msg_len, deadline, &seq, &writer_cpu) == 0;
    } else {
        while (ok) {
            bench_put_seq(msg, seq);
            if (p->client_send(c, msg, msg_len) != 0) {
                fprintf(stderr, "loopback: %s client failed to send\n", p->name);
                ok = 0;
                break;
            }
            seq++;
            const uint8_t *wire;
            if (p->client_pending(c, &wire) >= BENCH_BATCH) {
                if (bench_client_flush(p, c, cfd) != 0) ok = 0;
                if (bench_now() >= deadline) break;
            }
        }
        if (ok && bench_client_flush(p, c, cfd) != 0) ok = 0;
    }
    double client_cpu = bench_thread_cpu_now() - cpu0;
    shutdown(cfd, SHUT_WR);
    pthread_join(th, NULL);
    if (c) p->client_close(c);
    close(cfd);
    close(sfd);
    free(msg);
    if (ok && !sa.failed) {
        if (sa.sink.bad || sa.sink.msgs != seq || sa.sink.off != 0) {
            fprintf(stderr, "loopback: %s: sent %llu messages, %llu arrived whole%s\n", p->name,
                    (unsigned long long)seq, (unsigned long long)sa.sink.msgs,
                    sa.sink.bad ? ", some out of order" : "");
        } else {
            out->msgs = sa.sink.msgs;
            out->bytes = sa.sink.bytes;
            out->seconds = sa.t_end - t0;
            out->client_cpu = client_cpu;
            out->writer_cpu = writer_cpu;
            out->server_cpu = sa.cpu;
            rc = 0;
        }
    }
    return rc;
}

/* ---- The plain-TCP protocol: content bytes as they are, the transport's ceiling. ---------- */

struct bench_plain {
    uint8_t *buf;
    size_t len, cap;
};

static inline void *bench_plain_open(void *cfg, int fd)
{
    (void)cfg;
    (void)fd;
    return calloc(1, sizeof(struct bench_plain));
}

static inline int bench_plain_send(void *cp, const uint8_t *msg, size_t len)
{
    struct bench_plain *c = cp;
    if (c->cap - c->len < len) {
        size_t cap = c->len + len + BENCH_BATCH;
        uint8_t *b = realloc(c->buf, cap);
        if (!b) return -1;
        c->buf = b;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, msg, len);
    c->len += len;
    return 0;
}

static inline size_t bench_plain_pending(void *cp, const uint8_t **wire)
{
    struct bench_plain *c = cp;
    *wire = c->buf;
    return c->len;
}

static inline void bench_plain_written(void *cp)
{
    ((struct bench_plain *)cp)->len = 0;
}

static inline int bench_plain_feed(void *sp, const uint8_t *wire, size_t n, struct bench_sink *sink)
{
    (void)sp;
    bench_sink_data(sink, wire, n);
    return 0;
}

static inline void bench_plain_close(void *p)
{
    struct bench_plain *c = p;
    if (c) free(c->buf);
    free(c);
}

static const struct bench_proto bench_plain_proto = {
    "plain TCP",         bench_plain_open,
    bench_plain_open,    bench_plain_send,
    bench_plain_pending, bench_plain_written,
    bench_plain_feed,    bench_plain_close,
    bench_plain_close,   NULL, /* no writer-thread mode */
};

#endif
