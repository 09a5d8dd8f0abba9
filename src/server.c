/* SPDX-License-Identifier: MIT */
/* The event-driven PkmCom/TCP server on libuv, its listener, loop and timers: accepting (with
 * the connection cap), one gathered write per connection and turn, the deadline lists for
 * timeouts and idle trimming, stop and lifetime. One connection's life is server_conn.c's. */
#include <errno.h>
#include <fcntl.h>
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
#include <unistd.h>
#include <uv.h>
#include "pkmcom/server.h"
#include "internal.h"
#include "net_internal.h"
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
static void on_connection(uv_stream_t *l, int status);

static void on_prepare(uv_prepare_t *p)
{
    pkm__loop *L = p->data;
    pkm__enter_loop(L);
    pkm_server_conn_t *list;
    L->accepts_this_turn = 0;
    if (L->idx == 0 && L->accept_deferred && !L->stopping) { /* the turn's batch was full */
        L->accept_deferred = 0;
        on_connection((uv_stream_t *)&L->listener, 0); /* uv_accept re-arms the listener */
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

static void stop_loop(pkm__loop *L);
static int sconn_take(pkm__loop *L, int fd);

/* Handles the messages queued for L so far, in order; with `close`, no more wake L (they wait
 * for pkm_server_free), so nothing is ever left behind. */
static void run_inbox(pkm__loop *L, int close)
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
                stop_loop(L);
                break;
            default: pkm__sconn_msg(L, m); break;
            }
            m = next;
        }
    }
}

/* ---- the application's timers (loop 0) ---- */

static void unlink_timer(pkm_server_timer_t *T)
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
    if (T->released) unlink_timer(T);
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
        unlink_timer(T);
    /* (else: closing, utimer_closed frees it) */
}

struct uv_loop_s *pkm_server_loop(pkm_server_t *srv)
{
    return srv ? srv->loops[0].uv : NULL;
}

