/* SPDX-License-Identifier: MIT */
/* The event-driven PkmCom/TCP server on libuv: the listener and accepting (with the connection
 * cap, handing connections to the loops), its configuration, new/run/stop/free and the getters.
 * The loops, their inboxes and timers are server_loops.c's; one connection's life is
 * server_conn.c's. */
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

/* Closes what the application left open on loop 0 (pkm_server_loop()): no callback. */
static void close_foreign(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
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
        pkm__on_connection((uv_stream_t *)&L->listener, 0);
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
void pkm__on_connection(uv_stream_t *l, int status)
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
    pkm__loop *saved = pkm__current_loop();
    for (unsigned i = 0; i < srv->nloops; i++) {
        pkm__loop *L = &srv->loops[i];
        if (L->loop_inited) pkm__loop_stop(L);
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
            pkm__loop_run_inbox(L, 1);
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
            pkm__timer_unlink(L->timers);
        }
        if (uv_loop_close(L->uv) != 0) pkm__slog(srv, PKM_LOG_ERROR, "loop still busy at free");
        uv_mutex_destroy(&L->in_mu);
    }
    for (unsigned i = 0; i < srv->nloops; i++) {
        pkm__budget_free(&srv->loops[i].budget);
        pkm__free(srv->loops[i].stop_msg);
    }
    pkm__enter_loop(saved && saved->srv == srv ? NULL : saved);
    pkm__free(srv->loops);
    uv_mutex_destroy(&srv->lim_mu);
    pkm__wipe(srv->secret, srv->ec.secret_len);
    pkm__free(srv->secret);
    pkm__cidr_list_free(&srv->proxy);
    pkm__limits_free(srv->lim);
    pkm__free(srv);
}

/* pkm_server_new's refusal, said once: the sentence into cfg->errbuf when the caller gave one,
 * else through srv's log (when there is a server to log through yet: srv NULL, not logged).
 * Returns err. */
__attribute__((format(printf, 4, 5))) static int
new_failed(pkm_server_t *srv, const pkm_server_config_t *cfg, int err, const char *fmt, ...)
{
    char msg[512]; /* pkm__slog's size; the longest sentence (a proxy entry) is under 300 */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap); /* cut when too long */
    (void)n;
    va_end(ap);
    if (cfg->errbuf && cfg->errbuf_size)
        snprintf(cfg->errbuf, cfg->errbuf_size, "%s", msg);
    else if (srv)
        pkm__slog(srv, PKM_LOG_ERROR, "%s", msg);
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
    if (!cfg || !out) return cfg ? new_failed(NULL, cfg, PKM_EINVAL, "out: required") : PKM_EINVAL;
    if (cfg->errbuf && cfg->errbuf_size) cfg->errbuf[0] = '\0';
    pkm_engine_config_t ec = cfg->engine;
    ec.role = PKM_ROLE_SERVER;
    ec.defer_crypto = 1; /* the RSA work goes to the thread pool as jobs */
    char why[PKM_SERVER_ERRMSG_SIZE - 40];
    if (pkm_engine_config_validate(&ec, why, sizeof why) < 0)
        return new_failed(NULL, cfg, PKM_EINVAL, "pkm_server_new: invalid argument: engine.%s",
                          why);
    long long got = 0;
    const char *neg = negative_field(cfg, &got);
    if (neg)
        return new_failed(NULL, cfg, PKM_EINVAL,
                          "pkm_server_new: invalid argument: %s: expected 0 or more, got %lld", neg,
                          got);
    if (cfg->loops > PKM_SERVER_MAX_LOOPS)
        return new_failed(NULL, cfg, PKM_EINVAL,
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

    pkm_server_t *srv = pkm__calloc(1, sizeof *srv);
    PKM_ENSURE(srv != NULL, PKM_ENOMEM);
    int rc, have_mu = 0; /* have_mu: lim_mu is made, so free_all can undo everything */
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
    PKM_ENSURE_GOTO(rc, (have_mu = uv_mutex_init(&srv->lim_mu) == 0), PKM_ENOMEM);
    srv->loops = pkm__calloc(n, sizeof *srv->loops);
    PKM_ENSURE_GOTO(rc, srv->loops != NULL, PKM_ENOMEM);
    srv->nloops = n;
    PKM_GUARD_GOTO(rc, pkm__limits_new(&lc, &srv->lim));
    srv->secret_limit = lc.secret_fails != 0;
    char pmsg[256];
    rc = proxy_config(cfg->proxy_trusted, &srv->proxy, pmsg, sizeof pmsg);
    if (rc < 0) {
        if (pmsg[0]) (void)new_failed(srv, cfg, rc, "pkm_server_new: invalid argument: %s", pmsg);
        goto cleanup;
    }
    srv->proxy_on = cfg->proxy_trusted != NULL;
    srv->proxy_timeout = PKM_SERVER_PROXY_TIMEOUT_MS;
    if (srv->hs_timeout && srv->hs_timeout < srv->proxy_timeout)
        srv->proxy_timeout = srv->hs_timeout;
    if (ec.secret_len) {
        srv->secret = pkm__malloc(ec.secret_len);
        PKM_ENSURE_GOTO(rc, srv->secret != NULL, PKM_ENOMEM);
        memcpy(srv->secret, ec.secret, ec.secret_len);
        srv->ec.secret = srv->secret;
        srv->ec.secret_len = ec.secret_len;
    }
    for (unsigned i = 0; i < n; i++)
        PKM_GUARD_GOTO(rc, pkm__loop_init(srv, &srv->loops[i], i, cfg));
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
        rc = new_failed(srv, cfg, fd, "%s", what);
        goto cleanup;
    }
    int ur = uv_tcp_open(&L0->listener, (uv_os_sock_t)fd);
    if (ur != 0) close(fd);
    if (ur == 0) ur = uv_listen((uv_stream_t *)&L0->listener, backlog, pkm__on_connection);
    if (ur != 0) {
        rc = new_failed(srv, cfg, PKM_EIO, "cannot listen on %s port %u: %s",
                        cfg->host ? cfg->host : "(any)", (unsigned)cfg->port, uv_strerror(ur));
        goto cleanup;
    }
    srv->port = (uint16_t)pkm__net_bound_port(fd);
    /* A write to a socket the client has closed must fail with EPIPE, not kill the process. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
    *out = srv;
    return 0;
cleanup:
    if (have_mu)
        free_all(srv); /* undoes whatever was made (each part NULL or zero when not) */
    else
        pkm__free(srv);
    return rc;
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
    pkm__loop *saved = pkm__current_loop();
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
