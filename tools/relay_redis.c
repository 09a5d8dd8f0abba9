/* SPDX-License-Identifier: MIT */
/* The relay across instances over Redis pub/sub (relay_redis.h): URL parsing, the message format,
 * and two hiredis connections on a libuv loop with reconnection and backoff. */
#include "relay_redis.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

/* hiredis's headers are not written for this project's warning set. */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#endif
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/* ---- libuv events for hiredis ---------------------------------------------------------------
 * hiredis's own adapter (hiredis/adapters/libuv.h), as Debian 12 ships it (0.14.1), ignores a
 * poll callback with an error status, and libuv reports a refused connect (POLLERR) exactly so:
 * the connection attempt then hangs forever, and a relay whose Redis is down never retries. This
 * is that adapter with the fix hiredis made later (on an error, handle the events we wait for:
 * hiredis then reads the socket's error and fails the connection). */

typedef struct uv_events {
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    uv_poll_t poll;
    int events;
} uv_events_t;

static void ev_poll(uv_poll_t *h, int status, int events)
{
    uv_events_t *p = h->data;
    int ev = status < 0 ? p->events : events;
    if (p->ac && (ev & UV_READABLE)) redisAsyncHandleRead(p->ac);
    if (p->ac && (ev & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);
}

static void ev_update(uv_events_t *p)
{
    if (p->events)
        uv_poll_start(&p->poll, p->events, ev_poll);
    else
        uv_poll_stop(&p->poll);
}

static void ev_add_read(void *d)
{
    uv_events_t *p = d;
    p->events |= UV_READABLE;
    ev_update(p);
}

static void ev_del_read(void *d)
{
    uv_events_t *p = d;
    p->events &= ~UV_READABLE;
    ev_update(p);
}

static void ev_add_write(void *d)
{
    uv_events_t *p = d;
    p->events |= UV_WRITABLE;
    ev_update(p);
}

static void ev_del_write(void *d)
{
    uv_events_t *p = d;
    p->events &= ~UV_WRITABLE;
    ev_update(p);
}

static void ev_closed(uv_handle_t *h)
{
    free(h->data);
}

static void ev_cleanup(void *d)
{
    uv_events_t *p = d;
    p->ac = NULL;
    uv_close((uv_handle_t *)&p->poll, ev_closed);
}

static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data) return -1;
    uv_events_t *p = calloc(1, sizeof *p);
    if (!p) return -1;
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        free(p);
        return -1;
    }
    p->poll.data = p;
    p->ac = ac;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    ac->ev.data = p;
    return 0;
}

/* A packet relay_redis_post() queued for the loop's thread. */
typedef struct post {
    struct post *next;
    uint64_t conn_id;
    uint32_t hash;
    uint8_t id;
    size_t len;
    uint8_t content[];
} post_t;

struct relay_redis {
    uv_loop_t *loop;
    relay_redis_url_t url; /* holds the password (wiped at the end) */
    /* redis://[user@]host:port/chan, for the log: never the password */
    char where[RELAY_REDIS_USER_MAX + RELAY_REDIS_HOST_MAX + RELAY_REDIS_CHANNEL_MAX + 32];
    uint64_t instance;
    relay_redis_message_fn on_message;
    relay_redis_log_fn on_log;
    void *ctx;
    redisAsyncContext *pub, *sub;
    int pub_up, sub_up; /* connected; subscription confirmed */
    int up;             /* both: what the log last said (or will say first) */
    int down_logged;    /* the loss (or first failure) has been logged since the last up */
    int bad_logged, closing;
    int auth_logged; /* a refusal of Redis (AUTH, NOAUTH) has been logged since the last up */
    uint64_t backoff_ms;
    uint64_t dropped_at_loss;
    uint64_t connect_timeout_ms;
    uv_timer_t retry;   /* the next connection attempt */
    uv_timer_t attempt; /* the deadline of the attempt under way */
    int open_handles;   /* handles not yet closed (relay_redis_free) */
    uv_async_t async;   /* relay_redis_post() wakes the loop */
    uv_mutex_t mu;      /* guards posts and nposts */
    post_t *posts, *posts_tail;
    size_t nposts;
    _Atomic uint64_t post_dropped; /* counted on other threads */
    uint8_t *buf;
    size_t bufcap;
    relay_redis_stats_t stats;
};

