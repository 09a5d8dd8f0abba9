/* SPDX-License-Identifier: MIT */
/* The PROXY protocol (HAProxy's doc/proxy-protocol.txt, versions 1 and 2) as a sans-IO parser,
 * plus the trusted-proxy address list and the per-source key a listener behind a proxy needs.
 * Internal to the library (the server's listener uses it); not installed. */
#ifndef PKM_PROXY_INTERNAL_H
#define PKM_PROXY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "pkmcom/common.h"

/* Bounds. A version 1 line is at most 107 bytes with its CRLF (the specification's worst case,
 * "PROXY UNKNOWN <ipv6> <ipv6> 65535 65535\r\n"). A version 2 header is 16 bytes plus the
 * length its bytes 15-16 give; lengths above PKM__PROXY_V2_MAX_LEN are refused. The
 * specification designs headers to fit in 536 bytes; the cap leaves room for TLVs such as a
 * unique id, an authority and TLS details, and still bounds what a connection may make the
 * receiver hold before it is known to be a proxy. */
#define PKM__PROXY_V1_MAX     107
#define PKM__PROXY_V2_MAX_LEN 2048
#define PKM__PROXY_MAX        (16 + PKM__PROXY_V2_MAX_LEN)
/* The shortest header of either version ("PROXY UNKNOWN\r\n"). */
#define PKM__PROXY_MIN 15

typedef enum pkm__proxy_cmd {
    PKM__PROXY_CMD_LOCAL = 0, /* v2 LOCAL: the proxy's own connection (a health check) */
    PKM__PROXY_CMD_PROXY = 1  /* relayed on behalf of a client (always the case in v1) */
} pkm__proxy_cmd;

typedef enum pkm__proxy_family {
    PKM__PROXY_UNSPEC = 0,  /* v2: no usable address (LOCAL, AF_UNSPEC, UNIX, UDP): use the
                               connection's own endpoints */
    PKM__PROXY_UNKNOWN = 1, /* v1 "UNKNOWN": likewise */
    PKM__PROXY_TCP4 = 2,    /* src and dst are AF_INET */
    PKM__PROXY_TCP6 = 3     /* src and dst are AF_INET6 */
} pkm__proxy_family;

/* Why a header was refused (every refusal returns PKM_EPROTO). */
typedef enum pkm__proxy_reason {
    PKM__PROXY_OK = 0,
    PKM__PROXY_ENOTPROXY, /* the first byte can start neither signature */
    PKM__PROXY_ESIG,      /* a later byte of the "PROXY " or the v2 signature differs */
    PKM__PROXY_EVERSION,  /* v2 version nibble other than 2 */
    PKM__PROXY_ECOMMAND,  /* v2 command other than LOCAL (0) or PROXY (1) */
    PKM__PROXY_EFAMILY,   /* v2 family > 3 or protocol > 2; v1 protocol not TCP4/TCP6/UNKNOWN */
    PKM__PROXY_ELENGTH,   /* v2 length above the cap, or shorter than its address block */
    PKM__PROXY_ETLV,      /* a v2 TLV that runs past the header */
    PKM__PROXY_ECRC,      /* a v2 CRC32C TLV of the wrong size or with the wrong checksum */
    PKM__PROXY_ELINE,     /* v1: no CRLF within 107 bytes, or a lone CR or LF */
    PKM__PROXY_ETOKEN,    /* v1: wrong spacing, missing or extra fields */
    PKM__PROXY_EADDR,     /* v1: an address that is not canonical for its family */
    PKM__PROXY_EPORT      /* v1: a port outside 0..65535 or with a leading zero */
} pkm__proxy_reason;

/* What a header says. src/dst are set (and their ss_family is AF_INET or AF_INET6) only for
 * TCP4 and TCP6; otherwise they are zero (AF_UNSPEC) and the connection's real endpoints
 * apply. */
typedef struct pkm__proxy_info {
    int version; /* 1 or 2 */
    pkm__proxy_cmd command;
    pkm__proxy_family family;
    struct sockaddr_storage src, dst; /* ports in network order inside, as the kernel gives */
    size_t header_len;                /* bytes the header occupies at the start of the stream */
    pkm__proxy_reason reason;         /* when the call returns PKM_EPROTO */
} pkm__proxy_info;

