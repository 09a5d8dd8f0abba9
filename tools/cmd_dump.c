/* SPDX-License-Identifier: MIT */
/* pkmcom dump: reads a pcap/pcapng capture (libpcap), reassembles each PkmCom/TCP connection and
 * prints every packet decrypted with a key log (the library's pkm_streamdec), one JSON line each.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include "tool.h"

static const char dump_help[] =
    "usage: pkmcom dump --keylog FILE CAPTURE [--port N]\n"
    "\n"
    "Reads a capture (pcap or pcapng, e.g. from tcpdump or dumpcap), follows every\n"
    "PkmCom/TCP connection in it and prints each packet, decrypted with the key log\n"
    "(PKMCOM_KEYLOGFILE lines), as one JSON line in capture order:\n"
    "  "
    "{\"id\":16,\"hash\":123,\"size\":5,\"content\":\"<hex>\",\"dir\":\"c2s\",\"ts\":1700000000."
    "123456}\n"
    "dir is c2s (client to server) or s2c; ts the capture time of the segment that completed\n"
    "the packet. A Complete Definition packet also gets \"hash_ok\", \"name\" and \"fields\"\n"
    "(each field's value as text; \"error\" instead when its content does not decode). The\n"
    "handshake's 0xFF confirmations are not printed.\n"
    "\n"
    "  --keylog FILE   the key log (whoever holds it can read the traffic it lists)\n"
    "  --port N        only connections with TCP port N (the server's); without it, every\n"
    "                  connection whose first bytes are a ServerKey\n"
    "  -h, --help      this help\n"
    "\n"
    "Exit status 1 when a direction could not be decrypted (no key-log line matches its\n"
    "KeyShare; each is named on stderr), a record was bad (padding, Size, a Complete\n"
    "Definition Hash that does not check), or no connection was found.\n";

#ifndef PKM_HAVE_PCAP

int cmd_dump(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (tool_is_help(argv[i])) {
            fputs(dump_help, stdout);
            return TOOL_EXIT_OK;
        }
    return tool_fail(TOOL_EXIT_FAIL, "dump: this pkmcom was built without libpcap (install "
                                     "libpcap-dev and rebuild)");
}

#else

#include <pcap/pcap.h>

typedef struct seg {
    uint32_t seq;
    uint8_t *data;
    size_t len;
    struct seg *next;
} seg_t;

typedef struct {
    int have_seq;
    uint32_t next_seq;
    seg_t *pending; /* out-of-order segments */
    uint8_t *buf;   /* bytes not yet taken by the decoder */
    size_t len, cap;
    pkm_streamdec_t *dec;
    int dir; /* PKM_DIR_C2S / PKM_DIR_S2C, once the server is known */
    int reported;
} half_t;

typedef struct conn {
    int v6;
    uint8_t addr[2][16];
    uint16_t port[2];
    int server; /* index of the server endpoint, -1 while unknown */
    int ignored;
    half_t h[2]; /* h[i]: what endpoint i sent */
    struct conn *next;
} conn_t;

typedef struct {
    const pkm_keylog_t *kl;
    int port; /* 0: any */
    conn_t *conns;
    size_t printed, streams;
    int bad;
    double ts;
} dump_t;

static void endpoint_str(const conn_t *c, int i, char *out, size_t cap)
{
    const uint8_t *a = c->addr[i];
    if (!c->v6) {
        snprintf(out, cap, "%u.%u.%u.%u:%u", a[0], a[1], a[2], a[3], c->port[i]);
    } else {
        char tmp[64];
        size_t o = 0;
        for (int k = 0; k < 16; k += 2)
            o += (size_t)snprintf(tmp + o, sizeof tmp - o, "%s%x", k ? ":" : "",
                                  a[k] << 8 | a[k + 1]);
        snprintf(out, cap, "[%s]:%u", tmp, c->port[i]);
    }
}

static int print_record(dump_t *d, int dir, const pkm_packet_t *pkt)
{
    FILE *f = stdout;
    fprintf(f, "{\"id\":%u,\"hash\":%lu,\"size\":%zu,\"content\":\"", (unsigned)pkt->id,
            (unsigned long)pkt->hash, pkt->size);
    for (size_t i = 0; i < pkt->size; i++)
        fprintf(f, "%02x", pkt->content[i]);
    fprintf(f, "\",\"dir\":\"%s\",\"ts\":%.6f", dir == PKM_DIR_C2S ? "c2s" : "s2c", d->ts);
    int r = tool_print_cmpl_members(f, pkt);
    fputs("}\n", f);
    d->printed++;
    return r;
}

