/* SPDX-License-Identifier: MIT */
/* PROXY protocol v1/v2 header parser (sans-IO, every read through src/buf.h), the trusted-proxy
 * CIDR list and the per-source key (src/proxy_internal.h says what each call promises). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include "buf.h"
#include "internal.h"
#include "proxy_internal.h"

/* ---- version 2 ---- */

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const uint8_t v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};

#define PP2_TYPE_CRC32C 0x03

uint32_t pkm__crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static int fail(pkm__proxy_info *out, pkm__proxy_reason why)
{
    out->reason = why;
    return PKM_EPROTO;
}

static int again(size_t *need, size_t n)
{
    if (need) *need = n;
    return PKM_EAGAIN;
}

/* The source and destination addresses (ports in host order), IPv4 or IPv6. */
static void set_addrs(pkm__proxy_info *out, int v6, const uint8_t *sa, const uint8_t *da,
                      unsigned sp, unsigned dp)
{
    if (!v6) {
        struct sockaddr_in *s = (struct sockaddr_in *)&out->src;
        struct sockaddr_in *d = (struct sockaddr_in *)&out->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, sa, 4);
        memcpy(&d->sin_addr, da, 4);
        s->sin_port = htons((uint16_t)sp);
        d->sin_port = htons((uint16_t)dp);
        out->family = PKM__PROXY_TCP4;
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
        struct sockaddr_in6 *d = (struct sockaddr_in6 *)&out->dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, sa, 16);
        memcpy(&d->sin6_addr, da, 16);
        s->sin6_port = htons((uint16_t)sp);
        d->sin6_port = htons((uint16_t)dp);
        out->family = PKM__PROXY_TCP6;
    }
}

/* The address block's size for a v2 family byte, or -1 when the specification gives none (a
 * valid nibble pair outside its list of expected bytes: the address bytes cannot be located). */
static int v2_addr_len(uint8_t fam)
{
    switch (fam) {
    case 0x00: return 0;
    case 0x11:
    case 0x12: return 12;
    case 0x21:
    case 0x22: return 36;
    case 0x31:
    case 0x32: return 216;
    default: return -1;
    }
}

static int v2_family_valid(uint8_t fam)
{
    return (fam >> 4) <= 3 && (fam & 0x0F) <= 2;
}

/* Walks the TLVs of header p[0..total) from offset `at`: each must fit (3-byte type and length,
 * then its value); a CRC32C TLV must be 4 bytes and match the header's checksum computed with
 * its own value as zeros. */
static int v2_tlvs(const uint8_t *p, size_t total, size_t at, pkm__proxy_info *out)
{
    pkm_reader r;
    pkm__reader_init(&r, p, total);
    if (pkm__read_skip(&r, at) < 0) return fail(out, PKM__PROXY_ELENGTH);
    while (pkm__reader_left(&r) > 0) {
        uint8_t type;
        uint16_t vlen;
        pkm_reader value;
        if (pkm__read_u8(&r, &type) < 0 || pkm__read_u16(&r, &vlen) < 0)
            return fail(out, PKM__PROXY_ETLV);
        size_t value_at = r.pos;
        if (pkm__read_sub(&r, &value, vlen) < 0) return fail(out, PKM__PROXY_ETLV);
        if (type == PP2_TYPE_CRC32C) {
            static const uint8_t zero[4] = {0};
            uint32_t want;
            if (vlen != 4 || pkm__read_u32(&value, &want) < 0) return fail(out, PKM__PROXY_ECRC);
            /* The checksum covers the whole header, this value as zeros. */
            uint32_t c = pkm__crc32c(0, p, value_at);
            c = pkm__crc32c(c, zero, 4); /* the running CRC continues */
            c = pkm__crc32c(c, p + value_at + 4, total - value_at - 4);
            if (c != want) return fail(out, PKM__PROXY_ECRC);
        }
    }
    return 0;
}

