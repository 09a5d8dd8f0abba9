/* SPDX-License-Identifier: MIT */
/* The libuv server's loops: the calling thread's loop, the deadline lists and each loop's timer
 * and handles, the inboxes between loops (posts, cross-loop sends and broadcasts, accept
 * hand-off, stop), the application's timers, a loop's set-up and stop. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>
#include "pkmcom/server.h"
#include "internal.h"
#include "server_internal.h"

/* ---- small helpers ---- */

/* The loop whose callback this thread is in; compared with a connection's loop to tell a send
 * on its own thread (direct) from one across threads (through the loop's inbox). */
static _Thread_local pkm__loop *tls_loop;

pkm__loop *pkm__current_loop(void)
{
    return tls_loop;
}

void pkm__enter_loop(pkm__loop *L)
{
    tls_loop = L;
}

/* The calling thread's loop of srv, or NULL. */
static pkm__loop *my_loop(const pkm_server_t *srv)
{
    pkm__loop *L = tls_loop;
    return L && L->srv == srv ? L : NULL;
}

void pkm__slog(pkm_server_t *srv, int level, const char *fmt, ...)
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

/* ---- deadline lists ---- */

void pkm__tl_remove(pkm__loop *L, pkm_server_conn_t *c)
{
    if (c->tlist == TL_NONE) return;
    tlist_t *l = &L->tl[c->tlist];
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

static void arm_timer(pkm__loop *L);
static void on_timer(uv_timer_t *t);

void pkm__arm_timer(pkm__loop *L)
{
    arm_timer(L);
}

void pkm__log_refusal(pkm_server_t *srv, pkm__loop *L, const pkm__source_key *src, pkm__refusal why,
                      const char *what)
{
    uint32_t more = 0;
    uv_mutex_lock(&srv->lim_mu);
    int ok = pkm__limits_log_ok(srv->lim, src, lim_now_locked(srv, uv_now(L->uv)), &more);
    uv_mutex_unlock(&srv->lim_mu);
    if (!ok) return;
    char name[PKM__SOURCE_KEY_STRLEN];
    pkm__source_key_str(src, name, sizeof name);
    if (more)
        pkm__slog(srv, PKM_LOG_WARN, "refused %s from %s: %s (and %lu more since the last line)",
                  what, name, pkm__refusal_str(why), (unsigned long)more);
    else
        pkm__slog(srv, PKM_LOG_WARN, "refused %s from %s: %s", what, name, pkm__refusal_str(why));
}

/* Moves c to the tail of list `id`, with `since` = now. */
void pkm__tl_append(pkm__loop *L, pkm_server_conn_t *c, enum tlist_id id)
{
    pkm__tl_remove(L, c);
    tlist_t *l = &L->tl[id];
    int was_empty = l->head == NULL;
    c->since = uv_now(L->uv);
    c->tlist = (uint8_t)id;
    c->tprev = l->tail;
    c->tnext = NULL;
    if (l->tail)
        l->tail->tnext = c;
    else
        l->head = c;
    l->tail = c;
    if (was_empty) arm_timer(L);
}

static uint64_t deadline_min(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* Sets L's timer for the earliest deadline among the list heads (none: stopped). */
static void arm_timer(pkm__loop *L)
{
    pkm_server_t *srv = L->srv;
    if (L->stopping || L->handles_closed) return;
    uint64_t due = UINT64_MAX;
    pkm_server_conn_t *h;
    if (srv->hs_timeout && (h = L->tl[TL_HS].head)) due = h->since + srv->hs_timeout;
    if ((h = L->tl[TL_ACTIVE].head)) {
        if (srv->trim_after) due = deadline_min(due, h->since + srv->trim_after);
        if (srv->idle_timeout) due = deadline_min(due, h->since + srv->idle_timeout);
    }
    if ((h = L->tl[TL_PROXY].head)) due = deadline_min(due, h->since + srv->proxy_timeout);
    if (srv->idle_timeout && (h = L->tl[TL_TRIMMED].head))
        due = deadline_min(due, h->since + srv->idle_timeout);
    due = deadline_min(due, pkm__budget_next_deadline(&L->budget));
    if (due == UINT64_MAX) {
        uv_timer_stop(&L->timer);
        return;
    }
    uint64_t now = uv_now(L->uv);
    uv_timer_start(&L->timer, on_timer, due > now ? due - now : 0, 0);
}

/* ---- the loop's own handles ---- */

/* Before the loop waits: one write per connection that has output. */

static void on_prepare(uv_prepare_t *p)
{
    pkm__loop *L = p->data;
    pkm__enter_loop(L);
    pkm_server_conn_t *list;
    L->accepts_this_turn = 0;
    if (L->idx == 0 && L->accept_deferred && !L->stopping) { /* the turn's batch was full */
        L->accept_deferred = 0;
        pkm__on_connection((uv_stream_t *)&L->listener, 0); /* uv_accept re-arms the listener */
    }
    while ((list = L->dirty)) {
        L->dirty = NULL;
        while (list) {
            pkm_server_conn_t *c = list;
            list = c->dnext;
            c->dnext = NULL;
            c->dirty = 0;
            pkm__sconn_prepare(c);
        }
    }
}

static void on_timer(uv_timer_t *t)
{
    pkm__loop *L = t->data;
    pkm_server_t *srv = L->srv;
    pkm__enter_loop(L);
    uint64_t now = uv_now(L->uv);
    pkm_server_conn_t *c;
    while (srv->hs_timeout && (c = L->tl[TL_HS].head) && c->since + srv->hs_timeout <= now)
        pkm__sconn_close(c, PKM_ETIMEOUT);
    while ((c = L->tl[TL_PROXY].head) && c->since + srv->proxy_timeout <= now)
        pkm__sconn_close(c, PKM_ETIMEOUT); /* not admitted: closed silently */
    if (srv->idle_timeout) {
        while ((c = L->tl[TL_TRIMMED].head) && c->since + srv->idle_timeout <= now)
            pkm__sconn_close(c, PKM_ETIMEOUT);
        while ((c = L->tl[TL_ACTIVE].head) && c->since + srv->idle_timeout <= now)
            pkm__sconn_close(c, PKM_ETIMEOUT);
    }
    pkm__partial *p;
    while ((p = pkm__budget_expired(&L->budget, now))) {
        st_add(&L->st.partial_closed, 1);
        pkm__sconn_close(p->user, PKM_ETIMEOUT);
    }
    st_budget(L);
    while (srv->trim_after && (c = L->tl[TL_ACTIVE].head) && c->since + srv->trim_after <= now) {
        uint64_t since = c->since;
        pkm_engine_trim(c->eng);
        pkm__tl_append(L, c, TL_TRIMMED);
        c->since = since; /* keeps its last read time */
    }
    arm_timer(L);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* ---- inboxes ---- */

void pkm__loop_send(pkm__loop *L, pkm__msg *m)
{
    m->next = NULL;
    uv_mutex_lock(&L->in_mu);
    if (L->in_tail)
        L->in_tail->next = m;
    else
        L->in_head = m;
    L->in_tail = m;
    /* Under the lock: the async handle is closed only after in_closed is set (stop_loop). */
    if (!L->in_closed) uv_async_send(&L->async);
    uv_mutex_unlock(&L->in_mu);
}

/* ---- cross-loop messages about connections ---- */

/* Drops the reference a message held on c; frees c if that was the last thing holding it. */
static void conn_unref(pkm_server_conn_t *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) pkm__sconn_maybe_free(c);
}

static void pkt_unref(pkm__shared_pkt *p)
{
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) pkm__free(p);
}

/* A copy of a packet for other loops, holding one reference; NULL with *err PKM_ETOOBIG (it
 * could never be queued: larger than the send buffer) or PKM_ENOMEM. */
static pkm__shared_pkt *shared_pkt_new(const pkm_server_t *srv, uint8_t id, uint32_t hash,
                                       const uint8_t *content, size_t size, int *err)
{
    size_t total = pkm_engine_wire_size(size);
    if (total == 0 || total > srv->ec.max_send_buffer) {
        *err = PKM_ETOOBIG;
        return NULL;
    }
    pkm__shared_pkt *p = pkm__malloc(sizeof *p + size);
    if (!p) {
        *err = PKM_ENOMEM;
        return NULL;
    }
    atomic_init(&p->refs, 1);
    p->id = id;
    p->hash = hash;
    p->size = size;
    if (size) memcpy(p->content, content, size);
    return p;
}

static void conn_msg(pkm__loop *L, pkm__msg *m)
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
                pkm__sconn_pump(c);
            else /* (not reached: do_close clears hs_granted) */
                pkm__hs_release(L, &c->src);
        }
        conn_unref(c);
        break;
    }
    default: break;
    }
    pkm__free(m);
}

