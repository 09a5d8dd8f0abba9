/* SPDX-License-Identifier: MIT */
/* Tests of the PROXY protocol parser (src/proxy.c): headers captured from HAProxy 2.6, fed whole,
 * byte by byte and in chunks; every class of malformed header; CIDR lists and per-source keys. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include "support.h"
#include "proxy_internal.h"

/* ---- headers as HAProxy 2.6.12 (Debian 12) sends them, each followed by the client's first
 * bytes ("helloN"). Captured with a local listener behind `mode tcp` frontends on 127.0.0.1,
 * [::1] and a unix socket, servers with send-proxy, send-proxy-v2, send-proxy-v2 with
 * `proxy-v2-options crc32c,unique-id`, and health checks with check-send-proxy. ---- */
typedef struct {
    const char *name;
    const char *hex;
    size_t header_len;
    int version;
    pkm__proxy_cmd command;
    pkm__proxy_family family;
    const char *src, *dst; /* NULL when the family has no addresses */
    unsigned sport, dport;
} capture;

static const capture captures[] = {
    {"v1 TCP4",
     "50524f58592054435034203132372e302e302e31203132372e302e302e31203532353230203236333131"
     "0d0a68656c6c6f31",
     44, 1, PKM__PROXY_CMD_PROXY, PKM__PROXY_TCP4, "127.0.0.1", "127.0.0.1", 52520, 26311},
    {"v1 TCP6", "50524f58592054435036203a3a31203a3a312034313930362032363331310d0a68656c6c6f32", 32,
     1, PKM__PROXY_CMD_PROXY, PKM__PROXY_TCP6, "::1", "::1", 41906, 26311},
    {"v1 UNKNOWN (client on a unix socket)", "50524f585920554e4b4e4f574e0d0a68656c6c6f33", 15, 1,
     PKM__PROXY_CMD_PROXY, PKM__PROXY_UNKNOWN, NULL, NULL, 0, 0},
    {"v1 health check",
     "50524f58592054435034203132372e302e302e31203132372e302e302e31203430323136203236343135"
     "0d0a",
     44, 1, PKM__PROXY_CMD_PROXY, PKM__PROXY_TCP4, "127.0.0.1", "127.0.0.1", 40216, 26415},
    {"v2 PROXY TCP4", "0d0a0d0a000d0a515549540a2111000c7f0000017f000001925e66c868656c6c6f34", 28, 2,
     PKM__PROXY_CMD_PROXY, PKM__PROXY_TCP4, "127.0.0.1", "127.0.0.1", 0x925e, 0x66c8},
    {"v2 PROXY TCP6",
     "0d0a0d0a000d0a515549540a21210024000000000000000000000000000000010000000000000000000000"
     "0000000001c0be66c868656c6c6f35",
     52, 2, PKM__PROXY_CMD_PROXY, PKM__PROXY_TCP6, "::1", "::1", 0xc0be, 0x66c8},
    {"v2 LOCAL (client on a unix socket)", "0d0a0d0a000d0a515549540a2000000068656c6c6f36", 16, 2,
     PKM__PROXY_CMD_LOCAL, PKM__PROXY_UNSPEC, NULL, NULL, 0, 0},
    {"v2 PROXY TCP4 with CRC32C and UNIQUE_ID TLVs",
     "0d0a0d0a000d0a515549540a211100167f0000017f000001af3466c903000441309e4b05000068656c6c"
     "6f37",
     38, 2, PKM__PROXY_CMD_PROXY, PKM__PROXY_TCP4, "127.0.0.1", "127.0.0.1", 0xaf34, 0x66c9},
    {"v2 health check (LOCAL)", "0d0a0d0a000d0a515549540a20000000", 16, 2, PKM__PROXY_CMD_LOCAL,
     PKM__PROXY_UNSPEC, NULL, NULL, 0, 0},
};

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    int n = t_unhex(hex, out, cap);
    assert_true(n >= 0);
    return (size_t)n;
}

static void check_addr(const struct sockaddr_storage *ss, const char *want, unsigned port)
{
    char got[INET6_ADDRSTRLEN];
    if (strchr(want, ':')) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        assert_int_equal(a->sin6_family, AF_INET6);
        assert_non_null(inet_ntop(AF_INET6, &a->sin6_addr, got, sizeof got));
        assert_int_equal(ntohs(a->sin6_port), port);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        assert_int_equal(a->sin_family, AF_INET);
        assert_non_null(inet_ntop(AF_INET, &a->sin_addr, got, sizeof got));
        assert_int_equal(ntohs(a->sin_port), port);
    }
    assert_string_equal(got, want);
}

