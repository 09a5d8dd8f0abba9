/* The event-driven PkmCom/TCP server on libuv: one loop, the handshake RSA on the thread pool,
 * one gathered write per connection and turn, deadline lists for timeouts and idle trimming. */
#include <errno.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <uv.h>
#include <openssl/crypto.h>
#include "pkmcom/server.h"
#include "channel_internal.h"
#include "internal.h"

/* Which deadline list a connection is on: handshake (ordered by start), active or trimmed (both
 * ordered by the last read; every trimmed connection read less recently than every active one,
 * since a connection is trimmed from the active list's head and leaves the trimmed list when it
 * reads). Appending `now` keeps every list sorted, so each deadline check looks at heads only. */
enum tlist_id { TL_NONE = 0, TL_HS, TL_ACTIVE, TL_TRIMMED, TL_COUNT };

typedef struct tlist {
    pkm_server_conn_t *head, *tail;
} tlist_t;

/* A packet sent while the connection's engine is busy on the thread pool (a re-establishment's
 * KeyShare work): it waits here and is queued into the engine when the work is done. */
struct pend {
    struct pend *next;
    uint8_t id;
    uint32_t hash;
    size_t size;
    uint8_t data[];
};

/* Bytes the socket did not take at once: copied out of the engine and written with uv_write. */
struct wreq {
    uv_write_t req;
    pkm_server_conn_t *c;
    size_t len;
    uint8_t data[];
};

struct workreq {
    uv_work_t req;
    pkm_server_conn_t *c;
    size_t ack; /* bytes read into the engine's receive buffer, to acknowledge on the pool */
};

struct pkm_server_conn {
    uv_tcp_t tcp; /* tcp.data = this */
    pkm_server_t *srv;
    pkm_engine_t *eng;
    void *data;
    uint64_t id;
    uint64_t since;                     /* handshake start, or the last read (ms, uv_now) */
    pkm_server_conn_t *prev, *next;     /* srv->all */
    pkm_server_conn_t *tprev, *tnext;   /* deadline list */
    pkm_server_conn_t *dnext;           /* srv->dirty */
    struct workreq *work;               /* RSA work in flight on the thread pool */
    struct pend *pend_head, *pend_tail; /* sends held during work */
    size_t pend_bytes;                  /* their padded sizes */
    size_t wq_bytes;                    /* bytes in uv_write requests not yet completed */
    int deferred_err;                   /* close with this once the work is back */
    unsigned writes;                    /* uv_write requests not yet completed */
    uint8_t tlist;                      /* enum tlist_id */
    uint8_t family;                     /* peer address */
    uint16_t peer_port;
    uint8_t peer_addr[16];
    unsigned established : 1, hs_active : 1, closing : 1, tcp_closed : 1, reading : 1, dirty : 1,
        peer_eof : 1, in_pump : 1;
};

typedef struct stats_atomic {
    _Atomic uint64_t conns_open, conns_established, accepted, rejected, handshakes_ok,
        handshakes_failed, timeouts, dropped_queue, packets_in, packets_out, bytes_in, bytes_out;
} stats_atomic_t;

struct pkm_server {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_timer_t timer;
    uv_prepare_t prepare;
    uv_async_t async;
    int handles_closed; /* the four handles above are closed (or closing) */
    atomic_int stop_requested;
    atomic_int running;
    int ran;
    int stopping;
    uint16_t port;

    const pkm_key_t *server_key;
    uint8_t *secret;
    size_t secret_len;
    size_t max_conns, max_send_queue, max_packet;
    uint64_t hs_timeout, idle_timeout, trim_after;
    int (*verify)(void *ctx, const pkm_packet_t *pkt);
    void *verify_ctx;
    void (*on_connect)(void *user, pkm_server_conn_t *conn);
    void (*on_packet)(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt);
    void (*on_close)(void *user, pkm_server_conn_t *conn, int err, const char *fail_step);
    void (*on_log)(void *user, int level, const char *msg);
    void *user;

    /* reject()'s handle when none can be allocated; spare_busy while it closes; accept_stalled:
     * a connection waits in the listener for it (see reject). */
    uv_tcp_t spare;
    int spare_busy, accept_stalled;

    pkm_server_conn_t *all; /* every connection not yet freed */
    pkm_server_conn_t *dirty;
    tlist_t tl[TL_COUNT];
    uint64_t next_id;
    size_t open; /* connections admitted and not closing */
    uint64_t rejected_unlogged, last_reject_log;
    stats_atomic_t st;
};

/* ---- small helpers ---- */

/* Counters have one writer (the loop thread), so a relaxed load + store is enough; readers on
 * other threads see each counter atomically. */
static void st_add(_Atomic uint64_t *x, uint64_t n)
{
    atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static void st_sub(_Atomic uint64_t *x, uint64_t n)
{
    atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) - n,
                          memory_order_relaxed);
}

__attribute__((format(printf, 3, 4))) static void slog(pkm_server_t *srv, int level,
                                                       const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (srv->on_log)
        srv->on_log(srv->user, level, msg);
    else if (level <= PKM_LOG_WARN)
        fprintf(stderr, "pkmcom server: %s\n", msg);
}