static void report(dump_t *d, conn_t *c, half_t *h, const char *what)
{
    char a[80], b[80];
    int from = h == &c->h[0] ? 0 : 1;
    endpoint_str(c, from, a, sizeof a);
    endpoint_str(c, 1 - from, b, sizeof b);
    tool_log("dump: %s -> %s (%s): %s", a, b,
             h->dir == PKM_DIR_C2S ? "client to server" : "server to client", what);
    d->bad = 1;
}

/* Runs the decoder over what the half holds. */
static void drain(dump_t *d, conn_t *c, half_t *h)
{
    size_t pos = 0;
    while (pos < h->len) {
        size_t need = 0, len = pkm_streamdec_next_len(h->dec, h->buf + pos, h->len - pos, &need);
        if (len == 0 || len > h->len - pos) break;
        uint8_t *plain = malloc(len);
        if (!plain) break;
        pkm_unit_t u;
        if (pkm_streamdec_take(h->dec, h->buf + pos, len, plain, &u) < 0) {
            free(plain);
            break;
        }
        if (u.kind == PKM_UNIT_KEYSHARE && !u.entry) {
            report(d, c, h, "no key-log line matches its KeyShare: not decrypted");
            h->reported = 1;
        } else if (u.kind == PKM_UNIT_RECORD) {
            if (u.err == PKM_EPADDING)
                report(d, c, h, "a record with bad padding");
            else if (u.err < 0)
                report(d, c, h, "a record whose Size is negative or over the limit: lost track");
            else if (u.pkt.id != PKM_HANDSHAKE_ID && print_record(d, h->dir, &u.pkt) == PKM_EHASH)
                report(d, c, h, "a Complete Definition packet whose Hash does not check");
        } else if (u.kind == PKM_UNIT_OPAQUE && !h->reported) {
            report(d, c, h, "not a PkmCom/TCP stream (bad key message)");
            h->reported = 1;
        }
        OPENSSL_cleanse(plain, len);
        free(plain);
        pos += len;
    }
    if (pos) {
        memmove(h->buf, h->buf + pos, h->len - pos);
        h->len -= pos;
    }
}

static int append(half_t *h, const uint8_t *p, size_t n)
{
    if (h->cap - h->len < n) {
        size_t ncap = h->cap ? h->cap : 4096;
        while (ncap - h->len < n)
            ncap *= 2;
        uint8_t *nb = realloc(h->buf, ncap);
        if (!nb) return -1;
        h->buf = nb;
        h->cap = ncap;
    }
    memcpy(h->buf + h->len, p, n);
    h->len += n;
    return 0;
}

/* Puts in-order bytes of a segment into the half; keeps later ones for later. */
static void deliver(half_t *h, uint32_t seq, const uint8_t *p, size_t n)
{
    if (!h->have_seq) {
        h->have_seq = 1;
        h->next_seq = seq;
    }
    int32_t off = (int32_t)(h->next_seq - seq);
    if (off > 0) { /* a retransmission or overlap */
        if ((size_t)off >= n) return;
        p += off;
        n -= (size_t)off;
        seq += (uint32_t)off;
    } else if (off < 0) { /* a gap: hold it */
        seg_t *s = malloc(sizeof *s);
        if (!s) return;
        s->data = malloc(n);
        if (!s->data) {
            free(s);
            return;
        }
        memcpy(s->data, p, n);
        s->seq = seq;
        s->len = n;
        s->next = h->pending;
        h->pending = s;
        return;
    }
    if (append(h, p, n) < 0) return;
    h->next_seq += (uint32_t)n;
    for (int again = 1; again;) {
        again = 0;
        for (seg_t **sp = &h->pending; *sp; sp = &(*sp)->next) {
            seg_t *s = *sp;
            int32_t o = (int32_t)(h->next_seq - s->seq);
            if (o >= 0) {
                *sp = s->next;
                if ((size_t)o < s->len && append(h, s->data + o, s->len - (size_t)o) == 0)
                    h->next_seq += (uint32_t)(s->len - (size_t)o);
                free(s->data);
                free(s);
                again = 1;
                break;
            }
        }
    }
}