/* Closes what the application left open on loop 0 (pkm_server_loop()): no callback. */
static void close_foreign(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Stop of one loop: its inbox handled (posts made before the stop run, while the connections
 * are open), no new connections, every open one closed (err 0), its handles closed; the loop
 * then ends once the closes and any work in flight are done. Loop 0 then stops the others. */
static void stop_loop(pkm__loop *L)
{
    if (L->stop_entered) return;
    L->stop_entered = 1;
    pkm__enter_loop(L);
    run_inbox(L, 1);
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
    run_inbox(L, 0);
    /* pkm_server_stop wakes loop 0; loop 0 stops the others (PKM__MSG_STOP). */
    if (L->idx == 0 && atomic_load(&L->srv->stop_requested)) stop_loop(L);
}

/* ---- accepting (loop 0) ---- */

static void free_handle(uv_handle_t *h)
{
    pkm__free(h);
}

/* The spare handle is closed: the connection that waits for it, if any, is taken now. */
static void spare_closed(uv_handle_t *h)
{
    pkm__loop *L = h->data;
    pkm__enter_loop(L);
    L->spare_busy = 0;
    if (L->accept_stalled && !L->stopping) {
        L->accept_stalled = 0;
        on_connection((uv_stream_t *)&L->listener, 0);
    }
}

/* Accepts the waiting connection and closes it at once, without a byte: over the cap (for_cap,
 * counted and logged) or out of memory. A connection must never be left unaccepted: libuv stops
 * watching the listener until uv_accept is called, so the server would never accept again. With
 * no memory for a handle the server's spare one is used; while that one is still closing, the
 * connection waits in the listener and spare_closed() takes it. */
static void reject(pkm__loop *L, int for_cap)
{
    pkm_server_t *srv = L->srv;
    uv_tcp_t *t = pkm__malloc(sizeof *t);
    uv_close_cb done = free_handle;
    if (!t) {
        if (L->spare_busy) {
            L->accept_stalled = 1;
            return;
        }
        t = &L->spare;
        L->spare_busy = 1;
        done = spare_closed;
    }
    uv_tcp_init(L->uv, t);
    t->data = L;
    if (uv_accept((uv_stream_t *)&L->listener, (uv_stream_t *)t) == 0 && for_cap) {
        st_add(&L->st.rejected, 1);
        L->rejected_unlogged++;
        uint64_t now = uv_now(L->uv);
        if (L->last_reject_log == 0 || now - L->last_reject_log >= 1000) {
            pkm__slog(srv, PKM_LOG_WARN, "refused %llu connection(s): the cap of %zu is reached",
                      (unsigned long long)L->rejected_unlogged, srv->max_conns);
            L->rejected_unlogged = 0;
            L->last_reject_log = now;
        }
    }
    uv_close((uv_handle_t *)t, done);
}

/* The loop a new connection goes to: the one with the fewest open connections (round robin
 * among equals). */
static pkm__loop *pick_loop(pkm_server_t *srv)
{
    unsigned n = srv->nloops, best = srv->next_loop % n;
    uint64_t least = UINT64_MAX;
    for (unsigned k = 0; k < n; k++) {
        unsigned i = (srv->next_loop + k) % n;
        uint64_t open = atomic_load_explicit(&srv->loops[i].st.conns_open, memory_order_relaxed);
        if (open < least) {
            least = open;
            best = i;
        }
    }
    srv->next_loop = best + 1;
    return &srv->loops[best];
}

/* Hands the connection waiting in the listener to loop T: accepted here, its socket duplicated
 * (the copy goes to T, which opens it on its own loop), this loop's handle closed. Returns 0,
 * or -1 when it could not (nothing was accepted: the caller accepts it here). */
static int hand_over(pkm__loop *L, pkm__loop *T)
{
    uv_tcp_t *t = pkm__malloc(sizeof *t);
    pkm__msg *m = pkm__calloc(1, sizeof *m);
    if (!t || !m) {
        pkm__free(t);
        pkm__free(m);
        return -1;
    }
    uv_tcp_init(L->uv, t);
    uv_os_fd_t fd = -1;
    int dup_fd = -1;
    if (uv_accept((uv_stream_t *)&L->listener, (uv_stream_t *)t) == 0 &&
        uv_fileno((uv_handle_t *)t, &fd) == 0)
        dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    uv_close((uv_handle_t *)t, free_handle);
    if (dup_fd < 0) { /* accepted and lost (the client sees it close), or accept failed */
        pkm__free(m);
        atomic_fetch_sub(&L->srv->open, 1);
        if (fd >= 0) pkm__slog(L->srv, PKM_LOG_WARN, "cannot hand a connection to a loop");
        return 0;
    }
    m->kind = PKM__MSG_ACCEPT;
    m->fd = dup_fd;
    pkm__loop_send(T, m);
    return 0;
}

/* A connection waits in the listener: admitted on the least loaded loop (its life is
 * server_conn.c's) or, over the cap or out of memory, accepted and closed at once (reject). */
static void on_connection(uv_stream_t *l, int status)
{
    pkm__loop *L = l->data;
    pkm_server_t *srv = L->srv;
    pkm__enter_loop(L);
    if (status < 0) {
        pkm__slog(srv, PKM_LOG_WARN, "accept failed: %s", uv_strerror(status));
        return;
    }
    if (L->stopping) return;
    /* libuv accepts until the queue is empty in one turn; under a flood that is hundreds of
     * connections (each refused by the limits, or not) before the loop reads anyone else. At
     * most PKM__ACCEPT_BATCH a turn: the rest wait in the listener, whose watcher libuv stops
     * while a connection is not taken, and on_prepare takes the next before the loop polls
     * again, so the other connections' events are served between batches. */
    if (L->accepts_this_turn >= PKM__ACCEPT_BATCH) {
        L->accept_deferred = 1;
        return;
    }
    L->accepts_this_turn++;
    size_t was = atomic_fetch_add(&srv->open, 1);
    if (srv->max_conns && was >= srv->max_conns) {
        atomic_fetch_sub(&srv->open, 1);
        reject(L, 1);
        return;
    }
    pkm__loop *T = srv->nloops > 1 ? pick_loop(srv) : L;
    if (T != L && hand_over(L, T) == 0) return;
    if (pkm__sconn_accept(L, -1) == PKM_ENOMEM) {
        atomic_fetch_sub(&srv->open, 1);
        pkm__slog(srv, PKM_LOG_ERROR, "out of memory accepting a connection");
        reject(L, 0);
    }
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

/* ---- lifetime ---- */

void pkm_server_config_init(pkm_server_config_t *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->backlog = PKM_SERVER_DEFAULT_BACKLOG;
    pkm_engine_config_init(&cfg->engine, PKM_ROLE_SERVER);
    cfg->engine.max_send_buffer = PKM_SERVER_DEFAULT_MAX_SEND_BUFFER;
    cfg->handshake_timeout_ms = PKM_SERVER_DEFAULT_HANDSHAKE_TIMEOUT_MS;
    cfg->trim_after_ms = PKM_SERVER_DEFAULT_TRIM_AFTER_MS;
    cfg->raise_fd_limit = 1;
    cfg->max_handshakes = PKM_SERVER_DEFAULT_MAX_HANDSHAKES;
    cfg->max_queued = PKM_SERVER_DEFAULT_MAX_QUEUED;
    cfg->max_queued_per_source = PKM_SERVER_DEFAULT_MAX_QUEUED;
    cfg->secret_window_ms = PKM_SERVER_DEFAULT_SECRET_WINDOW_MS;
    cfg->secret_ban_ms = PKM_SERVER_DEFAULT_SECRET_BAN_MS;
    cfg->partial_deadline_ms = PKM_SERVER_DEFAULT_PARTIAL_DEADLINE_MS;
    cfg->partial_budget = PKM_SERVER_DEFAULT_PARTIAL_BUDGET;
    cfg->log_interval_ms = PKM_SERVER_DEFAULT_LOG_INTERVAL_MS;
    cfg->loops = 1;
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
            pkm__slog(srv, PKM_LOG_INFO, "open-file limit raised from %llu to %llu",
                      (unsigned long long)rl.rlim_cur, (unsigned long long)want.rlim_cur);
            rl.rlim_cur = want.rlim_cur;
        } else {
            pkm__slog(srv, PKM_LOG_WARN, "cannot raise the open-file limit from %llu: %s",
                      (unsigned long long)rl.rlim_cur, strerror(errno));
        }
    }
    /* A connection is one descriptor; the loop, listener and thread pool take a few more. */
    const uint64_t reserve = 32;
    if (rl.rlim_cur != RLIM_INFINITY) {
        uint64_t fit = rl.rlim_cur > reserve ? rl.rlim_cur - reserve : 0;
        if (srv->max_conns && srv->max_conns > fit)
            pkm__slog(srv, PKM_LOG_WARN,
                      "open-file limit %llu (hard limit %llu) is too low for %zu connections: at "
                      "most about %llu fit; raise the hard limit (ulimit -Hn, LimitNOFILE=)",
                      (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
                      srv->max_conns, (unsigned long long)fit);
        else if (!srv->max_conns)
            pkm__slog(srv, PKM_LOG_INFO, "open-file limit %llu: at most about %llu connections",
                      (unsigned long long)rl.rlim_cur, (unsigned long long)fit);
    }
}

/* Parses config.proxy_trusted into *out (left empty for NULL: the PROXY protocol off). Returns
 * 0, PKM_ENOMEM, or PKM_EINVAL with a sentence in msg naming the entry that is wrong. */
static int proxy_config(const char *s, pkm__cidr_list *out, char *msg, size_t cap)
{
    memset(out, 0, sizeof *out);
    msg[0] = 0;
    if (!s) return 0;
    if (strspn(s, " \t") == strlen(s)) {
        snprintf(msg, cap, "proxy_trusted is empty (NULL turns the PROXY protocol off)");
        return PKM_EINVAL;
    }
    int r = pkm__cidr_list_parse(s, out);
    if (r != PKM_EINVAL) return r;
    /* Which entry: each one alone. */
    const char *p = s;
    for (;;) {
        size_t n = strcspn(p, ",");
        char one[128];
        size_t a = 0, b = n;
        while (a < b && (p[a] == ' ' || p[a] == '\t'))
            a++;
        while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t'))
            b--;
        int bad = b == a || b - a >= sizeof one;
        if (!bad) {
            memcpy(one, p + a, b - a);
            one[b - a] = 0;
            pkm__cidr_list l;
            bad = pkm__cidr_list_parse(one, &l) == PKM_EINVAL;
            if (!bad) pkm__cidr_list_free(&l);
        }
        if (bad) {
            if (b == a)
                snprintf(msg, cap, "proxy_trusted \"%s\": an empty entry", s);
            else
                snprintf(msg, cap,
                         "proxy_trusted: \"%.*s\" is not an IPv4 or IPv6 address or CIDR block "
                         "(ADDRESS[/BITS], host bits zero)",
                         (int)(b - a > 100 ? 100 : b - a), p + a);
            return PKM_EINVAL;
        }
        if (!p[n]) break;
        p += n + 1;
    }
    snprintf(msg, cap, "proxy_trusted \"%s\" is malformed", s);
    return PKM_EINVAL;
}

/* Everything the server holds, its loops stopped and drained first (on the calling thread: no
 * loop runs any more). Connections still referred to by a message are freed when their
 * messages are. */
static void free_all(pkm_server_t *srv)
{
    pkm__loop *saved = tls_loop;
    for (unsigned i = 0; i < srv->nloops; i++) {
        pkm__loop *L = &srv->loops[i];
        if (L->loop_inited) stop_loop(L);
    }
    for (unsigned i = 0; i < srv->nloops; i++) {
        pkm__loop *L = &srv->loops[i];
        if (!L->loop_inited) continue;
        pkm__enter_loop(L);
        uv_run(L->uv, UV_RUN_DEFAULT);
    }
    /* What other loops sent after a loop stopped (their on_close may send or broadcast). */
    for (int again = 1; again;) {
        again = 0;
        for (unsigned i = 0; i < srv->nloops; i++) {
            pkm__loop *L = &srv->loops[i];
            if (!L->loop_inited) continue;
            uv_mutex_lock(&L->in_mu);
            int some = L->in_head != NULL;
            uv_mutex_unlock(&L->in_mu);
            if (!some) continue;
            pkm__enter_loop(L);
            run_inbox(L, 1);
            again = 1;
        }
    }
    for (unsigned i = 0; i < srv->nloops; i++) {
        pkm__loop *L = &srv->loops[i];
        if (!L->loop_inited) continue;
        pkm__enter_loop(L);
        uv_run(L->uv, UV_RUN_DEFAULT);
        if (L->all) pkm__slog(srv, PKM_LOG_ERROR, "a connection is still held at free");
        if (L->idx == 0) { /* the application's handles on pkm_server_loop(), if any */
            uv_walk(L->uv, close_foreign, NULL);
            uv_run(L->uv, UV_RUN_DEFAULT);
        }
        while (L->timers) { /* closed by now: those pkm_server_timer_stop() did not free */
            L->timers->released = 1;
            unlink_timer(L->timers);
        }
        if (uv_loop_close(L->uv) != 0) pkm__slog(srv, PKM_LOG_ERROR, "loop still busy at free");
        uv_mutex_destroy(&L->in_mu);
    }
    for (unsigned i = 0; i < srv->nloops; i++) {
        pkm__budget_free(&srv->loops[i].budget);
        pkm__free(srv->loops[i].stop_msg);
    }
    tls_loop = saved && saved->srv == srv ? NULL : saved;
    pkm__free(srv->loops);
    uv_mutex_destroy(&srv->lim_mu);
    pkm__wipe(srv->secret, srv->ec.secret_len);
    pkm__free(srv->secret);
    pkm__cidr_list_free(&srv->proxy);
    pkm__limits_free(srv->lim);
    pkm__free(srv);
}

/* Sets up loop L (its uv loop, handles, budget, inbox). */
static int loop_init(pkm_server_t *srv, pkm__loop *L, unsigned idx, const pkm_server_config_t *cfg)
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

/* pkm_server_new's refusal: the sentence into cfg->errbuf (when given), and err. */
__attribute__((format(printf, 3, 4))) static int new_failed(const pkm_server_config_t *cfg, int err,
                                                            const char *fmt, ...)
{
    if (cfg->errbuf && cfg->errbuf_size) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(cfg->errbuf, cfg->errbuf_size, fmt, ap); /* cut when too long */
        (void)n;
        va_end(ap);
    }
    return err;
}