static int uv_to_pkm(int uverr)
{
    switch (uverr) {
    case UV_ECONNRESET:
    case UV_EPIPE:
    case UV_ECONNABORTED: return PKM_ECONNRESET;
    case UV_ENOMEM: return PKM_ENOMEM;
    case UV_ETIMEDOUT: return PKM_ETIMEOUT;
    default: return PKM_EIO;
    }
}

/* ---- deadline lists ---- */

static void tl_remove(pkm_server_t *srv, pkm_server_conn_t *c)
{
    if (c->tlist == TL_NONE) return;
    tlist_t *l = &srv->tl[c->tlist];
    if (c->tprev)
        c->tprev->tnext = c->tnext;
    else
        l->head = c->tnext;
    if (c->tnext)
        c->tnext->tprev = c->tprev;
    else
        l->tail = c->tprev;
    c->tprev = c->tnext = NULL;
    c->tlist = TL_NONE;
}

static void arm_timer(pkm_server_t *srv);
static void on_timer(uv_timer_t *t);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Moves c to the tail of list `id`, with `since` = now. */
static void tl_append(pkm_server_t *srv, pkm_server_conn_t *c, enum tlist_id id)
{
    tl_remove(srv, c);
    tlist_t *l = &srv->tl[id];
    int was_empty = l->head == NULL;
    c->since = uv_now(&srv->loop);
    c->tlist = (uint8_t)id;
    c->tprev = l->tail;
    c->tnext = NULL;
    if (l->tail)
        l->tail->tnext = c;
    else
        l->head = c;
    l->tail = c;
    if (was_empty) arm_timer(srv);
}

static uint64_t deadline_min(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* Sets the timer for the earliest deadline among the list heads (none: stopped). */
static void arm_timer(pkm_server_t *srv)
{
    if (srv->stopping || srv->handles_closed) return;
    uint64_t due = UINT64_MAX;
    pkm_server_conn_t *h;
    if (srv->hs_timeout && (h = srv->tl[TL_HS].head)) due = h->since + srv->hs_timeout;
    if ((h = srv->tl[TL_ACTIVE].head)) {
        if (srv->trim_after) due = deadline_min(due, h->since + srv->trim_after);
        if (srv->idle_timeout) due = deadline_min(due, h->since + srv->idle_timeout);
    }
    if (srv->idle_timeout && (h = srv->tl[TL_TRIMMED].head))
        due = deadline_min(due, h->since + srv->idle_timeout);
    if (due == UINT64_MAX) {
        uv_timer_stop(&srv->timer);
        return;
    }
    uint64_t now = uv_now(&srv->loop);
    uv_timer_start(&srv->timer, on_timer, due > now ? due - now : 0, 0);
}

/* ---- closing ---- */

static void on_tcp_closed(uv_handle_t *h);

/* Frees c once nothing refers to it any more: its handle closed, no work in flight, not on the
 * dirty list. */
static void maybe_free(pkm_server_conn_t *c)
{
    if (!c->tcp_closed || c->work || c->dirty || c->writes) return;
    pkm_server_t *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->all = c->next;
    if (c->next) c->next->prev = c->prev;
    while (c->pend_head) {
        struct pend *p = c->pend_head;
        c->pend_head = p->next;
        OPENSSL_cleanse(p->data, p->size);
        pkm__free(p);
    }
    pkm_engine_free(c->eng);
    pkm__free(c);
}

/* The one way a connection closes: stats, on_close, then the socket. err 0 = closed by this
 * side; fail_step non-NULL = a handshake failed. */
static void do_close(pkm_server_conn_t *c, int err, const char *fail_step)
{
    if (c->closing) return;
    pkm_server_t *srv = c->srv;
    c->closing = 1;
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    tl_remove(srv, c);
    srv->open--;
    st_sub(&srv->st.conns_open, 1);
    if (c->established) st_sub(&srv->st.conns_established, 1);
    if (fail_step) st_add(&srv->st.handshakes_failed, 1);
    if (err == PKM_ETIMEOUT) st_add(&srv->st.timeouts, 1);
    if (err == PKM_EQUEUE) st_add(&srv->st.dropped_queue, 1);
    if (srv->on_close) srv->on_close(srv->user, c, err, fail_step);
    uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

/* Closes c because of its engine's failure. */
static void close_engine(pkm_server_conn_t *c)
{
    int err = pkm_engine_error(c->eng);
    do_close(c, err ? err : PKM_ECLOSED, pkm_engine_fail_step(c->eng));
}

/* Closes c with err (0 = by this side), naming the handshake step if one was running. */
static void close_with(pkm_server_conn_t *c, int err)
{
    if (c->closing) return;
    if (c->work) {
        if (err == 0) {
            do_close(c, 0, NULL);
        } else {
            /* The engine is on the pool: close when it is back, so that on_close can name the
             * handshake step (and the fingerprint) exactly. */
            tl_remove(c->srv, c);
            if (!c->deferred_err) c->deferred_err = err;
        }
        return;
    }
    if (err == 0) {
        pkm_engine_close(c->eng, PKM_ECLOSED);
        do_close(c, 0, NULL);
        return;
    }
    pkm_engine_close(c->eng, err);
    do_close(c, err, pkm_engine_fail_step(c->eng));
}

static void on_tcp_closed(uv_handle_t *h)
{
    pkm_server_conn_t *c = h->data;
    c->tcp_closed = 1;
    maybe_free(c);
}

/* ---- writing ---- */

static void mark_dirty(pkm_server_conn_t *c)
{
    if (c->dirty || c->closing || c->srv->stopping) return;
    c->dirty = 1;
    c->dnext = c->srv->dirty;
    c->srv->dirty = c;
}

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    pkm_server_conn_t *c = w->c;
    c->writes--;
    c->wq_bytes -= w->len;
    if (status == 0) st_add(&c->srv->st.bytes_out, w->len);
    pkm__free(w);
    if (c->closing) {
        maybe_free(c);
        return;
    }
    if (status < 0) {
        close_with(c, uv_to_pkm(status));
        return;
    }
    if (c->peer_eof) mark_dirty(c); /* the end-of-stream check runs in the flush */
}

/* Moves all the engine's output to the socket: uv_try_write when no write is pending, the rest
 * copied into one uv_write. The engine holds no output afterwards. */
static void flush_now(pkm_server_conn_t *c)
{
    if (c->closing || c->work) return;
    size_t len = 0;
    const uint8_t *p = pkm_engine_send_buf(c->eng, &len);
    if (!len) return;
    size_t done = 0;
    if (c->writes == 0) {
        uv_buf_t b =
            uv_buf_init((char *)(uintptr_t)p, (unsigned)(len > UINT32_MAX ? UINT32_MAX : len));
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n < 0 && n != UV_EAGAIN) {
            close_with(c, uv_to_pkm(n));
            return;
        }
        if (n > 0) {
            done = (size_t)n;
            st_add(&c->srv->st.bytes_out, done);
        }
    }
    if (done < len) {
        size_t rest = len - done;
        struct wreq *w = pkm__malloc(sizeof *w + rest);
        if (!w) {
            close_with(c, PKM_ENOMEM);
            return;
        }
        memcpy(w->data, p + done, rest);
        w->c = c;
        w->len = rest;
        uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)rest);
        int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
        if (r < 0) {
            pkm__free(w);
            pkm_engine_send_ack(c->eng, len);
            close_with(c, uv_to_pkm(r));
            return;
        }
        c->writes++;
        c->wq_bytes += rest;
    }
    pkm_engine_send_ack(c->eng, len);
}