/* ---- URL ---------------------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static int url_fail(char *err, size_t errcap, const char *fmt,
                                                          ...)
{
    if (err && errcap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errcap, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int channel_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == ':';
}

static int host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

void relay_redis_url_wipe(relay_redis_url_t *u)
{
    if (u) OPENSSL_cleanse(u, sizeof *u);
}

void relay_redis_redact_url(const char *url, char *out, size_t cap)
{
    if (!cap) return;
    if (!url) url = "";
    const char *sch = strstr(url, "://"), *at = strrchr(url, '@');
    if (!sch || !at || at < sch + 3) {
        snprintf(out, cap, "%s", url);
        return;
    }
    const char *ui = sch + 3, *colon = memchr(ui, ':', (size_t)(at - ui));
    const char *keep = colon ? colon + 1 : ui; /* the user before the ':' stays */
    snprintf(out, cap, "%.*s***%s", (int)(keep - url), url, at);
}

/* Characters a userinfo may hold unescaped (RFC 3986's unreserved and sub-delims). */
static int userinfo_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("-._~!$&'()*+,;=", c));
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (cap bytes with the NUL). colon_ok: a raw ':' is allowed.
 * Returns 0, -1 a character to escape (*bad gets it), -2 a bad %XX, -3 %00, -4 too long. */
static int userinfo_decode(const char *s, size_t n, int colon_ok, char *out, size_t cap, char *bad)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n) return -2;
            int h = hex_digit(s[i + 1]), l = h < 0 ? -1 : hex_digit(s[i + 2]);
            if (h < 0 || l < 0) return -2;
            c = (char)(h << 4 | l);
            if (!c) return -3;
            i += 2;
        } else if (!userinfo_char(c) && !(colon_ok && c == ':')) {
            *bad = c;
            return -1;
        }
        if (k + 1 >= cap) return -4;
        out[k++] = c;
    }
    out[k] = 0;
    return 0;
}

static int parse_url(const char *url_in, const char *url, relay_redis_url_t *out, char *err,
                     size_t errcap);

int relay_redis_parse_url(const char *url, relay_redis_url_t *out, char *err, size_t errcap)
{
    char shown[600];
    relay_redis_redact_url(url, shown, sizeof shown);
    int rc = parse_url(url, shown, out, err, errcap);
    if (rc != 0) relay_redis_url_wipe(out);
    return rc;
}