/* Parses a header at the start of p[0..len), the bytes received so far (call again with more
 * bytes appended; the parse is cheap and keeps no state). Returns:
 *  - the header's length (> 0) with *out filled: the bytes after it belong to the application;
 *  - PKM_EAGAIN when p is a proper prefix of a header: *need (when not NULL) receives how many
 *    more bytes are certainly part of the header (>= 1), so a reader may read exactly that many
 *    without taking bytes past it; len + *need never exceeds the header's bound;
 *  - PKM_EPROTO when the bytes are not a valid header, out->reason says why. A first byte that
 *    is neither 'P' nor '\r' fails at once (PKM__PROXY_ENOTPROXY), and every prefix is checked
 *    as far as it goes, so a non-proxy peer is refused on its first bytes.
 * out is always written (zeroed first). */
int pkm__proxy_parse(const uint8_t *p, size_t len, pkm__proxy_info *out, size_t *need);

/* The address that stands for the client: the header's source for TCP4/TCP6, else (LOCAL,
 * UNSPEC, UNKNOWN) the connection's own peer, as the specification says. */
const struct sockaddr *pkm__proxy_source(const pkm__proxy_info *in, const struct sockaddr *peer);

/* An accumulator for a listener that gets bytes in chunks it does not choose (libuv): holds the
 * header's bytes until it is complete. Zero it (or pkm__proxy_acc_init) per connection. */
typedef struct pkm__proxy_acc {
    size_t len;
    uint8_t buf[PKM__PROXY_MAX];
} pkm__proxy_acc;

static inline void pkm__proxy_acc_init(pkm__proxy_acc *a)
{
    a->len = 0;
}

/* Takes the next n bytes of the stream. Returns what pkm__proxy_parse does on the bytes seen so
 * far; when the header completes (> 0), *used receives how many of these n bytes were part of
 * it: p[*used..n) are the application's first bytes. On PKM_EAGAIN every byte was taken
 * (*used = n). */
int pkm__proxy_acc_feed(pkm__proxy_acc *a, const uint8_t *p, size_t n, pkm__proxy_info *out,
                        size_t *used);

/* A sentence for a reason (static storage). */
const char *pkm__proxy_reason_str(pkm__proxy_reason r);

/* CRC32C (Castagnoli, RFC 4960 appendix B) as the v2 PP2_TYPE_CRC32C TLV uses it. */
uint32_t pkm__crc32c(uint32_t crc, const uint8_t *p, size_t n);

/* ---- which peers may send a header: a list of CIDR blocks ---- */

typedef struct pkm__cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned bits;
    uint8_t addr[16]; /* network order; host bits zero */
} pkm__cidr;

typedef struct pkm__cidr_list {
    pkm__cidr *v; /* owned: pkm__cidr_list_free */
    size_t n;
} pkm__cidr_list;

/* Parses a comma-separated list such as "127.0.0.1/32, ::1, 10.0.0.0/8" (spaces around entries
 * are allowed; an address without /bits is one host). Refused with PKM_EINVAL: an empty entry,
 * a bad address, bits beyond 32/128 or with a leading zero, and set host bits ("10.0.0.1/8":
 * most likely a typo in a list that decides who may forge source addresses). An empty string
 * gives an empty list (no one trusted). On success *out owns its array; on failure it is
 * empty. Returns 0, PKM_EINVAL or PKM_ENOMEM. */
int pkm__cidr_list_parse(const char *s, pkm__cidr_list *out);
void pkm__cidr_list_free(pkm__cidr_list *l);

/* 1 when the address (AF_INET or AF_INET6; an IPv4-mapped IPv6 address counts as its IPv4
 * address, as a dual-stack listener reports IPv4 peers) lies in one of the blocks, else 0
 * (also for NULL and other families). */
int pkm__cidr_list_match(const pkm__cidr_list *l, const struct sockaddr *sa);

/* ---- a key per source for per-source limits ---- */

/* One source: an IPv4 address, or an IPv6 /64 (one customer's network: an IPv6 host gets a
 * whole /64 and can pick any address in it). IPv4-mapped IPv6 addresses count as IPv4. Compare
 * keys with memcmp (every byte is set). */
typedef struct pkm__source_key {
    uint8_t family; /* 4, 6, or 0 for anything else (all such peers share one key) */
    uint8_t b[8];   /* IPv4: the 4 address bytes then zeros; IPv6: the first 8 bytes */
} pkm__source_key;

void pkm__source_key_of(const struct sockaddr *sa, pkm__source_key *k);
/* Writes "203.0.113.7" or "2001:db8:1:2::/64" (or "-"), NUL-terminated; buf of at least
 * PKM__SOURCE_KEY_STRLEN bytes. Returns buf. */
#define PKM__SOURCE_KEY_STRLEN 48
char *pkm__source_key_str(const pkm__source_key *k, char *buf, size_t size);

#endif
