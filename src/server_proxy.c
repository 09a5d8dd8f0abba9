/* SPDX-License-Identifier: MIT */
/* A server connection's CS_PROXY state, before its handshake: reading the PROXY protocol header
 * of a trusted proxy, health checks, and the check that nobody else sends one. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>
#include "pkmcom/server.h"
#include "internal.h"
#include "server_internal.h"

/* One line about a PROXY header refused from `src`, at most once per source and log interval
 * (the limits' refusal log limiter). */
void pkm__sproxy_log(pkm_server_conn_t *c, const char *why)
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
void pkm__sproxy_refuse(pkm_server_conn_t *c, const char *why)
{
    st_add(&c->loop->st.proxy_refused, 1);
    pkm__sproxy_log(c, why);
    pkm__sconn_do_close(c, PKM_EPROTO, NULL);
}

/* 1 when the first n bytes of a stream are (a prefix of) a PROXY header's signature. (A PkmCom
 * client's first bytes are its ClientKey's Size, 0x00 for any packet below 16 MiB.) */
int pkm__sproxy_signature(const uint8_t *p, size_t n)
{
    static const uint8_t v1[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
    static const uint8_t v2[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    if (n == 0) return 0;
    return memcmp(p, v1, n < sizeof v1 ? n : sizeof v1) == 0 ||
           memcmp(p, v2, n < sizeof v2 ? n : sizeof v2) == 0;
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
        pkm__sconn_set_peer(c, src);
        if (pkm__sconn_count(c) < 0) return;
    }
    if (pkm__sconn_start_engine(c) < 0) return;
    if (src && pkm__sconn_admit(c) < 0) return;
    if (nrest) {
        if (!c->admitted && pkm__sconn_admit(c) < 0) return;
        st_add(&c->loop->st.bytes_in, nrest);
        if (pkm_engine_feed(c->eng, rest, nrest) < 0) {
            pkm__sconn_close_engine(c);
            return;
        }
        pkm__sconn_pump(c);
    }
}

/* In CS_PROXY: nread bytes of the header arrived at the accumulator's end, or the stream ended
 * or failed. */
void pkm__sproxy_read(pkm_server_conn_t *c, ssize_t nread)
{
    if (nread == 0) return; /* EAGAIN */
    if (nread < 0) {
        pkm__sconn_close(c, nread == UV_EOF ? PKM_EEOF : uv_to_pkm((int)nread));
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
        pkm__sproxy_refuse(c, why);
        return;
    }
    proxy_done(c, &in);
}