static void check_info(const capture *c, const pkm__proxy_info *in)
{
    assert_int_equal(in->version, c->version);
    assert_int_equal(in->command, c->command);
    assert_int_equal(in->family, c->family);
    assert_int_equal(in->header_len, c->header_len);
    assert_int_equal(in->reason, PKM__PROXY_OK);
    if (c->src) {
        check_addr(&in->src, c->src, c->sport);
        check_addr(&in->dst, c->dst, c->dport);
    } else {
        assert_int_equal(in->src.ss_family, AF_UNSPEC);
        assert_int_equal(in->dst.ss_family, AF_UNSPEC);
    }
}

static void haproxy_headers_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof captures / sizeof captures[0]; i++) {
        const capture *c = &captures[i];
        uint8_t b[256];
        size_t n = unhex(c->hex, b, sizeof b);
        pkm__proxy_info in;
        size_t need = 99;
        print_message("%s\n", c->name);
        /* with the client's bytes behind it, and alone */
        assert_int_equal(pkm__proxy_parse(b, n, &in, &need), (int)c->header_len);
        check_info(c, &in);
        assert_int_equal(pkm__proxy_parse(b, c->header_len, &in, &need), (int)c->header_len);
        check_info(c, &in);
        if (n > c->header_len) assert_memory_equal(b + c->header_len, "hello", 5);
    }
}

/* Every prefix is "need more" with a hint that never reaches past the header. */
static void every_prefix_needs_more(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof captures / sizeof captures[0]; i++) {
        const capture *c = &captures[i];
        uint8_t b[256];
        unhex(c->hex, b, sizeof b);
        for (size_t k = 0; k < c->header_len; k++) {
            pkm__proxy_info in;
            size_t need = 0;
            assert_int_equal(pkm__proxy_parse(b, k, &in, &need), PKM_EAGAIN);
            assert_true(need >= 1);
            assert_true(k + need <= c->header_len);
        }
        /* reading exactly what the hints say reaches the header's end in few steps */
        size_t have = 0, steps = 0, need = 0;
        pkm__proxy_info in;
        int rc;
        while ((rc = pkm__proxy_parse(b, have, &in, &need)) == PKM_EAGAIN) {
            have += need;
            steps++;
        }
        assert_int_equal(rc, (int)c->header_len);
        assert_int_equal(have, c->header_len);
        assert_true(steps <= (c->version == 2 ? 3 : c->header_len));
    }
}

/* Through the accumulator: one byte at a time, and in chunks of 2..9 bytes. */
static void accumulator_splits_header_and_data(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof captures / sizeof captures[0]; i++) {
        const capture *c = &captures[i];
        uint8_t b[256];
        size_t n = unhex(c->hex, b, sizeof b);
        for (size_t chunk = 1; chunk <= 9; chunk++) {
            pkm__proxy_acc acc;
            pkm__proxy_acc_init(&acc);
            pkm__proxy_info in;
            size_t off = 0, used = 0;
            int rc = PKM_EAGAIN;
            while (rc == PKM_EAGAIN) {
                assert_true(off < n);
                size_t m = n - off < chunk ? n - off : chunk;
                rc = pkm__proxy_acc_feed(&acc, b + off, m, &in, &used);
                if (rc == PKM_EAGAIN) assert_int_equal(used, m);
                off += used;
            }
            assert_int_equal(rc, (int)c->header_len);
            assert_int_equal(off, c->header_len); /* the application's bytes start here */
            check_info(c, &in);
        }
    }
}

/* ---- malformed headers ---- */

typedef struct {
    const char *what;
    const char *bytes; /* text, or hex when hex is set */
    int hex;
    pkm__proxy_reason reason;
} bad_case;