/* ---- the per-connection pump ---- */

static void start_work(pkm_server_conn_t *c, size_t ack);
static void pump(pkm_server_conn_t *c);

/* The client closed its side of an established connection and everything owed to it is written:
 * end the stream in the engine (PKM_EEOF, or PKM_EPROTO inside a packet) and close. */
static void check_eof(pkm_server_conn_t *c)
{
    if (!c->peer_eof || c->closing || c->work || c->writes) return;
    size_t len = 0;
    pkm_engine_send_buf(c->eng, &len);
    if (len) return;
    pkm_engine_recv_eof(c->eng);
    pump(c);
}

/* Drives c after anything happened to its engine, over what the engine wants: starts work,
 * reports the handshake's end, hands out packets, schedules the write. */
static void pump(pkm_server_conn_t *c)
{
    pkm_server_t *srv = c->srv;
    if (c->in_pump || c->closing || c->work) return;
    c->in_pump = 1;
    for (;;) {
        unsigned w = pkm_engine_wants(c->eng);
        if (w & PKM_WANT_CLOSED) {
            close_engine(c);
            break;
        }
        if (w & PKM_WANT_JOB) {
            start_work(c, 0);
            break;
        }
        if (c->hs_active && pkm_engine_state(c->eng) == PKM_STATE_ESTABLISHED) {
            /* a handshake (first or re-establishment) just completed */
            c->hs_active = 0;
            tl_append(srv, c, TL_ACTIVE);
            if (!c->established) {
                c->established = 1;
                st_add(&srv->st.handshakes_ok, 1);
                st_add(&srv->st.conns_established, 1);
                if (srv->on_connect) srv->on_connect(srv->user, c);
                if (c->closing) break;
                continue;
            }
        }
        if (!(w & PKM_WANT_PACKET)) break;
        pkm_packet_t pkt;
        int r = pkm_engine_next_packet(c->eng, &pkt);
        if (r < 0) {
            close_engine(c);
            break;
        }
        if (r == 0) continue; /* not all in yet: the bit is clear now */
        st_add(&srv->st.packets_in, 1);
        if (srv->on_packet) srv->on_packet(srv->user, c, &pkt);
        if (c->closing) break;
    }
    c->in_pump = 0;
    if (!c->closing && !c->work && ((pkm_engine_wants(c->eng) & PKM_WANT_SEND) || c->peer_eof))
        mark_dirty(c);
}

static void work_cb(uv_work_t *req)
{
    struct workreq *w = (struct workreq *)req;
    pkm_engine_t *e = w->c->eng;
    /* Errors close the engine: pump sees them. */
    if (w->ack) {
        if (pkm_engine_recv_ack(e, w->ack) < 0) return;
        size_t len = 0;
        pkm_engine_send_buf(e, &len);
        /* Output first (the server's KeyShare, so that the client decrypts while we do), then
         * back to the pool for the RSA work. */
        if (len) return;
    }
    while (pkm_engine_wants_work(e))
        if (pkm_engine_work(e) < 0) return;
}