/* pkm_server_send from a thread that is not c's loop: the packet is copied into a message for
 * c's loop, which sends it (or drops it, c being closed by then). c is open: the caller knows
 * (its on_close has not returned), so the reference keeps it until the message is handled. */
int pkm__send_across(pkm_server_conn_t *c, uint8_t id, uint32_t hash, const uint8_t *content,
                     size_t size)
{
    if (id == PKM_HANDSHAKE_ID || (size && !content)) return PKM_EINVAL;
    int err;
    pkm__shared_pkt *p = shared_pkt_new(c->srv, id, hash, content, size, &err);
    if (!p) return err;
    pkm__msg *m = pkm__calloc(1, sizeof *m);
    if (!m) {
        pkt_unref(p);
        return PKM_ENOMEM;
    }
    m->kind = PKM__MSG_SEND;
    m->conn = c;
    m->pkt = p;
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    pkm__loop_send(c->loop, m);
    return 0;
}

static int sconn_take(pkm__loop *L, int fd);

/* Handles the messages queued for L so far, in order; with `close`, no more wake L (they wait
 * for pkm_server_free), so nothing is ever left behind. */
void pkm__loop_run_inbox(pkm__loop *L, int close)
{
    pkm_server_t *srv = L->srv;
    for (;;) {
        uv_mutex_lock(&L->in_mu);
        if (close) L->in_closed = 1;
        pkm__msg *m = L->in_head;
        L->in_head = L->in_tail = NULL;
        uv_mutex_unlock(&L->in_mu);
        if (!m) return;
        while (m) {
            pkm__msg *next = m->next;
            switch (m->kind) {
            case PKM__MSG_POST:
                m->fn(srv, m->ud);
                pkm__free(m);
                break;
            case PKM__MSG_ACCEPT:
                (void)sconn_take(L, m->fd);
                pkm__free(m);
                break;
            case PKM__MSG_STOP:
                pkm__free(m);
                pkm__loop_stop(L);
                break;
            default: conn_msg(L, m); break;
            }
            m = next;
        }
    }
}

