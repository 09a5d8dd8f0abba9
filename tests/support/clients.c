/* SPDX-License-Identifier: MIT */
/* Test helper: many PkmCom/TCP clients on one libuv loop, for the server tests (clients.h).
 * Each client checks every echo reply against what it sent (expected values are its own). */
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/resource.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>
#include <openssl/crypto.h>
#include "clients.h"
#include "pkmcom/engine.h"
#include "pkmcom/packet.h"

enum { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_ECHO, C_DONE, C_CLOSED };

typedef struct tcl tcl_t;

typedef struct tcl_conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_work_t work;
    pkm_job_t *job; /* the RSA job on the thread pool, while busy */
    tcl_t *t;
    pkm_engine_t *eng;
    size_t idx, sent, got;
    int state, busy, failed, counted_done;
    uint8_t *expect; /* the packet in flight */
} tcl_conn_t;

struct tcl {
    const tcl_opts_t *o;
    tcl_result_t *res;
    uv_loop_t loop;
    uv_timer_t timer;
    uv_poll_t release;
    tcl_conn_t *conns;
    size_t next, pending, finished, done_ok;
    int releasing, ready_sent;
};

typedef struct wbuf {
    uv_write_t req;
    uint8_t data[];
} wbuf_t;

static void fill_payload(uint8_t *p, size_t n, size_t idx, size_t seq)
{
    for (size_t j = 0; j < n; j++)
        p[j] = (uint8_t)(idx * 131u + seq * 7u + j);
}

static void start_more(tcl_t *t);
static void check_end(tcl_t *t);
static void pump(tcl_conn_t *c);

static void on_closed(uv_handle_t *h)
{
    tcl_conn_t *c = h->data;
    c->state = C_CLOSED;
    check_end(c->t);
}

static void finish(tcl_conn_t *c, int err)
{
    tcl_t *t = c->t;
    if (c->state == C_CLOSED || uv_is_closing((uv_handle_t *)&c->tcp)) return;
    if (err && !c->failed) {
        c->failed = 1;
        t->res->failed++;
        if (!t->res->first_err) t->res->first_err = err;
    }
    if (c->state <= C_HANDSHAKE && t->pending) {
        t->pending--;
    }
    if (!c->counted_done) {
        c->counted_done = 1;
        t->finished++;
    }
    c->state = C_DONE;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    start_more(t);
}

static void on_write(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void flush(tcl_conn_t *c)
{
    size_t len = 0;
    const uint8_t *p = pkm_engine_send_buf(c->eng, &len);
    if (!len) return;
    wbuf_t *w = malloc(sizeof *w + len);
    memcpy(w->data, p, len);
    pkm_engine_send_ack(c->eng, len);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        free(w);
        finish(c, PKM_EIO);
    }
}

static void send_next(tcl_conn_t *c)
{
    size_t n = c->t->o->payload;
    fill_payload(c->expect, n, c->idx, c->sent);
    uint32_t h = pkm_packet_hash(0x42, pkm_hashsum_bytes(c->expect, n));
    int r = pkm_engine_queue_packet(c->eng, 0x42, h, c->expect, n);
    if (r < 0) finish(c, r);
    c->sent++;
}

/* Everything this client had to do is done. */
static void client_done(tcl_conn_t *c)
{
    tcl_t *t = c->t;
    t->res->echoed += t->o->echoes > 0;
    t->done_ok++;
    if (t->o->ready_fd >= 0) {
        c->state = C_DONE;
        pkm_engine_trim(c->eng); /* held idle: keep the client process small */
        if (!c->counted_done) {
            c->counted_done = 1;
            t->finished++;
        }
        check_end(t);
    } else {
        finish(c, 0);
    }
}

static void after_work(uv_work_t *w, int status)
{
    tcl_conn_t *c = w->data;
    (void)status;
    pkm_job_t *job = c->job;
    c->busy = 0;
    c->job = NULL;
    if (uv_is_closing((uv_handle_t *)&c->tcp)) {
        pkm_job_free(job);
        return;
    }
    pkm_engine_job_done(c->eng, job); /* an error closes the engine: pump sees it */
    pump(c);
}