static void after_work(uv_work_t *req, int status)
{
    struct workreq *w = (struct workreq *)req;
    pkm_server_conn_t *c = w->c;
    (void)status; /* UV_ECANCELED only when stopping: the connection is closing then */
    pkm__free(w);
    c->work = NULL;
    if (c->closing) {
        maybe_free(c);
        return;
    }
    if (c->deferred_err) {
        close_with(c, c->deferred_err);
        return;
    }
    /* Sends held meanwhile go into the engine, in order. */
    while (c->pend_head) {
        struct pend *p = c->pend_head;
        c->pend_head = p->next;
        size_t total = pkm__padded_size(p->size);
        c->pend_bytes -= total;
        int r = pkm_engine_queue_packet(c->eng, p->id, p->hash, p->data, p->size);
        OPENSSL_cleanse(p->data, p->size);
        pkm__free(p);
        if (r < 0) {
            if (r == PKM_EQUEUE) {
                do_close(c, PKM_EQUEUE, NULL);
            } else {
                close_with(c, r);
            }
            return;
        }
        st_add(&c->srv->st.packets_out, 1);
    }
    c->pend_tail = NULL;
    if (!c->peer_eof && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
    }
    pump(c);
}

/* Hands the engine to the thread pool: for its RSA work, and during a handshake also for the
 * processing of the `ack` bytes just read (parsing the client's key costs about as much as an RSA
 * decryption with OpenSSL 3's decoder, and the server's KeyShare takes two RSA encryptions), so
 * the loop itself does next to nothing for a handshake. Stops reading; before RSA work, first
 * writes out what the engine has (the server's KeyShare must not wait for our decryption). */
static void start_work(pkm_server_conn_t *c, size_t ack)
{
    if (!ack) flush_now(c); /* (with ack, no call between recv_buf and recv_ack) */
    if (c->closing) return;
    struct workreq *w = pkm__malloc(sizeof *w);
    if (!w) {
        close_with(c, PKM_ENOMEM);
        return;
    }
    w->c = c;
    w->ack = ack;
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    int r = uv_queue_work(&c->srv->loop, &w->req, work_cb, after_work);
    if (r < 0) {
        pkm__free(w);
        close_with(c, PKM_EINTERNAL);
        return;
    }
    c->work = w;
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    pkm_server_conn_t *c = h->data;
    size_t cap = 0;
    uint8_t *p = NULL;
    (void)suggested;
    if (!c->closing && !c->work) p = pkm_engine_recv_buf(c->eng, &cap);
    if (cap > UINT32_MAX) cap = UINT32_MAX;
    *buf = uv_buf_init((char *)p, (unsigned)cap);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    pkm_server_conn_t *c = s->data;
    pkm_server_t *srv = c->srv;
    (void)buf;
    if (c->closing || c->work) return;
    if (nread > 0) {
        st_add(&srv->st.bytes_in, (uint64_t)nread);
        if (c->tlist == TL_ACTIVE || c->tlist == TL_TRIMMED) tl_append(srv, c, TL_ACTIVE);
        if (c->hs_active) { /* handshake bytes: processed on the thread pool */
            start_work(c, (size_t)nread);
            return;
        }
        if (pkm_engine_recv_ack(c->eng, (size_t)nread) < 0) {
            close_engine(c);
            return;
        }
        pump(c);
        return;
    }
    if (nread == 0) return; /* EAGAIN */
    if (nread == UV_EOF) {
        c->peer_eof = 1;
        uv_read_stop(s);
        c->reading = 0;
        if (pkm_engine_state(c->eng) != PKM_STATE_ESTABLISHED) {
            pkm_engine_recv_eof(c->eng); /* fails the handshake */
            pump(c);
        } else {
            mark_dirty(c); /* flush what is owed, then end the stream (check_eof) */
        }
        return;
    }
    if (nread == UV_ENOBUFS) { /* the engine is closed, or would buffer more than a packet */
        if (pkm_engine_state(c->eng) == PKM_STATE_CLOSED)
            close_engine(c);
        else
            close_with(c, PKM_EPROTO);
        return;
    }
    close_with(c, uv_to_pkm((int)nread));
}

/* ---- the loop's own handles ---- */

/* Before the loop waits: one write per connection that has output. */
static void on_prepare(uv_prepare_t *p)
{
    pkm_server_t *srv = p->data;
    pkm_server_conn_t *list;
    while ((list = srv->dirty)) {
        srv->dirty = NULL;
        while (list) {
            pkm_server_conn_t *c = list;
            list = c->dnext;
            c->dnext = NULL;
            c->dirty = 0;
            if (c->closing) {
                maybe_free(c);
                continue;
            }
            if (c->work) continue;
            flush_now(c);
            check_eof(c);
            if (srv->trim_after == 0 && !c->closing && !c->work) pkm_engine_trim(c->eng);
        }
    }
}