static int parse_v2(const uint8_t *p, size_t len, pkm__proxy_info *out, size_t *need)
{
    size_t k = len < sizeof v2_sig ? len : sizeof v2_sig;
    if (memcmp(p, v2_sig, k) != 0) return fail(out, PKM__PROXY_ESIG);
    pkm_reader r, body;
    uint8_t ver_cmd, fam;
    uint16_t blen;
    pkm__reader_init(&r, p, len);
    /* Each fixed byte is checked as soon as it is here. */
    int have = pkm__read_skip(&r, sizeof v2_sig) == 0 && pkm__read_u8(&r, &ver_cmd) == 0;
    if (have && (ver_cmd >> 4) != 2) return fail(out, PKM__PROXY_EVERSION);
    if (have && (ver_cmd & 0x0F) > 1) return fail(out, PKM__PROXY_ECOMMAND);
    int is_proxy = have && (ver_cmd & 0x0F) == PKM__PROXY_CMD_PROXY;
    have = have && pkm__read_u8(&r, &fam) == 0;
    if (have && is_proxy && !v2_family_valid(fam)) return fail(out, PKM__PROXY_EFAMILY);
    if (!have || pkm__read_u16(&r, &blen) < 0) return again(need, 16 - len); /* len < 16 */
    if (blen > PKM__PROXY_V2_MAX_LEN) return fail(out, PKM__PROXY_ELENGTH);
    int alen = v2_addr_len(fam);
    if (is_proxy && alen > 0 && blen < (unsigned)alen) return fail(out, PKM__PROXY_ELENGTH);
    size_t total = 16 + (size_t)blen;
    if (pkm__read_sub(&r, &body, blen) < 0) return again(need, total - len);

    out->version = 2;
    out->header_len = total;
    out->command = is_proxy ? PKM__PROXY_CMD_PROXY : PKM__PROXY_CMD_LOCAL;
    out->family = PKM__PROXY_UNSPEC;
    /* LOCAL ignores the family; addresses it gives anyway are skipped when their size is known
     * and fit, and so is everything when it is not. */
    if (alen < 0 || (size_t)alen > blen) return (int)total;
    if (is_proxy && (fam == 0x11 || fam == 0x21)) {
        const uint8_t *sa, *da;
        uint16_t sp, dp;
        size_t asz = fam == 0x11 ? 4 : 16;
        if (pkm__read_ptr(&body, &sa, asz) < 0 || pkm__read_ptr(&body, &da, asz) < 0 ||
            pkm__read_u16(&body, &sp) < 0 || pkm__read_u16(&body, &dp) < 0)
            return PKM_EINTERNAL; /* blen >= alen was checked */
        set_addrs(out, fam == 0x21, sa, da, sp, dp);
    }
    int rc = v2_tlvs(p, total, 16 + (size_t)alen, out);
    if (rc < 0) {
        memset(&out->src, 0, sizeof out->src);
        memset(&out->dst, 0, sizeof out->dst);
        out->family = PKM__PROXY_UNSPEC;
        out->header_len = 0;
        return rc;
    }
    return (int)total;
}

/* ---- version 1 ---- */

static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* A decimal number of 1..maxdig digits, without a leading zero (except "0" itself), at most max.
 * Returns 0 or -1. */
static int parse_dec(const uint8_t *s, size_t n, size_t maxdig, unsigned max, unsigned *v)
{
    if (n == 0 || n > maxdig || (n > 1 && s[0] == '0')) return -1;
    unsigned x = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i])) return -1;
        x = x * 10 + (unsigned)(s[i] - '0');
    }
    if (x > max) return -1;
    *v = x;
    return 0;
}