static int parse_url(const char *url_in, const char *url, relay_redis_url_t *out, char *err,
                     size_t errcap)
{
    static const char scheme[] = "redis://";
    memset(out, 0, sizeof *out);
    if (!url_in || !*url_in)
        return url_fail(err, errcap, "empty Redis URL (want redis://HOST:PORT[/CHANNEL])");
    if (strncmp(url_in, "rediss://", 9) == 0)
        return url_fail(err, errcap, "%s: rediss:// (TLS) is not supported, use redis://", url);
    if (strncmp(url_in, "unix:", 5) == 0 || strncmp(url_in, "redis+unix:", 11) == 0)
        return url_fail(err, errcap, "%s: unix sockets are not supported, use redis://HOST:PORT",
                        url);
    if (strncmp(url_in, scheme, sizeof scheme - 1) != 0)
        return url_fail(err, errcap, "%s: not a redis:// URL (want redis://HOST:PORT[/CHANNEL])",
                        url);
    const char *p = url_in + sizeof scheme - 1;

    /* [[USER]:PASSWORD@] or USER@: up to the last '@' (a channel holds none) */
    const char *at = strrchr(p, '@');
    if (at) {
        const char *ui = p, *colon = memchr(ui, ':', (size_t)(at - ui));
        if (memchr(ui, '@', (size_t)(at - ui)))
            return url_fail(err, errcap,
                            "%s: more than one '@' (write an '@' of the user or the password as "
                            "%%40)",
                            url);
        if (memchr(ui, '/', (size_t)(at - ui)))
            return url_fail(err, errcap,
                            "%s: a '/' before the '@' (write a '/' of the user or the password as "
                            "%%2F)",
                            url);
        const char *uend = colon ? colon : at;
        char bad = 0;
        int d = userinfo_decode(ui, (size_t)(uend - ui), 0, out->user, sizeof out->user, &bad);
        if (d == -1)
            return url_fail(err, errcap,
                            "%s: bad character '%c' in the user name (percent-encode it, e.g. "
                            "%%3A for ':')",
                            url, bad);
        if (d == -2)
            return url_fail(err, errcap, "%s: bad percent-escape in the user name (want %%XX)",
                            url);
        if (d == -3) return url_fail(err, errcap, "%s: %%00 in the user name", url);
        if (d == -4)
            return url_fail(err, errcap, "%s: user name longer than %d bytes", url,
                            RELAY_REDIS_USER_MAX);
        if (!colon && !out->user[0])
            return url_fail(err, errcap,
                            "%s: empty user before '@' (want redis://[[USER]:PASSWORD@]HOST)", url);
        if (colon) {
            d = userinfo_decode(colon + 1, (size_t)(at - colon - 1), 1, out->password,
                                sizeof out->password, &bad);
            if (d == -1) /* the character is not named: it is part of the password */
                return url_fail(err, errcap,
                                "%s: the password holds a character that must be percent-encoded "
                                "(e.g. %%2F for '/', %%40 for '@', %%23 for '#', %%25 for '%%', "
                                "%%20 for a space)",
                                url);
            if (d == -2)
                return url_fail(err, errcap,
                                "%s: bad percent-escape in the password (want %%XX, two hex "
                                "digits; %%25 for a '%%')",
                                url);
            if (d == -3) return url_fail(err, errcap, "%s: %%00 in the password", url);
            if (d == -4)
                return url_fail(err, errcap, "%s: password longer than %d bytes", url,
                                RELAY_REDIS_PASSWORD_MAX);
            if (!out->password[0])
                return url_fail(err, errcap,
                                "%s: empty password after ':' (want redis://[USER]:PASSWORD@HOST, "
                                "or USER@HOST with the password given apart)",
                                url);
        }
        p = at + 1;
    }
    if (strpbrk(p, "?#"))
        return url_fail(err, errcap, "%s: query or fragment ('?', '#') not supported", url);

    /* HOST */
    const char *h = p, *hend;
    if (*p == '[') {
        h = p + 1;
        hend = strchr(h, ']');
        if (!hend) return url_fail(err, errcap, "%s: '[' of an IPv6 address without ']'", url);
        for (const char *q = h; q < hend; q++)
            if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') ||
                  (*q >= 'A' && *q <= 'F') || *q == ':' || *q == '.'))
                return url_fail(err, errcap, "%s: bad character '%c' in the IPv6 address", url, *q);
        p = hend + 1;
    } else {
        hend = p;
        while (*hend && *hend != ':' && *hend != '/')
            hend++;
        for (const char *q = h; q < hend; q++)
            if (!host_char(*q))
                return url_fail(err, errcap, "%s: bad character '%c' in the host", url, *q);
        p = hend;
    }
    size_t hl = (size_t)(hend - h);
    if (hl == 0)
        return url_fail(err, errcap, "%s: no host (want redis://HOST:PORT[/CHANNEL])", url);
    if (hl >= sizeof out->host) return url_fail(err, errcap, "%s: host name too long", url);
    memcpy(out->host, h, hl);
    out->host[hl] = 0;

    /* :PORT */
    out->port = RELAY_REDIS_DEFAULT_PORT;
    if (*p == ':') {
        p++;
        long port = 0;
        const char *d = p;
        while (*p >= '0' && *p <= '9') {
            if (port <= 65535) port = port * 10 + (*p - '0');
            p++;
        }
        if (p == d) return url_fail(err, errcap, "%s: no port number after ':'", url);
        if (*p && *p != '/')
            return url_fail(err, errcap, "%s: bad character '%c' in the port", url, *p);
        if (port < 1 || port > 65535)
            return url_fail(err, errcap, "%s: port %.*s out of range (1..65535)", url, (int)(p - d),
                            d);
        out->port = (int)port;
    } else if (*p && *p != '/') {
        return url_fail(err, errcap, "%s: unexpected '%c' after the host", url, *p);
    }

    /* /CHANNEL */
    strcpy(out->channel, RELAY_REDIS_DEFAULT_CHANNEL);
    if (*p == '/') {
        p++;
        size_t cl = strlen(p);
        if (cl == 0) return url_fail(err, errcap, "%s: empty channel after '/'", url);
        if (cl > RELAY_REDIS_CHANNEL_MAX)
            return url_fail(err, errcap, "%s: channel longer than %d characters", url,
                            RELAY_REDIS_CHANNEL_MAX);
        for (const char *q = p; *q; q++)
            if (!channel_char(*q))
                return url_fail(
                    err, errcap,
                    "%s: bad character '%c' in the channel (allowed: A-Z a-z 0-9 . _ - :)", url,
                    *q);
        memcpy(out->channel, p, cl + 1);
    }
    return 0;
}

