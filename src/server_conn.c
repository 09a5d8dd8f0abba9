/* SPDX-License-Identifier: MIT */
/* One connection of the libuv server, its whole life as one state machine (enum conn_state):
 * accepted, the handshake with its RSA job on the thread pool, packets both ways, a
 * re-establishment, closing; and the per-connection calls of server.h. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include "pkmcom/server.h"
#include "internal.h"
#include "server_internal.h"

/* A PROXY header being read (CS_PROXY only: allocated at acceptance, freed when the header is
 * complete or the connection closes). */
struct proxyrd {
    size_t need; /* the next read's size: bytes certainly part of the header */
    pkm__proxy_acc acc;
    /* The socket's two ends at acceptance (ends_ok: both known), for proxy_self: by the time
     * the header is read the proxy may have closed a health check's connection already, and
     * the socket no longer says. */
    struct sockaddr_storage peer, local;
    int ends_ok;
};

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
    pkm__loop *loop; /* the connection's loop, where job_after runs */
    pkm_server_conn_t *c;
    pkm_job_t *job;
    pkm__source_key src; /* the admission slot it holds, freed when it ends or is cancelled */
};

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

/* ---- closing ---- */

static void on_tcp_closed(uv_handle_t *h);

/* Frees c once nothing refers to it any more: its handle closed, no write request pending, not
 * on the dirty list. (A job of c's still on the pool was detached by do_close.) */
static void maybe_free(pkm_server_conn_t *c)
{
    if (c->state != CS_CLOSED || c->dirty || c->writes) return;
    if (atomic_load_explicit(&c->refs, memory_order_acquire)) return; /* a message is on its way */
    pkm__loop *L = c->loop;
    if (c->prev)
        c->prev->next = c->next;
    else
        L->all = c->next;
    if (c->next) c->next->prev = c->prev;
    pkm_engine_free(c->eng);
    pkm__free(c->prx);
    pkm__free(c);
}

static void job_event(pkm_server_t *srv, int event)
{
    if (srv->job_hook) srv->job_hook(srv->job_hook_ctx, event);
}

static void pump(pkm_server_conn_t *c);

/* An admission slot of `src` is free again (its RSA work ended or was cancelled, or it was
 * never used): hands the free slots to waiting handshakes, round-robin across sources (of every
 * loop: a connection of another loop is told by a message, PKM__MSG_GRANT). */