static void on_timer(uv_timer_t *t)
{
    pkm_server_t *srv = t->data;
    uint64_t now = uv_now(&srv->loop);
    pkm_server_conn_t *c;
    while (srv->hs_timeout && (c = srv->tl[TL_HS].head) && c->since + srv->hs_timeout <= now)
        close_with(c, PKM_ETIMEOUT);
    if (srv->idle_timeout) {
        while ((c = srv->tl[TL_TRIMMED].head) && c->since + srv->idle_timeout <= now)
            close_with(c, PKM_ETIMEOUT);
        while ((c = srv->tl[TL_ACTIVE].head) && c->since + srv->idle_timeout <= now)
            close_with(c, PKM_ETIMEOUT);
    }
    while (srv->trim_after && (c = srv->tl[TL_ACTIVE].head) && c->since + srv->trim_after <= now) {
        uint64_t since = c->since;
        if (!c->work) pkm_engine_trim(c->eng);
        tl_append(srv, c, TL_TRIMMED);
        c->since = since; /* keeps its last read time */
    }
    arm_timer(srv);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Stop: no new connections, every open one closed (err 0), the server's handles closed; the
 * loop then ends once the closes and any work in flight are done. */
static void shutdown_all(pkm_server_t *srv)
{
    if (srv->stopping) return;
    srv->stopping = 1;
    close_handle((uv_handle_t *)&srv->listener);
    for (pkm_server_conn_t *c = srv->all; c; c = c->next) {
        if (c->closing) continue;
        if (c->work) uv_cancel((uv_req_t *)&c->work->req);
        close_with(c, 0);
    }
    /* The prepare handle goes: nothing is flushed any more, and the dirty list is forgotten. */
    while (srv->dirty) {
        pkm_server_conn_t *c = srv->dirty;
        srv->dirty = c->dnext;
        c->dnext = NULL;
        c->dirty = 0;
    }
    close_handle((uv_handle_t *)&srv->timer);
    close_handle((uv_handle_t *)&srv->prepare);
    close_handle((uv_handle_t *)&srv->async);
    srv->handles_closed = 1;
}

static void on_async(uv_async_t *a)
{
    pkm_server_t *srv = a->data;
    if (atomic_load(&srv->stop_requested)) shutdown_all(srv);
}

/* ---- accepting ---- */

static void free_handle(uv_handle_t *h)
{
    pkm__free(h);
}

static void on_connection(uv_stream_t *l, int status);

/* The spare handle is closed: the connection that waits for it, if any, is taken now. */
static void spare_closed(uv_handle_t *h)
{
    pkm_server_t *srv = h->data;
    srv->spare_busy = 0;
    if (srv->accept_stalled && !srv->stopping) {
        srv->accept_stalled = 0;
        on_connection((uv_stream_t *)&srv->listener, 0);
    }
}

/* Accepts the waiting connection and closes it at once, without a byte: over the cap (for_cap,
 * counted and logged) or out of memory. A connection must never be left unaccepted: libuv stops
 * watching the listener until uv_accept is called, so the server would never accept again. With
 * no memory for a handle the server's spare one is used; while that one is still closing, the
 * connection waits in the listener and spare_closed() takes it. */
static void reject(pkm_server_t *srv, int for_cap)
{
    uv_tcp_t *t = pkm__malloc(sizeof *t);
    uv_close_cb done = free_handle;
    if (!t) {
        if (srv->spare_busy) {
            srv->accept_stalled = 1;
            return;
        }
        t = &srv->spare;
        srv->spare_busy = 1;
        done = spare_closed;
    }
    uv_tcp_init(&srv->loop, t);
    t->data = srv;
    if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)t) == 0 && for_cap) {
        st_add(&srv->st.rejected, 1);
        srv->rejected_unlogged++;
        uint64_t now = uv_now(&srv->loop);
        if (srv->last_reject_log == 0 || now - srv->last_reject_log >= 1000) {
            slog(srv, PKM_LOG_WARN, "refused %llu connection(s): the cap of %zu is reached",
                 (unsigned long long)srv->rejected_unlogged, srv->max_conns);
            srv->rejected_unlogged = 0;
            srv->last_reject_log = now;
        }
    }
    uv_close((uv_handle_t *)t, done);
}

static void store_peer(pkm_server_conn_t *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        c->family = 4;
        c->peer_port = ntohs(a->sin_port);
        memcpy(c->peer_addr, &a->sin_addr, 4);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        c->family = 6;
        c->peer_port = ntohs(a->sin6_port);
        memcpy(c->peer_addr, &a->sin6_addr, 16);
    }
}