/* The first negative duration (or backlog) of cfg, by its field name; NULL if none. */
static const char *negative_field(const pkm_server_config_t *cfg, long long *got)
{
    const struct {
        const char *name;
        int64_t v;
    } f[] = {{"backlog", cfg->backlog},
             {"handshake_timeout_ms", cfg->handshake_timeout_ms},
             {"idle_timeout_ms", cfg->idle_timeout_ms},
             {"trim_after_ms", cfg->trim_after_ms},
             {"secret_window_ms", cfg->secret_window_ms},
             {"secret_ban_ms", cfg->secret_ban_ms},
             {"partial_deadline_ms", cfg->partial_deadline_ms},
             {"log_interval_ms", cfg->log_interval_ms}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v < 0) return *got = (long long)f[i].v, f[i].name;
    return NULL;
}

int pkm_server_new(const pkm_server_config_t *cfg, pkm_server_t **out)
{
    if (out) *out = NULL;
    if (!cfg || !out) return cfg ? new_failed(cfg, PKM_EINVAL, "out: required") : PKM_EINVAL;
    if (cfg->errbuf && cfg->errbuf_size) cfg->errbuf[0] = '\0';
    pkm_engine_config_t ec = cfg->engine;
    ec.role = PKM_ROLE_SERVER;
    ec.defer_crypto = 1; /* the RSA work goes to the thread pool as jobs */
    char why[PKM_SERVER_ERRMSG_SIZE - 40];
    if (pkm_engine_config_validate(&ec, why, sizeof why) < 0)
        return new_failed(cfg, PKM_EINVAL, "pkm_server_new: invalid argument: engine.%s", why);
    long long got = 0;
    const char *neg = negative_field(cfg, &got);
    if (neg)
        return new_failed(cfg, PKM_EINVAL,
                          "pkm_server_new: invalid argument: %s: expected 0 or more, got %lld", neg,
                          got);
    if (cfg->loops > PKM_SERVER_MAX_LOOPS)
        return new_failed(cfg, PKM_EINVAL,
                          "pkm_server_new: invalid argument: loops: expected 0 (one per CPU) to "
                          "%d, got %u",
                          PKM_SERVER_MAX_LOOPS, cfg->loops);
    pkm__limits_config lc;
    pkm__limits_config_init(&lc);
    lc.max_handshakes = cfg->max_handshakes ? cfg->max_handshakes : UINT32_MAX;
    lc.max_handshakes_per_source =
        cfg->max_handshakes_per_source ? cfg->max_handshakes_per_source : UINT32_MAX;
    lc.max_queued = cfg->max_queued;
    lc.max_queued_per_source = cfg->max_queued_per_source;
    lc.max_conns_per_source = cfg->max_conns_per_source;
    lc.conn_rate_per_source = cfg->conn_rate_per_source;
    lc.conn_burst_per_source = cfg->conn_burst_per_source;
    lc.secret_fails = cfg->engine.secret_len ? cfg->secret_fails : 0;
    lc.secret_window_ms = (uint64_t)cfg->secret_window_ms;
    lc.secret_ban_ms = (uint64_t)cfg->secret_ban_ms;
    if (cfg->log_interval_ms) lc.log_interval_ms = (uint64_t)cfg->log_interval_ms;

    int r;
    pkm_server_t *srv = pkm__calloc(1, sizeof *srv);
    if (!srv) return PKM_ENOMEM;
    srv->ec = ec;
    srv->ec.secret = NULL;
    srv->ec.secret_len = 0;
    srv->max_conns = cfg->max_conns;
    srv->hs_timeout = (uint64_t)cfg->handshake_timeout_ms;
    srv->idle_timeout = (uint64_t)cfg->idle_timeout_ms;
    srv->trim_after = (uint64_t)cfg->trim_after_ms;
    srv->on_connect = cfg->on_connect;
    srv->on_packet = cfg->on_packet;
    srv->on_close = cfg->on_close;
    srv->on_log = cfg->on_log;
    srv->user = cfg->user;
    unsigned n = cfg->loops;
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus < 1 ? 1 : cpus > PKM_SERVER_MAX_LOOPS ? PKM_SERVER_MAX_LOOPS : (unsigned)cpus;
    }
    if (uv_mutex_init(&srv->lim_mu) != 0) {
        pkm__free(srv);
        return PKM_ENOMEM;
    }
    srv->nloops = n;
    if (!(srv->loops = pkm__calloc(n, sizeof *srv->loops))) {
        srv->nloops = 0;
        r = PKM_ENOMEM;
        goto fail;
    }
    r = pkm__limits_new(&lc, &srv->lim);
    if (r < 0) goto fail;
    srv->secret_limit = lc.secret_fails != 0;
    char pmsg[256];
    r = proxy_config(cfg->proxy_trusted, &srv->proxy, pmsg, sizeof pmsg);
    if (r < 0) {
        if (pmsg[0]) pkm__slog(srv, PKM_LOG_ERROR, "%s", pmsg);
        if (pmsg[0]) (void)new_failed(cfg, r, "pkm_server_new: invalid argument: %s", pmsg);
        goto fail;
    }
    srv->proxy_on = cfg->proxy_trusted != NULL;
    srv->proxy_timeout = PKM_SERVER_PROXY_TIMEOUT_MS;
    if (srv->hs_timeout && srv->hs_timeout < srv->proxy_timeout)
        srv->proxy_timeout = srv->hs_timeout;
    if (ec.secret_len) {
        if (!(srv->secret = pkm__malloc(ec.secret_len))) {
            r = PKM_ENOMEM;
            goto fail;
        }
        memcpy(srv->secret, ec.secret, ec.secret_len);
        srv->ec.secret = srv->secret;
        srv->ec.secret_len = ec.secret_len;
    }
    for (unsigned i = 0; i < n; i++) {
        if ((r = loop_init(srv, &srv->loops[i], i, cfg)) < 0) goto fail;
    }
    pkm__loop *L0 = &srv->loops[0];

    raise_fd_limit(srv, cfg->raise_fd_limit);
    if (ec.max_send_buffer < pkm_engine_wire_size(ec.max_packet_size))
        pkm__slog(srv, PKM_LOG_WARN,
                  "engine.max_send_buffer (%zu bytes) is below the encrypted size of the largest "
                  "packet accepted (max_packet_size %zu: %zu bytes): such packets cannot be echoed "
                  "or relayed (pkm_server_send refuses them with PKM_ETOOBIG)",
                  ec.max_send_buffer, ec.max_packet_size, pkm_engine_wire_size(ec.max_packet_size));
    /* net.c resolves, binds and listens, as for pkm_listen (the same NULL host: every interface,
     * dual-stack); libuv takes the socket over and accepts from it. */
    int backlog = cfg->backlog ? cfg->backlog : PKM_SERVER_DEFAULT_BACKLOG;
    char what[256]; /* PKM_ERRMSG_SIZE */
    int fd = pkm__net_listen(cfg->host, cfg->port, backlog, what, sizeof what);
    if (fd < 0) {
        pkm__slog(srv, PKM_LOG_ERROR, "%s", what);
        r = new_failed(cfg, fd, "%s", what);
        goto fail;
    }
    int ur = uv_tcp_open(&L0->listener, (uv_os_sock_t)fd);
    if (ur != 0) close(fd);
    if (ur == 0) ur = uv_listen((uv_stream_t *)&L0->listener, backlog, on_connection);
    if (ur != 0) {
        pkm__slog(srv, PKM_LOG_ERROR, "cannot listen on %s port %u: %s",
                  cfg->host ? cfg->host : "(any)", (unsigned)cfg->port, uv_strerror(ur));
        r = new_failed(cfg, PKM_EIO, "cannot listen on %s port %u: %s",
                       cfg->host ? cfg->host : "(any)", (unsigned)cfg->port, uv_strerror(ur));
        goto fail;
    }
    srv->port = (uint16_t)pkm__net_bound_port(fd);
    /* A write to a socket the client has closed must fail with EPIPE, not kill the process. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
    *out = srv;
    return 0;

fail:
    free_all(srv);
    return r;
}

/* The thread of loop k > 0. */
static void loop_thread(void *arg)
{
    pkm__loop *L = arg;
    pkm__enter_loop(L);
    uv_run(L->uv, UV_RUN_DEFAULT);
    pkm__enter_loop(NULL);
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
    unsigned started = 1;
    for (; started < srv->nloops; started++) {
        if (uv_thread_create(&srv->loops[started].thread, loop_thread, &srv->loops[started]) != 0)
            break;
    }
    if (started < srv->nloops) {
        /* Could not start every loop's thread: stop at once (the others run in free). */
        pkm__slog(srv, PKM_LOG_ERROR, "cannot start the thread of loop %u: stopping", started);
        pkm_server_stop(srv);
    }
    pkm__loop *saved = tls_loop;
    pkm__enter_loop(&srv->loops[0]);
    uv_run(srv->loops[0].uv, UV_RUN_DEFAULT);
    for (unsigned i = 1; i < started; i++)
        uv_thread_join(&srv->loops[i].thread);
    pkm__enter_loop(saved);
    atomic_store(&srv->running, 0);
    return 0;
}

