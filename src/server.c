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
#include "internal.h"
#include "server_internal.h"

/* Which deadline list a connection is on: handshake (ordered by start), active or trimmed (both
 * ordered by the last read; every trimmed connection read less recently than every active one,
 * since a connection is trimmed from the active list's head and leaves the trimmed list when it
 * reads). Appending `now` keeps every list sorted, so each deadline check looks at heads only. */
enum tlist_id { TL_NONE = 0, TL_HS, TL_ACTIVE, TL_TRIMMED, TL_COUNT };

typedef struct tlist {
    pkm_server_conn_t *head, *tail;
} tlist_t;

/* A connection's life, one state at a time:
 *   HANDSHAKE -> ESTABLISHED <-> REKEYING      (the engine's handshakes)
 *   any of those -> CLOSING                    (do_close: on_close called, the handle closing)
 *   CLOSING -> CLOSED                          (the handle is closed)
 * and a CLOSED connection is freed once no write request refers to it and it is off the dirty
 * list. An RSA job in flight never holds a connection back: closing detaches it (see jobreq). */
enum conn_state { CS_HANDSHAKE, CS_ESTABLISHED, CS_REKEYING, CS_CLOSING, CS_CLOSED };

/* Bytes the socket did not take at once: copied out of the engine and written with uv_write. */
struct wreq {
    uv_write_t req;
    pkm_server_conn_t *c;
    size_t len;
    uint8_t data[];
};

/* One connection's RSA job on the thread pool. The pool thread touches the job only (and srv's
 * test hook). c is set to NULL when the connection closes first: the job is then cancelled if
 * still queued, or freed when the pool hands it back, without touching the freed connection. */
struct jobreq {
    uv_work_t req;
    pkm_server_t *srv;
    pkm_server_conn_t *c;
    pkm_job_t *job;
};