static void on_connection(uv_stream_t *l, int status)
{
    pkm_server_t *srv = l->data;
    if (status < 0) {
        slog(srv, PKM_LOG_WARN, "accept failed: %s", uv_strerror(status));
        return;
    }
    if (srv->stopping) return;
    if (srv->max_conns && srv->open >= srv->max_conns) {
        reject(srv, 1);
        return;
    }
    pkm_server_conn_t *c = pkm__calloc(1, sizeof *c);
    if (!c) {
        slog(srv, PKM_LOG_ERROR, "out of memory accepting a connection");
        reject(srv, 0);
        return;
    }
    uv_tcp_init(&srv->loop, &c->tcp);
    c->tcp.data = c;
    c->srv = srv;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, free_handle);
        return;
    }
    pkm_engine_config_t ec;
    pkm_engine_config_init(&ec, PKM_ROLE_SERVER);
    ec.server_key = srv->server_key;
    ec.secret = srv->secret;
    ec.secret_len = srv->secret_len;
    ec.max_packet_size = srv->max_packet;
    ec.max_send_buffer = srv->max_send_queue;
    ec.defer_crypto = 1;
    ec.verify = srv->verify;
    ec.verify_ctx = srv->verify_ctx;
    int r = pkm_engine_new(&ec, &c->eng);
    if (r < 0) {
        slog(srv, PKM_LOG_ERROR, "cannot make an engine for a connection: %s", pkm_strerror(r));
        uv_close((uv_handle_t *)&c->tcp, free_handle);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1); /* writes are gathered per turn already */
    store_peer(c);
    c->id = ++srv->next_id;
    c->next = srv->all;
    if (srv->all) srv->all->prev = c;
    srv->all = c;
    srv->open++;
    st_add(&srv->st.accepted, 1);
    st_add(&srv->st.conns_open, 1);
    c->hs_active = 1;
    tl_append(srv, c, TL_HS);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        close_with(c, PKM_EIO);
        return;
    }
    c->reading = 1;
    mark_dirty(c); /* ServerKey */
}

/* ---- lifetime ---- */

void pkm_server_config_init(pkm_server_config_t *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->backlog = PKM_SERVER_DEFAULT_BACKLOG;
    cfg->handshake_timeout_ms = PKM_SERVER_DEFAULT_HANDSHAKE_TIMEOUT_MS;
    cfg->max_send_queue = PKM_SERVER_DEFAULT_MAX_SEND_QUEUE;
    cfg->max_packet_size = PKM_DEFAULT_MAX_SIZE;
    cfg->trim_after_ms = PKM_SERVER_DEFAULT_TRIM_AFTER_MS;
    cfg->raise_fd_limit = 1;
}

/* Raises the soft RLIMIT_NOFILE to the hard limit; warns when max_conns cannot fit. */
static void raise_fd_limit(pkm_server_t *srv, int raise)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (raise && rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = rl;
        want.rlim_cur = rl.rlim_max == RLIM_INFINITY ? (rlim_t)1 << 20 : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) {
            slog(srv, PKM_LOG_INFO, "open-file limit raised from %llu to %llu",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)want.rlim_cur);
            rl.rlim_cur = want.rlim_cur;
        } else {
            slog(srv, PKM_LOG_WARN, "cannot raise the open-file limit from %llu: %s",
                 (unsigned long long)rl.rlim_cur, strerror(errno));
        }
    }
    /* A connection is one descriptor; the loop, listener and thread pool take a few more. */
    const uint64_t reserve = 32;
    if (rl.rlim_cur != RLIM_INFINITY) {
        uint64_t fit = rl.rlim_cur > reserve ? rl.rlim_cur - reserve : 0;
        if (srv->max_conns && srv->max_conns > fit)
            slog(srv, PKM_LOG_WARN,
                 "open-file limit %llu (hard limit %llu) is too low for %zu connections: at "
                 "most about %llu fit; raise the hard limit (ulimit -Hn, LimitNOFILE=)",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, srv->max_conns,
                 (unsigned long long)fit);
        else if (!srv->max_conns)
            slog(srv, PKM_LOG_INFO, "open-file limit %llu: at most about %llu connections",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)fit);
    }
}

static int resolve(const char *host, uint16_t port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (!host) host = "0.0.0.0";
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 0;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) return PKM_ERESOLVE;
    if (res->ai_addrlen > sizeof *ss) {
        freeaddrinfo(res);
        return PKM_ERESOLVE;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    else
        return PKM_ERESOLVE;
    return 0;
}

/* Closes the server's handles and runs the loop until everything is released. */
static void drain_and_close_loop(pkm_server_t *srv)
{
    shutdown_all(srv);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&srv->loop) != 0) slog(srv, PKM_LOG_ERROR, "loop still busy at free");
}