static void do_work(uv_work_t *w)
{
    tcl_conn_t *c = w->data;
    pkm_job_run(c->job); /* the job only: the engine stays on the loop thread */
}

static void pump(tcl_conn_t *c)
{
    tcl_t *t = c->t;
    if (c->busy || c->state >= C_DONE) return;
    unsigned w = pkm_engine_wants(c->eng);
    if (w & PKM_WANT_JOB) {
        if (pkm_engine_job_take(c->eng, &c->job) == 0) {
            flush(c);
            c->busy = 1;
            c->work.data = c;
            uv_queue_work(&t->loop, &c->work, do_work, after_work);
            return;
        }
        w = pkm_engine_wants(c->eng); /* closed by the failure */
    }
    if (w & PKM_WANT_CLOSED) {
        finish(c, pkm_engine_error(c->eng));
        return;
    }
    if (pkm_engine_state(c->eng) == PKM_STATE_ESTABLISHED && c->state == C_HANDSHAKE) {
        c->state = C_ECHO;
        t->res->established++;
        t->pending--;
        start_more(t);
        if (t->o->echoes == 0) {
            flush(c);
            client_done(c);
            return;
        }
        send_next(c);
    }
    pkm_packet_t pkt;
    int r;
    while (c->state == C_ECHO && (r = pkm_engine_next_packet(c->eng, &pkt)) != 0) {
        if (r < 0) {
            finish(c, r);
            return;
        }
        size_t n = t->o->payload;
        uint32_t h = pkm_packet_hash(0x42, pkm_hashsum_bytes(c->expect, n));
        if (pkt.id != 0x42 || pkt.hash != h || pkt.size != n ||
            (n && memcmp(pkt.content, c->expect, n) != 0)) {
            t->res->bad_replies++;
            finish(c, PKM_EPROTO);
            return;
        }
        c->got++;
        if (c->got == t->o->echoes) {
            flush(c);
            client_done(c);
            return;
        }
        send_next(c);
    }
    flush(c);
}