/* ---- message format ------------------------------------------------------------------------ */

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

size_t relay_redis_encode(uint8_t *buf, size_t cap, uint64_t instance, uint64_t conn_id, uint8_t id,
                          uint32_t hash, const uint8_t *content, size_t len)
{
    if (len > RELAY_REDIS_MAX_CONTENT || cap < RELAY_REDIS_HEADER_SIZE ||
        cap - RELAY_REDIS_HEADER_SIZE < len || (len && !content))
        return 0;
    memcpy(buf, RELAY_REDIS_MAGIC, 4);
    put_be(buf + 4, instance, 8);
    put_be(buf + 12, conn_id, 8);
    buf[20] = id;
    put_be(buf + 21, hash, 4);
    put_be(buf + 25, len, 4);
    if (len) memcpy(buf + RELAY_REDIS_HEADER_SIZE, content, len);
    return RELAY_REDIS_HEADER_SIZE + len;
}

int relay_redis_decode(const uint8_t *msg, size_t n, uint64_t *instance, uint64_t *conn_id,
                       uint8_t *id, uint32_t *hash, const uint8_t **content, size_t *len)
{
    if (n < RELAY_REDIS_HEADER_SIZE || memcmp(msg, RELAY_REDIS_MAGIC, 4) != 0) return -1;
    uint64_t l = get_be(msg + 25, 4);
    if (l > RELAY_REDIS_MAX_CONTENT || l != n - RELAY_REDIS_HEADER_SIZE) return -1;
    *instance = get_be(msg + 4, 8);
    *conn_id = get_be(msg + 12, 8);
    *id = msg[20];
    *hash = (uint32_t)get_be(msg + 21, 4);
    *content = msg + RELAY_REDIS_HEADER_SIZE;
    *len = (size_t)l;
    return 0;
}

/* ---- log and state -------------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static void rlog(relay_redis_t *r, int level, const char *fmt,
                                                       ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->on_log)
        r->on_log(r->ctx, level, msg);
    else
        fprintf(stderr, "pkmcom: relay: %s\n", msg);
}

static void connect_missing(relay_redis_t *r);

static void on_retry(uv_timer_t *t)
{
    connect_missing(t->data);
}

static void schedule_retry(relay_redis_t *r)
{
    if (r->closing || uv_is_active((uv_handle_t *)&r->retry)) return;
    uv_timer_start(&r->retry, on_retry, r->backoff_ms, 0);
    r->backoff_ms = r->backoff_ms * 2 > RELAY_REDIS_BACKOFF_MAX_MS ? RELAY_REDIS_BACKOFF_MAX_MS
                                                                   : r->backoff_ms * 2;
}

/* Redis refused a connection: an AUTH answered with an error (why: Redis's reason), or a
 * command answered NOAUTH (Redis wants a password). Logged once until the relay is up again,
 * whatever the outage's first line said; the caller's connection ends and is retried. */