/* ---- the application's timers (loop 0) ---- */

void pkm__timer_unlink(pkm_server_timer_t *T)
{
    pkm__loop *L = T->loop;
    if (T->prev)
        T->prev->next = T->next;
    else
        L->timers = T->next;
    if (T->next) T->next->prev = T->prev;
    pkm__free(T);
}

static void utimer_closed(uv_handle_t *h)
{
    pkm_server_timer_t *T = h->data;
    T->closed = 1;
    if (T->released) pkm__timer_unlink(T);
}

static void utimer_close(pkm_server_timer_t *T)
{
    if (T->closing) return;
    T->closing = 1;
    uv_close((uv_handle_t *)&T->t, utimer_closed);
}

static void on_utimer(uv_timer_t *t)
{
    pkm_server_timer_t *T = t->data;
    pkm__enter_loop(T->loop);
    T->fn(T->loop->srv, T->ud); /* it may stop this timer: freed later, in utimer_closed */
}

/* The loop stops: every timer's handle closes (each is freed by pkm_server_timer_stop, or by
 * pkm_server_free). */
static void close_timers(pkm__loop *L)
{
    for (pkm_server_timer_t *T = L->timers; T; T = T->next)
        utimer_close(T);
}

int pkm_server_timer_start(pkm_server_t *srv, int64_t delay_ms, int64_t repeat_ms,
                           void (*fn)(pkm_server_t *srv, void *ud), void *ud,
                           pkm_server_timer_t **out)
{
    if (out) *out = NULL;
    if (!srv || !fn || !out || delay_ms < 0 || repeat_ms < 0) return PKM_EINVAL;
    pkm__loop *L = &srv->loops[0];
    pkm__loop *me = my_loop(srv);
    if (me ? me != L : atomic_load(&srv->running) != 0) return PKM_ESTATE; /* not loop 0's thread */
    if (L->stop_entered) return PKM_ECLOSED;
    pkm_server_timer_t *T = pkm__calloc(1, sizeof *T);
    if (!T) return PKM_ENOMEM;
    T->loop = L;
    T->fn = fn;
    T->ud = ud;
    uv_timer_init(L->uv, &T->t);
    T->t.data = T;
    T->next = L->timers;
    if (L->timers) L->timers->prev = T;
    L->timers = T;
    uv_timer_start(&T->t, on_utimer, (uint64_t)delay_ms, (uint64_t)repeat_ms);
    *out = T;
    return 0;
}