void pkm_server_stop(pkm_server_t *srv)
{
    if (!srv) return;
    if (atomic_exchange(&srv->stop_requested, 1)) return; /* one uv_async_send, ever */
    uv_async_send(&srv->loops[0].async);
}

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

void pkm_server_free(pkm_server_t *srv)
{
    if (!srv) return;
    free_all(srv);
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

unsigned pkm_server_loops(const pkm_server_t *srv)
{
    return srv ? srv->nloops : 0;
}

void pkm_server_stats(const pkm_server_t *srv, pkm_server_stats_t *out)
{
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!srv) return;
    for (unsigned i = 0; i < srv->nloops; i++) {
        const stats_atomic_t *st = &srv->loops[i].st;
#define LOAD(f) out->f += atomic_load_explicit(&st->f, memory_order_relaxed)
        LOAD(conns_open);
        LOAD(conns_established);
        LOAD(accepted);
        LOAD(rejected);
        LOAD(handshakes_ok);
        LOAD(handshakes_failed);
        LOAD(timeouts);
        LOAD(dropped_queue);
        LOAD(refused);
        LOAD(partial_closed);
        LOAD(partial_bytes);
        LOAD(packets_in);
        LOAD(packets_out);
        LOAD(bytes_in);
        LOAD(bytes_out);
        LOAD(proxy_checks);
        LOAD(proxy_refused);
#undef LOAD
    }
    out->handshakes_in_flight = atomic_load_explicit(&srv->hs_in_flight, memory_order_relaxed);
    out->handshakes_waiting = atomic_load_explicit(&srv->hs_waiting, memory_order_relaxed);
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
    size_t total = pkm_engine_wire_size(size);
    if (total == 0 || total > srv->ec.max_send_buffer) return n;
    /* One copy of the packet, shared by every other loop (the last one done frees it). */
    pkm__shared_pkt *p = pkm__malloc(sizeof *p + size);
    if (!p) return n;
    atomic_init(&p->refs, 1); /* ours, until every message holds its own */
    p->id = id;
    p->hash = hash;
    p->size = size;
    if (size) memcpy(p->content, content, size);
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
    if (atomic_fetch_sub(&p->refs, 1) == 1) pkm__free(p);
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