static void note_refused(relay_redis_t *r, const char *why)
{
    if (r->closing) return;
    r->stats.auth_refused++;
    if (!r->down_logged && !r->up) { /* the first failure: counted as the loss */
        r->stats.losses++;
        r->dropped_at_loss = r->stats.dropped;
        r->down_logged = 1;
    }
    if (r->auth_logged) return;
    r->auth_logged = 1;
    if (strncmp(why, "NOAUTH", 6) == 0)
        rlog(r, RELAY_REDIS_LOG_WARN,
             "Redis at %s wants a password (%s): give it in the URL "
             "(redis://[USER]:PASSWORD@HOST) or with --redis-password-file; retrying with backoff",
             r->where, why);
    else
        rlog(r, RELAY_REDIS_LOG_WARN,
             "Redis at %s refused the relay's AUTH (%s): check the password%s; retrying with "
             "backoff",
             r->where, why, r->url.user[0] ? " and the user" : "");
}

static int is_refusal(const char *why)
{
    return strncmp(why, "NOAUTH", 6) == 0 || strncmp(why, "WRONGPASS", 9) == 0;
}

/* One of the connections failed or was lost. Logged once per outage. */
static void note_down(relay_redis_t *r, const char *why)
{
    if (r->closing) return;
    if (!r->up && is_refusal(why)) {
        note_refused(r, why);
        schedule_retry(r);
        return;
    }
    if (r->up) {
        r->up = 0;
        r->stats.losses++;
        r->dropped_at_loss = r->stats.dropped;
        rlog(r, RELAY_REDIS_LOG_WARN,
             "lost Redis at %s (%s): packets are neither published nor received across instances "
             "until it is back; the local relay goes on; reconnecting with backoff",
             r->where, why);
        r->down_logged = 1;
    } else if (!r->down_logged) {
        r->stats.losses++;
        r->dropped_at_loss = r->stats.dropped;
        rlog(r, RELAY_REDIS_LOG_WARN, "cannot reach Redis at %s (%s); retrying with backoff",
             r->where, why);
        r->down_logged = 1;
    }
    schedule_retry(r);
}

static void note_maybe_up(relay_redis_t *r)
{
    if (r->closing || r->up || !r->pub_up || !r->sub_up) return;
    r->up = 1;
    uv_timer_stop(&r->attempt);
    r->backoff_ms = RELAY_REDIS_BACKOFF_MIN_MS;
    if (r->down_logged) {
        r->stats.recoveries++;
        rlog(r, RELAY_REDIS_LOG_INFO,
             "Redis at %s is back: relaying across instances again (%llu publishes dropped while "
             "it was away)",
             r->where, (unsigned long long)(r->stats.dropped - r->dropped_at_loss));
    } else {
        rlog(r, RELAY_REDIS_LOG_INFO, "connected to Redis at %s (instance %016llx)", r->where,
             (unsigned long long)r->instance);
    }
    r->down_logged = 0;
    r->auth_logged = 0;
}

/* ---- hiredis callbacks ---------------------------------------------------------------------- */