static conn_t *find_conn(dump_t *d, int v6, const uint8_t *src, uint16_t sport, const uint8_t *dst,
                         uint16_t dport, int *from)
{
    size_t al = v6 ? 16 : 4;
    for (conn_t *c = d->conns; c; c = c->next) {
        if (c->v6 != v6) continue;
        for (int i = 0; i < 2; i++)
            if (c->port[i] == sport && c->port[1 - i] == dport && !memcmp(c->addr[i], src, al) &&
                !memcmp(c->addr[1 - i], dst, al)) {
                *from = i;
                return c;
            }
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->v6 = v6;
    memcpy(c->addr[0], src, al);
    memcpy(c->addr[1], dst, al);
    c->port[0] = sport;
    c->port[1] = dport;
    c->server = -1;
    c->next = d->conns;
    d->conns = c;
    *from = 0;
    return c;
}

static int start_conn(dump_t *d, conn_t *c, int server)
{
    c->server = server;
    for (int i = 0; i < 2; i++) {
        c->h[i].dir = i == server ? PKM_DIR_S2C : PKM_DIR_C2S;
        if (pkm_streamdec_new(d->kl, c->h[i].dir, 0, &c->h[i].dec) < 0) return -1;
    }
    d->streams++;
    return 0;
}

static void on_tcp(dump_t *d, int v6, const uint8_t *src, const uint8_t *dst, const uint8_t *tcp,
                   size_t len)
{
    if (len < 20) return;
    uint16_t sport = (uint16_t)(tcp[0] << 8 | tcp[1]), dport = (uint16_t)(tcp[2] << 8 | tcp[3]);
    if (d->port && sport != d->port && dport != d->port) return;
    uint32_t seq = (uint32_t)tcp[4] << 24 | (uint32_t)tcp[5] << 16 | (uint32_t)tcp[6] << 8 | tcp[7];
    size_t hl = (size_t)(tcp[12] >> 4) * 4;
    if (hl < 20 || hl > len) return;
    int syn = tcp[13] & 0x02;
    int from = 0;
    conn_t *c = find_conn(d, v6, src, sport, dst, dport, &from);
    if (!c || c->ignored) return;
    half_t *h = &c->h[from];
    if (syn) {
        h->have_seq = 1;
        h->next_seq = seq + 1;
        return;
    }
    const uint8_t *p = tcp + hl;
    size_t n = len - hl;
    if (n == 0) return;
    if (c->server < 0) {
        /* The server speaks first (ServerKey): with --port, the endpoint on that port. */
        int server = d->port ? (c->port[0] == d->port ? 0 : 1) : from;
        if (!d->port && (n < 5 || p[0] || p[1] > 3 || p[4] != 0x30)) { /* Int 1..1024, DER */
            c->ignored = 1;
            return;
        }
        if (start_conn(d, c, server) < 0) {
            c->ignored = 1;
            return;
        }
    }
    deliver(h, seq, p, n);
    drain(d, c, h);
}

/* Finds the IP header for the link type. Returns its offset, or -1. *ver receives 4 or 6. */
static long ip_offset(int dlt, const uint8_t *p, size_t n, int *ver)
{
    size_t off;
    unsigned et = 0;
    switch (dlt) {
    case DLT_EN10MB:
        if (n < 14) return -1;
        et = (unsigned)(p[12] << 8 | p[13]);
        off = 14;
        while ((et == 0x8100 || et == 0x88a8) && n >= off + 4) {
            et = (unsigned)(p[off + 2] << 8 | p[off + 3]);
            off += 4;
        }
        break;
    case DLT_NULL:
    case DLT_LOOP: off = 4; break;
    case DLT_RAW:
#ifdef DLT_IPV4
    case DLT_IPV4:
    case DLT_IPV6:
#endif
        off = 0;
        break;
    case DLT_LINUX_SLL:
        if (n < 16) return -1;
        et = (unsigned)(p[14] << 8 | p[15]);
        off = 16;
        break;
#ifdef DLT_LINUX_SLL2
    case DLT_LINUX_SLL2:
        if (n < 20) return -1;
        et = (unsigned)(p[0] << 8 | p[1]);
        off = 20;
        break;
#endif
    default: return -1;
    }
    if (off >= n) return -1;
    if (et && et != 0x0800 && et != 0x86dd) return -1;
    *ver = p[off] >> 4;
    return (long)off;
}

typedef struct {
    dump_t *d;
    int dlt;
} loop_ctx_t;

static void on_frame(u_char *user, const struct pcap_pkthdr *hdr, const u_char *bytes)
{
    loop_ctx_t *lc = (loop_ctx_t *)user;
    lc->d->ts = (double)hdr->ts.tv_sec + (double)hdr->ts.tv_usec / 1e6;
    size_t n = hdr->caplen;
    int ver = 0;
    long o = ip_offset(lc->dlt, bytes, n, &ver);
    if (o < 0) return;
    const uint8_t *ip = bytes + o;
    n -= (size_t)o;
    if (ver == 4) {
        if (n < 20) return;
        size_t ihl = (size_t)(ip[0] & 15) * 4, tot = (size_t)(ip[2] << 8 | ip[3]);
        if (ip[9] != 6 || ihl < 20 || tot < ihl || tot > n) return;
        if ((ip[6] & 0x3f) || ip[7]) return; /* a fragment */
        on_tcp(lc->d, 0, ip + 12, ip + 16, ip + ihl, tot - ihl);
    } else if (ver == 6) {
        if (n < 40) return;
        size_t pl = (size_t)(ip[4] << 8 | ip[5]);
        if (ip[6] != 6 || 40 + pl > n) return;
        on_tcp(lc->d, 1, ip + 8, ip + 24, ip + 40, pl);
    }
}

static void free_conns(dump_t *d)
{
    for (conn_t *c = d->conns, *next; c; c = next) {
        next = c->next;
        for (int i = 0; i < 2; i++) {
            half_t *h = &c->h[i];
            pkm_streamdec_free(h->dec);
            if (h->buf) OPENSSL_cleanse(h->buf, h->cap);
            free(h->buf);
            for (seg_t *s = h->pending, *sn; s; s = sn) {
                sn = s->next;
                free(s->data);
                free(s);
            }
        }
        free(c);
    }
    d->conns = NULL;
}

int cmd_dump(int argc, char **argv)
{
    const char *keylog = NULL, *capture = NULL, *v;
    uint64_t port = 0;
    for (int i = 1; i < argc; i++) {
        if (tool_is_help(argv[i])) {
            fputs(dump_help, stdout);
            return TOOL_EXIT_OK;
        }
        if (tool_opt("dump", argc, argv, &i, "keylog", 0, &v) > 0) {
            keylog = v;
        } else if (tool_opt("dump", argc, argv, &i, "port", 0, &v) > 0) {
            if (tool_parse_u64(v, 65535, &port) < 0 || port == 0)
                return tool_usage_error("dump", "--port wants 1..65535, not '%s'", v);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return tool_usage_error("dump", "unknown option '%s'", argv[i]);
        } else if (!capture) {
            capture = argv[i];
        } else {
            return tool_usage_error("dump", "one capture file only");
        }
    }
    if (!keylog) return tool_usage_error("dump", "--keylog FILE is required");
    if (!capture) return tool_usage_error("dump", "no capture file");
    pkm_keylog_t *kl = NULL;
    size_t bad = 0;
    int r = pkm_keylog_load(keylog, &kl, &bad);
    if (r < 0) return tool_fail(TOOL_EXIT_FAIL, "dump: cannot read the key log %s", keylog);
    if (bad) tool_log("dump: %zu malformed PKMCOM_KEYS_V2 line(s) in %s ignored", bad, keylog);
    if (pkm_keylog_count(kl) == 0)
        tool_log("dump: the key log %s has no PKMCOM_KEYS_V2 line", keylog);
    char err[PCAP_ERRBUF_SIZE] = "";
    pcap_t *pc = pcap_open_offline(capture, err);
    if (!pc) {
        pkm_keylog_free(kl);
        return tool_fail(TOOL_EXIT_FAIL, "dump: cannot read %s: %s", capture, err);
    }
    dump_t d = {.kl = kl, .port = (int)port};
    loop_ctx_t lc = {&d, pcap_datalink(pc)};
    if (pcap_loop(pc, -1, on_frame, (u_char *)&lc) == -1) {
        tool_log("dump: %s: %s", capture, pcap_geterr(pc));
        d.bad = 1;
    }
    pcap_close(pc);
    fflush(stdout);
    free_conns(&d);
    pkm_keylog_free(kl);
    if (d.streams == 0)
        return tool_fail(TOOL_EXIT_FAIL, "dump: no PkmCom/TCP connection in %s", capture);
    return d.bad ? TOOL_EXIT_FAIL : TOOL_EXIT_OK;
}

#endif