void pkm_server_timer_stop(pkm_server_timer_t *T)
{
    if (!T || T->released) return;
    T->released = 1;
    if (!T->closing)
        utimer_close(T);
    else if (T->closed)
        pkm__timer_unlink(T);
    /* (else: closing, utimer_closed frees it) */
}

struct uv_loop_s *pkm_server_loop(pkm_server_t *srv)
{
    return srv ? srv->loops[0].uv : NULL;
}

/* ---- a loop's stop and set-up ---- */

/* Stop of one loop: its inbox handled (posts made before the stop run, while the connections
 * are open), no new connections, every open one closed (err 0), its handles closed; the loop
 * then ends once the closes and any work in flight are done. Loop 0 then stops the others. */
void pkm__loop_stop(pkm__loop *L)
{
    if (L->stop_entered) return;
    L->stop_entered = 1;
    pkm__enter_loop(L);
    pkm__loop_run_inbox(L, 1);
    L->stopping = 1;
    if (L->handles_inited) {
        if (L->idx == 0) close_handle((uv_handle_t *)&L->listener);
        for (pkm_server_conn_t *c = L->all; c; c = c->next) {
            if (c->state >= CS_CLOSING) continue;
            pkm__sconn_close(c, 0); /* cancels its queued job, if any */
        }
    }
    /* The prepare handle goes: nothing is flushed any more, and the dirty list is forgotten. */
    while (L->dirty) {
        pkm_server_conn_t *c = L->dirty;
        L->dirty = c->dnext;
        c->dnext = NULL;
        c->dirty = 0;
    }
    close_timers(L);
    if (L->handles_inited) {
        close_handle((uv_handle_t *)&L->timer);
        close_handle((uv_handle_t *)&L->prepare);
        close_handle((uv_handle_t *)&L->async);
    }
    L->handles_closed = 1;
    if (L->idx != 0) return;
    pkm_server_t *srv = L->srv;
    for (unsigned i = 1; i < srv->nloops; i++) {
        pkm__msg *m = srv->loops[i].stop_msg;
        srv->loops[i].stop_msg = NULL;
        if (m) pkm__loop_send(&srv->loops[i], m);
    }
}

static void on_async(uv_async_t *a)
{
    pkm__loop *L = a->data;
    pkm__enter_loop(L);
    pkm__loop_run_inbox(L, 0);
    /* pkm_server_stop wakes loop 0; loop 0 stops the others (PKM__MSG_STOP). */
    if (L->idx == 0 && atomic_load(&L->srv->stop_requested)) pkm__loop_stop(L);
}