static void forget(relay_redis_t *r, const redisAsyncContext *ac)
{
    if (ac == r->pub) {
        r->pub = NULL;
        r->pub_up = 0;
    } else if (ac == r->sub) {
        r->sub = NULL;
        r->sub_up = 0;
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    relay_redis_t *r = ac->data;
    if (status != REDIS_OK) { /* hiredis frees the context after this call */
        forget(r, ac);
        note_down(r, ac->errstr[0] ? ac->errstr : "connection failed");
        return;
    }
    if (ac == r->pub && !r->url.password[0]) {
        r->pub_up = 1;
        note_maybe_up(r);
    }
    /* with a password, the publisher is up once Redis accepts AUTH (on_auth); the subscriber
     * once Redis confirms the subscription (on_sub) */
}

/* Redis's answer to AUTH, the first command of each connection. */
static void on_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
    relay_redis_t *r = privdata;
    redisReply *rep = reply;
    if (!rep || r->closing) return; /* NULL: the context is going away */
    if (rep->type == REDIS_REPLY_ERROR) {
        note_refused(r, rep->str && rep->str[0] ? rep->str : "an error");
        /* Ends after the replies under way (the subscriber's SUBSCRIBE gets NOAUTH): then
         * on_disconnect, and the retry with backoff. */
        redisAsyncDisconnect(ac);
        return;
    }
    if (ac == r->pub) {
        r->pub_up = 1;
        note_maybe_up(r);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    relay_redis_t *r = ac->data;
    (void)status; /* hiredis frees the context after this call */
    forget(r, ac);
    note_down(r, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void deliver(relay_redis_t *r, const uint8_t *msg, size_t n)
{
    uint64_t inst, conn;
    uint8_t id;
    uint32_t hash;
    const uint8_t *content;
    size_t len;
    if (relay_redis_decode(msg, n, &inst, &conn, &id, &hash, &content, &len) != 0) {
        r->stats.bad_messages++;
        if (!r->bad_logged) {
            r->bad_logged = 1;
            rlog(r, RELAY_REDIS_LOG_WARN,
                 "ignoring a malformed message of %zu bytes on %s (not from a pkmcom relay of this "
                 "version?); further ones are only counted",
                 n, r->where);
        }
        return;
    }
    if (inst == r->instance) {
        r->stats.skipped_own++;
        return;
    }
    r->stats.received++;
    r->on_message(r->ctx, inst, conn, id, hash, content, len);
}

/* Every reply on the subscriber: the subscription's confirmation, then each message. */
static void on_sub(redisAsyncContext *ac, void *reply, void *privdata)
{
    relay_redis_t *r = privdata;
    redisReply *rep = reply;
    (void)ac;
    if (!rep || r->closing) return; /* NULL: the context is going away */
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = rep->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        r->sub_up = 1;
        note_maybe_up(r);
    } else if (strcmp(kind, "message") == 0 && rep->element[2]->type == REDIS_REPLY_STRING) {
        deliver(r, (const uint8_t *)rep->element[2]->str, rep->element[2]->len);
    }
}

static redisAsyncContext *start_one(relay_redis_t *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->url.host, r->url.port);
    if (!ac) {
        note_down(r, "out of memory");
        return NULL;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof why, "%s", ac->errstr);
        redisAsyncFree(ac);
        note_down(r, why);
        return NULL;
    }
    ac->data = r;
    if (ev_attach(ac, r->loop) != 0) {
        redisAsyncFree(ac);
        note_down(r, "cannot attach to the libuv loop");
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (r->url.password[0]) { /* AUTH before anything else; hiredis sends it once connected */
        /* AUTH USER PASSWORD (a Redis 6 ACL user), or AUTH PASSWORD (the default user) */
        const char *argv[3] = {"AUTH", r->url.user, r->url.password};
        size_t lens[3] = {4, strlen(r->url.user), strlen(r->url.password)};
        int argc = 3;
        if (!r->url.user[0]) {
            argv[1] = argv[2];
            lens[1] = lens[2];
            argc = 2;
        }
        if (redisAsyncCommandArgv(ac, on_auth, r, argc, argv, lens) != REDIS_OK) {
            redisAsyncFree(ac);
            note_down(r, "cannot queue AUTH");
            return NULL;
        }
    }
    return ac;
}

/* The attempt under way got no answer in time (a host that drops packets, a server that
 * accepts and says nothing): whatever is not up yet is dropped and retried. */
static void on_attempt_timeout(uv_timer_t *t)
{
    relay_redis_t *r = t->data;
    if (r->closing || r->up) return;
    char why[96];
    snprintf(why, sizeof why, "no answer within %llu ms",
             (unsigned long long)r->connect_timeout_ms);
    note_down(r, why); /* before the frees below, whose callbacks would name a lesser reason */
    redisAsyncContext *p = r->pub_up ? NULL : r->pub, *s = r->sub_up ? NULL : r->sub;
    if (p) {
        r->pub = NULL;
        redisAsyncFree(p);
    }
    if (s) {
        r->sub = NULL;
        redisAsyncFree(s);
    }
    schedule_retry(r);
}

static void connect_missing(relay_redis_t *r)
{
    if (r->closing) return;
    if (!r->pub || !r->sub) {
        r->stats.attempts++;
        uv_timer_start(&r->attempt, on_attempt_timeout, r->connect_timeout_ms, 0);
    }
    if (!r->pub) r->pub = start_one(r);
    if (!r->sub) {
        r->sub = start_one(r);
        if (r->sub && redisAsyncCommand(r->sub, on_sub, r, "SUBSCRIBE %b", r->url.channel,
                                        strlen(r->url.channel)) != REDIS_OK) {
            redisAsyncContext *ac = r->sub;
            r->sub = NULL;
            redisAsyncFree(ac);
            note_down(r, "cannot queue SUBSCRIBE");
        }
    }
}

/* ---- API ------------------------------------------------------------------------------------ */

/* On the loop: publishes what other threads posted. */
static void on_posts(uv_async_t *a)
{
    relay_redis_drain(a->data);
}

void relay_redis_drain(relay_redis_t *r)
{
    uv_mutex_lock(&r->mu);
    post_t *p = r->posts;
    r->posts = r->posts_tail = NULL;
    r->nposts = 0;
    uv_mutex_unlock(&r->mu);
    while (p) {
        post_t *next = p->next;
        if (!r->closing)
            relay_redis_publish(r, p->conn_id, p->id, p->hash, p->content, p->len);
        else
            r->stats.dropped++;
        free(p);
        p = next;
    }
}

int relay_redis_post(relay_redis_t *r, uint64_t conn_id, uint8_t id, uint32_t hash,
                     const uint8_t *content, size_t len)
{
    if (len > RELAY_REDIS_MAX_CONTENT || (len && !content)) {
        atomic_fetch_add(&r->post_dropped, 1);
        return -1;
    }
    post_t *p = malloc(sizeof *p + len);
    if (!p) {
        atomic_fetch_add(&r->post_dropped, 1);
        return -1;
    }
    p->next = NULL;
    p->conn_id = conn_id;
    p->id = id;
    p->hash = hash;
    p->len = len;
    if (len) memcpy(p->content, content, len);
    uv_mutex_lock(&r->mu);
    if (r->nposts >= RELAY_REDIS_POST_QUEUE_MAX) {
        uv_mutex_unlock(&r->mu);
        free(p);
        atomic_fetch_add(&r->post_dropped, 1);
        return 1;
    }
    if (r->posts_tail)
        r->posts_tail->next = p;
    else
        r->posts = p;
    r->posts_tail = p;
    r->nposts++;
    uv_mutex_unlock(&r->mu);
    uv_async_send(&r->async);
    return 0;
}

static relay_redis_t *new_fail(char **err, const char *msg)
{
    if (err) *err = strdup(msg);
    return NULL;
}

/* Frees a relay that has no handles yet (relay_redis_new's failures), wiping it. */
static relay_redis_t *new_fail_free(relay_redis_t *r, char **err, const char *msg)
{
    OPENSSL_cleanse(r, sizeof *r);
    free(r);
    return new_fail(err, msg);
}

relay_redis_t *relay_redis_new(uv_loop_t *loop, const char *url, const char *password,
                               relay_redis_message_fn on_message, void *ctx, char **err)
{
    if (err) *err = NULL;
    if (!loop || !on_message) return new_fail(err, "relay_redis_new: no loop or no callback");
    char why[768];
    relay_redis_t *r = calloc(1, sizeof *r);
    if (!r) return new_fail(err, "out of memory");
    relay_redis_url_t *u = &r->url; /* parsed in place: no copy of the password elsewhere */
    if (relay_redis_parse_url(url, u, why, sizeof why) != 0) return new_fail_free(r, err, why);
    if (password && *password) {
        if (u->password[0])
            return new_fail_free(r, err,
                                 "a password both in the Redis URL and given apart "
                                 "(--redis-password-file): give one");
        size_t n = strlen(password);
        if (n > RELAY_REDIS_PASSWORD_MAX) {
            snprintf(why, sizeof why, "the Redis password is longer than %d bytes",
                     RELAY_REDIS_PASSWORD_MAX);
            return new_fail_free(r, err, why);
        }
        memcpy(u->password, password, n + 1);
    }
    if (u->user[0] && !u->password[0])
        return new_fail_free(r, err,
                             "the Redis URL names a user (USER@HOST) but there is no password: "
                             "give redis://USER:PASSWORD@HOST or --redis-password-file (a "
                             "password alone: redis://:PASSWORD@HOST)");
    if (RAND_bytes((unsigned char *)&r->instance, sizeof r->instance) != 1)
        return new_fail_free(r, err, "no randomness for the relay's instance id");
    r->loop = loop;
    char user[RELAY_REDIS_USER_MAX + 2] = ""; /* "user@", printable (a log line) */
    if (u->user[0]) {
        size_t k = 0;
        for (; u->user[k]; k++)
            user[k] = u->user[k] > ' ' && u->user[k] < 127 ? u->user[k] : '?';
        user[k] = '@';
        user[k + 1] = 0;
    }
    const char *br = strchr(u->host, ':') ? "[" : "", *ket = *br ? "]" : "";
    snprintf(r->where, sizeof r->where, "redis://%s%s%s%s:%d/%s", user, br, u->host, ket, u->port,
             u->channel);
    r->on_message = on_message;
    r->ctx = ctx;
    r->backoff_ms = RELAY_REDIS_BACKOFF_MIN_MS;
    r->connect_timeout_ms = RELAY_REDIS_CONNECT_TIMEOUT_MS;
    if (uv_mutex_init(&r->mu) != 0) return new_fail_free(r, err, "cannot make a mutex");
    uv_timer_init(loop, &r->retry);
    r->retry.data = r;
    uv_timer_init(loop, &r->attempt);
    r->attempt.data = r;
    uv_async_init(loop, &r->async, on_posts);
    r->async.data = r;
    r->open_handles = 3;
    connect_missing(r);
    return r;
}

void relay_redis_set_log(relay_redis_t *r, relay_redis_log_fn fn)
{
    r->on_log = fn;
}

void relay_redis_set_connect_timeout(relay_redis_t *r, uint64_t ms)
{
    r->connect_timeout_ms = ms ? ms : RELAY_REDIS_CONNECT_TIMEOUT_MS;
    if (uv_is_active((uv_handle_t *)&r->attempt))
        uv_timer_start(&r->attempt, on_attempt_timeout, r->connect_timeout_ms, 0);
}

int relay_redis_publish(relay_redis_t *r, uint64_t conn_id, uint8_t id, uint32_t hash,
                        const uint8_t *content, size_t len)
{
    if (len > RELAY_REDIS_MAX_CONTENT || (len && !content)) {
        r->stats.dropped++;
        return -1;
    }
    if (!r->up || !r->pub) {
        r->stats.dropped++;
        return 1;
    }
    size_t need = RELAY_REDIS_HEADER_SIZE + len;
    if (need > r->bufcap) {
        uint8_t *b = realloc(r->buf, need);
        if (!b) {
            r->stats.dropped++;
            return -1;
        }
        r->buf = b;
        r->bufcap = need;
    }
    size_t n = relay_redis_encode(r->buf, r->bufcap, r->instance, conn_id, id, hash, content, len);
    const char *argv[3] = {"PUBLISH", r->url.channel, (const char *)r->buf};
    size_t lens[3] = {7, strlen(r->url.channel), n};
    if (redisAsyncCommandArgv(r->pub, NULL, NULL, 3, argv, lens) != REDIS_OK) {
        r->stats.dropped++;
        return 1;
    }
    r->stats.published++;
    return 0;
}

void relay_redis_get_stats(const relay_redis_t *r, relay_redis_stats_t *out)
{
    *out = r->stats;
    out->connected = r->up;
    out->dropped += atomic_load(&((relay_redis_t *)r)->post_dropped);
}

uint64_t relay_redis_instance_id(const relay_redis_t *r)
{
    return r->instance;
}

static void free_after_close(uv_handle_t *h)
{
    relay_redis_t *r = h->data;
    if (--r->open_handles > 0) return;
    for (post_t *p = r->posts, *next; p; p = next) {
        next = p->next;
        free(p);
    }
    uv_mutex_destroy(&r->mu);
    free(r->buf);
    OPENSSL_cleanse(r, sizeof *r); /* the password in r->url above all */
    free(r);
}

void relay_redis_free(relay_redis_t *r)
{
    if (!r) return;
    r->closing = 1;
    redisAsyncContext *p = r->pub, *s = r->sub;
    r->pub = r->sub = NULL;
    r->pub_up = r->sub_up = 0;
    if (p) redisAsyncFree(p);
    if (s) redisAsyncFree(s);
    uv_close((uv_handle_t *)&r->retry, free_after_close);
    uv_close((uv_handle_t *)&r->attempt, free_after_close);
    uv_close((uv_handle_t *)&r->async, free_after_close);
}