/* Dotted decimal: exactly four numbers 0..255, no leading zeros. Returns 0 or -1. */
static int parse_ipv4(const uint8_t *s, size_t n, uint8_t out[4])
{
    pkm_reader r;
    pkm__reader_init(&r, s, n);
    for (int part = 0; part < 4; part++) {
        const uint8_t *num;
        size_t len;
        unsigned v;
        pkm__read_until(&r, '.', &num, &len);
        if (parse_dec(num, len, 3, 255, &v) < 0) return -1;
        out[part] = (uint8_t)v;
        uint8_t dot;
        if (part < 3 && (pkm__read_u8(&r, &dot) < 0 || dot != '.')) return -1;
    }
    return pkm__reader_left(&r) == 0 ? 0 : -1;
}

/* IPv6 text (hex groups, one "::", optionally a dotted IPv4 tail) through inet_pton, after
 * checking the characters and the length so that nothing unexpected reaches it. */
static int parse_ipv6(const uint8_t *s, size_t n, uint8_t out[16])
{
    char tmp[INET6_ADDRSTRLEN];
    if (n < 2 || n >= sizeof tmp) return -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (!(is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
              c == '.'))
            return -1;
    }
    memcpy(tmp, s, n);
    tmp[n] = 0;
    return inet_pton(AF_INET6, tmp, out) == 1 ? 0 : -1;
}

/* The next space-separated field: at least one byte, ending at a space (consumed) or at the end
 * of the line. *last says which. */
static int v1_field(pkm_reader *r, const uint8_t **tok, size_t *n, int *last)
{
    pkm__read_until(r, ' ', tok, n);
    uint8_t sp;
    *last = pkm__read_u8(r, &sp) < 0;
    return *n > 0 ? 0 : -1;
}

static int v1_protocol_prefix_ok(const uint8_t *s, size_t n)
{
    static const char *const names[] = {"TCP4 ", "TCP6 ", "UNKNOWN"};
    for (size_t i = 0; i < 3; i++) {
        size_t m = strlen(names[i]);
        if (memcmp(s, names[i], n < m ? n : m) == 0) return 1;
    }
    return 0;
}

