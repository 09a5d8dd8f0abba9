/* SPDX-License-Identifier: MIT */
/* The event-driven PkmCom/TCP server on libuv, its listener, loop and timers: accepting (with
 * the connection cap), one gathered write per connection and turn, the deadline lists for
 * timeouts and idle trimming, stop and lifetime. One connection's life is server_conn.c's. */
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
#include <unistd.h>
#include <uv.h>
#include "pkmcom/server.h"
#include "internal.h"
#include "net_internal.h"
#include "server_internal.h"

/* ---- small helpers ---- */

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

void pkm__tl_remove(pkm_server_t *srv, pkm_server_conn_t *c)
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

void pkm__arm_timer(pkm_server_t *srv)
{
    arm_timer(srv);
}

void pkm__log_refusal(pkm_server_t *srv, const pkm__source_key *src, pkm__refusal why,
                      const char *what)
{
    uint32_t more = 0;
    if (!pkm__limits_log_ok(srv->lim, src, uv_now(&srv->loop), &more)) return;
    char name[PKM__SOURCE_KEY_STRLEN];
    pkm__source_key_str(src, name, sizeof name);
    if (more)
        pkm__slog(srv, PKM_LOG_WARN, "refused %s from %s: %s (and %lu more since the last line)",
                  what, name, pkm__refusal_str(why), (unsigned long)more);
    else
        pkm__slog(srv, PKM_LOG_WARN, "refused %s from %s: %s", what, name, pkm__refusal_str(why));
}

/* Moves c to the tail of list `id`, with `since` = now. */
void pkm__tl_append(pkm_server_t *srv, pkm_server_conn_t *c, enum tlist_id id)
{
    pkm__tl_remove(srv, c);
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
    if ((h = srv->tl[TL_PROXY].head)) due = deadline_min(due, h->since + srv->proxy_timeout);
    if (srv->idle_timeout && (h = srv->tl[TL_TRIMMED].head))
        due = deadline_min(due, h->since + srv->idle_timeout);
    due = deadline_min(due, pkm__budget_next_deadline(&srv->budget));
    if (due == UINT64_MAX) {
        uv_timer_stop(&srv->timer);
        return;
    }
    uint64_t now = uv_now(&srv->loop);
    uv_timer_start(&srv->timer, on_timer, due > now ? due - now : 0, 0);
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
            pkm__sconn_prepare(c);
        }
    }
}

static void on_timer(uv_timer_t *t)
{
    pkm_server_t *srv = t->data;
    uint64_t now = uv_now(&srv->loop);
    pkm_server_conn_t *c;
    while (srv->hs_timeout && (c = srv->tl[TL_HS].head) && c->since + srv->hs_timeout <= now)
        pkm__sconn_close(c, PKM_ETIMEOUT);
    while ((c = srv->tl[TL_PROXY].head) && c->since + srv->proxy_timeout <= now)
        pkm__sconn_close(c, PKM_ETIMEOUT); /* not admitted: closed silently */
    if (srv->idle_timeout) {
        while ((c = srv->tl[TL_TRIMMED].head) && c->since + srv->idle_timeout <= now)
            pkm__sconn_close(c, PKM_ETIMEOUT);
        while ((c = srv->tl[TL_ACTIVE].head) && c->since + srv->idle_timeout <= now)
            pkm__sconn_close(c, PKM_ETIMEOUT);
    }
    pkm__partial *p;
    while ((p = pkm__budget_expired(&srv->budget, now))) {
        st_add(&srv->st.partial_closed, 1);
        pkm__sconn_close(p->user, PKM_ETIMEOUT);
    }
    st_limits(srv);
    while (srv->trim_after && (c = srv->tl[TL_ACTIVE].head) && c->since + srv->trim_after <= now) {
        uint64_t since = c->since;
        pkm_engine_trim(c->eng);
        pkm__tl_append(srv, c, TL_TRIMMED);
        c->since = since; /* keeps its last read time */
    }
    arm_timer(srv);
}

/* Runs every post queued so far, in order; with `close`, refuses further posts first (they
 * fail with PKM_ECLOSED), so that nothing posted is ever left behind. */