static void hs_release(pkm__loop *L, const pkm__source_key *src)
{
    pkm_server_t *srv = L->srv;
    uint64_t now = uv_now(L->uv);
    pkm_server_conn_t *mine = NULL, **tail = &mine;
    uv_mutex_lock(&srv->lim_mu);
    now = lim_now_locked(srv, now);
    (void)pkm__limits_hs_end(srv->lim, src, now);
    void *user;
    while (!L->stopping && pkm__limits_hs_next(srv->lim, now, &user)) {
        pkm_server_conn_t *c = user;
        if (c->loop == L) {
            c->gnext = NULL;
            *tail = c;
            tail = &c->gnext;
            continue;
        }
        /* c is open (a closing one leaves the queue under this lock first): the grant is c's
         * until its loop takes it, or its close gives the slot back. */
        pkm__msg *m = pkm__calloc(1, sizeof *m);
        if (!m) { /* cannot tell c's loop: the slot is given back, c's handshake is refused */
            (void)pkm__limits_hs_end(srv->lim, &c->src, now);
            continue; /* (c waits no more: its handshake timeout closes it) */
        }
        c->hs_granted = 1;
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
        m->kind = PKM__MSG_GRANT;
        m->conn = c;
        pkm__loop_send(c->loop, m);
    }
    st_limits_locked(srv);
    uv_mutex_unlock(&srv->lim_mu);
    while (mine) {
        pkm_server_conn_t *c = mine;
        mine = c->gnext;
        c->gnext = NULL;
        c->hs_queued = 0;
        c->hs_slot = 1;
        pump(c); /* submits its job (a pump running for c does it when it goes on) */
    }
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
 * side; fail_step non-NULL = a handshake failed. A connection not admitted yet (PROXY protocol)
 * closes silently: no stats but the caller's, no on_close. */
static void do_close(pkm_server_conn_t *c, int err, const char *fail_step)
{
    if (c->state >= CS_CLOSING) return;
    pkm_server_t *srv = c->srv;
    pkm__loop *L = c->loop;
    c->state = CS_CLOSING;
    detach_job(c);
    uint64_t now = uv_now(L->uv);
    int slot = c->hs_slot;
    uv_mutex_lock(&srv->lim_mu);
    now = lim_now_locked(srv, now);
    if (c->hs_queued) { /* never admitted here: its RSA work is never submitted */
        c->hs_queued = 0;
        (void)pkm__limits_hs_cancel(srv->lim, c->hs_ticket, now);
    }
    if (c->hs_granted) { /* admitted by another loop, not taken yet: the slot goes back */
        c->hs_granted = 0;
        slot = 1;
    }
    if (c->counted) {
        c->counted = 0;
        (void)pkm__limits_conn_close(srv->lim, &c->src, now);
    }
    st_limits_locked(srv);
    uv_mutex_unlock(&srv->lim_mu);
    pkm__budget_remove(&L->budget, &c->partial);
    st_budget(L);
    if (slot) { /* admitted, but its job was never submitted */
        c->hs_slot = 0;
        hs_release(L, &c->src);
    }
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    pkm__tl_remove(L, c);
    pkm__free(c->prx);
    c->prx = NULL;
    atomic_fetch_sub(&srv->open, 1);
    if (c->admitted) {
        st_sub(&L->st.conns_open, 1);
        if (c->ever_established) st_sub(&L->st.conns_established, 1);
        if (fail_step) st_add(&L->st.handshakes_failed, 1);
        if (err == PKM_ETIMEOUT) st_add(&L->st.timeouts, 1);
        if (err == PKM_EQUEUE) st_add(&L->st.dropped_queue, 1);
        if (srv->on_close) srv->on_close(srv->user, c, err, fail_step);
    }
    uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

/* Closes c because of its engine's failure. */
static void close_engine(pkm_server_conn_t *c)
{
    int err = pkm_engine_error(c->eng);
    const char *step = pkm_engine_fail_step(c->eng);
    pkm_server_t *srv = c->srv;
    /* A wrong secret shows as the client's 0xFF not checking: PKM_EHANDSHAKE at that step. */
    int banned = 0;
    if (srv->secret_limit && c->state < CS_CLOSING && err == PKM_EHANDSHAKE && step &&
        strcmp(step, "confirmation (0xFF)") == 0) {
        uv_mutex_lock(&srv->lim_mu);
        banned = pkm__limits_secret_failed(srv->lim, &c->src,
                                           lim_now_locked(srv, uv_now(c->loop->uv))) == 1;
        uv_mutex_unlock(&srv->lim_mu);
    }
    if (banned) {
        char name[PKM__SOURCE_KEY_STRLEN];
        pkm__source_key_str(&c->src, name, sizeof name);
        pkm__slog(srv, PKM_LOG_WARN, "%s failed the secret too often: refused for a while", name);
    }
    do_close(c, err ? err : PKM_ECLOSED, step);
}

/* One line about a PROXY header refused from `src`, at most once per source and log interval
 * (the limits' refusal log limiter). */
static void log_proxy(pkm_server_conn_t *c, const char *why)
{
    pkm_server_t *srv = c->srv;
    const pkm__source_key *src = &c->src;
    uint32_t more = 0;
    uv_mutex_lock(&srv->lim_mu);
    int ok = pkm__limits_log_ok(srv->lim, src, lim_now_locked(srv, uv_now(c->loop->uv)), &more);
    uv_mutex_unlock(&srv->lim_mu);
    if (!ok) return;
    char name[PKM__SOURCE_KEY_STRLEN];
    pkm__source_key_str(src, name, sizeof name);
    if (more)
        pkm__slog(srv, PKM_LOG_WARN,
                  "refused a connection from %s: %s (and %lu more since the last line)", name, why,
                  (unsigned long)more);
    else
        pkm__slog(srv, PKM_LOG_WARN, "refused a connection from %s: %s", name, why);
}

/* A connection from a trusted proxy sent a header that is not one: closed, no callback. */
static void proxy_refuse(pkm_server_conn_t *c, const char *why)
{
    st_add(&c->loop->st.proxy_refused, 1);
    log_proxy(c, why);
    do_close(c, PKM_EPROTO, NULL);
}

/* Closes c with err (0 = by this side), naming the handshake step if one was running (the engine
 * is always here, also while its job is on the pool, so the step is exact). */
static void close_with(pkm_server_conn_t *c, int err)
{
    if (c->state >= CS_CLOSING) return;
    if (!c->admitted) {
        /* Before its PROXY header was complete, or after a LOCAL one before any byte: a health
         * check (or the server stopping, err 0), unless the header was cut short. */
        if (err && c->state == CS_PROXY && c->prx && c->prx->acc.len) {
            proxy_refuse(c, err == PKM_ETIMEOUT ? "its PROXY header was incomplete at the deadline"
                                                : "the connection ended inside its PROXY header");
            return;
        }
        if (err) st_add(&c->loop->st.proxy_checks, 1);
        if (c->eng) pkm_engine_close(c->eng, err ? err : PKM_ECLOSED);
        do_close(c, err, NULL);
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
    pkm__enter_loop(c->loop);
    c->state = CS_CLOSED;
    maybe_free(c);
}

/* ---- writing ---- */

static void mark_dirty(pkm_server_conn_t *c)
{
    if (c->dirty || c->state >= CS_CLOSING || c->loop->stopping) return;
    c->dirty = 1;
    c->dnext = c->loop->dirty;
    c->loop->dirty = c;
}

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    pkm_server_conn_t *c = w->c;
    pkm__enter_loop(c->loop);
    c->writes--;
    c->wq_bytes -= w->len;
    if (status == 0) st_add(&c->loop->st.bytes_out, w->len);
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
            st_add(&c->loop->st.bytes_out, done);
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

/* Reports c's partial packet to the budget; past the budget closes the connections holding the
 * most (c among them, maybe). */
static void update_partial(pkm_server_conn_t *c)
{
    pkm__loop *L = c->loop;
    if (c->state >= CS_CLOSING) return;
    uint64_t now = uv_now(L->uv);
    size_t before = L->budget.count;
    if (pkm__budget_set(&L->budget, &c->partial, pkm_engine_partial_held(c->eng), now) < 0) {
        close_with(c, PKM_ENOMEM);
        return;
    }
    if (before == 0 && L->budget.count) pkm__arm_timer(L);
    pkm__partial *p;
    while ((p = pkm__budget_over(&L->budget))) {
        st_add(&L->st.partial_closed, 1);
        close_with(p->user, PKM_ENOMEM);
    }
    st_budget(L);
}

/* c's engine wants its RSA job run: asks for admission when c holds no slot. Returns 1 when the
 * job may be submitted now, 0 when it waits (or c was refused and closed). */
static int admit(pkm_server_conn_t *c)
{
    if (c->hs_slot) return 1;
    if (c->hs_queued) return 0;
    pkm_server_t *srv = c->srv;
    pkm__refusal why = PKM__REFUSE_NONE;
    uint64_t ticket = 0;
    uv_mutex_lock(&srv->lim_mu);
    pkm__admit a = pkm__limits_hs_begin(srv->lim, &c->src, c,
                                        lim_now_locked(srv, uv_now(c->loop->uv)), &ticket, &why);
    /* (hs_queued is set under the lock: another loop's hs_release may admit c at once) */
    if (a == PKM__ADMIT_QUEUED) {
        c->hs_queued = 1;
        c->hs_ticket = ticket;
    }
    st_limits_locked(srv);
    uv_mutex_unlock(&srv->lim_mu);
    switch (a) {
    case PKM__ADMIT_NOW: c->hs_slot = 1; return 1;
    case PKM__ADMIT_QUEUED: return 0;
    default:
        st_add(&c->loop->st.refused, 1);
        pkm__log_refusal(srv, c->loop, &c->src, why, "a handshake");
        close_with(c, PKM_EAGAIN);
        return 0;
    }
}

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
    pkm__loop *L = c->loop;
    if (c->in_pump || c->state >= CS_CLOSING) return;
    c->in_pump = 1;
    for (;;) {
        unsigned w = pkm_engine_wants(c->eng);
        if (w & PKM_WANT_CLOSED) {
            close_engine(c);
            break;
        }
        if (w & PKM_WANT_JOB) {
            if (!admit(c)) break;
            start_job(c);
            if (c->state >= CS_CLOSING) break;
            continue;
        }
        if ((c->state == CS_HANDSHAKE || c->state == CS_REKEYING) &&
            pkm_engine_state(c->eng) == PKM_STATE_ESTABLISHED) {
            /* a handshake (first or re-establishment) just completed */
            int first = c->state == CS_HANDSHAKE;
            c->state = CS_ESTABLISHED;
            pkm__tl_append(L, c, TL_ACTIVE);
            if (first) {
                c->ever_established = 1;
                st_add(&L->st.handshakes_ok, 1);
                st_add(&L->st.conns_established, 1);
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
        st_add(&L->st.packets_in, 1);
        if (srv->on_packet) srv->on_packet(srv->user, c, &pkt);
        if (c->state >= CS_CLOSING) break;
    }
    c->in_pump = 0;
    update_partial(c);
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
    pkm__loop *L = j->loop;
    pkm__source_key src = j->src;
    pkm__enter_loop(L);
    pkm__free(j);
    if (c) c->job = NULL; /* before anything can close c (do_close would detach j) */
    if (status == UV_ECANCELED || !c) {
        /* Cancelled (only ever by detach_job), or run after its connection closed. */
        job_event(srv, status == UV_ECANCELED ? PKM__JOB_CANCELLED : PKM__JOB_ORPHANED);
        pkm_job_free(job);
        if (c) close_with(c, PKM_EINTERNAL); /* (not reached: a cancelled job was detached) */
        hs_release(L, &src);                 /* its slot: the RSA work never ran, or is over */
        return;
    }
    (void)pkm_engine_job_done(c->eng, job); /* an error closes the engine: pump sees it */
    pump(c);
    hs_release(L, &src);
}

/* Hands the engine's RSA job (the decryption of the client's KeyShare) to the thread pool; the
 * engine stays here and goes on reading meanwhile. First writes out what the engine has (the
 * server's KeyShare must not wait for our decryption: the client decrypts meanwhile). */
static void start_job(pkm_server_conn_t *c)
{
    flush_now(c);
    if (c->state >= CS_CLOSING) return;
    pkm_job_t *job = NULL;
    if (pkm_engine_job_take(c->eng, &job) < 0)
        return; /* the engine closed: pump (or do_close)
                    frees the slot */
    struct jobreq *j = pkm__malloc(sizeof *j);
    if (!j) {
        pkm_job_free(job);
        close_with(c, PKM_ENOMEM);
        return;
    }
    j->srv = c->srv;
    j->loop = c->loop;
    j->c = c;
    j->job = job;
    j->src = c->src;
    if (uv_queue_work(c->loop->uv, &j->req, job_work, job_after) < 0) {
        pkm__free(j);
        pkm_job_free(job);
        close_with(c, PKM_EINTERNAL);
        return;
    }
    c->job = j;
    c->hs_slot = 0; /* the job holds it now: job_after frees it */
    job_event(c->srv, PKM__JOB_QUEUED);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    pkm_server_conn_t *c = h->data;
    size_t cap = 0;
    uint8_t *p = NULL;
    (void)suggested;
    if (c->state == CS_PROXY) { /* exactly the header's bytes: what follows stays in the socket */
        p = c->prx->acc.buf + c->prx->acc.len;
        cap = c->prx->need;
    } else if (c->state < CS_CLOSING) {
        p = pkm_engine_recv_buf(c->eng, &cap); /* also during a job */
    }
    if (cap > UINT32_MAX) cap = UINT32_MAX;
    *buf = uv_buf_init((char *)p, (unsigned)cap);
}

static void proxy_read(pkm_server_conn_t *c, ssize_t nread);
static int admit_conn(pkm_server_conn_t *c);

/* 1 when the first n bytes of a stream are (a prefix of) a PROXY header's signature. (A PkmCom
 * client's first bytes are its ClientKey's Size, 0x00 for any packet below 16 MiB.) */
static int proxy_signature(const uint8_t *p, size_t n)
{
    static const uint8_t v1[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
    static const uint8_t v2[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    if (n == 0) return 0;
    return memcmp(p, v1, n < sizeof v1 ? n : sizeof v1) == 0 ||
           memcmp(p, v2, n < sizeof v2 ? n : sizeof v2) == 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    pkm_server_conn_t *c = s->data;
    pkm__loop *L = c->loop;
    pkm__enter_loop(L);
    if (c->state >= CS_CLOSING) return;
    if (c->state == CS_PROXY) {
        proxy_read(c, nread);
        return;
    }
    if (!c->admitted && nread < 0) { /* after a LOCAL header, gone before its first byte */
        close_with(c, nread == UV_EOF ? PKM_EEOF : uv_to_pkm((int)nread));
        return;
    }
    if (nread > 0 && c->proxy_check) {
        c->proxy_check = 0;
        if (proxy_signature((const uint8_t *)buf->base, (size_t)nread)) {
            st_add(&L->st.proxy_refused, 1);
            log_proxy(c, "a PROXY header from an address not trusted to send one");
            close_with(c, PKM_EAGAIN);
            return;
        }
    }
    if (nread > 0 && !c->admitted && admit_conn(c) < 0) return; /* first byte after LOCAL */
    if (nread > 0) {
        st_add(&L->st.bytes_in, (uint64_t)nread);
        if (c->tlist == TL_ACTIVE || c->tlist == TL_TRIMMED) pkm__tl_append(L, c, TL_ACTIVE);
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
            /* The handshake cannot complete without the client (its confirmation), so close
             * now, as PKM_EEOF at the engine's step (the engine itself would call it
             * PKM_EHANDSHAKE, which on_close keeps for a confirmation that did not check): the
             * job is cancelled if it has not started, a waiting handshake never gets RSA work. */
            close_with(c, PKM_EEOF);
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

/* Sets c's peer address and source key (the socket's peer, or the client a PROXY header names). */
static void set_peer(pkm_server_conn_t *c, const struct sockaddr *sa)
{
    pkm__source_key_of(sa, &c->src);
    c->family = 0;
    c->peer_port = 0;
    memset(c->peer_addr, 0, sizeof c->peer_addr);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        c->family = 4;
        c->peer_port = ntohs(a->sin_port);
        memcpy(c->peer_addr, &a->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        c->peer_port = ntohs(a->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) { /* an IPv4 peer of a dual-stack listener */
            c->family = 4;
            memcpy(c->peer_addr, a->sin6_addr.s6_addr + 12, 4);
        } else {
            c->family = 6;
            memcpy(c->peer_addr, &a->sin6_addr, 16);
        }
    }
}

/* An endpoint as (4 or 6, address, port); an IPv4-mapped IPv6 address counts as IPv4. */
static void endpoint(const struct sockaddr *sa, uint8_t *fam, uint8_t addr[16], uint16_t *port)
{
    *fam = 0;
    *port = 0;
    memset(addr, 0, 16);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        *fam = 4;
        *port = a->sin_port;
        memcpy(addr, &a->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        *port = a->sin6_port;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
            *fam = 4;
            memcpy(addr, a->sin6_addr.s6_addr + 12, 4);
        } else {
            *fam = 6;
            memcpy(addr, &a->sin6_addr, 16);
        }
    }
}

static int same_endpoint(const struct sockaddr *x, const struct sockaddr *y)
{
    uint8_t fx, fy, ax[16], ay[16];
    uint16_t px, py;
    endpoint(x, &fx, ax, &px);
    endpoint(y, &fy, ay, &py);
    return fx && fx == fy && px == py && memcmp(ax, ay, 16) == 0;
}

/* 1 when a TCP4/TCP6 header names the connection's own endpoints (source = the proxy's end,
 * destination = ours): the proxy speaking for itself, as HAProxy's version 1 health checks do
 * (version 1 has no LOCAL). No client can have those: they are this very connection's. */
static int proxy_self(const struct proxyrd *x, const pkm__proxy_info *in)
{
    if (!x->ends_ok) return 0;
    return same_endpoint((const struct sockaddr *)&in->src, (const struct sockaddr *)&x->peer) &&
           same_endpoint((const struct sockaddr *)&in->dst, (const struct sockaddr *)&x->local);
}

/* A connection whose struct could not be linked: its struct (the handle is its first member). */
static void free_unadmitted(uv_handle_t *h)
{
    pkm__free(h);
}

/* Gives c its engine (its ServerKey goes out before the loop next waits) and reads. Returns 0, or
 * -1 when c was closed. */
static int start_engine(pkm_server_conn_t *c)
{
    pkm_server_t *srv = c->srv;
    int r = pkm_engine_new(&srv->ec, &c->eng);
    if (r < 0) {
        pkm__slog(srv, PKM_LOG_ERROR, "cannot make an engine for a connection: %s",
                  pkm_strerror(r));
        do_close(c, r, NULL); /* not admitted yet: silent */
        return -1;
    }
    uv_tcp_nodelay(&c->tcp, 1); /* writes are gathered per turn already */
    c->state = CS_HANDSHAKE;
    if (!c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
            do_close(c, PKM_EIO, NULL);
            return -1;
        }
        c->reading = 1;
    }
    mark_dirty(c); /* ServerKey */
    return 0;
}

/* Counts c under its source in the limits (per-source cap, ban). Returns 0, or -1 when c was
 * refused (logged at most once per source and interval) and closed silently. */
static int count_conn(pkm_server_conn_t *c)
{
    pkm_server_t *srv = c->srv;
    pkm__refusal why = PKM__REFUSE_NONE;
    uv_mutex_lock(&srv->lim_mu);
    int r =
        pkm__limits_conn_open(srv->lim, &c->src, lim_now_locked(srv, uv_now(c->loop->uv)), &why);
    uv_mutex_unlock(&srv->lim_mu);
    if (r != 0) {
        st_add(&c->loop->st.refused, 1);
        pkm__log_refusal(srv, c->loop, &c->src, why, "a connection");
        do_close(c, PKM_EAGAIN, NULL); /* not admitted: silent */
        return -1;
    }
    c->counted = 1;
    return 0;
}

/* Admits c (it has its engine): counted by the limits if it is not yet (count_conn), given an
 * id, the stats, callbacks from now on, the handshake deadline. Returns 0, or -1 when c was
 * closed. */
static int admit_conn(pkm_server_conn_t *c)
{
    pkm_server_t *srv = c->srv;
    if (!c->counted && count_conn(c) < 0) return -1;
    c->admitted = 1;
    c->id = atomic_fetch_add(&srv->next_id, 1) + 1;
    st_add(&c->loop->st.accepted, 1);
    st_add(&c->loop->st.conns_open, 1);
    pkm__tl_append(c->loop, c, TL_HS);
    return 0;
}

/* The PROXY header is complete (in: what it says): the connection's source is the client it
 * names, or for LOCAL/UNKNOWN (and a header naming this connection itself) the socket's peer;
 * then the connection starts as any other, but after LOCAL/UNKNOWN it is admitted only with its
 * first byte (a health check never is). */
static void proxy_done(pkm_server_conn_t *c, const pkm__proxy_info *in)
{
    struct proxyrd *x = c->prx;
    /* The reads never go past the header (each is at most `need` bytes), so nothing follows it
     * in the buffer; should that change, the bytes after it are the PkmCom stream's. */
    uint8_t rest[PKM__PROXY_MAX];
    size_t nrest = x->acc.len - in->header_len;
    memcpy(rest, x->acc.buf + in->header_len, nrest);
    const struct sockaddr *src = pkm__proxy_source(in, NULL);
    if (src && proxy_self(x, in)) src = NULL; /* as LOCAL */
    pkm__free(x);
    c->prx = NULL;
    if (src) { /* refused before its engine is made: the cheapest way out */
        set_peer(c, src);
        if (count_conn(c) < 0) return;
    }
    if (start_engine(c) < 0) return;
    if (src && admit_conn(c) < 0) return;
    if (nrest) {
        if (!c->admitted && admit_conn(c) < 0) return;
        st_add(&c->loop->st.bytes_in, nrest);
        if (pkm_engine_feed(c->eng, rest, nrest) < 0) {
            close_engine(c);
            return;
        }
        pump(c);
    }
}

/* In CS_PROXY: nread bytes of the header arrived at the accumulator's end, or the stream ended
 * or failed. */
static void proxy_read(pkm_server_conn_t *c, ssize_t nread)
{
    if (nread == 0) return; /* EAGAIN */
    if (nread < 0) {
        close_with(c, nread == UV_EOF ? PKM_EEOF : uv_to_pkm((int)nread));
        return;
    }
    struct proxyrd *x = c->prx;
    x->acc.len += (size_t)nread;
    pkm__proxy_info in;
    size_t need = 0;
    int r = pkm__proxy_parse(x->acc.buf, x->acc.len, &in, &need);
    if (r == PKM_EAGAIN) {
        x->need = need;
        return;
    }
    if (r < 0) {
        char why[160];
        snprintf(why, sizeof why, "a malformed PROXY header (%s)",
                 pkm__proxy_reason_str(in.reason));
        proxy_refuse(c, why);
        return;
    }
    proxy_done(c, &in);
}

int pkm__sconn_accept(pkm__loop *L, int fd)
{
    pkm_server_t *srv = L->srv;
    pkm_server_conn_t *c = pkm__calloc(1, sizeof *c);
    if (!c) return PKM_ENOMEM;
    uv_tcp_init(L->uv, &c->tcp);
    c->tcp.data = c;
    c->srv = srv;
    c->loop = L;
    atomic_init(&c->refs, 0);
    int ar = fd < 0 ? uv_accept((uv_stream_t *)&L->listener, (uv_stream_t *)&c->tcp)
                    : uv_tcp_open(&c->tcp, (uv_os_sock_t)fd);
    if (ar != 0) {
        if (fd >= 0) close(fd);
        uv_close((uv_handle_t *)&c->tcp, free_unadmitted);
        atomic_fetch_sub(&srv->open, 1); /* counted by on_connection */
        return 0;
    }
    struct sockaddr_storage ss;
    int len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    int gone = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0;
    if (gone) ss.ss_family = AF_UNSPEC;
    set_peer(c, (const struct sockaddr *)&ss);
    pkm__partial_init(&c->partial, c);
    /* From here on c is on L->all and closes through do_close (silently until admitted), which
     * releases the srv->open that on_connection counted. */
    c->next = L->all;
    if (L->all) L->all->prev = c;
    L->all = c;
    if (gone && srv->proxy_on) {
        /* Reset before it was accepted (the peer is unknown, so it cannot be told trusted or
         * not): a health check's connect-and-reset, most likely. */
        st_add(&L->st.proxy_checks, 1);
        do_close(c, PKM_ECONNRESET, NULL);
        return 0;
    }
    if (srv->proxy_on && pkm__cidr_list_match(&srv->proxy, (const struct sockaddr *)&ss)) {
        /* A trusted proxy: its header first, before anything else happens. */
        c->state = CS_PROXY;
        c->prx = pkm__malloc(sizeof *c->prx);
        if (!c->prx) {
            pkm__slog(srv, PKM_LOG_ERROR, "out of memory accepting a connection");
            do_close(c, PKM_ENOMEM, NULL);
            return 0;
        }
        c->prx->need = PKM__PROXY_MIN;
        pkm__proxy_acc_init(&c->prx->acc);
        memcpy(&c->prx->peer, &ss, sizeof ss);
        int ll = sizeof c->prx->local;
        c->prx->ends_ok = uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&c->prx->local, &ll) == 0;
        pkm__tl_append(L, c, TL_PROXY);
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
            do_close(c, PKM_EIO, NULL);
            return 0;
        }
        c->reading = 1;
        return 0;
    }
    c->proxy_check = srv->proxy_on; /* nobody else may send a header */
    c->state = CS_HANDSHAKE;
    if (count_conn(c) < 0) return 0; /* before its engine is made: the cheapest way out */
    if (start_engine(c) < 0) return 0;
    (void)admit_conn(c);
    return 0;
}

void pkm__sconn_close(pkm_server_conn_t *c, int err)
{
    close_with(c, err);
}

void pkm__sconn_prepare(pkm_server_conn_t *c)
{
    if (c->state >= CS_CLOSING) {
        maybe_free(c);
        return;
    }
    flush_now(c);
    check_eof(c);
    if (c->srv->trim_after == 0 && c->state < CS_CLOSING) pkm_engine_trim(c->eng);
}

/* Drops the reference a message held on c; frees c if that was the last thing holding it. */
static void conn_unref(pkm_server_conn_t *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) maybe_free(c);
}

static void pkt_unref(pkm__shared_pkt *p)
{
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) pkm__free(p);
}

void pkm__sconn_msg(pkm__loop *L, pkm__msg *m)
{
    pkm_server_conn_t *c = m->conn;
    switch (m->kind) {
    case PKM__MSG_SEND:
        if (c->state < CS_CLOSING)
            (void)pkm_server_send(c, m->pkt->id, m->pkt->hash, m->pkt->content, m->pkt->size);
        pkt_unref(m->pkt);
        conn_unref(c);
        break;
    case PKM__MSG_BCAST:
        for (pkm_server_conn_t *d = L->all; d; d = d->next) {
            if (d->id == m->except_id || d->state >= CS_CLOSING || !d->ever_established) continue;
            (void)pkm_server_send(d, m->pkt->id, m->pkt->hash, m->pkt->content, m->pkt->size);
        }
        pkt_unref(m->pkt);
        break;
    case PKM__MSG_GRANT: {
        uv_mutex_lock(&L->srv->lim_mu);
        int granted = c->hs_granted; /* 0: its close gave the slot back already */
        c->hs_granted = 0;
        uv_mutex_unlock(&L->srv->lim_mu);
        if (granted) {
            c->hs_queued = 0;
            c->hs_slot = 1;
            if (c->state < CS_CLOSING)
                pump(c);
            else /* (not reached: do_close clears hs_granted) */
                hs_release(L, &c->src);
        }
        conn_unref(c);
        break;
    }
    default: break;
    }
    pkm__free(m);
}

/* ---- per connection ---- */

/* pkm_server_send from a thread that is not c's loop: the packet is copied into a message for
 * c's loop, which sends it (or drops it, c being closed by then). c is open: the caller knows
 * (its on_close has not returned), so the reference keeps it until the message is handled. */
static int send_across(pkm_server_conn_t *c, uint8_t id, uint32_t hash, const uint8_t *content,
                       size_t size)
{
    if (id == PKM_HANDSHAKE_ID || (size && !content)) return PKM_EINVAL;
    size_t total = pkm_engine_wire_size(size);
    if (total == 0 || total > c->srv->ec.max_send_buffer) return PKM_ETOOBIG;
    pkm__shared_pkt *p = pkm__malloc(sizeof *p + size);
    pkm__msg *m = pkm__calloc(1, sizeof *m);
    if (!p || !m) {
        pkm__free(p);
        pkm__free(m);
        return PKM_ENOMEM;
    }
    atomic_init(&p->refs, 1);
    p->id = id;
    p->hash = hash;
    p->size = size;
    if (size) memcpy(p->content, content, size);
    m->kind = PKM__MSG_SEND;
    m->conn = c;
    m->pkt = p;
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    pkm__loop_send(c->loop, m);
    return 0;
}

int pkm_server_send(pkm_server_conn_t *c, uint8_t id, uint32_t hash, const uint8_t *content,
                    size_t size)
{
    if (!c) return PKM_EINVAL;
    if (pkm__current_loop() != c->loop) return send_across(c, id, hash, content, size);
    if (c->state >= CS_CLOSING) return PKM_ECLOSED;
    if (!c->ever_established) return PKM_ESTATE;
    if (id == PKM_HANDSHAKE_ID || (size && !content)) return PKM_EINVAL;
    pkm_server_t *srv = c->srv;
    size_t total = pkm_engine_wire_size(size);
    if (total == 0 || total > srv->ec.max_send_buffer) return PKM_ETOOBIG;
    size_t engine_len = 0;
    pkm_engine_send_buf(c->eng, &engine_len);
    /* (During a re-establishment the engine holds packets back itself, within the same bound.) */
    if (c->wq_bytes + engine_len > srv->ec.max_send_buffer - total) {
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
    st_add(&c->loop->st.packets_out, 1);
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
    pkm__tl_append(c->loop, c, TL_HS);
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

unsigned pkm_server_conn_loop(const pkm_server_conn_t *c)
{
    return c ? c->loop->idx : 0;
}