/* A socket loop 0 handed over: admitted on L, or closed (stopping, out of memory). */
static int sconn_take(pkm__loop *L, int fd)
{
    pkm_server_t *srv = L->srv;
    if (!L->stopping && pkm__sconn_accept(L, fd) == 0) return 0;
    if (!L->stopping) pkm__slog(srv, PKM_LOG_ERROR, "out of memory accepting a connection");
    close(fd);
    atomic_fetch_sub(&srv->open, 1);
    return -1;
}

/* Sets up loop L (its uv loop, handles, budget, inbox). */
int pkm__loop_init(pkm_server_t *srv, pkm__loop *L, unsigned idx, const pkm_server_config_t *cfg)
{
    L->srv = srv;
    L->idx = idx;
    size_t budget = cfg->partial_budget;
    if (budget && srv->nloops > 1) budget = budget / srv->nloops ? budget / srv->nloops : 1;
    pkm__budget_init(&L->budget, budget, (uint64_t)cfg->partial_deadline_ms);
    if (pkm__budget_reserve(&L->budget, 64) < 0) return PKM_ENOMEM; /* the usual case: no more */
    if (idx > 0) { /* loop 0's stop stops it: that message cannot fail for want of memory */
        if (!(L->stop_msg = pkm__calloc(1, sizeof *L->stop_msg))) return PKM_ENOMEM;
        L->stop_msg->kind = PKM__MSG_STOP;
    }
    if (uv_mutex_init(&L->in_mu) != 0) return PKM_ENOMEM;
    L->uv = &L->own;
    if (uv_loop_init(L->uv) != 0) {
        uv_mutex_destroy(&L->in_mu);
        return PKM_ENOMEM;
    }
    L->loop_inited = 1;
    uv_timer_init(L->uv, &L->timer);
    uv_prepare_init(L->uv, &L->prepare);
    uv_async_init(L->uv, &L->async, on_async);
    L->timer.data = L->prepare.data = L->async.data = L;
    if (idx == 0) {
        uv_tcp_init(L->uv, &L->listener);
        L->listener.data = L;
    }
    uv_prepare_start(&L->prepare, on_prepare);
    uv_unref((uv_handle_t *)&L->prepare);
    uv_unref((uv_handle_t *)&L->timer);
    L->handles_inited = 1;
    return 0;
}

/* ---- server.h's calls that go across loops ---- */

int pkm_server_post(pkm_server_t *srv, void (*fn)(pkm_server_t *srv, void *ud), void *ud)
{
    if (!srv || !fn) return PKM_EINVAL;
    if (atomic_load(&srv->stop_requested)) return PKM_ECLOSED;
    pkm__msg *m = pkm__calloc(1, sizeof *m);
    if (!m) return PKM_ENOMEM;
    m->kind = PKM__MSG_POST;
    m->fn = fn;
    m->ud = ud;
    pkm__loop *L = &srv->loops[0];
    uv_mutex_lock(&L->in_mu);
    if (L->in_closed) {
        uv_mutex_unlock(&L->in_mu);
        pkm__free(m);
        return PKM_ECLOSED;
    }
    if (L->in_tail)
        L->in_tail->next = m;
    else
        L->in_head = m;
    L->in_tail = m;
    uv_async_send(&L->async);
    uv_mutex_unlock(&L->in_mu);
    return 0;
}

size_t pkm_server_foreach(pkm_server_t *srv, void (*fn)(void *ctx, pkm_server_conn_t *c), void *ctx)
{
    if (!srv || !fn) return 0;
    pkm__loop *L = my_loop(srv);
    if (!L && srv->nloops == 1) L = &srv->loops[0]; /* (the caller is on the loop's thread) */
    if (!L) return 0;
    size_t n = 0;
    /* Connections are freed only from the loop's own callbacks, never during fn. */
    for (pkm_server_conn_t *c = L->all; c; c = c->next) {
        if (c->state >= CS_CLOSING || !c->ever_established) continue;
        fn(ctx, c);
        n++;
    }
    return n;
}