struct pkm_server_conn {
    uv_tcp_t tcp; /* tcp.data = this */
    pkm_server_t *srv;
    pkm_engine_t *eng;
    void *data;
    uint64_t id;
    uint64_t since;                   /* handshake start, or the last read (ms, uv_now) */
    pkm_server_conn_t *prev, *next;   /* srv->all */
    pkm_server_conn_t *tprev, *tnext; /* deadline list */
    pkm_server_conn_t *dnext;         /* srv->dirty */
    struct jobreq *job;               /* its RSA job on the thread pool, or NULL */
    size_t wq_bytes;                  /* bytes in uv_write requests not yet completed */
    unsigned writes;                  /* uv_write requests not yet completed */
    uint8_t state;                    /* enum conn_state */
    uint8_t tlist;                    /* enum tlist_id */
    uint8_t family;                   /* peer address */
    uint16_t peer_port;
    uint8_t peer_addr[16];
    unsigned ever_established : 1; /* the first handshake completed (stats, foreach, getters) */
    unsigned reading : 1;          /* uv_read_start is in force */
    unsigned dirty : 1;            /* on srv->dirty */
    unsigned peer_eof : 1;         /* the client closed its side of an established connection */
    unsigned in_pump : 1;          /* pump() is running (callbacks re-enter it) */
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
    pkm__job_hook_fn job_hook; /* test-only (server_internal.h) */
    void *job_hook_ctx;
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

/* Frees c once nothing refers to it any more: its handle closed, no write request pending, not
 * on the dirty list. (A job of c's still on the pool was detached by do_close.) */
static void maybe_free(pkm_server_conn_t *c)
{
    if (c->state != CS_CLOSED || c->dirty || c->writes) return;
    pkm_server_t *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->all = c->next;
    if (c->next) c->next->prev = c->prev;
    pkm_engine_free(c->eng);
    pkm__free(c);
}

static void job_event(pkm_server_t *srv, int event)
{
    if (srv->job_hook) srv->job_hook(srv->job_hook_ctx, event);
}

/* Lets go of c's job: cancelled if still queued (then never run), otherwise freed by job_after
 * when the pool is done with it; either way it no longer refers to c. */
static void detach_job(pkm_server_conn_t *c)
{
    struct jobreq *j = c->job;
    if (!j) return;
    c->job = NULL;
    j->c = NULL;
    uv_cancel((uv_req_t *)&j->req); /* fails harmlessly when it is already running or done */
}

/* The one way a connection closes: stats, on_close, then the socket. err 0 = closed by this
 * side; fail_step non-NULL = a handshake failed. */
static void do_close(pkm_server_conn_t *c, int err, const char *fail_step)
{
    if (c->state >= CS_CLOSING) return;
    pkm_server_t *srv = c->srv;
    c->state = CS_CLOSING;
    detach_job(c);
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    tl_remove(srv, c);
    srv->open--;
    st_sub(&srv->st.conns_open, 1);
    if (c->ever_established) st_sub(&srv->st.conns_established, 1);
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

/* Closes c with err (0 = by this side), naming the handshake step if one was running (the engine
 * is always here, also while its job is on the pool, so the step is exact). */
static void close_with(pkm_server_conn_t *c, int err)
{
    if (c->state >= CS_CLOSING) return;
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
    c->state = CS_CLOSED;
    maybe_free(c);
}

/* ---- writing ---- */

static void mark_dirty(pkm_server_conn_t *c)
{
    if (c->dirty || c->state >= CS_CLOSING || c->srv->stopping) return;
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
    if (c->state >= CS_CLOSING) {
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
    if (c->state >= CS_CLOSING) return;
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

static void start_job(pkm_server_conn_t *c);
static void pump(pkm_server_conn_t *c);

/* The client closed its side of an established connection and everything owed to it is written:
 * end the stream in the engine (PKM_EEOF, or PKM_EPROTO inside a packet) and close. */
static void check_eof(pkm_server_conn_t *c)
{
    if (!c->peer_eof || c->state >= CS_CLOSING || c->writes) return;
    if (pkm_engine_wants(c->eng) & PKM_WANT_SEND) return;
    pkm_engine_recv_eof(c->eng);
    pump(c);
}

/* Drives c after anything happened to its engine, over what the engine wants: hands out its RSA
 * job, reports the handshake's end, hands out packets, schedules the write. */
static void pump(pkm_server_conn_t *c)
{
    pkm_server_t *srv = c->srv;
    if (c->in_pump || c->state >= CS_CLOSING) return;
    c->in_pump = 1;
    for (;;) {
        unsigned w = pkm_engine_wants(c->eng);
        if (w & PKM_WANT_CLOSED) {
            close_engine(c);
            break;
        }
        if (w & PKM_WANT_JOB) {
            start_job(c);
            if (c->state >= CS_CLOSING) break;
            continue;
        }
        if ((c->state == CS_HANDSHAKE || c->state == CS_REKEYING) &&
            pkm_engine_state(c->eng) == PKM_STATE_ESTABLISHED) {
            /* a handshake (first or re-establishment) just completed */
            int first = c->state == CS_HANDSHAKE;
            c->state = CS_ESTABLISHED;
            tl_append(srv, c, TL_ACTIVE);
            if (first) {
                c->ever_established = 1;
                st_add(&srv->st.handshakes_ok, 1);
                st_add(&srv->st.conns_established, 1);
                if (srv->on_connect) srv->on_connect(srv->user, c);
                if (c->state >= CS_CLOSING) break;
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
        if (c->state >= CS_CLOSING) break;
    }
    c->in_pump = 0;
    if (c->state < CS_CLOSING && ((pkm_engine_wants(c->eng) & PKM_WANT_SEND) || c->peer_eof))
        mark_dirty(c);
}

/* On a pool thread: the job's work, and nothing else (no connection, no engine). */
static void job_work(uv_work_t *req)
{
    struct jobreq *j = (struct jobreq *)req;
    job_event(j->srv, PKM__JOB_RUN);
    (void)pkm_job_run(j->job); /* an error is the job's result: job_done closes the engine */
}

/* Back on the loop: the result goes into the engine, unless the connection is gone. */
static void job_after(uv_work_t *req, int status)
{
    struct jobreq *j = (struct jobreq *)req;
    pkm_server_conn_t *c = j->c;
    pkm_job_t *job = j->job;
    pkm_server_t *srv = j->srv;
    pkm__free(j);
    if (status == UV_ECANCELED || !c) {
        /* Cancelled (only ever by detach_job), or run after its connection closed. */
        job_event(srv, status == UV_ECANCELED ? PKM__JOB_CANCELLED : PKM__JOB_ORPHANED);
        pkm_job_free(job);
        if (c) { /* (not reached: a cancelled job was detached first) */
            c->job = NULL;
            close_with(c, PKM_EINTERNAL);
        }
        return;
    }
    c->job = NULL;
    (void)pkm_engine_job_done(c->eng, job); /* an error closes the engine: pump sees it */
    pump(c);
}

/* Hands the engine's RSA job (the decryption of the client's KeyShare) to the thread pool; the
 * engine stays here and goes on reading meanwhile. First writes out what the engine has (the
 * server's KeyShare must not wait for our decryption: the client decrypts meanwhile). */
static void start_job(pkm_server_conn_t *c)
{
    flush_now(c);
    if (c->state >= CS_CLOSING) return;
    pkm_job_t *job = NULL;
    if (pkm_engine_job_take(c->eng, &job) < 0) return; /* the engine closed: pump sees it */
    struct jobreq *j = pkm__malloc(sizeof *j);
    if (!j) {
        pkm_job_free(job);
        close_with(c, PKM_ENOMEM);
        return;
    }
    j->srv = c->srv;
    j->c = c;
    j->job = job;
    if (uv_queue_work(&c->srv->loop, &j->req, job_work, job_after) < 0) {
        pkm__free(j);
        pkm_job_free(job);
        close_with(c, PKM_EINTERNAL);
        return;
    }
    c->job = j;
    job_event(c->srv, PKM__JOB_QUEUED);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    pkm_server_conn_t *c = h->data;
    size_t cap = 0;
    uint8_t *p = NULL;
    (void)suggested;
    if (c->state < CS_CLOSING) p = pkm_engine_recv_buf(c->eng, &cap); /* also during a job */
    if (cap > UINT32_MAX) cap = UINT32_MAX;
    *buf = uv_buf_init((char *)p, (unsigned)cap);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    pkm_server_conn_t *c = s->data;
    pkm_server_t *srv = c->srv;
    (void)buf;
    if (c->state >= CS_CLOSING) return;
    if (nread > 0) {
        st_add(&srv->st.bytes_in, (uint64_t)nread);
        if (c->tlist == TL_ACTIVE || c->tlist == TL_TRIMMED) tl_append(srv, c, TL_ACTIVE);
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
            if (c->state >= CS_CLOSING) {
                maybe_free(c);
                continue;
            }
            flush_now(c);
            check_eof(c);
            if (srv->trim_after == 0 && c->state < CS_CLOSING) pkm_engine_trim(c->eng);
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
        pkm_engine_trim(c->eng);
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
        if (c->state >= CS_CLOSING) continue;
        close_with(c, 0); /* cancels its queued job, if any */
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
    c->state = CS_HANDSHAKE;
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

void pkm__server_set_job_hook(pkm_server_t *srv, pkm__job_hook_fn fn, void *ctx)
{
    srv->job_hook = fn;
    srv->job_hook_ctx = ctx;
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
        if (c->state >= CS_CLOSING || !c->ever_established) continue;
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
        if (c == except || c->state >= CS_CLOSING || !c->ever_established) continue;
        if (pkm_server_send(c, id, hash, content, size) == 0) n++;
    }
    return n;
}

/* ---- per connection ---- */

int pkm_server_send(pkm_server_conn_t *c, uint8_t id, uint32_t hash, const uint8_t *content,
                    size_t size)
{
    if (!c) return PKM_EINVAL;
    if (c->state >= CS_CLOSING) return PKM_ECLOSED;
    if (!c->ever_established) return PKM_ESTATE;
    if (id == PKM_HANDSHAKE_ID || (size && !content)) return PKM_EINVAL;
    pkm_server_t *srv = c->srv;
    size_t total = pkm_engine_wire_size(size);
    if (total == 0 || total > srv->max_send_queue) return PKM_ETOOBIG;
    size_t engine_len = 0;
    pkm_engine_send_buf(c->eng, &engine_len);
    /* (During a re-establishment the engine holds packets back itself, within the same bound.) */
    if (c->wq_bytes + engine_len > srv->max_send_queue - total) {
        do_close(c, PKM_EQUEUE, NULL);
        return PKM_EQUEUE;
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
    if (c->state >= CS_CLOSING) return PKM_ECLOSED;
    if (c->state != CS_ESTABLISHED) return PKM_ESTATE; /* handshaking, or re-establishing */
    int r = pkm_engine_rekey(c->eng, secret, secret_len);
    if (r == PKM_EINVAL || r == PKM_ESTATE) return r;
    c->state = CS_REKEYING;
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
    if (!c) return NULL;
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
    return c ? c->ever_established : 0;
}

pkm_server_t *pkm_server_conn_server(const pkm_server_conn_t *c)
{
    return c ? c->srv : NULL;
}