static int parse_v1(const uint8_t *p, size_t len, pkm__proxy_info *out, size_t *need)
{
    size_t k = len < sizeof v1_sig ? len : sizeof v1_sig;
    if (memcmp(p, v1_sig, k) != 0) return fail(out, PKM__PROXY_ESIG);
    pkm_reader r; /* the line, as far as it may go */
    pkm__reader_init(&r, p, len < PKM__PROXY_V1_MAX ? len : PKM__PROXY_V1_MAX);
    /* Errors are reported in the order of their position, so that a prefix is refused for the
     * same reason as the whole: first the protocol's letters before the first CR or LF (they
     * already tell a line that cannot be valid), then how the line ends there. */
    size_t eol = 0;
    int found = 0, cr_last = 0;
    if (pkm__read_skip(&r, sizeof v1_sig) == 0) {
        const uint8_t *head;
        size_t hn, at;
        uint8_t cr, lf;
        pkm__read_until(&r, '\r', &head, &hn);
        const uint8_t *lone_lf = hn ? memchr(head, '\n', hn) : NULL;
        size_t letters = lone_lf ? (size_t)(lone_lf - head) : hn;
        if (letters && !v1_protocol_prefix_ok(head, letters)) return fail(out, PKM__PROXY_EFAMILY);
        if (lone_lf) return fail(out, PKM__PROXY_ELINE); /* no CR before it */
        at = r.pos;
        if (pkm__read_u8(&r, &cr) == 0) {
            if (at + 2 > PKM__PROXY_V1_MAX) return fail(out, PKM__PROXY_ELINE);
            if (pkm__read_u8(&r, &lf) < 0)
                cr_last = 1;
            else if (lf != '\n')
                return fail(out, PKM__PROXY_ELINE);
            else {
                eol = at;
                found = 1;
            }
        }
    }
    if (!found) {
        size_t n = cr_last ? 1 : 2;
        if (len < PKM__PROXY_MIN && PKM__PROXY_MIN - len > n) n = PKM__PROXY_MIN - len;
        if (len + n > PKM__PROXY_V1_MAX) return fail(out, PKM__PROXY_ELINE);
        return again(need, n);
    }

    pkm__reader_init(&r, p, eol); /* the line between "PROXY " and the CRLF */
    (void)pkm__read_skip(&r, sizeof v1_sig);
    const uint8_t *proto;
    size_t plen;
    int last;
    if (v1_field(&r, &proto, &plen, &last) < 0) return fail(out, PKM__PROXY_ETOKEN);
    out->version = 1;
    out->command = PKM__PROXY_CMD_PROXY;
    out->header_len = eol + 2;
    if (plen == 7 && memcmp(proto, "UNKNOWN", 7) == 0) {
        out->family = PKM__PROXY_UNKNOWN; /* the rest of the line is ignored */
        return (int)out->header_len;
    }
    int v6 = plen == 4 && memcmp(proto, "TCP6", 4) == 0, rc, bad;
    const uint8_t *f[4];
    size_t fl[4];
    uint8_t sa[16], da[16];
    unsigned sp = 0, dp = 0;
    PKM_ENSURE_GOTO(rc, v6 || (plen == 4 && memcmp(proto, "TCP4", 4) == 0),
                    fail(out, PKM__PROXY_EFAMILY));
    for (int i = 0; i < 4; i++)
        PKM_ENSURE_GOTO(rc, !last && v1_field(&r, &f[i], &fl[i], &last) == 0,
                        fail(out, PKM__PROXY_ETOKEN));
    PKM_ENSURE_GOTO(rc, last, fail(out, PKM__PROXY_ETOKEN)); /* no fifth field */
    bad = v6 ? (parse_ipv6(f[0], fl[0], sa) < 0 || parse_ipv6(f[1], fl[1], da) < 0)
             : (parse_ipv4(f[0], fl[0], sa) < 0 || parse_ipv4(f[1], fl[1], da) < 0);
    PKM_ENSURE_GOTO(rc, !bad, fail(out, PKM__PROXY_EADDR));
    PKM_ENSURE_GOTO(rc,
                    parse_dec(f[2], fl[2], 5, 65535, &sp) == 0 &&
                        parse_dec(f[3], fl[3], 5, 65535, &dp) == 0,
                    fail(out, PKM__PROXY_EPORT));
    set_addrs(out, v6, sa, da, sp, dp);
    return (int)out->header_len;
cleanup:
    out->header_len = 0;
    return rc;
}

int pkm__proxy_parse(const uint8_t *p, size_t len, pkm__proxy_info *out, size_t *need)
{
    memset(out, 0, sizeof *out);
    if (need) *need = 0;
    if (!p) len = 0;
    if (len == 0) return again(need, PKM__PROXY_MIN);
    if (p[0] == 'P') return parse_v1(p, len, out, need);
    if (p[0] == '\r') return parse_v2(p, len, out, need);
    return fail(out, PKM__PROXY_ENOTPROXY);
}

int pkm__proxy_acc_feed(pkm__proxy_acc *a, const uint8_t *p, size_t n, pkm__proxy_info *out,
                        size_t *used)
{
    *used = 0;
    if (!p) n = 0;
    int rc;
    if (a->len == 0 && n > 0) {
        /* The usual case, the whole header in the first read: parse in place. */
        rc = pkm__proxy_parse(p, n, out, NULL);
        if (rc != PKM_EAGAIN) {
            *used = rc > 0 ? (size_t)rc : 0;
            return rc;
        }
    }
    size_t room = sizeof a->buf - a->len;
    size_t take = n < room ? n : room;
    if (take) memcpy(a->buf + a->len, p, take);
    size_t before = a->len;
    a->len += take;
    rc = pkm__proxy_parse(a->buf, a->len, out, NULL);
    if (rc > 0) {
        /* The bytes before this call were a proper prefix, so the header ends in this chunk. */
        if ((size_t)rc <= before) return PKM_EINTERNAL;
        *used = (size_t)rc - before;
    } else if (rc == PKM_EAGAIN) {
        if (take < n) return PKM_EINTERNAL; /* the bounds make a full buffer decide */
        *used = n;
    }
    return rc;
}