static void on_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *buf)
{
    tcl_conn_t *c = h->data;
    size_t cap = 0;
    (void)sugg;
    uint8_t *p =
        pkm_engine_recv_buf(c->eng, &cap); /* also while a job is out: the engine stays here */
    *buf = uv_buf_init((char *)p, (unsigned)cap);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    tcl_conn_t *c = s->data;
    (void)buf;
    if (n == 0) return;
    if (n < 0) {
        /* A held connection may be closed by the server at its stop: not a failure then. */
        finish(c, c->state == C_DONE ? 0 : (n == UV_EOF ? PKM_EEOF : PKM_EIO));
        return;
    }
    pkm_engine_recv_ack(c->eng, (size_t)n);
    pump(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    tcl_conn_t *c = req->data;
    if (status < 0) {
        finish(c, status);
        return;
    }
    c->state = C_HANDSHAKE;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void start_one(tcl_t *t, tcl_conn_t *c)
{
    const tcl_opts_t *o = t->o;
    pkm_engine_config_t ec;
    pkm_engine_config_init(&ec, PKM_ROLE_CLIENT);
    ec.client_key = pkm_key_ref(o->keys[c->idx % o->nkeys]);
    ec.secret = o->secret;
    ec.secret_len = o->secret_len;
    ec.defer_crypto = 1;
    uv_tcp_init(&t->loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    c->state = C_CONNECTING;
    c->expect = malloc(o->payload ? o->payload : 1);
    t->pending++;
    int r = pkm_engine_new(&ec, &c->eng);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", o->port, &a);
    if (r == 0) r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&a, on_connect);
    if (r < 0) finish(c, r);
}

static void start_more(tcl_t *t)
{
    size_t maxp = t->o->max_pending ? t->o->max_pending : 128;
    while (!t->releasing && t->next < t->o->nclients && t->pending < maxp) {
        tcl_conn_t *c = &t->conns[t->next];
        c->idx = t->next++;
        start_one(t, c);
    }
}

static void close_all(tcl_t *t)
{
    for (size_t i = 0; i < t->next; i++) {
        tcl_conn_t *c = &t->conns[i];
        if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
    if (!uv_is_closing((uv_handle_t *)&t->timer)) uv_close((uv_handle_t *)&t->timer, NULL);
    if (t->o->release_fd >= 0 && !uv_is_closing((uv_handle_t *)&t->release))
        uv_close((uv_handle_t *)&t->release, NULL);
}

static void on_release(uv_poll_t *p, int status, int events)
{
    tcl_t *t = p->data;
    (void)status;
    (void)events;
    t->releasing = 1;
    close_all(t);
}

static void check_end(tcl_t *t)
{
    if (t->releasing || t->finished < t->o->nclients) return;
    if (t->o->ready_fd >= 0 && !t->ready_sent) {
        t->ready_sent = 1;
        char b = t->done_ok == t->o->nclients ? 'k' : 'f';
        if (write(t->o->ready_fd, &b, 1) != 1) {
            t->releasing = 1;
            close_all(t);
        }
        return;
    }
    if (t->o->ready_fd < 0) {
        t->releasing = 1;
        close_all(t);
    }
}

static void on_timeout(uv_timer_t *tm)
{
    tcl_t *t = tm->data;
    t->res->timed_out = 1;
    t->releasing = 1;
    close_all(t);
}

int tcl_run(const tcl_opts_t *o, tcl_result_t *res)
{
    memset(res, 0, sizeof *res);
    tcl_t t;
    memset(&t, 0, sizeof t);
    t.o = o;
    t.res = res;
    t.conns = calloc(o->nclients ? o->nclients : 1, sizeof *t.conns);
    if (!t.conns || uv_loop_init(&t.loop) != 0) return -1;
    for (size_t i = 0; i < o->nclients; i++)
        t.conns[i].t = &t;
    uv_timer_init(&t.loop, &t.timer);
    t.timer.data = &t;
    uv_timer_start(&t.timer, on_timeout, o->timeout_ms ? o->timeout_ms : 60000, 0);
    if (o->release_fd >= 0) {
        uv_poll_init(&t.loop, &t.release, o->release_fd);
        t.release.data = &t;
        uv_poll_start(&t.release, UV_READABLE | UV_DISCONNECT, on_release);
    }
    start_more(&t);
    if (o->nclients == 0) check_end(&t);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    for (size_t i = 0; i < o->nclients; i++) {
        pkm_engine_free(t.conns[i].eng);
        free(t.conns[i].expect);
    }
    uv_loop_close(&t.loop);
    free(t.conns);
    return 0;
}

/* One work item per pool thread: each waits at a barrier sized to the pool, so no thread can
 * take two, then releases its OpenSSL thread state. */
static void pool_cleanup_work(uv_work_t *w)
{
    uv_barrier_wait(w->data);
    OPENSSL_thread_stop();
}

static void pool_cleanup_after(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
}

void tcl_pool_thread_cleanup(void)
{
    /* libuv's pool size: UV_THREADPOOL_SIZE (1..1024), default 4. */
    const char *env = getenv("UV_THREADPOOL_SIZE");
    long n = env ? strtol(env, NULL, 10) : 4;
    if (n < 1) n = 1;
    if (n > 1024) n = 1024;
    uv_loop_t loop;
    uv_barrier_t barrier;
    uv_work_t *w = calloc((size_t)n, sizeof *w);
    if (!w || uv_loop_init(&loop) != 0 || uv_barrier_init(&barrier, (unsigned)n) != 0) {
        free(w);
        return;
    }
    for (long i = 0; i < n; i++) {
        w[i].data = &barrier;
        uv_queue_work(&loop, &w[i], pool_cleanup_work, pool_cleanup_after);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_barrier_destroy(&barrier);
    uv_loop_close(&loop);
    free(w);
}

/* ---- measurement helpers shared by the scale test and the memory benchmark ---- */

void tcl_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Heap in use: glibc's count of allocated bytes in every arena plus mmapped chunks. */
size_t tcl_heap_in_use(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

/* VmRSS from /proc/self/status, in bytes. */
size_t tcl_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

/* Reads one byte within timeout_ms; the byte, or -1. */
int tcl_read_byte(int fd, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return -1;
    char b;
    return read(fd, &b, 1) == 1 ? (unsigned char)b : -1;
}

void tcl_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}