static const bad_case bad_cases[] = {
    /* not a PROXY header at all: refused on the first byte */
    {"HTTP", "GET / HTTP/1.1\r\n", 0, PKM__PROXY_ENOTPROXY},
    {"TLS ClientHello", "16030100", 1, PKM__PROXY_ENOTPROXY},
    {"PkmCom ServerKey frame", "00000126", 1, PKM__PROXY_ENOTPROXY},
    {"lower-case proxy", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 0, PKM__PROXY_ENOTPROXY},
    /* signatures */
    {"v1 PRXY", "PRXY TCP4", 0, PKM__PROXY_ESIG},
    {"v1 tab after PROXY", "PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", 0, PKM__PROXY_ESIG},
    {"v1 no space after PROXY", "PROXYTCP4", 0, PKM__PROXY_ESIG},
    {"v2 signature byte 5", "0d0a0d0a010d0a515549540a2111000c", 1, PKM__PROXY_ESIG},
    {"v2 signature byte 12", "0d0a0d0a000d0a515549540b2111000c", 1, PKM__PROXY_ESIG},
    {"CRLF then HTTP", "0d0a474554", 1, PKM__PROXY_ESIG},
    /* v2 version and command */
    {"v2 version 1", "0d0a0d0a000d0a515549540a11", 1, PKM__PROXY_EVERSION},
    {"v2 version 3", "0d0a0d0a000d0a515549540a31", 1, PKM__PROXY_EVERSION},
    {"v2 version 0", "0d0a0d0a000d0a515549540a01", 1, PKM__PROXY_EVERSION},
    {"v2 command 2", "0d0a0d0a000d0a515549540a22", 1, PKM__PROXY_ECOMMAND},
    {"v2 command 15", "0d0a0d0a000d0a515549540a2f", 1, PKM__PROXY_ECOMMAND},
    /* families */
    {"v2 family 4", "0d0a0d0a000d0a515549540a2141", 1, PKM__PROXY_EFAMILY},
    {"v2 protocol 3", "0d0a0d0a000d0a515549540a2113", 1, PKM__PROXY_EFAMILY},
    {"v1 TCP5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 0, PKM__PROXY_EFAMILY},
    {"v1 UDP4 (before its CRLF)", "PROXY UDP4 1.2.3.4", 0, PKM__PROXY_EFAMILY},
    {"v1 UNKNOWNX", "PROXY UNKNOWNX\r\n", 0, PKM__PROXY_EFAMILY},
    {"v1 tcp4 lower case", "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", 0, PKM__PROXY_EFAMILY},
    {"v1 no protocol", "PROXY \r\n", 0, PKM__PROXY_ETOKEN},
    /* found by fuzz_proxy: the whole line was refused for its LF, its prefixes for "T\xdf" */
    {"v1 bad protocol, then a lone LF", "PROXY T\xdf\xdf\n\n", 0, PKM__PROXY_EFAMILY},
    /* v2 lengths */
    {"v2 length 2049", "0d0a0d0a000d0a515549540a21110801", 1, PKM__PROXY_ELENGTH},
    {"v2 length 65535", "0d0a0d0a000d0a515549540a2000ffff", 1, PKM__PROXY_ELENGTH},
    {"v2 TCP4 length 11", "0d0a0d0a000d0a515549540a2111000b", 1, PKM__PROXY_ELENGTH},
    {"v2 TCP6 length 35", "0d0a0d0a000d0a515549540a21210023", 1, PKM__PROXY_ELENGTH},
    {"v2 UNIX length 215", "0d0a0d0a000d0a515549540a213100d7", 1, PKM__PROXY_ELENGTH},
    /* TLVs */
    {"v2 TLV header cut (2 bytes left)",
     "0d0a0d0a000d0a515549540a2111000e7f0000017f000001925e66c80400", 1, PKM__PROXY_ETLV},
    {"v2 TLV value 1 byte past the end",
     "0d0a0d0a000d0a515549540a211100117f0000017f000001925e66c804000301 02", 1, PKM__PROXY_ETLV},
    {"v2 second TLV overruns",
     "0d0a0d0a000d0a515549540a211100147f0000017f000001925e66c8040000 0400ff 0102", 1,
     PKM__PROXY_ETLV},
    {"v2 LOCAL TLV overruns", "0d0a0d0a000d0a515549540a200000030401ff", 1, PKM__PROXY_ETLV},
    {"v2 CRC32C of 3 bytes", "0d0a0d0a000d0a515549540a211100127f0000017f000001af3466c903000341309e",
     1, PKM__PROXY_ECRC},
    {"v2 CRC32C wrong",
     "0d0a0d0a000d0a515549540a211100167f0000017f000001af3466c903000441309e4c050000", 1,
     PKM__PROXY_ECRC},
    {"v2 address changed under CRC32C",
     "0d0a0d0a000d0a515549540a211100167f0000027f000001af3466c903000441309e4b050000", 1,
     PKM__PROXY_ECRC},
    /* v1 lines */
    {"v1 lone LF", "PROXY UNKNOWN\n", 0, PKM__PROXY_ELINE},
    {"v1 CR then not LF", "PROXY UNKNOWN\rX", 0, PKM__PROXY_ELINE},
    {"v1 LF inside", "PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n", 0, PKM__PROXY_ELINE},
    /* v1 fields */
    {"v1 TCP4 alone", "PROXY TCP4\r\n", 0, PKM__PROXY_ETOKEN},
    {"v1 two spaces", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", 0, PKM__PROXY_ETOKEN},
    {"v1 missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", 0, PKM__PROXY_ETOKEN},
    {"v1 extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", 0, PKM__PROXY_ETOKEN},
    {"v1 trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", 0, PKM__PROXY_ETOKEN},
    {"v1 space before CRLF after TCP4", "PROXY TCP4 \r\n", 0, PKM__PROXY_ETOKEN},
    /* v1 addresses */
    {"v1 leading zero", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 octet 256", "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 three octets", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 five octets", "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 empty octet", "PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 trailing dot", "PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 hex octet", "PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 TCP4 with IPv6", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 TCP4 bad destination", "PROXY TCP4 1.2.3.4 5.6.7.888 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 TCP6 with IPv4", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 TCP6 nine groups", "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 TCP6 two ::", "PROXY TCP6 1::2::3 ::1 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 TCP6 five digits", "PROXY TCP6 12345::1 ::1 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 TCP6 bad letter", "PROXY TCP6 g::1 ::1 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 TCP6 zone", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", 0, PKM__PROXY_EADDR},
    {"v1 TCP6 colon", "PROXY TCP6 : ::1 1 2\r\n", 0, PKM__PROXY_EADDR},
    /* v1 ports */
    {"v1 port 65536", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", 0, PKM__PROXY_EPORT},
    {"v1 port 99999", "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", 0, PKM__PROXY_EPORT},
    {"v1 port six digits", "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", 0, PKM__PROXY_EPORT},
    {"v1 port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", 0, PKM__PROXY_EPORT},
    {"v1 port negative", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", 0, PKM__PROXY_EPORT},
    {"v1 port with letter", "PROXY TCP6 ::1 ::1 80a 2\r\n", 0, PKM__PROXY_EPORT},
};

/* Each is refused with its reason, and so is its shortest prefix that fails (a prefix is never
 * refused for another reason than the whole; a non-proxy peer is refused on its first byte). */
static void malformed_headers_refused(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        uint8_t b[512];
        size_t n;
        if (c->hex)
            n = unhex(c->bytes, b, sizeof b);
        else {
            n = strlen(c->bytes);
            memcpy(b, c->bytes, n);
        }
        print_message("%s\n", c->what);
        pkm__proxy_info in;
        size_t need = 7;
        int rc = pkm__proxy_parse(b, n, &in, &need);
        assert_int_equal(rc, PKM_EPROTO);
        assert_int_equal(in.reason, c->reason);
        assert_int_equal(in.header_len, 0);
        assert_int_equal(in.src.ss_family, AF_UNSPEC);
        assert_string_not_equal(pkm__proxy_reason_str(in.reason),
                                pkm__proxy_reason_str(PKM__PROXY_OK));
        size_t k = 0;
        while ((rc = pkm__proxy_parse(b, k, &in, &need)) == PKM_EAGAIN) {
            assert_true(need >= 1);
            k++;
        }
        assert_int_equal(rc, PKM_EPROTO);
        assert_int_equal(in.reason, c->reason);
        assert_true(k <= n);
        if (c->reason == PKM__PROXY_ENOTPROXY) assert_int_equal(k, 1);
    }
}

/* v1 lines at and past the 107-byte bound. */
static void v1_line_length_bound(void **state)
{
    (void)state;
    const char *ff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    char line[200];
    /* the specification's worst case, exactly 107 bytes */
    snprintf(line, sizeof line, "PROXY UNKNOWN %s %s 65535 65535\r\n", ff, ff);
    assert_int_equal(strlen(line), PKM__PROXY_V1_MAX);
    pkm__proxy_info in;
    size_t need;
    assert_int_equal(pkm__proxy_parse((const uint8_t *)line, 107, &in, &need), 107);
    assert_int_equal(in.family, PKM__PROXY_UNKNOWN);
    /* the longest TCP6 line: 104 bytes */
    snprintf(line, sizeof line, "PROXY TCP6 %s %s 65535 65535\r\n", ff, ff);
    assert_int_equal(strlen(line), 104);
    assert_int_equal(pkm__proxy_parse((const uint8_t *)line, 104, &in, &need), 104);
    assert_int_equal(in.family, PKM__PROXY_TCP6);
    check_addr(&in.src, ff, 65535);
    /* one byte more: the CRLF would end at 108 */
    snprintf(line, sizeof line, "PROXY UNKNOWN %s %s 65535 655350\r\n", ff, ff);
    assert_int_equal(pkm__proxy_parse((const uint8_t *)line, strlen(line), &in, &need), PKM_EPROTO);
    assert_int_equal(in.reason, PKM__PROXY_ELINE);
    /* ...refused as soon as 106 bytes without a CR are here, and never asks past 107 */
    assert_int_equal(pkm__proxy_parse((const uint8_t *)line, 106, &in, &need), PKM_EPROTO);
    assert_int_equal(in.reason, PKM__PROXY_ELINE);
    assert_int_equal(pkm__proxy_parse((const uint8_t *)line, 105, &in, &need), PKM_EAGAIN);
    assert_int_equal(need, 2);
    /* 200 bytes of spaces after UNKNOWN: no CRLF within 107 */
    memset(line, ' ', sizeof line);
    memcpy(line, "PROXY UNKNOWN", 13);
    assert_int_equal(pkm__proxy_parse((const uint8_t *)line, sizeof line, &in, &need), PKM_EPROTO);
    assert_int_equal(in.reason, PKM__PROXY_ELINE);
}

/* v1 fields at their limits, and the forms inet_ntop gives. */
static void v1_valid_edges(void **state)
{
    (void)state;
    static const struct {
        const char *line, *src, *dst;
        unsigned sp, dp;
    } ok[] = {
        {"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", "0.0.0.0", "255.255.255.255", 0, 65535},
        {"PROXY TCP4 10.20.30.40 100.200.0.9 9 10\r\n", "10.20.30.40", "100.200.0.9", 9, 10},
        {"PROXY TCP6 2001:DB8::A 2001:db8:0:0:0:0:0:b 443 1\r\n", "2001:db8::a", "2001:db8::b", 443,
         1},
        {"PROXY TCP6 ::ffff:192.0.2.1 :: 1 2\r\n", "::ffff:192.0.2.1", "::", 1, 2},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        pkm__proxy_info in;
        size_t n = strlen(ok[i].line);
        assert_int_equal(pkm__proxy_parse((const uint8_t *)ok[i].line, n, &in, NULL), (int)n);
        check_addr(&in.src, ok[i].src, ok[i].sp);
        check_addr(&in.dst, ok[i].dst, ok[i].dp);
    }
    /* UNKNOWN ignores whatever precedes the CRLF */
    const char *u = "PROXY UNKNOWN garbage that is not addresses\r\nrest";
    pkm__proxy_info in;
    assert_int_equal(pkm__proxy_parse((const uint8_t *)u, strlen(u), &in, NULL),
                     (int)strlen(u) - 4);
    assert_int_equal(in.family, PKM__PROXY_UNKNOWN);
    assert_int_equal(in.src.ss_family, AF_UNSPEC);
}

/* v2 forms HAProxy does not send in the captures: families whose addresses are skipped, LOCAL
 * with addresses, the length cap, TLVs after UNSPEC. */
static void v2_other_forms(void **state)
{
    (void)state;
    static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    static const struct {
        uint8_t ver_cmd, fam;
        size_t len;
        pkm__proxy_cmd cmd;
    } forms[] = {
        {0x21, 0x12, 12, PKM__PROXY_CMD_PROXY},  /* UDP4: not TCP, real endpoints */
        {0x21, 0x22, 36, PKM__PROXY_CMD_PROXY},  /* UDP6 */
        {0x21, 0x31, 216, PKM__PROXY_CMD_PROXY}, /* UNIX stream */
        {0x21, 0x32, 216, PKM__PROXY_CMD_PROXY}, /* UNIX datagram */
        {0x21, 0x00, 0, PKM__PROXY_CMD_PROXY},   /* PROXY over UNSPEC */
        {0x21, 0x10, 5, PKM__PROXY_CMD_PROXY},   /* INET with an unspecified protocol */
        {0x20, 0x11, 12, PKM__PROXY_CMD_LOCAL},  /* LOCAL with addresses: ignored */
        {0x20, 0xFF, 3, PKM__PROXY_CMD_LOCAL},   /* LOCAL ignores even a bad family */
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        uint8_t b[16 + 216 + 4];
        memcpy(b, sig, 12);
        b[12] = forms[i].ver_cmd;
        b[13] = forms[i].fam;
        b[14] = (uint8_t)(forms[i].len >> 8);
        b[15] = (uint8_t)forms[i].len;
        memset(b + 16, 0xA5, forms[i].len);
        memcpy(b + 16 + forms[i].len, "data", 4);
        pkm__proxy_info in;
        size_t total = 16 + forms[i].len;
        assert_int_equal(pkm__proxy_parse(b, total + 4, &in, NULL), (int)total);
        assert_int_equal(in.version, 2);
        assert_int_equal(in.command, forms[i].cmd);
        assert_int_equal(in.family, PKM__PROXY_UNSPEC);
        assert_int_equal(in.src.ss_family, AF_UNSPEC);
    }
    /* the largest length accepted: 2048, one NOOP TLV of 2045 bytes after UNSPEC */
    static uint8_t big[PKM__PROXY_MAX + 1];
    memcpy(big, sig, 12);
    big[12] = 0x21;
    big[13] = 0x00;
    big[14] = PKM__PROXY_V2_MAX_LEN >> 8;
    big[15] = PKM__PROXY_V2_MAX_LEN & 0xFF;
    big[16] = 0x04;
    big[17] = (PKM__PROXY_V2_MAX_LEN - 3) >> 8;
    big[18] = (PKM__PROXY_V2_MAX_LEN - 3) & 0xFF;
    pkm__proxy_info in;
    size_t need = 0;
    assert_int_equal(pkm__proxy_parse(big, 16, &in, &need), PKM_EAGAIN);
    assert_int_equal(need, PKM__PROXY_V2_MAX_LEN);
    assert_int_equal(pkm__proxy_parse(big, sizeof big, &in, NULL), PKM__PROXY_MAX);
    /* the accumulator holds it when it comes a byte at a time */
    static pkm__proxy_acc acc;
    pkm__proxy_acc_init(&acc);
    size_t used = 0;
    int rc = PKM_EAGAIN;
    size_t off = 0;
    while (rc == PKM_EAGAIN && off < sizeof big) {
        rc = pkm__proxy_acc_feed(&acc, big + off, 1, &in, &used);
        off += used;
    }
    assert_int_equal(rc, PKM__PROXY_MAX);
    assert_int_equal(off, PKM__PROXY_MAX);
    /* a CRC32C TLV after a LOCAL header is checked too */
    uint8_t loc[16 + 7];
    memcpy(loc, sig, 12);
    loc[12] = 0x20;
    loc[13] = 0x00;
    loc[14] = 0;
    loc[15] = 7;
    loc[16] = 0x03;
    loc[17] = 0;
    loc[18] = 4;
    memset(loc + 19, 0, 4);
    uint32_t crc = pkm__crc32c(0, loc, sizeof loc);
    loc[19] = (uint8_t)(crc >> 24);
    loc[20] = (uint8_t)(crc >> 16);
    loc[21] = (uint8_t)(crc >> 8);
    loc[22] = (uint8_t)crc;
    assert_int_equal(pkm__proxy_parse(loc, sizeof loc, &in, NULL), (int)sizeof loc);
    assert_int_equal(in.command, PKM__PROXY_CMD_LOCAL);
    loc[22] ^= 1;
    assert_int_equal(pkm__proxy_parse(loc, sizeof loc, &in, NULL), PKM_EPROTO);
    assert_int_equal(in.reason, PKM__PROXY_ECRC);
}

static void crc32c_check_value(void **state)
{
    (void)state;
    /* the CRC-32C check value (RFC 3720 B.4 catalogue: "123456789" -> E3069283) */
    assert_int_equal(pkm__crc32c(0, (const uint8_t *)"123456789", 9), 0xE3069283u);
    /* a running CRC over pieces equals the CRC of the whole */
    uint32_t c = pkm__crc32c(0, (const uint8_t *)"1234", 4);
    assert_int_equal(pkm__crc32c(c, (const uint8_t *)"56789", 5), 0xE3069283u);
    /* 32 zero bytes (RFC 3720 B.4: 8A9136AA) */
    uint8_t z[32] = {0};
    assert_int_equal(pkm__crc32c(0, z, 32), 0x8A9136AAu);
}

/* Random bytes behind a valid signature: the parser never claims more than it was given, and a
 * success is stable when more bytes are appended. */
static void random_bodies_stay_in_bounds(void **state)
{
    (void)state;
    t_rng rng;
    t_rng_seed(&rng, 14);
    static const char *starts[] = {"PROXY ", "PROXY TCP4 ", "PROXY TCP6 ", "PROXY UNKNOWN",
                                   "\r\n\r\n\0\r\nQUIT\n"};
    static const size_t start_len[] = {6, 11, 11, 13, 12};
    int iters = t_under_valgrind() ? 2000 : 50000;
    int done = 0;
    for (int it = 0; it < iters; it++) {
        uint8_t b[300];
        size_t s = (size_t)(t_rng_next(&rng) % 5);
        memcpy(b, starts[s], start_len[s]);
        t_rng_bytes(&rng, b + start_len[s], sizeof b - start_len[s]);
        if (s < 4) /* mostly printable, with CRLFs, so v1 parsing goes deep */
            for (size_t i = start_len[s]; i < sizeof b; i++) {
                static const char alpha[] = "0123456789abcdef.: \r\n";
                b[i] = (uint8_t)alpha[b[i] % (sizeof alpha - 1)];
            }
        else
            b[14] = 0; /* short v2 lengths */
        size_t n = 1 + (size_t)(t_rng_next(&rng) % sizeof b);
        pkm__proxy_info in;
        size_t need = 0;
        int rc = pkm__proxy_parse(b, n, &in, &need);
        if (rc > 0) {
            done++;
            assert_true((size_t)rc <= n);
            pkm__proxy_info again;
            assert_int_equal(pkm__proxy_parse(b, sizeof b, &again, NULL), rc);
        } else if (rc == PKM_EAGAIN) {
            assert_true(need >= 1);
            assert_true(n + need <= PKM__PROXY_MAX);
        } else {
            assert_int_equal(rc, PKM_EPROTO);
            assert_int_not_equal(in.reason, PKM__PROXY_OK);
        }
    }
    assert_true(done > 0);
}

/* ---- trusted proxies ---- */

static const struct sockaddr *sa_of(const char *text, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (strchr(text, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, text, &a->sin_addr), 1);
    }
    return (const struct sockaddr *)ss;
}

static int matches(const pkm__cidr_list *l, const char *addr)
{
    struct sockaddr_storage ss;
    return pkm__cidr_list_match(l, sa_of(addr, &ss));
}

static void cidr_list_parse_and_match(void **state)
{
    (void)state;
    pkm__cidr_list l;
    assert_int_equal(pkm__cidr_list_parse("127.0.0.1/32,::1,10.0.0.0/8", &l), 0);
    assert_int_equal(l.n, 3);
    assert_true(matches(&l, "127.0.0.1"));
    assert_false(matches(&l, "127.0.0.2"));
    assert_true(matches(&l, "::1"));
    assert_false(matches(&l, "::2"));
    assert_true(matches(&l, "10.0.0.0"));
    assert_true(matches(&l, "10.255.255.255"));
    assert_false(matches(&l, "11.0.0.0"));
    assert_false(matches(&l, "9.255.255.255"));
    /* a dual-stack listener reports IPv4 peers as mapped IPv6 */
    assert_true(matches(&l, "::ffff:10.1.2.3"));
    assert_true(matches(&l, "::ffff:127.0.0.1"));
    assert_false(matches(&l, "::ffff:127.0.0.2"));
    /* not IP, or no list */
    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    assert_false(pkm__cidr_list_match(&l, (const struct sockaddr *)&un));
    assert_false(pkm__cidr_list_match(&l, NULL));
    struct sockaddr_storage ss;
    assert_false(pkm__cidr_list_match(NULL, sa_of("127.0.0.1", &ss)));
    pkm__cidr_list_free(&l);
    assert_null(l.v);

    /* prefixes that do not end on a byte, spaces, and /0 */
    assert_int_equal(pkm__cidr_list_parse(" 192.168.0.0/23 ,\t2001:db8:8000::/33 , 0.0.0.0/0", &l),
                     0);
    assert_int_equal(l.n, 3);
    assert_true(matches(&l, "192.168.1.255"));
    assert_true(matches(&l, "1.2.3.4")); /* 0.0.0.0/0 */
    assert_true(matches(&l, "2001:db8:8000::1"));
    assert_true(matches(&l, "2001:db8:ffff:ffff::"));
    assert_false(matches(&l, "2001:db8:7fff:ffff::"));
    assert_false(matches(&l, "2001:db9::"));
    assert_false(matches(&l, "::1")); /* 0.0.0.0/0 is IPv4 only */
    pkm__cidr_list_free(&l);

    assert_int_equal(pkm__cidr_list_parse("192.168.0.0/23", &l), 0);
    assert_false(matches(&l, "192.168.2.0"));
    assert_false(matches(&l, "192.167.255.255"));
    pkm__cidr_list_free(&l);

    /* ::/0 covers IPv6 peers; mapped IPv4 peers count as IPv4 */
    assert_int_equal(pkm__cidr_list_parse("::/0", &l), 0);
    assert_true(matches(&l, "2001:db8::1"));
    assert_false(matches(&l, "::ffff:1.2.3.4"));
    pkm__cidr_list_free(&l);

    /* a mapped block is its IPv4 block */
    assert_int_equal(pkm__cidr_list_parse("::ffff:10.0.0.0/104", &l), 0);
    assert_int_equal(l.v[0].family, AF_INET);
    assert_int_equal(l.v[0].bits, 8);
    assert_true(matches(&l, "10.9.9.9"));
    assert_true(matches(&l, "::ffff:10.9.9.9"));
    assert_false(matches(&l, "11.0.0.0"));
    pkm__cidr_list_free(&l);

    /* empty: no one is trusted */
    assert_int_equal(pkm__cidr_list_parse("", &l), 0);
    assert_int_equal(l.n, 0);
    assert_false(matches(&l, "127.0.0.1"));
    pkm__cidr_list_free(&l);
    assert_int_equal(pkm__cidr_list_parse("  ", &l), 0);
    assert_int_equal(l.n, 0);
    pkm__cidr_list_free(&l);
}

static void cidr_list_refuses_bad_entries(void **state)
{
    (void)state;
    static const char *bad[] = {
        ",",
        "1.2.3.4,",
        ",1.2.3.4",
        "1.2.3.4,,::1",
        "10.0.0.1/8",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/08",
        "10.0.0.0/",
        "1.2.3.4/-1",
        "abc",
        "1.2.3.4/8x",
        "1.2.3",
        "01.2.3.4",
        "::1/128/1",
        "2001:db8::1/64",
        "1.2.3.4 5.6.7.8",
        "localhost",
        "1.2.3.4/1000",
        "::g",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pkm__cidr_list l;
        l.n = 99;
        print_message("%s\n", bad[i]);
        assert_int_equal(pkm__cidr_list_parse(bad[i], &l), PKM_EINVAL);
        assert_null(l.v);
        assert_int_equal(l.n, 0);
    }
    pkm__cidr_list l;
    assert_int_equal(pkm__cidr_list_parse(NULL, &l), PKM_EINVAL);
}

/* ---- per-source keys ---- */

static void key_of(const char *addr, pkm__source_key *k)
{
    struct sockaddr_storage ss;
    memset(k, 0xEE, sizeof *k); /* every byte must be written */
    pkm__source_key_of(sa_of(addr, &ss), k);
}

static void source_keys(void **state)
{
    (void)state;
    pkm__source_key a, b;
    char s[PKM__SOURCE_KEY_STRLEN];
    key_of("203.0.113.7", &a);
    assert_int_equal(a.family, 4);
    assert_string_equal(pkm__source_key_str(&a, s, sizeof s), "203.0.113.7");
    key_of("203.0.113.8", &b);
    assert_memory_not_equal(&a, &b, sizeof a); /* IPv4: one key per address */
    key_of("::ffff:203.0.113.7", &b);
    assert_memory_equal(&a, &b, sizeof a); /* mapped = IPv4 */
    key_of("cb00:7107::", &b);             /* the same 8 bytes as an IPv6 prefix */
    assert_memory_not_equal(&a, &b, sizeof a);

    /* IPv6: one key per /64 */
    key_of("2001:db8:1:2:aaaa::1", &a);
    key_of("2001:db8:1:2:ffff:ffff:ffff:ffff", &b);
    assert_int_equal(a.family, 6);
    assert_memory_equal(&a, &b, sizeof a);
    assert_string_equal(pkm__source_key_str(&a, s, sizeof s), "2001:db8:1:2::/64");
    key_of("2001:db8:1:3::", &b);
    assert_memory_not_equal(&a, &b, sizeof a);
    key_of("2001:db8:1:1:ffff:ffff:ffff:ffff", &b);
    assert_memory_not_equal(&a, &b, sizeof a);

    /* anything else: one shared key */
    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    memset(&a, 0xEE, sizeof a);
    pkm__source_key_of((const struct sockaddr *)&un, &a);
    memset(&b, 0xEE, sizeof b);
    pkm__source_key_of(NULL, &b);
    assert_int_equal(a.family, 0);
    assert_memory_equal(&a, &b, sizeof a);
    assert_string_equal(pkm__source_key_str(&a, s, sizeof s), "-");

    /* a short buffer is truncated, still terminated */
    key_of("2001:db8:1:2::", &a);
    char tiny[6];
    assert_string_equal(pkm__source_key_str(&a, tiny, sizeof tiny), "2001:");
}

/* The key of the address a PROXY header gives, end to end. */
static void header_source_is_the_key(void **state)
{
    (void)state;
    const char *line = "PROXY TCP6 2001:db8:77:88:1:2:3:4 2001:db8::1 50000 7777\r\n";
    pkm__proxy_info in;
    assert_true(pkm__proxy_parse((const uint8_t *)line, strlen(line), &in, NULL) > 0);
    pkm__source_key k;
    char s[PKM__SOURCE_KEY_STRLEN];
    pkm__source_key_of((const struct sockaddr *)&in.src, &k);
    assert_string_equal(pkm__source_key_str(&k, s, sizeof s), "2001:db8:77:88::/64");
    pkm__cidr_list l;
    assert_int_equal(pkm__cidr_list_parse("2001:db8:77::/48", &l), 0);
    assert_true(pkm__cidr_list_match(&l, (const struct sockaddr *)&in.src));
    assert_false(pkm__cidr_list_match(&l, (const struct sockaddr *)&in.dst));
    pkm__cidr_list_free(&l);
}

/* Which address stands for the client: the header's source, or the peer when it has none. */
static void source_address_choice(void **state)
{
    (void)state;
    struct sockaddr_storage peer;
    const struct sockaddr *p = sa_of("10.0.0.5", &peer); /* the proxy itself */
    for (size_t i = 0; i < sizeof captures / sizeof captures[0]; i++) {
        uint8_t b[256];
        size_t n = unhex(captures[i].hex, b, sizeof b);
        pkm__proxy_info in;
        assert_true(pkm__proxy_parse(b, n, &in, NULL) > 0);
        const struct sockaddr *s = pkm__proxy_source(&in, p);
        if (captures[i].src) {
            assert_ptr_equal(s, (const struct sockaddr *)&in.src);
            check_addr(&in.src, captures[i].src, captures[i].sport);
        } else {
            assert_ptr_equal(s, p); /* LOCAL, UNKNOWN: the connection's own peer */
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(haproxy_headers_parse),
        cmocka_unit_test(every_prefix_needs_more),
        cmocka_unit_test(accumulator_splits_header_and_data),
        cmocka_unit_test(malformed_headers_refused),
        cmocka_unit_test(v1_line_length_bound),
        cmocka_unit_test(v1_valid_edges),
        cmocka_unit_test(v2_other_forms),
        cmocka_unit_test(crc32c_check_value),
        cmocka_unit_test(random_bodies_stay_in_bounds),
        cmocka_unit_test(cidr_list_parse_and_match),
        cmocka_unit_test(cidr_list_refuses_bad_entries),
        cmocka_unit_test(source_keys),
        cmocka_unit_test(header_source_is_the_key),
        cmocka_unit_test(source_address_choice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
