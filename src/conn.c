/* SPDX-License-Identifier: MIT */
/* The blocking API over sockets (conn.h): non-blocking sockets driven by poll() against
 * CLOCK_MONOTONIC deadlines, moving bytes between the socket and the sans-IO engine. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "pkmcom/conn.h"
#include "config_internal.h"
#include "conn_internal.h"
#include "engine_internal.h"
#include "internal.h"
#include "net_internal.h"

/* Where a connection stands, for the error sentences. */
enum phase {
    PHASE_HANDSHAKE,
    PHASE_ESTABLISHED,
    PHASE_REKEY,
};

/* What drive() runs until. */
enum goal {
    GOAL_HANDSHAKE, /* established, and every byte written (the server's 0xFF answer) */
    GOAL_FLUSH,     /* every byte written */
    GOAL_PACKET,    /* one packet taken */
};

struct pkm_conn {
    int fd; /* -1 once closed */
    pkm_engine_t *e;
    const struct pkm__io *io;
    int err;    /* the error that closed the connection, 0 while open */
    int role;   /* PKM_ROLE_CLIENT or PKM_ROLE_SERVER */
    int phase;  /* enum phase */
    int rd_eof; /* the socket read returned 0 */
    int64_t idle_ms;
    int64_t hs_ms;    /* the first handshake's bound, for the sentence */
    int64_t limit_ms; /* the re-establishment's bound, for the sentence */
    int64_t last_rx;  /* CLOCK_MONOTONIC ns of the last byte received */
    char peer[PKM__NET_ADDR_SIZE];
    char msg[PKM_ERRMSG_SIZE];
};

struct pkm_listener {
    int fd;
    int port;
    pkm_engine_config_t ec; /* every accepted connection's; ec.secret is `secret` below */
    uint8_t *secret;        /* the listener's copy, wiped by pkm_listener_close */
    int64_t hs_ms;
    int64_t idle_ms;
    char msg[PKM_ERRMSG_SIZE];
};

/* ---- the default I/O table ---- */

static ssize_t io_read(void *ctx, int fd, void *buf, size_t n)
{
    (void)ctx;
    return recv(fd, buf, n, 0);
}

static ssize_t io_write(void *ctx, int fd, const void *buf, size_t n)
{
    (void)ctx;
    return send(fd, buf, n, MSG_NOSIGNAL);
}

static int io_poll(void *ctx, struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    (void)ctx;
    return poll(fds, nfds, timeout_ms);
}

const struct pkm__io pkm__io_default = {io_read, io_write, io_poll, NULL};

/* ---- time ---- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* An absolute deadline timeout_ms from now; -1 (none) for a negative timeout. */
static int64_t deadline_in(int64_t timeout_ms)
{
    if (timeout_ms < 0) return -1;
    if (timeout_ms > (INT64_MAX - now_ns()) / 1000000) return -1; /* beyond any clock: none */
    return now_ns() + timeout_ms * 1000000;
}

/* Milliseconds left until `until` (rounded up, so that a wait never ends just short of it), for
 * poll(); -1 for no deadline. */