const struct sockaddr *pkm__proxy_source(const pkm__proxy_info *in, const struct sockaddr *peer)
{
    if (in->command == PKM__PROXY_CMD_PROXY &&
        (in->family == PKM__PROXY_TCP4 || in->family == PKM__PROXY_TCP6))
        return (const struct sockaddr *)&in->src;
    return peer;
}

const char *pkm__proxy_reason_str(pkm__proxy_reason r)
{
    switch (r) {
    case PKM__PROXY_OK: return "valid PROXY protocol header";
    case PKM__PROXY_ENOTPROXY: return "not a PROXY protocol header";
    case PKM__PROXY_ESIG: return "PROXY protocol signature mismatch";
    case PKM__PROXY_EVERSION: return "PROXY protocol v2: unsupported version";
    case PKM__PROXY_ECOMMAND: return "PROXY protocol v2: unknown command";
    case PKM__PROXY_EFAMILY: return "PROXY protocol: unknown address family or protocol";
    case PKM__PROXY_ELENGTH: return "PROXY protocol v2: bad length";
    case PKM__PROXY_ETLV: return "PROXY protocol v2: a TLV runs past the header";
    case PKM__PROXY_ECRC: return "PROXY protocol v2: CRC32C mismatch";
    case PKM__PROXY_ELINE: return "PROXY protocol v1: line too long or not ended by CRLF";
    case PKM__PROXY_ETOKEN: return "PROXY protocol v1: wrong fields or spacing";
    case PKM__PROXY_EADDR: return "PROXY protocol v1: bad address";
    case PKM__PROXY_EPORT: return "PROXY protocol v1: bad port";
    }
    return "PROXY protocol: unknown reason";
}

/* ---- trusted proxies ---- */

/* The address bytes of sa, IPv4-mapped IPv6 as IPv4: returns 4, 16, or 0 (not IP). */
static int addr_bytes(const struct sockaddr *sa, uint8_t out[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (!sa) return 0;
    if (sa->sa_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 4;
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
        if (memcmp(a, mapped, 12) == 0) {
            memcpy(out, a + 12, 4);
            return 4;
        }
        memcpy(out, a, 16);
        return 16;
    }
    return 0;
}

static int prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    size_t whole = bits / 8;
    if (memcmp(a, b, whole) != 0) return 0;
    unsigned rest = bits % 8;
    if (!rest) return 1;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

static int host_bits_zero(const uint8_t *a, size_t n, unsigned bits)
{
    for (size_t i = 0; i < n; i++) {
        unsigned lo = (unsigned)i * 8; /* bits [lo, lo+8) of the address */
        uint8_t keep = bits >= lo + 8 ? 0xFF
                       : bits <= lo   ? 0
                                      : (uint8_t)(0xFF << (8 - (bits - lo)));
        if (a[i] & (uint8_t)~keep) return 0;
    }
    return 1;
}

static int parse_cidr(const uint8_t *s, size_t n, pkm__cidr *c)
{
    pkm_reader r;
    const uint8_t *addr, *prefix;
    size_t an;
    uint8_t slash;
    pkm__reader_init(&r, s, n);
    pkm__read_until(&r, '/', &addr, &an);
    int v6 = an && memchr(addr, ':', an) != NULL;
    memset(c, 0, sizeof *c);
    if (v6 ? parse_ipv6(addr, an, c->addr) < 0 : parse_ipv4(addr, an, c->addr) < 0)
        return PKM_EINVAL;
    unsigned max = v6 ? 128 : 32, bits = max;
    if (pkm__read_u8(&r, &slash) == 0) { /* "/bits": the rest */
        size_t pn = pkm__reader_left(&r);
        if (pkm__read_ptr(&r, &prefix, pn) < 0 || parse_dec(prefix, pn, 3, max, &bits) < 0)
            return PKM_EINVAL;
    }
    if (!host_bits_zero(c->addr, v6 ? 16 : 4, bits)) return PKM_EINVAL;
    c->family = v6 ? AF_INET6 : AF_INET;
    c->bits = bits;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (v6 && bits >= 96 && memcmp(c->addr, mapped, 12) == 0) {
        /* ::ffff:a.b.c.d/n is the IPv4 block, as peers are matched */
        memmove(c->addr, c->addr + 12, 4);
        memset(c->addr + 4, 0, 12);
        c->family = AF_INET;
        c->bits = bits - 96;
    }
    return 0;
}

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

int pkm__cidr_list_parse(const char *s, pkm__cidr_list *out)
{
    out->v = NULL;
    out->n = 0;
    if (!s) return PKM_EINVAL;
    size_t len = strlen(s), count = 1, all_blank = 1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ',') count++;
        if (!is_blank(s[i])) all_blank = 0;
    }
    if (all_blank) return 0;
    pkm__cidr *v = pkm__calloc(count, sizeof *v);
    PKM_ENSURE(v != NULL, PKM_ENOMEM);
    pkm_reader r;
    size_t n = 0;
    int rc;
    uint8_t comma;
    pkm__reader_init(&r, (const uint8_t *)s, len);
    do { /* each comma-separated entry, blanks around it trimmed */
        const uint8_t *e;
        size_t m;
        pkm__read_until(&r, ',', &e, &m);
        while (m > 0 && is_blank((char)e[m - 1]))
            m--;
        while (m > 0 && is_blank((char)e[0])) {
            e++;
            m--;
        }
        PKM_ENSURE_GOTO(rc, m > 0 && parse_cidr(e, m, &v[n]) == 0, PKM_EINVAL);
        n++;
    } while (pkm__read_u8(&r, &comma) == 0);
    out->v = v;
    out->n = n;
    return 0;