size_t pkm_server_broadcast(pkm_server_t *srv, const pkm_server_conn_t *except, uint8_t id,
                            uint32_t hash, const uint8_t *content, size_t size)
{
    if (!srv || id == PKM_HANDSHAKE_ID || (size && !content)) return 0;
    pkm__loop *me = my_loop(srv);
    size_t n = 0;
    if (me) {
        for (pkm_server_conn_t *c = me->all; c; c = c->next) {
            if (c == except || c->state >= CS_CLOSING || !c->ever_established) continue;
            if (pkm_server_send(c, id, hash, content, size) == 0) n++;
        }
        if (srv->nloops == 1) return n;
    }
    /* One copy of the packet, shared by every other loop (the last one done frees it); the
     * reference it is made with is ours, until every message holds its own. */
    int err;
    pkm__shared_pkt *p = shared_pkt_new(srv, id, hash, content, size, &err);
    if (!p) return n;
    for (unsigned i = 0; i < srv->nloops; i++) {
        pkm__loop *L = &srv->loops[i];
        if (L == me) continue;
        pkm__msg *m = pkm__calloc(1, sizeof *m);
        if (!m) continue;
        m->kind = PKM__MSG_BCAST;
        m->except_id = except ? except->id : 0; /* (an id: the pointer could be reused) */
        m->pkt = p;
        atomic_fetch_add(&p->refs, 1);
        uint64_t est = atomic_load_explicit(&L->st.conns_established, memory_order_relaxed);
        if (except && except->loop == L && est) est--;
        n += est;
        pkm__loop_send(L, m);
    }
    pkt_unref(p);
    return n;
}

/* ---- typed packets (schema.h) ---- */

/* Encodes packet `id` with reg's schema: into small[cap] if it fits, else into *big (the
 * caller frees it). *content points at whichever holds it. */
static int encode_msg(const pkm_registry_t *reg, uint8_t id, const pkm_value_t *fields, size_t n,
                      uint8_t *small, size_t cap, uint8_t **big, const uint8_t **content,
                      size_t *len, uint32_t *hash)
{
    *big = NULL;
    int r = pkm_registry_encode_content(reg, id, fields, n, small, cap, len, hash);
    if (r == 0) {
        *content = small;
        return 0;
    }
    if (r != PKM_ENOSPC) return r;
    PKM_GUARD(pkm_registry_encode_content_alloc(reg, id, fields, n, big, len, hash));
    *content = *big;
    return 0;
}

int pkm_server_send_msg(pkm_server_conn_t *conn, const pkm_registry_t *reg, uint8_t id,
                        const pkm_value_t *fields, size_t n)
{
    if (!conn || !reg) return PKM_EINVAL;
    uint8_t small[1024], *big;
    const uint8_t *content = NULL;
    size_t len = 0;
    uint32_t hash = 0;
    PKM_GUARD(encode_msg(reg, id, fields, n, small, sizeof small, &big, &content, &len, &hash));
    int r = pkm_server_send(conn, id, hash, content, len);
    pkm_bytes_free(big);
    return r;
}

int pkm_server_broadcast_msg(pkm_server_t *srv, const pkm_server_conn_t *except,
                             const pkm_registry_t *reg, uint8_t id, const pkm_value_t *fields,
                             size_t n, size_t *queued)
{
    if (queued) *queued = 0;
    if (!srv || !reg) return PKM_EINVAL;
    uint8_t small[1024], *big;
    const uint8_t *content = NULL;
    size_t len = 0;
    uint32_t hash = 0;
    PKM_GUARD(encode_msg(reg, id, fields, n, small, sizeof small, &big, &content, &len, &hash));
    size_t k = pkm_server_broadcast(srv, except, id, hash, content, len);
    pkm_bytes_free(big);
    if (queued) *queued = k;
    return 0;
}