int pkm_server_new(const pkm_server_config_t *cfg, pkm_server_t **out)
{
    if (out) *out = NULL;
    if (!cfg || !out || !cfg->server_key || !pkm_key_is_private(cfg->server_key)) return PKM_EINVAL;
    if (cfg->max_packet_size == 0 || cfg->max_packet_size > INT32_MAX) return PKM_EINVAL;
    if (cfg->max_send_queue == 0 || cfg->max_send_queue > SIZE_MAX / 4) return PKM_EINVAL;
    if (cfg->secret_len > PKM_MAX_SECRET || (cfg->secret_len && !cfg->secret)) return PKM_EINVAL;
    if (cfg->backlog < 0) return PKM_EINVAL;

    pkm_server_t *srv = pkm__calloc(1, sizeof *srv);
    if (!srv) return PKM_ENOMEM;
    srv->server_key = cfg->server_key;
    srv->max_conns = cfg->max_conns;
    srv->max_send_queue = cfg->max_send_queue;
    srv->max_packet = cfg->max_packet_size;
    srv->hs_timeout = cfg->handshake_timeout_ms;
    srv->idle_timeout = cfg->idle_timeout_ms;
    srv->trim_after = cfg->trim_after_ms;
    srv->verify = cfg->verify;
    srv->verify_ctx = cfg->verify_ctx;
    srv->on_connect = cfg->on_connect;
    srv->on_packet = cfg->on_packet;
    srv->on_close = cfg->on_close;
    srv->on_log = cfg->on_log;
    srv->user = cfg->user;
    if (cfg->secret_len) {
        if (!(srv->secret = pkm__malloc(cfg->secret_len))) {
            pkm__free(srv);
            return PKM_ENOMEM;
        }
        memcpy(srv->secret, cfg->secret, cfg->secret_len);
        srv->secret_len = cfg->secret_len;
    }
    struct sockaddr_storage ss;
    int r = resolve(cfg->host, cfg->port, &ss);
    if (r < 0) {
        slog(srv, PKM_LOG_ERROR, "cannot resolve %s", cfg->host ? cfg->host : "(null)");
        goto fail_nolloop;
    }
    if (uv_loop_init(&srv->loop) != 0) {
        r = PKM_ENOMEM;
        goto fail_nolloop;
    }
    uv_tcp_init(&srv->loop, &srv->listener);
    uv_timer_init(&srv->loop, &srv->timer);
    uv_prepare_init(&srv->loop, &srv->prepare);
    uv_async_init(&srv->loop, &srv->async, on_async);
    srv->listener.data = srv->timer.data = srv->prepare.data = srv->async.data = srv;
    uv_prepare_start(&srv->prepare, on_prepare);
    uv_unref((uv_handle_t *)&srv->prepare);
    uv_unref((uv_handle_t *)&srv->timer);

    raise_fd_limit(srv, cfg->raise_fd_limit);
    int ur = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
    if (ur == 0)
        ur = uv_listen((uv_stream_t *)&srv->listener,
                       cfg->backlog ? cfg->backlog : PKM_SERVER_DEFAULT_BACKLOG, on_connection);
    if (ur != 0) {
        slog(srv, PKM_LOG_ERROR, "cannot listen on %s port %u: %s",
             cfg->host ? cfg->host : "0.0.0.0", (unsigned)cfg->port, uv_strerror(ur));
        r = PKM_EIO;
        goto fail_loop;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen) == 0)
        srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                      : ((struct sockaddr_in *)&bound)->sin_port);
    /* A write to a socket the client has closed must fail with EPIPE, not kill the process. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
    *out = srv;
    return 0;

fail_loop:
    drain_and_close_loop(srv);
fail_nolloop:
    if (srv->secret) OPENSSL_cleanse(srv->secret, srv->secret_len);
    pkm__free(srv->secret);
    pkm__free(srv);
    return r;
}

int pkm_server_run(pkm_server_t *srv)
{
    if (!srv) return PKM_EINVAL;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&srv->running, &expected, 1)) return PKM_ESTATE;
    if (srv->ran) {
        atomic_store(&srv->running, 0);
        return PKM_ESTATE;
    }
    srv->ran = 1;
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    atomic_store(&srv->running, 0);
    return 0;
}

void pkm_server_stop(pkm_server_t *srv)
{
    if (!srv) return;
    if (atomic_exchange(&srv->stop_requested, 1)) return; /* one uv_async_send, ever */
    uv_async_send(&srv->async);
}

void pkm_server_free(pkm_server_t *srv)
{
    if (!srv) return;
    drain_and_close_loop(srv);
    if (srv->secret) OPENSSL_cleanse(srv->secret, srv->secret_len);
    pkm__free(srv->secret);
    pkm__free(srv);
}

uint16_t pkm_server_port(const pkm_server_t *srv)
{
    return srv ? srv->port : 0;
}

void *pkm_server_user(const pkm_server_t *srv)
{
    return srv ? srv->user : NULL;
}

void pkm_server_stats(const pkm_server_t *srv, pkm_server_stats_t *out)
{
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!srv) return;
#define LOAD(f) out->f = atomic_load_explicit(&srv->st.f, memory_order_relaxed)
    LOAD(conns_open);
    LOAD(conns_established);
    LOAD(accepted);
    LOAD(rejected);
    LOAD(handshakes_ok);
    LOAD(handshakes_failed);
    LOAD(timeouts);
    LOAD(dropped_queue);
    LOAD(packets_in);
    LOAD(packets_out);
    LOAD(bytes_in);
    LOAD(bytes_out);
#undef LOAD
}

size_t pkm_server_foreach(pkm_server_t *srv, void (*fn)(void *ctx, pkm_server_conn_t *c), void *ctx)
{
    if (!srv || !fn) return 0;
    size_t n = 0;
    /* Connections are freed only from the loop's own callbacks, never during fn. */
    for (pkm_server_conn_t *c = srv->all; c; c = c->next) {
        if (c->closing || !c->established) continue;
        fn(ctx, c);
        n++;
    }
    return n;
}