static void run_posts(pkm_server_t *srv, int close)
{
    for (;;) {
        uv_mutex_lock(&srv->post_mu);
        if (close) srv->post_closed = 1;
        pkm__post *p = srv->post_head;
        srv->post_head = srv->post_tail = NULL;
        uv_mutex_unlock(&srv->post_mu);
        if (!p) return;
        while (p) {
            pkm__post *next = p->next;
            p->fn(srv, p->ud);
            pkm__free(p);
            p = next;
        }
    }
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
    /* Posts made before the stop still run, while connections are open (no more are accepted
     * from here on). */
    run_posts(srv, 1);
    srv->stopping = 1;
    close_handle((uv_handle_t *)&srv->listener);
    for (pkm_server_conn_t *c = srv->all; c; c = c->next) {
        if (c->state >= CS_CLOSING) continue;
        pkm__sconn_close(c, 0); /* cancels its queued job, if any */
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
    run_posts(srv, 0);
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
            pkm__slog(srv, PKM_LOG_WARN, "refused %llu connection(s): the cap of %zu is reached",
                      (unsigned long long)srv->rejected_unlogged, srv->max_conns);
            srv->rejected_unlogged = 0;
            srv->last_reject_log = now;
        }
    }
    uv_close((uv_handle_t *)t, done);
}

/* A connection waits in the listener: admitted (its life is server_conn.c's) or, over the cap or
 * out of memory, accepted and closed at once (reject). */
