/* SPDX-License-Identifier: MIT */
/* Sockets in one place (see net_internal.h): resolve, bind and listen, start a connect, the bound
 * port, a peer's address as text. Used by the blocking API (conn.c) and the server (server.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "net_internal.h"

static void errno_text(int errnum, char *out, size_t n)
{
    if (strerror_r(errnum, out, n) != 0) snprintf(out, n, "error %d", errnum);
}

int pkm__net_resolve(const char *host, int port, int passive, struct addrinfo **res, char *what,
                     size_t what_n)
{
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    char portstr[8], text[128];
    snprintf(portstr, sizeof portstr, "%d", port);
    int g = getaddrinfo(host, portstr, &hints, res);
    if (g == 0) return 0;
    if (g == EAI_SYSTEM)
        errno_text(errno, text, sizeof text);
    else
        snprintf(text, sizeof text, "%s", gai_strerror(g));
    snprintf(what, what_n, "cannot resolve %s: %s", host ? host : "(any)", text);
    return g == EAI_MEMORY ? PKM_ENOMEM : PKM_ERESOLVE;
}

/* Binds and listens on one address; returns the socket or -1 with errno set. */
static int bind_one(const struct addrinfo *ai, int dual_stack, int backlog)
{
    int s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (s < 0) return -1;
    int one = 1, zero = 0;
    if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
        (!dual_stack || ai->ai_family != AF_INET6 ||
         setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero) == 0) &&
        bind(s, ai->ai_addr, ai->ai_addrlen) == 0 && listen(s, backlog) == 0)
        return s;
    int errnum = errno;
    close(s);
    errno = errnum;
    return -1;
}

int pkm__net_listen(const char *host, int port, int backlog, char *what, size_t what_n)
{
    struct addrinfo *res = NULL;
    PKM_GUARD(pkm__net_resolve(host, port, 1, &res, what, what_n));
    int fd = -1, last = EADDRNOTAVAIL;
    /* No host: the IPv6 wildcard first (dual-stack, so it takes IPv4 too), then IPv4. */
    for (int pass = host ? 1 : 0; pass < 2 && fd < 0; pass++) {
        for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
            if (pass == 0 && ai->ai_family != AF_INET6) continue;
            fd = bind_one(ai, !host, backlog);
            if (fd < 0) last = errno;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) return fd;
    char text[128];
    errno_text(last, text, sizeof text);
    snprintf(what, what_n, "cannot listen on %s:%d: %s", host ? host : "(any)", port, text);
    return PKM_EIO;
}

int pkm__net_connect_start(const struct addrinfo *ai, int *fd)
{
    *fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (*fd < 0) return errno;
    int r = connect(*fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : errno;
    return r == EINTR ? EINPROGRESS : r; /* interrupted: the connect goes on in the background */
}

int pkm__net_connect_result(int fd)
{
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) return errno;
    return soerr;
}

int pkm__net_bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) return 0;
    if (ss.ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)&ss)->sin6_port);
    if (ss.ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

int pkm__net_addr_str(const struct sockaddr *sa, socklen_t len, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    int w = -1;
    if (n) out[0] = '\0';
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip))
            w = snprintf(out, n, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        unsigned port = ntohs(a->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
            if (inet_ntop(AF_INET, a->sin6_addr.s6_addr + 12, ip, sizeof ip))
                w = snprintf(out, n, "%s:%u", ip, port);
        } else {
            char host[NI_MAXHOST];
            if (getnameinfo(sa, len, host, sizeof host, NULL, 0, NI_NUMERICHOST) == 0)
                w = snprintf(out, n, "[%s]:%u", host, port);
        }
    } else {
        return 0;
    }
    if (w < 0 || (size_t)w >= n) {
        if (n) out[0] = '\0';
        return -1;
    }
    return w;
}

int pkm__net_peer_str(int fd, char *out, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (n) out[0] = '\0';
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) return 0;
    return pkm__net_addr_str((const struct sockaddr *)&ss, sl, out, n);
}