size_t pkm_server_broadcast(pkm_server_t *srv, const pkm_server_conn_t *except, uint8_t id,
                            uint32_t hash, const uint8_t *content, size_t size)
{
    if (!srv) return 0;
    size_t n = 0;
    for (pkm_server_conn_t *c = srv->all; c; c = c->next) {
        if (c == except || c->closing || !c->established) continue;
        if (pkm_server_send(c, id, hash, content, size) == 0) n++;
    }
    return n;
}

/* ---- per connection ---- */

int pkm_server_send(pkm_server_conn_t *c, uint8_t id, uint32_t hash, const uint8_t *content,
                    size_t size)
{
    if (!c) return PKM_EINVAL;
    if (c->closing) return PKM_ECLOSED;
    if (!c->established) return PKM_ESTATE;
    if (id == PKM_HANDSHAKE_ID || (size && !content)) return PKM_EINVAL;
    pkm_server_t *srv = c->srv;
    if (size > INT32_MAX || pkm__padded_size(size) > srv->max_send_queue) return PKM_ETOOBIG;
    size_t total = pkm__padded_size(size);
    size_t engine_len = 0;
    if (!c->work) pkm_engine_send_buf(c->eng, &engine_len);
    size_t unsent = c->wq_bytes + c->pend_bytes + engine_len;
    if (unsent > srv->max_send_queue - total) {
        do_close(c, PKM_EQUEUE, NULL);
        return PKM_EQUEUE;
    }
    if (c->work) { /* the engine is on the thread pool: hold the packet */
        struct pend *p = pkm__malloc(sizeof *p + size);
        if (!p) return PKM_ENOMEM;
        p->next = NULL;
        p->id = id;
        p->hash = hash;
        p->size = size;
        if (size) memcpy(p->data, content, size);
        if (c->pend_tail)
            c->pend_tail->next = p;
        else
            c->pend_head = p;
        c->pend_tail = p;
        c->pend_bytes += total;
        return 0;
    }
    int r = pkm_engine_queue_packet(c->eng, id, hash, content, size);
    if (r == PKM_EQUEUE) { /* the engine's own bound (packets held during a re-establishment) */
        do_close(c, PKM_EQUEUE, NULL);
        return PKM_EQUEUE;
    }
    if (r < 0) {
        if (pkm_engine_state(c->eng) == PKM_STATE_CLOSED) close_engine(c);
        return r;
    }
    st_add(&srv->st.packets_out, 1);
    mark_dirty(c);
    return 0;
}

void pkm_server_conn_close(pkm_server_conn_t *c)
{
    if (c) close_with(c, 0);
}

int pkm_server_conn_rekey(pkm_server_conn_t *c, const uint8_t *secret, size_t secret_len)
{
    if (!c) return PKM_EINVAL;
    if (c->closing) return PKM_ECLOSED;
    if (!c->established || c->hs_active || c->work) return PKM_ESTATE;
    int r = pkm_engine_rekey(c->eng, secret, secret_len);
    if (r == PKM_EINVAL || r == PKM_ESTATE) return r;
    c->hs_active = 1;
    tl_append(c->srv, c, TL_HS);
    if (r < 0) {
        /* The engine may still be open (PKM_ENOMEM copying the secret): close it with r, so
         * that on_close reports r rather than PKM_ECLOSED. */
        close_with(c, r);
        return r;
    }
    mark_dirty(c);
    pump(c); /* inside on_packet this is a no-op: the running pump goes on */
    return 0;
}

void pkm_server_conn_set_data(pkm_server_conn_t *c, void *data)
{
    if (c) c->data = data;
}

void *pkm_server_conn_get_data(const pkm_server_conn_t *c)
{
    return c ? c->data : NULL;
}

const char *pkm_server_conn_fingerprint(const pkm_server_conn_t *c)
{
    if (!c || c->work) return NULL;
    return pkm_engine_peer_fingerprint(c->eng);
}

uint64_t pkm_server_conn_id(const pkm_server_conn_t *c)
{
    return c ? c->id : 0;
}

int pkm_server_conn_peer(const pkm_server_conn_t *c, char *buf, size_t cap)
{
    if (!c || !buf || cap == 0) return PKM_EINVAL;
    char ip[64];
    int n;
    if (c->family == 4) {
        if (uv_inet_ntop(AF_INET, c->peer_addr, ip, sizeof ip) != 0) return PKM_EINVAL;
        n = snprintf(buf, cap, "%s:%u", ip, (unsigned)c->peer_port);
    } else if (c->family == 6) {
        if (uv_inet_ntop(AF_INET6, c->peer_addr, ip, sizeof ip) != 0) return PKM_EINVAL;
        n = snprintf(buf, cap, "[%s]:%u", ip, (unsigned)c->peer_port);
    } else {
        n = snprintf(buf, cap, "unknown");
    }
    if (n < 0) return PKM_EINVAL;
    if ((size_t)n >= cap) {
        buf[0] = 0;
        return PKM_ENOSPC;
    }
    return n;
}

int pkm_server_conn_established(const pkm_server_conn_t *c)
{
    return c ? c->established : 0;
}

pkm_server_t *pkm_server_conn_server(const pkm_server_conn_t *c)
{
    return c ? c->srv : NULL;
}