static int ms_left(int64_t until, int64_t now)
{
    if (until < 0) return -1;
    if (until <= now) return 0;
    int64_t ms = (until - now + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* ---- sentences ---- */

static void errno_text(int errnum, char *out, size_t n)
{
    if (strerror_r(errnum, out, n) != 0) snprintf(out, n, "error %d", errnum);
}

static void put_msg(char *buf, size_t n, const char *msg)
{
    if (buf && n) snprintf(buf, n, "%s", msg);
}

/* ---- closing on failure ---- */

/* Closes the connection with err (the first error wins): the engine is closed (unsent bytes are
 * dropped), the socket closed at once with no message, and the sentence composed from `what`, the
 * handshake step, whether the peer had closed, and the peer's address. Returns the error. */
static int conn_fail(pkm_conn_t *c, int err, const char *what)
{
    if (c->err) return c->err;
    if (pkm_engine_state(c->e) != PKM_STATE_CLOSED) pkm_engine_close(c->e, err);
    const char *step = pkm_engine_fail_step(c->e);
    c->err = err;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;

    char parts[PKM_ERRMSG_SIZE], why[PKM_ERRMSG_SIZE];
    size_t used = 0;
    parts[0] = '\0';
    /* Which side closed, at which step: the peer's end of stream fails a handshake as
     * PKM_EHANDSHAKE (a confirmation that does not check fails before the read that sees it). */
    int how = c->rd_eof && err == PKM_EHANDSHAKE ? PKM_EEOF : err;
    if (step && pkm_handshake_failure(c->role, how, step, why, sizeof why)) {
        const char *phase = c->phase == PHASE_REKEY ? "re-establishment" : "handshake";
        int n = how == PKM_ETIMEOUT ? snprintf(c->msg, sizeof c->msg, "%s, %s", what, why)
                : how == PKM_ECONNRESET
                    ? snprintf(c->msg, sizeof c->msg, "%s; %s", what, why)
                    : snprintf(c->msg, sizeof c->msg, "%s failed: %s", phase, why);
        if (c->peer[0] && n > 0 && (size_t)n < sizeof c->msg)
            (void)snprintf(c->msg + n, sizeof c->msg - (size_t)n, " (peer %s)", c->peer);
        return err;
    }
    if (step)
        used += (size_t)snprintf(parts + used, sizeof parts - used, "at %s step %s",
                                 c->phase == PHASE_REKEY ? "re-establishment" : "handshake", step);
    if (step && c->rd_eof && used < sizeof parts)
        used += (size_t)snprintf(parts + used, sizeof parts - used,
                                 ", after the peer closed the connection");
    if (c->peer[0] && used < sizeof parts)
        used += (size_t)snprintf(parts + used, sizeof parts - used, "%speer %s", used ? "; " : "",
                                 c->peer);
    /* A sentence longer than the buffer is cut: the return value is deliberately ignored. */
    int n = parts[0] ? snprintf(c->msg, sizeof c->msg, "%s (%s)", what, parts)
                     : snprintf(c->msg, sizeof c->msg, "%s", what);
    (void)n;
    return err;
}

/* The engine closed itself: say why. */
static int engine_failed(pkm_conn_t *c)
{
    int err = pkm_engine_error(c->e);
    if (err >= 0) err = PKM_EINTERNAL;
    const char *offered = pkm__engine_offered_fingerprint(c->e);
    if (offered && !pkm_engine_peer_fingerprint(c->e)) {
        /* The key was well-formed but a trust check (the pin, or check_peer) refused it. */
        char what[PKM_ERRMSG_SIZE];
        const char *pin = pkm__engine_pin(c->e);
        if (pin && err == PKM_EPIN && !pkm_fingerprint_equal(offered, pin))
            snprintf(what, sizeof what, "%s: the peer presented %s, the pin is %s",
                     pkm_strerror(err), offered, pin);
        else
            snprintf(what, sizeof what, "%s: the peer presented %s", pkm_strerror(err), offered);
        return conn_fail(c, err, what);
    }
    return conn_fail(c, err, pkm_strerror(err));
}

/* A socket call failed with errnum. */
static int sock_failed(pkm_conn_t *c, int errnum, const char *call)
{
    char text[128], what[200];
    errno_text(errnum, text, sizeof text);
    snprintf(what, sizeof what, "%s failed: %s", call, text);
    int err = (errnum == ECONNRESET || errnum == EPIPE) ? PKM_ECONNRESET : PKM_EIO;
    return conn_fail(c, err, what);
}

/* ---- moving bytes ---- */

/* Writes what the engine has to send, until done or the socket would block. */
static int write_some(pkm_conn_t *c, int *progress)
{
    for (;;) {
        size_t len = 0;
        const uint8_t *p = pkm_engine_send_buf(c->e, &len);
        if (!p || len == 0) return 0;
        ssize_t n = c->io->write(c->io->ctx, c->fd, p, len);
        if (n > 0) {
            if ((size_t)n > len) return conn_fail(c, PKM_EINTERNAL, "send wrote too much");
            pkm_engine_send_ack(c->e, (size_t)n);
            *progress = 1;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return sock_failed(c, errno, "send");
    }
}

/* Reads once what the socket has, straight into the engine's buffer. */
static int read_some(pkm_conn_t *c, int *progress)
{
    if (c->rd_eof) return 0;
    size_t cap = 0;
    uint8_t *p = pkm_engine_recv_buf(c->e, &cap);
    if (!p || cap == 0) {
        /* Full (a packet waits to be taken) or closed. */
        return pkm_engine_state(c->e) == PKM_STATE_CLOSED ? engine_failed(c) : 0;
    }
    for (;;) {
        ssize_t n = c->io->read(c->io->ctx, c->fd, p, cap);
        if (n > 0) {
            if ((size_t)n > cap) return conn_fail(c, PKM_EINTERNAL, "recv read too much");
            c->last_rx = now_ns();
            *progress = 1;
            return pkm_engine_recv_ack(c->e, (size_t)n) < 0 ? engine_failed(c) : 0;
        }
        if (n == 0) {
            c->rd_eof = 1;
            *progress = 1;
            return pkm_engine_recv_eof(c->e) < 0 ? engine_failed(c) : 0;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return sock_failed(c, errno, "recv");
    }
}

/* How long a wait may last: the earlier of `deadline` (-1: none) and, with idle_bound, the end of
 * the idle timeout (then *idle is 1). */
static int64_t wait_until(const pkm_conn_t *c, int64_t deadline, int idle_bound, int *idle)
{
    *idle = 0;
    if (!idle_bound || c->idle_ms <= 0) return deadline;
    int64_t idle_end = c->last_rx + c->idle_ms * 1000000;
    if (deadline >= 0 && idle_end > deadline) return deadline;
    *idle = 1;
    return idle_end;
}

/* The deadline of a drive() ran out. */
static int expired(pkm_conn_t *c, enum goal g, int idle)
{
    char what[128];
    if (g == GOAL_HANDSHAKE) {
        int rekey = c->phase == PHASE_REKEY;
        snprintf(what, sizeof what, "%s did not finish within %lld ms",
                 rekey ? "re-establishment" : "handshake",
                 (long long)(rekey ? c->limit_ms : c->hs_ms));
        return conn_fail(c, PKM_ETIMEOUT, what);
    }
    if (idle) {
        snprintf(what, sizeof what, "no byte received for %lld ms (idle timeout)",
                 (long long)c->idle_ms);
        return conn_fail(c, PKM_ETIMEOUT, what);
    }
    return PKM_EAGAIN;
}

/* The loop of every blocking call, over what the engine wants: writes what is waiting, takes
 * packets, reads what arrives, waits in poll() when nothing can move, until the goal is reached
 * (returns 0, or 1 with *pkt for GOAL_PACKET), the deadline passes (expired()), or the
 * connection fails. */
static int drive(pkm_conn_t *c, int64_t deadline, enum goal g, pkm_packet_t *pkt)
{
    for (;;) {
        int progress = 0, r;
        if (c->err) return c->err;
        unsigned w = pkm_engine_wants(c->e); /* never PKM_WANT_JOB: RSA work is inline here */
        if (w & PKM_WANT_SEND) {
            PKM_GUARD(write_some(c, &progress));
            w = pkm_engine_wants(c->e);
        }
        if (w & PKM_WANT_CLOSED) return engine_failed(c);
        if (g == GOAL_PACKET) {
            if (w & PKM_WANT_PACKET) {
                r = pkm_engine_next_packet(c->e, pkt);
                if (r < 0) return engine_failed(c);
                if (r == 1) return 1;
                continue; /* the packet is not all in: the bit is clear now */
            }
        } else if (!(w & PKM_WANT_SEND) &&
                   (g == GOAL_FLUSH || pkm_engine_state(c->e) == PKM_STATE_ESTABLISHED)) {
            return 0;
        }
        int can_read = !c->rd_eof && (w & PKM_WANT_RECV);
        if (can_read) PKM_GUARD(read_some(c, &progress));
        if (progress) continue;

        /* Nothing can move now: wait for the socket, the deadline or the idle bound. */
        int idle;
        int64_t now = now_ns(), until = wait_until(c, deadline, g == GOAL_PACKET, &idle);
        if (until >= 0 && now >= until) return expired(c, g, idle);
        struct pollfd pfd = {.fd = c->fd, .events = 0, .revents = 0};
        if (can_read) pfd.events |= POLLIN;
        if (w & PKM_WANT_SEND) pfd.events |= POLLOUT;
        if (pfd.events == 0) return conn_fail(c, PKM_EINTERNAL, "nothing to wait for");
        r = c->io->poll(c->io->ctx, &pfd, 1, ms_left(until, now));
        if (r < 0 && errno != EINTR && errno != EAGAIN) return sock_failed(c, errno, "poll");
    }
}

/* ---- configuration ---- */

void pkm_conn_config_init(pkm_conn_config_t *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    pkm_engine_config_init(&cfg->engine, 0); /* the role is the call's */
    cfg->handshake_timeout_ms = PKM_DEFAULT_HANDSHAKE_TIMEOUT_MS;
    cfg->connect_timeout_ms = PKM_DEFAULT_CONNECT_TIMEOUT_MS;
}

/* ---- making connections ---- */

/* Makes fd non-blocking: 0, or PKM_EINVAL (not a descriptor) / PKM_EIO with the sentence in
 * what. */
static int set_nonblocking(int fd, char *what, size_t n)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0) return 0;
    int errnum = errno;
    char text[128];
    errno_text(errnum, text, sizeof text);
    snprintf(what, n, "cannot make the socket non-blocking: %s", text);
    return errnum == EBADF ? PKM_EINVAL : PKM_EIO;
}

/* Runs the handshake over fd, which it owns from here on (closed on failure), as does the engine
 * config's client_key. On failure the sentence goes to msg. */
static int conn_start(int fd, const pkm_engine_config_t *ec, int64_t hs_ms, int64_t idle_ms,
                      const struct pkm__io *io, char *msg, size_t msg_size, pkm_conn_t **out)
{
    char what[200];
    const char *why = what; /* the failure's sentence; NULL: composed from rc */
    pkm_conn_t *c = NULL;
    int rc;
    PKM_GUARD_GOTO(rc, set_nonblocking(fd, what, sizeof what));
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* not for AF_UNIX */

    why = NULL;
    PKM_ENSURE_GOTO(rc, (c = pkm__calloc(1, sizeof *c)) != NULL, PKM_ENOMEM);
    c->fd = fd; /* closed with c from here on */
    c->role = ec->role;
    c->io = io ? io : &pkm__io_default;
    c->idle_ms = idle_ms;
    c->hs_ms = hs_ms;
    c->phase = PHASE_HANDSHAKE;
    pkm__net_peer_str(fd, c->peer, sizeof c->peer);

    /* The engine takes client_key, whatever happens; drive() composes its failure's sentence. */
    PKM_GUARD_GOTO(rc, pkm_engine_new(ec, &c->e));
    why = c->msg;
    PKM_GUARD_GOTO(rc, drive(c, hs_ms > 0 ? deadline_in(hs_ms) : -1, GOAL_HANDSHAKE, NULL));
    c->phase = PHASE_ESTABLISHED;
    c->last_rx = now_ns();
    put_msg(msg, msg_size, "");
    *out = c;
    return 0;
cleanup:
    if (!why) {
        snprintf(what, sizeof what, "%s%s", rc == PKM_EINVAL ? "invalid configuration: " : "",
                 pkm_strerror(rc));
        why = what;
    }
    put_msg(msg, msg_size, why);
    if (c) {
        pkm_conn_close(c); /* the engine, if made, freed the key */
    } else {
        close(fd);
        pkm_key_free(ec->client_key);
    }
    return rc;
}

/* The arguments of pkm_connect, pkm_listen and pkm_conn_from_fd checked into *ec (the sentence
 * of a refusal in cfg's errbuf). What the call owns goes on a refusal: cfg's client_key, and
 * the descriptor given to pkm_conn_from_fd. */
static int open_check(enum pkm__conn_call call, const char *host, int port_or_fd, int role,
                      const pkm_conn_config_t *cfg, const void *out, pkm_engine_config_t *ec)
{
    if (pkm__conn_config_check(call, host, port_or_fd, role, cfg, out, ec, cfg ? cfg->errbuf : NULL,
                               cfg ? cfg->errbuf_size : 0) < 0) {
        if (call == PKM__CALL_FROM_FD && port_or_fd >= 0) close(port_or_fd);
        if (cfg) pkm_key_free(cfg->engine.client_key);
        return PKM_EINVAL;
    }
    return 0;
}

int pkm__conn_from_fd_io(int fd, int role, const pkm_conn_config_t *cfg, const struct pkm__io *io,
                         pkm_conn_t **out)
{
    if (out) *out = NULL;
    pkm_engine_config_t ec;
    PKM_GUARD(open_check(PKM__CALL_FROM_FD, NULL, fd, role, cfg, out, &ec));
    return conn_start(fd, &ec, cfg->handshake_timeout_ms, cfg->idle_timeout_ms, io, cfg->errbuf,
                      cfg->errbuf_size, out);
}

int pkm_conn_from_fd(int fd, int role, const pkm_conn_config_t *cfg, pkm_conn_t **out)
{
    return pkm__conn_from_fd_io(fd, role, cfg, NULL, out);
}

/* Waits for a non-blocking connect() on fd to finish by `deadline`. Returns 0 when connected, or
 * an errno value (ETIMEDOUT when the deadline passed). */
static int connect_wait(int fd, int64_t deadline, const struct pkm__io *io)
{
    for (;;) {
        int64_t now = now_ns();
        if (deadline >= 0 && now >= deadline) return ETIMEDOUT;
        struct pollfd pfd = {.fd = fd, .events = POLLOUT, .revents = 0};
        int r = io->poll(io->ctx, &pfd, 1, ms_left(deadline, now));
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return errno;
        }
        if (r == 0) continue; /* the deadline check above ends it */
        return pkm__net_connect_result(fd);
    }
}

int pkm__connect_io(const char *host, int port, const pkm_conn_config_t *cfg,
                    const struct pkm__io *io, pkm_conn_t **out)
{
    char what[PKM_ERRMSG_SIZE], text[128];
    if (out) *out = NULL;
    pkm_engine_config_t ec;
    PKM_GUARD(open_check(PKM__CALL_CONNECT, host, port, PKM_ROLE_CLIENT, cfg, out, &ec));
    char *eb = cfg->errbuf;
    size_t ebn = cfg->errbuf_size;
    if (!io) io = &pkm__io_default;

    int rc;
    struct addrinfo *res = NULL;
    PKM_GUARD_GOTO(rc, pkm__net_resolve(host, port, 0, &res, what, sizeof what));

    int64_t deadline = cfg->connect_timeout_ms > 0 ? deadline_in(cfg->connect_timeout_ms) : -1;
    int fd = -1, last = ECONNREFUSED, tried = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        int s;
        int r = pkm__net_connect_start(ai, &s);
        if (s < 0) {
            last = r;
            continue;
        }
        tried++;
        if (r == EINPROGRESS) r = connect_wait(s, deadline, io);
        if (r == 0) {
            fd = s;
        } else {
            close(s);
            last = r;
            if (r == ETIMEDOUT && deadline >= 0 && now_ns() >= deadline) break;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        if (last == ETIMEDOUT && cfg->connect_timeout_ms > 0)
            snprintf(text, sizeof text, "timed out after %lld ms",
                     (long long)cfg->connect_timeout_ms);
        else
            errno_text(last, text, sizeof text);
        snprintf(what, sizeof what, "connect to %s:%d failed: %s%s", host, port, text,
                 tried > 1 ? " (every address tried)" : "");
    }
    PKM_ENSURE_GOTO(rc, fd >= 0, PKM_ECONNECT);
    return conn_start(fd, &ec, cfg->handshake_timeout_ms, cfg->idle_timeout_ms, io, eb, ebn, out);
cleanup:
    put_msg(eb, ebn, what);
    pkm_key_free(ec.client_key);
    return rc;
}

int pkm_connect(const char *host, int port, const pkm_conn_config_t *cfg, pkm_conn_t **out)
{
    return pkm__connect_io(host, port, cfg, NULL, out);
}

/* ---- listening ---- */

static void listener_free(pkm_listener_t *l)
{
    if (l->secret) {
        pkm__wipe(l->secret, l->ec.secret_len);
        pkm__free(l->secret);
    }
    pkm__wipe(l, sizeof *l);
    pkm__free(l);
}

int pkm_listen(const char *host, int port, const pkm_conn_config_t *cfg, pkm_listener_t **out)
{
    char what[PKM_ERRMSG_SIZE];
    if (out) *out = NULL;
    pkm_engine_config_t ec;
    PKM_GUARD(open_check(PKM__CALL_LISTEN, host, port, PKM_ROLE_SERVER, cfg, out, &ec));
    const char *why = pkm_strerror(PKM_ENOMEM); /* the failure's sentence */
    int rc;
    pkm_listener_t *l = pkm__calloc(1, sizeof *l);
    PKM_ENSURE_GOTO(rc, l != NULL, PKM_ENOMEM);
    l->fd = -1;
    l->ec = ec;
    l->ec.secret = NULL;
    l->ec.secret_len = 0;
    if (ec.secret_len) {
        PKM_ENSURE_GOTO(rc, (l->secret = pkm__malloc(ec.secret_len)) != NULL, PKM_ENOMEM);
        memcpy(l->secret, ec.secret, ec.secret_len);
        l->ec.secret = l->secret;
        l->ec.secret_len = ec.secret_len;
    }
    l->hs_ms = cfg->handshake_timeout_ms;
    l->idle_ms = cfg->idle_timeout_ms;

    why = what;
    PKM_GUARD_GOTO(rc, l->fd = pkm__net_listen(host, port, SOMAXCONN, what, sizeof what));
    l->port = pkm__net_bound_port(l->fd);
    put_msg(cfg->errbuf, cfg->errbuf_size, "");
    *out = l;
    return 0;
cleanup:
    put_msg(cfg->errbuf, cfg->errbuf_size, why);
    if (l) listener_free(l); /* l->fd < 0: no socket yet */
    return rc;
}

int pkm_listener_port(const pkm_listener_t *l)
{
    return l ? l->port : 0;
}

int pkm_listener_fd(const pkm_listener_t *l)
{
    return l ? l->fd : -1;
}

const char *pkm_listener_errmsg(const pkm_listener_t *l)
{
    return l ? l->msg : "";
}

int pkm__accept_io(pkm_listener_t *l, const struct pkm__io *io, pkm_conn_t **out)
{
    char what[PKM_ERRMSG_SIZE], text[128];
    if (out) *out = NULL;
    PKM_ENSURE(l && out, PKM_EINVAL);
    if (!io) io = &pkm__io_default;
    l->msg[0] = '\0';
    int fd;
    for (;;) {
        fd = accept(l->fd, NULL, NULL);
        if (fd >= 0) break;
        int errnum = errno;
        if (errnum == EAGAIN || errnum == EWOULDBLOCK) {
            struct pollfd pfd = {.fd = l->fd, .events = POLLIN, .revents = 0};
            if (io->poll(io->ctx, &pfd, 1, -1) < 0 && errno != EINTR && errno != EAGAIN) {
                errnum = errno;
            } else {
                continue;
            }
        }
        /* A client that gave up before we took it, or a signal: wait for the next. */
        if (errnum == EINTR || errnum == ECONNABORTED || errnum == EPROTO) continue;
        errno_text(errnum, text, sizeof text);
        snprintf(what, sizeof what, "accept failed: %s", text);
        snprintf(l->msg, sizeof l->msg, "%s", what);
        return PKM_EIO;
    }
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    return conn_start(fd, &l->ec, l->hs_ms, l->idle_ms, io, l->msg, sizeof l->msg, out);
}

int pkm_accept(pkm_listener_t *l, pkm_conn_t **out)
{
    return pkm__accept_io(l, NULL, out);
}

void pkm_listener_close(pkm_listener_t *l)
{
    if (!l) return;
    if (l->fd >= 0) close(l->fd);
    listener_free(l);
}

/* ---- using a connection ---- */

int pkm_conn_send(pkm_conn_t *c, uint8_t id, uint32_t hash, const void *content, size_t size,
                  int64_t timeout_ms)
{
    PKM_ENSURE(c != NULL, PKM_EINVAL);
    if (c->err) return c->err;
    int64_t deadline = deadline_in(timeout_ms);
    for (;;) {
        int r = pkm_engine_queue_packet(c->e, id, hash, content, size);
        if (r == 0) break;
        if (pkm_engine_state(c->e) == PKM_STATE_CLOSED) return engine_failed(c);
        if (r != PKM_EQUEUE) return r; /* PKM_EINVAL, PKM_ETOOBIG, PKM_ESTATE: nothing queued */
        /* The send buffer is full: write it out, then the packet fits (it alone is below the
         * bound, else PKM_ETOOBIG). */
        r = drive(c, deadline, GOAL_FLUSH, NULL);
        if (r == PKM_EAGAIN) return PKM_EQUEUE;
        PKM_GUARD(r);
    }
    return drive(c, deadline, GOAL_FLUSH, NULL);
}

int pkm_conn_flush(pkm_conn_t *c, int64_t timeout_ms)
{
    PKM_ENSURE(c != NULL, PKM_EINVAL);
    return drive(c, deadline_in(timeout_ms), GOAL_FLUSH, NULL);
}

int pkm_conn_recv(pkm_conn_t *c, pkm_packet_t *out, int64_t timeout_ms)
{
    PKM_ENSURE(c && out, PKM_EINVAL);
    return drive(c, deadline_in(timeout_ms), GOAL_PACKET, out);
}

int pkm_conn_rekey(pkm_conn_t *c, const uint8_t *secret, size_t secret_len, int64_t timeout_ms)
{
    PKM_ENSURE(c != NULL, PKM_EINVAL);
    if (c->err) return c->err;
    int64_t deadline = deadline_in(timeout_ms);
    int r = pkm_engine_rekey(c->e, secret, secret_len);
    c->limit_ms = timeout_ms;
    /* PKM_EINVAL, PKM_ENOMEM, PKM_ESTATE with the engine open: nothing changed. */
    if (r < 0 && pkm_engine_state(c->e) != PKM_STATE_CLOSED) return r;
    c->phase = PHASE_REKEY; /* for the sentences from here on */
    if (r < 0) return engine_failed(c);
    PKM_GUARD(drive(c, deadline, GOAL_HANDSHAKE, NULL));
    c->phase = PHASE_ESTABLISHED;
    c->last_rx = now_ns();
    return 0;
}

void pkm__conn_set_io(pkm_conn_t *c, const struct pkm__io *io)
{
    if (c) c->io = io ? io : &pkm__io_default;
}

int pkm_conn_fd(const pkm_conn_t *c)
{
    return c ? c->fd : -1;
}

const char *pkm_conn_peer_fingerprint(const pkm_conn_t *c)
{
    return c ? pkm_engine_peer_fingerprint(c->e) : NULL;
}

const char *pkm_conn_peer_addr(const pkm_conn_t *c)
{
    return c ? c->peer : "";
}

int pkm_conn_error(const pkm_conn_t *c)
{
    return c ? c->err : PKM_EINVAL;
}

const char *pkm_conn_errmsg(const pkm_conn_t *c)
{
    return c ? c->msg : "";
}

void pkm_conn_close(pkm_conn_t *c)
{
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    pkm_engine_free(c->e);
    pkm__free(c);
}

/* ---- waiting on the connection and other descriptors ---- */

int pkm_conn_pending(const pkm_conn_t *c)
{
    if (!c) return 0;
    if (c->err) return 1;
    return (pkm_engine_wants(c->e) & (PKM_WANT_PACKET | PKM_WANT_CLOSED)) != 0;
}

int pkm_conn_poll_events(const pkm_conn_t *c)
{
    if (!c || c->err || c->fd < 0) return 0;
    unsigned w = pkm_engine_wants(c->e);
    int ev = 0;
    if (!c->rd_eof && (w & PKM_WANT_RECV)) ev |= POLLIN;
    if (w & PKM_WANT_SEND) ev |= POLLOUT;
    return ev;
}

int pkm_conn_wait(pkm_conn_t *c, int extra_fd, int extra_events, int *extra_revents,
                  int64_t timeout_ms)
{
    if (extra_revents) *extra_revents = 0;
    PKM_ENSURE(c != NULL, PKM_EINVAL);
    int64_t deadline = deadline_in(timeout_ms);
    for (;;) {
        int progress = 0;
        if (pkm_conn_pending(c)) return PKM_CONN_READY;
        /* A failed write closes the connection: pending() says so next. */
        if (pkm_engine_wants(c->e) & PKM_WANT_SEND) (void)write_some(c, &progress);
        if (pkm_conn_pending(c)) return PKM_CONN_READY;

        int idle;
        int64_t now = now_ns(), until = wait_until(c, deadline, 1, &idle);
        /* At the idle bound pkm_conn_recv() closes the connection: let it say so. */
        if (until >= 0 && now >= until) return idle ? PKM_CONN_READY : PKM_EAGAIN;

        struct pollfd pfd[2];
        nfds_t nfds = 1;
        pfd[0].fd = c->fd;
        pfd[0].events = (short)pkm_conn_poll_events(c);
        pfd[0].revents = 0;
        if (extra_fd >= 0) {
            pfd[1].fd = extra_fd;
            pfd[1].events = (short)extra_events;
            pfd[1].revents = 0;
            nfds = 2;
        }
        int r = c->io->poll(c->io->ctx, pfd, nfds, ms_left(until, now));
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            (void)sock_failed(c, errno, "poll");
            return PKM_CONN_READY;
        }
        int result = 0;
        if (nfds == 2 && pfd[1].revents) {
            if (extra_revents) *extra_revents = pfd[1].revents;
            result |= PKM_CONN_EXTRA;
        }
        if ((pfd[0].events & POLLIN) && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
            (void)read_some(c, &progress); /* a failure closes: pending() says so */
        if (pkm_conn_pending(c)) result |= PKM_CONN_READY;
        if (result) return result;
    }
}