cleanup:
    pkm__free(v);
    return rc;
}

void pkm__cidr_list_free(pkm__cidr_list *l)
{
    if (!l) return;
    pkm__free(l->v);
    l->v = NULL;
    l->n = 0;
}

int pkm__cidr_list_match(const pkm__cidr_list *l, const struct sockaddr *sa)
{
    uint8_t a[16];
    int n = addr_bytes(sa, a);
    if (!l || n == 0) return 0;
    int fam = n == 4 ? AF_INET : AF_INET6;
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].family == fam && prefix_equal(a, l->v[i].addr, l->v[i].bits)) return 1;
    return 0;
}

/* ---- per-source keys ---- */

void pkm__source_key_of(const struct sockaddr *sa, pkm__source_key *k)
{
    uint8_t a[16];
    memset(k, 0, sizeof *k);
    int n = addr_bytes(sa, a);
    if (n == 4) {
        k->family = 4;
        memcpy(k->b, a, 4);
    } else if (n == 16) {
        k->family = 6;
        memcpy(k->b, a, 8);
    }
}

char *pkm__source_key_str(const pkm__source_key *k, char *buf, size_t size)
{
    if (!buf || size == 0) return buf;
    char tmp[INET6_ADDRSTRLEN + 4];
    uint8_t a[16] = {0};
    const char *ok = NULL;
    if (k->family == 4) {
        memcpy(a, k->b, 4);
        ok = inet_ntop(AF_INET, a, tmp, sizeof tmp);
    } else if (k->family == 6) {
        memcpy(a, k->b, 8);
        ok = inet_ntop(AF_INET6, a, tmp, INET6_ADDRSTRLEN);
        if (ok) strcat(tmp, "/64");
    }
    if (!ok) {
        tmp[0] = '-';
        tmp[1] = 0;
    }
    size_t m = strlen(tmp);
    if (m >= size) m = size - 1;
    memcpy(buf, tmp, m);
    buf[m] = 0;
    return buf;
}