static void on_connection(uv_stream_t *l, int status)
{
    pkm_server_t *srv = l->data;
    if (status < 0) {
        pkm__slog(srv, PKM_LOG_WARN, "accept failed: %s", uv_strerror(status));
        return;
    }
    if (srv->stopping) return;
    if (srv->max_conns && srv->open >= srv->max_conns) {
        reject(srv, 1);
        return;
    }
    if (pkm__sconn_accept(srv) == PKM_ENOMEM) {
        pkm__slog(srv, PKM_LOG_ERROR, "out of memory accepting a connection");
        reject(srv, 0);
    }
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

/* Closes the server's handles and runs the loop until everything is released. */
static void drain_and_close_loop(pkm_server_t *srv)
{
    shutdown_all(srv);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&srv->loop) != 0) pkm__slog(srv, PKM_LOG_ERROR, "loop still busy at free");
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
    pkm__limits_config lc;
    pkm__limits_config_init(&lc);
    lc.max_handshakes = cfg->max_handshakes ? cfg->max_handshakes : UINT32_MAX;
    lc.max_handshakes_per_source =
        cfg->max_handshakes_per_source ? cfg->max_handshakes_per_source : UINT32_MAX;
    lc.max_queued = cfg->max_queued;
    lc.max_queued_per_source = cfg->max_queued_per_source;
    lc.max_conns_per_source = cfg->max_conns_per_source;
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
    r = pkm__limits_new(&lc, &srv->lim);
    if (r < 0) {
        pkm__free(srv);
        return r;
    }
    srv->secret_limit = lc.secret_fails != 0;
    pkm__budget_init(&srv->budget, cfg->partial_budget, (uint64_t)cfg->partial_deadline_ms);
    if (pkm__budget_reserve(&srv->budget, 64) < 0) { /* the usual case allocates no more */
        pkm__limits_free(srv->lim);
        pkm__free(srv);
        return PKM_ENOMEM;
    }
    srv->on_connect = cfg->on_connect;
    srv->on_packet = cfg->on_packet;
    srv->on_close = cfg->on_close;
    srv->on_log = cfg->on_log;
    srv->user = cfg->user;
    char pmsg[256];
    r = proxy_config(cfg->proxy_trusted, &srv->proxy, pmsg, sizeof pmsg);
    if (r < 0) {
        if (pmsg[0]) pkm__slog(srv, PKM_LOG_ERROR, "%s", pmsg);
        if (pmsg[0]) (void)new_failed(cfg, r, "pkm_server_new: invalid argument: %s", pmsg);
        pkm__budget_free(&srv->budget);
        pkm__limits_free(srv->lim);
        pkm__free(srv);
        return r;
    }
    srv->proxy_on = cfg->proxy_trusted != NULL;
    srv->proxy_timeout = PKM_SERVER_PROXY_TIMEOUT_MS;
    if (srv->hs_timeout && srv->hs_timeout < srv->proxy_timeout)
        srv->proxy_timeout = srv->hs_timeout;
    if (ec.secret_len) {
        if (!(srv->secret = pkm__malloc(ec.secret_len))) {
            pkm__cidr_list_free(&srv->proxy);
            pkm__budget_free(&srv->budget);
            pkm__limits_free(srv->lim);
            pkm__free(srv);
            return PKM_ENOMEM;
        }
        memcpy(srv->secret, ec.secret, ec.secret_len);
        srv->ec.secret = srv->secret;
        srv->ec.secret_len = ec.secret_len;
    }
    if (uv_mutex_init(&srv->post_mu) != 0) {
        r = PKM_ENOMEM;
        goto fail_nomutex;
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
        goto fail_loop;
    }
    int ur = uv_tcp_open(&srv->listener, (uv_os_sock_t)fd);
    if (ur != 0) close(fd);
    if (ur == 0) ur = uv_listen((uv_stream_t *)&srv->listener, backlog, on_connection);
    if (ur != 0) {
        pkm__slog(srv, PKM_LOG_ERROR, "cannot listen on %s port %u: %s",
                  cfg->host ? cfg->host : "(any)", (unsigned)cfg->port, uv_strerror(ur));
        r = new_failed(cfg, PKM_EIO, "cannot listen on %s port %u: %s",
                       cfg->host ? cfg->host : "(any)", (unsigned)cfg->port, uv_strerror(ur));
        goto fail_loop;
    }
    srv->port = (uint16_t)pkm__net_bound_port(fd);
    /* A write to a socket the client has closed must fail with EPIPE, not kill the process. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
    *out = srv;
    return 0;

fail_loop:
    drain_and_close_loop(srv);
fail_nolloop:
    uv_mutex_destroy(&srv->post_mu);
fail_nomutex:
    pkm__wipe(srv->secret, srv->ec.secret_len);
    pkm__free(srv->secret);
    pkm__budget_free(&srv->budget);
    pkm__cidr_list_free(&srv->proxy);
    pkm__limits_free(srv->lim);
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

int pkm_server_post(pkm_server_t *srv, void (*fn)(pkm_server_t *srv, void *ud), void *ud)
{
    if (!srv || !fn) return PKM_EINVAL;
    if (atomic_load(&srv->stop_requested)) return PKM_ECLOSED;
    pkm__post *p = pkm__malloc(sizeof *p);
    if (!p) return PKM_ENOMEM;
    p->next = NULL;
    p->fn = fn;
    p->ud = ud;
    uv_mutex_lock(&srv->post_mu);
    if (srv->post_closed) {
        uv_mutex_unlock(&srv->post_mu);
        pkm__free(p);
        return PKM_ECLOSED;
    }
    if (srv->post_tail)
        srv->post_tail->next = p;
    else
        srv->post_head = p;
    srv->post_tail = p;
    /* Under the lock: the async handle is closed only after post_closed is set (shutdown_all),
     * so it is still open here. */
    uv_async_send(&srv->async);
    uv_mutex_unlock(&srv->post_mu);
    return 0;
}

void pkm_server_free(pkm_server_t *srv)
{
    if (!srv) return;
    drain_and_close_loop(srv);
    run_posts(srv, 1); /* (shutdown_all ran them already; nothing can be queued since) */
    uv_mutex_destroy(&srv->post_mu);
    pkm__wipe(srv->secret, srv->ec.secret_len);
    pkm__free(srv->secret);
    pkm__budget_free(&srv->budget);
    pkm__cidr_list_free(&srv->proxy);
    pkm__limits_free(srv->lim);
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
    LOAD(refused);
    LOAD(partial_closed);
    LOAD(handshakes_in_flight);
    LOAD(handshakes_waiting);
    LOAD(partial_bytes);
    LOAD(packets_in);
    LOAD(packets_out);
    LOAD(bytes_in);
    LOAD(bytes_out);
    LOAD(proxy_checks);
    LOAD(proxy_refused);
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
