/* SPDX-License-Identifier: MIT */
/* Sockets in one place (src/net.c): resolving, binding and listening, starting a connect, the
 * bound port and a peer's address as text, for the blocking API (conn.c) and the server. Not
 * installed; POSIX sockets only, no libuv, no waiting (the callers wait their own way).
 *
 * A NULL host means the same everywhere in the library (pkm_listen, pkm_server_new): every
 * interface, on the IPv6 wildcard with IPV6_V6ONLY off (dual-stack: IPv4 peers too, reported as
 * IPv4 addresses) when the system has IPv6, else on the IPv4 wildcard 0.0.0.0. */
#ifndef PKM_NET_INTERNAL_H
#define PKM_NET_INTERNAL_H

#include <stddef.h>
#include <netdb.h>
#include <sys/socket.h>

/* Room for pkm__net_addr_str(): "[" + numeric IPv6 with scope + "]:" + port + NUL. */
#define PKM__NET_ADDR_SIZE 96

/* getaddrinfo for a TCP host and numeric port; passive: for binding (NULL host = the wildcards).
 * Returns 0 with *res (freeaddrinfo it), or PKM_ERESOLVE / PKM_ENOMEM with the sentence
 * "cannot resolve HOST: why" in what. */
int pkm__net_resolve(const char *host, int port, int passive, struct addrinfo **res, char *what,
                     size_t what_n);

/* Resolves host (see NULL above), binds a non-blocking, close-on-exec socket with SO_REUSEADDR
 * to the first address that accepts it, and listens with `backlog`. Returns the socket, or
 * PKM_ERESOLVE / PKM_ENOMEM / PKM_EIO with the sentence in what ("cannot listen on HOST:PORT:
 * why"). */
int pkm__net_listen(const char *host, int port, int backlog, char *what, size_t what_n);

/* Starts a non-blocking connect to one address: *fd receives a non-blocking, close-on-exec
 * socket, the caller's to close, or -1 when none could be made (the errno value is returned).
 * Returns 0 when connected at once, EINPROGRESS (wait for POLLOUT, then ask
 * pkm__net_connect_result) or the errno value of the failure. */
int pkm__net_connect_start(const struct addrinfo *ai, int *fd);

/* The outcome of a connect that was in progress once fd is writable: 0 or an errno value. */
int pkm__net_connect_result(int fd);

/* The local port fd is bound to, or 0 when unknown. */
int pkm__net_bound_port(int fd);

/* A numeric "ADDR:PORT" ("[ADDR]:PORT" for IPv6) for an IPv4 or IPv6 socket address; an IPv4
 * address mapped into IPv6 (a dual-stack listener's IPv4 peer) is written as IPv4. "" for other
 * families. Returns the length, or -1 (out is then "") when the address cannot be written. */
int pkm__net_addr_str(const struct sockaddr *sa, socklen_t len, char *out, size_t n);

/* pkm__net_addr_str of fd's peer ("" when it has none, e.g. AF_UNIX). */
int pkm__net_peer_str(int fd, char *out, size_t n);

#endif
