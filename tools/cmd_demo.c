/* SPDX-License-Identifier: MIT */
/* pkmcom demo: a server and a client in one process on 127.0.0.1, the handshake shown step by
 * step with real bytes and timings, typed packets, a password re-establishment; and --codec, the
 * codec alone (encode, print, decode a Connect Request). */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "tool.h"

/* ---- demo: the Complete Definition's 0x00 Connect Request through the codec ---- */

#define CONNECT_REQUEST_ID PKM_CMPL_CONNECT_REQUEST
#define REESTABLISH_ID     PKM_CMPL_REESTABLISH_SECRET

/* The Complete Definition's schema of a packet (cmpl.h's static registry). */
static const pkm_schema_t *cmpl_schema(uint8_t id)
{
    const pkm_cmpl_packet_t *p = pkm_cmpl_by_id(id);
    return p ? p->schema : NULL;
}

static void print_hex(const char *label, const uint8_t *p, size_t n)
{
    printf("  %-9s", label);
    for (size_t i = 0; i < n; i++)
        printf("%s%02X", i && i % 16 == 0 ? "\n           " : i ? " " : "", p[i]);
    printf("\n");
}

static void print_uuid(pkm_uuid_t u)
{
    printf("%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64, u.msb >> 32,
           u.msb >> 16 & 0xFFFF, u.msb & 0xFFFF, u.lsb >> 48,
           (uint64_t)(u.lsb & 0xFFFFFFFFFFFFull));
}

static int demo_fail(const char *what, int rc)
{
    return tool_fail(TOOL_EXIT_FAIL, "demo: %s: %s (%s)", what, pkm_strerror(rc), pkm_errname(rc));
}

static int demo_codec(void)
{
    pkm_registry_t *reg = pkm_registry_new();
    if (!reg) return demo_fail("registry", PKM_ENOMEM);
    const pkm_schema_t *connect_request = cmpl_schema(CONNECT_REQUEST_ID);
    int rc = pkm_cmpl_register(reg);
    if (rc < 0) {
        pkm_registry_free(reg);
        return demo_fail("register", rc);
    }

    const char *trainer = "{\"name\":\"Red \xF0\x9F\x94\xA5\",\"hours\":42}";
    const pkm_value_t values[] = {
        PKM_V_VERSION(1, 0),
        PKM_V_STRN(trainer, strlen(trainer)),
        PKM_V_UUID(0x123e4567e89b42d3ull, 0xa456426614174000ull),
    };
    uint8_t pkt_bytes[256];
    size_t len;
    printf("Schema 0x%02X %s: PkmVersion Version, TrainerInfo Json, SentryAccount UUID\n\n",
           CONNECT_REQUEST_ID, connect_request->name);
    rc = pkm_registry_encode(reg, CONNECT_REQUEST_ID, values, 3, pkt_bytes, sizeof pkt_bytes, &len);
    if (rc < 0) {
        pkm_registry_free(reg);
        return demo_fail("encode", rc);
    }
    pkm_packet_t pkt;
    pkm_packet_header_read(pkt_bytes, PKM_DEFAULT_MAX_SIZE, &pkt);
    pkt.content = pkt_bytes + PKM_HEADER_SIZE;
    printf("Encoded packet, %zu bytes (9-byte header + content):\n", len);
    printf("  Id       0x%02X\n  Hash     0x%08" PRIX32 "\n  Size     %zu\n", pkt.id, pkt.hash,
           pkt.size);
    print_hex("Header", pkt_bytes, PKM_HEADER_SIZE);
    print_hex("Content", pkt.content, pkt.size);
    printf("  (the emoji travels in Modified UTF-8 as a surrogate pair: ED A0 BD ED B4 A5)\n\n");

    pkm_msg_t *msg;
    rc = pkm_registry_decode(reg, &pkt, &msg);
    if (rc < 0) {
        pkm_registry_free(reg);
        return demo_fail("decode", rc);
    }
    const pkm_value_t *ver = pkm_msg_get(msg, "PkmVersion");
    const pkm_value_t *info = pkm_msg_get(msg, "TrainerInfo");
    const pkm_value_t *acct = pkm_msg_get(msg, "SentryAccount");
    printf("Decoded (Size, Hash and every precondition checked):\n");
    printf("  PkmVersion     %u.%u\n", ver->version.major, ver->version.minor);
    printf("  TrainerInfo    %s\n", info->str.ptr);
    printf("  SentryAccount  ");
    print_uuid(acct->uuid);
    printf("\n\n");
    pkm_msg_free(msg);

    printf("Preconditions are enforced on both sides:\n");
    const pkm_value_t bad[] = {values[0], PKM_V_STR("[\"not\", \"an object\"]"), values[2]};
    rc = pkm_registry_encode(reg, CONNECT_REQUEST_ID, bad, 3, pkt_bytes, sizeof pkt_bytes, &len);
    printf("  encode TrainerInfo = [\"not\", \"an object\"]  -> %s: %s\n", pkm_errname(rc),
           pkm_strerror(rc));
    pkt.hash ^= 1;
    rc = pkm_registry_verify(reg, &pkt);
    printf("  receive the packet with one Hash bit flipped -> %s: %s\n", pkm_errname(rc),
           pkm_strerror(rc));
    pkm_registry_free(reg);
    return 0;
}

/* ---- the live demo: server (libuv, its own thread) and client (pkm_connect, whose engine's
 * observer hook shows every handshake message as it passes, and whose trust hook shows the
 * server's fingerprint) ---- */

#define DEMO_PASSWORD  "pikachu"
#define WRONG_PASSWORD "raichu"
/* The demo's own packets, at ids the Complete Definition does not use. */
#define CHAT_ID         0x20
#define TRADE_ID        0x21
#define DEMO_TIMEOUT_MS 10000
/* The Int before the DER of a ServerKey / ClientKey (WIRE-PROFILE section 3). */
#define KEY_LEN_PREFIX 4

static const pkm_field_t chat_fields[] = {
    {.name = "Text", .type = PKM_T_STRING},
    {.name = "Sent", .type = PKM_T_INSTANT},
    {.name = "Urgent", .type = PKM_T_BOOL},
};
static const pkm_schema_t chat = {"Chat", chat_fields, 3};

static const pkm_field_t demo_byte = {.type = PKM_T_BYTE};
static const pkm_field_t trade_fields[] = {
    {.name = "Species", .type = PKM_T_USHORT},
    {.name = "Level", .type = PKM_T_BYTE},
    {.name = "Shiny", .type = PKM_T_BOOL},
    {.name = "Weight", .type = PKM_T_FLOAT},
    {.name = "Nature", .type = PKM_T_ARRAY, .elem = &demo_byte, .fixed_len = 4},
};
static const pkm_schema_t trade = {"Trade Offer", trade_fields, 5};

struct demo {
    pthread_mutex_t lock;
    double t0;
    pkm_registry_t *reg;
    pkm_server_t *srv;
    int server_rc;
    unsigned closes; /* server-side on_close calls (under lock) */
    /* the client's connection, and what its observer has seen */
    pkm_conn_t *c;
    const char *server_fp;
    uint64_t tx, rx;
    double t_start, t_serverkey, t_keyshare_in, t_rekey;
    char err[256];
    /* timings (ms) */
    double server_keygen, client_keygen, connect, handshake, enc_m, dec_m, rekey, wrong;
    double rtt_sum;
    unsigned rtt_n;
};

#define WHO_W 7

TOOL_PRINTF(3, 0)
static void vsay(struct demo *d, const char *who, const char *fmt, va_list ap)
{
    pthread_mutex_lock(&d->lock);
    if (who)
        printf("%8.1f ms  %-*s ", tool_now_ms() - d->t0, WHO_W, who);
    else
        printf("%*s", 8 + 5 + WHO_W + 1 + 2, "");
    vprintf(fmt, ap);
    putchar('\n');
    fflush(stdout);
    pthread_mutex_unlock(&d->lock);
}

static void say(struct demo *d, const char *who, const char *fmt, ...) TOOL_PRINTF(3, 4);
static void say(struct demo *d, const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(d, who, fmt, ap);
    va_end(ap);
}

/* A continuation line, under the previous one. */
static void more(struct demo *d, const char *fmt, ...) TOOL_PRINTF(2, 3);
static void more(struct demo *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(d, NULL, fmt, ap);
    va_end(ap);
}

/* An empty line between the acts, never inside another thread's line. */
static void blank(struct demo *d)
{
    pthread_mutex_lock(&d->lock);
    putchar('\n');
    pthread_mutex_unlock(&d->lock);
}

/* "30 82 01 22 ..." : the first max bytes in hex, "..." if there are more. */
static const char *hexsnip(const uint8_t *p, size_t n, size_t max, char *out, size_t cap)
{
    size_t k = n < max ? n : max, used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < k && used + 4 < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%02X", i ? " " : "", p[i]);
    if (k < n && used + 5 < cap) snprintf(out + used, cap - used, " ...");
    return out;
}

static int demo_error(struct demo *d, const char *fmt, ...) TOOL_PRINTF(2, 3);
static int demo_error(struct demo *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, sizeof d->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- server side: callbacks on the server's loop thread ---- */

static void srv_on_connect(void *user, pkm_server_conn_t *conn)
{
    struct demo *d = user;
    say(d, "server", "#%llu: checked the client's confirmation and answered it: established",
        (unsigned long long)pkm_server_conn_id(conn));
}

static void srv_on_packet(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt)
{
    struct demo *d = user;
    unsigned long long id = (unsigned long long)pkm_server_conn_id(conn);
    const pkm_schema_t *s = pkm_registry_lookup(d->reg, pkt->id);
    if (pkt->id == CONNECT_REQUEST_ID) {
        say(d, "server", "#%llu: <- 0x00 Connect Request (checked against its schema)", id);
        uint8_t out[16];
        size_t len;
        uint32_t h;
        pkm_value_t reason = PKM_V_U(PKM_CMPL_REASON_PASSWORD);
        int rc =
            pkm_schema_encode(cmpl_schema(REESTABLISH_ID), &reason, 1, out, sizeof out, &len, &h);
        if (rc == 0)
            rc =
                pkm_server_send(conn, REESTABLISH_ID, pkm_packet_hash(REESTABLISH_ID, h), out, len);
        if (rc == 0)
            rc = pkm_server_conn_rekey(conn, (const uint8_t *)DEMO_PASSWORD, strlen(DEMO_PASSWORD));
        if (rc < 0) {
            say(d, "server", "#%llu: cannot ask for a password: %s", id, pkm_strerror(rc));
            return;
        }
        say(d, "server",
            "#%llu: -> 0x05 Re-establish Secret (Reason 1: password), then its new KeyShare "
            "(in the clear)",
            id);
        return;
    }
    int rc = pkm_server_send(conn, pkt->id, pkt->hash, pkt->content, pkt->size);
    say(d, "server", "#%llu: <- 0x%02X %s, %zu bytes, Size and Hash checked; echoed%s%s", id,
        pkt->id, s ? s->name : "?", pkt->size, rc ? ": " : "", rc ? pkm_strerror(rc) : "");
}

static void srv_on_close(void *user, pkm_server_conn_t *conn, int err, const char *fail_step)
{
    struct demo *d = user;
    unsigned long long id = (unsigned long long)pkm_server_conn_id(conn);
    if (fail_step)
        say(d, "server", "#%llu: %s failed at step %s: %s; closed without a word", id,
            pkm_server_conn_established(conn) ? "re-establishment" : "handshake", fail_step,
            pkm_strerror(err));
    else
        say(d, "server", "#%llu: connection closed (%s)", id,
            err == PKM_EEOF ? "the client left"
            : err == 0      ? "server stopping"
                            : pkm_strerror(err));
    pthread_mutex_lock(&d->lock);
    d->closes++;
    pthread_mutex_unlock(&d->lock);
}

static void srv_on_log(void *user, int level, const char *msg)
{
    if (level <= PKM_LOG_WARN) say(user, "server", "%s", msg);
}

static int srv_verify(void *ctx, const pkm_packet_t *pkt)
{
    return pkm_registry_verify(ctx, pkt);
}

static void *server_thread(void *arg)
{
    struct demo *d = arg;
    d->server_rc = pkm_server_run(d->srv);
    return NULL;
}

/* ---- client side: pkm_connect, with the engine's hooks showing the handshake ---- */

/* The observer (engine.h's observe hook): each handshake message as it passes, with its wire
 * bytes, on the client's thread (inside pkm_connect / pkm_conn_rekey). */
static void client_observe(void *ctx, const pkm_hs_event_t *ev)
{
    struct demo *d = ctx;
    char hx[128];
    double now = tool_now_ms();
    if (ev->sent)
        d->tx += ev->len;
    else
        d->rx += ev->len;
    if (ev->rekey) {
        switch (ev->msg) {
        case PKM_HS_REKEY: d->t_rekey = now; break;
        case PKM_HS_KEYSHARE:
            if (ev->sent)
                say(d, "client",
                    "-> KeyShare: %zu bytes in the clear (a fresh M_client', IV_client'; both "
                    "sides keep their RSA keys)",
                    ev->len);
            else
                say(d, "client", "<- KeyShare: %zu bytes from the server", ev->len);
            break;
        case PKM_HS_CONFIRM:
            if (ev->sent)
                say(d, "client",
                    "-> confirmation: the 0xFF packet under K'_cs = SHA-256(M' || \"%s\" || "
                    "'C'): %zu bytes",
                    DEMO_PASSWORD, ev->len);
            break;
        case PKM_HS_ESTABLISHED:
            d->rekey = now - d->t_rekey;
            say(d, "client",
                "<- confirmation: established again, under K' derived with the password (%.2f "
                "ms)",
                d->rekey);
            break;
        default: break;
        }
        return;
    }
    switch (ev->msg) {
    case PKM_HS_SERVER_KEY: {
        size_t n = ev->len - KEY_LEN_PREFIX;
        d->t_serverkey = now;
        d->connect = now - d->t_start;
        say(d, "client",
            "<- ServerKey: 4-byte length (%zu) + %zu bytes of DER SubjectPublicKeyInfo", n, n);
        more(d, "%s", hexsnip(ev->bytes + KEY_LEN_PREFIX, n, 24, hx, sizeof hx));
        break;
    }
    case PKM_HS_CLIENT_KEY:
        say(d, "client", "-> ClientKey: 4 + %zu bytes (its ephemeral public key, same layout)",
            ev->len - KEY_LEN_PREFIX);
        break;
    case PKM_HS_KEYSHARE:
        if (ev->sent) {
            d->enc_m = now - d->t_serverkey;
            say(d, "client",
                "-> KeyShare: %zu bytes: M_client (256 random bytes) in two halves, each", ev->len);
            more(d, "RSA-PKCS#1 v1.5 encrypted under the server's key (256 + 256), + IV_client "
                    "(16)");
            more(d, "%s   (in %.2f ms)", hexsnip(ev->bytes, ev->len, 16, hx, sizeof hx), d->enc_m);
        } else {
            d->t_keyshare_in = now;
            say(d, "client",
                "<- KeyShare: %zu bytes: M_server under the client's key, and "
                "IV_server",
                ev->len);
            more(d, "%s", hexsnip(ev->bytes, ev->len, 16, hx, sizeof hx));
        }
        break;
    case PKM_HS_CONFIRM:
        if (ev->sent) {
            d->dec_m = now - d->t_keyshare_in;
            more(d, "decrypted M_server (two RSA private-key operations) in %.2f ms, then derived",
                 d->dec_m);
            more(d, "K_cs = SHA-256(M || 'C'), K_sc = SHA-256(M || 'S') (M = M_client XOR "
                    "M_server)");
            more(d, "and IV = IV_client XOR IV_server: one key per direction, both chains from "
                    "IV");
            say(d, "client",
                "-> confirmation: the 0xFF packet, 13 bytes FF 50 4B 6B E1 00 00 00 04 50 4B 4D "
                "00,");
            more(d, "AES-256-CBC encrypted under K_cs with PKCS#7 padding: %zu bytes", ev->len);
            more(d, "%s", hexsnip(ev->bytes, ev->len, 32, hx, sizeof hx));
        } else {
            say(d, "client",
                "<- confirmation: %zu bytes that decrypt under K_sc to the same 0xFF packet: the "
                "server derived K_sc, so it holds its private key",
                ev->len);
        }
        break;
    case PKM_HS_ESTABLISHED:
        d->handshake = now - d->t_serverkey;
        more(d, "handshake complete in %.2f ms (from the first ServerKey byte)", d->handshake);
        break;
    default: break;
    }
}

/* The trust hook (engine.h's check_peer): called once the ServerKey has passed the engine's
 * checks and the pin, before the client spends anything on it. */
static int client_check_peer(void *ctx, const uint8_t *der, size_t der_len, const char *fp)
{
    struct demo *d = ctx;
    (void)der;
    (void)der_len;
    int pinned = pkm_fingerprint_equal(fp, d->server_fp);
    more(d, "fingerprint %s: %s", fp, pinned ? "the pinned one" : "NOT the pinned one");
    return pinned ? 0 : PKM_EPIN;
}

/* Sends one packet; the wire bytes are counted as the engine frames them. */
static int client_send(struct demo *d, uint8_t id, uint32_t hash, const uint8_t *content,
                       size_t size)
{
    int rc = pkm_conn_send(d->c, id, hash, content, size, DEMO_TIMEOUT_MS);
    if (rc < 0)
        return demo_error(d, "send: %s", rc == PKM_EAGAIN ? "timed out" : pkm_conn_errmsg(d->c));
    d->tx += pkm_engine_wire_size(size);
    return 0;
}

static int next_packet(struct demo *d, pkm_packet_t *pkt)
{
    int rc = pkm_conn_recv(d->c, pkt, DEMO_TIMEOUT_MS);
    if (rc == 1) {
        d->rx += pkm_engine_wire_size(pkt->size);
        return 0;
    }
    return demo_error(d, "%s", rc == PKM_EAGAIN ? "timed out" : pkm_conn_errmsg(d->c));
}

static void describe(const pkm_schema_t *s, const pkm_value_t *v, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->n_fields && used < cap; i++) {
        const pkm_field_t *f = &s->fields[i];
        const pkm_value_t *x = &v[i];
        char val[160];
        switch (f->type) {
        case PKM_T_STRING:
            snprintf(val, sizeof val, "\"%.*s\"", (int)x->str.len, x->str.ptr);
            break;
        case PKM_T_JSON: snprintf(val, sizeof val, "%.*s", (int)x->str.len, x->str.ptr); break;
        case PKM_T_INSTANT:
            snprintf(val, sizeof val, "%lld.%09ld s", (long long)x->time.seconds,
                     (long)x->time.nanos);
            break;
        case PKM_T_BOOL: snprintf(val, sizeof val, "%s", x->b ? "true" : "false"); break;
        case PKM_T_USHORT:
        case PKM_T_BYTE: snprintf(val, sizeof val, "%llu", (unsigned long long)x->u64); break;
        case PKM_T_FLOAT: snprintf(val, sizeof val, "%g", (double)x->f32); break;
        case PKM_T_VERSION:
            snprintf(val, sizeof val, "%u.%u", x->version.major, x->version.minor);
            break;
        case PKM_T_UUID:
            snprintf(val, sizeof val,
                     "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64,
                     x->uuid.msb >> 32, x->uuid.msb >> 16 & 0xFFFF, x->uuid.msb & 0xFFFF,
                     x->uuid.lsb >> 48, (uint64_t)(x->uuid.lsb & 0xFFFFFFFFFFFFull));
            break;
        case PKM_T_ARRAY: {
            char hx[64];
            tool_hex(x->bytes.ptr, x->bytes.len < 16 ? x->bytes.len : 16, hx);
            snprintf(val, sizeof val, "0x%s", hx);
            break;
        }
        default: snprintf(val, sizeof val, "?"); break;
        }
        used += (size_t)snprintf(out + used, cap - used, "%s%s %s", i ? ", " : "", f->name, val);
    }
}

/* Encodes a typed packet, sends it, waits for the echo and decodes it. */
static int typed_roundtrip(struct demo *d, uint8_t id, const pkm_schema_t *s,
                           const pkm_value_t *vals)
{
    uint8_t pkt_bytes[512];
    size_t len;
    char desc[512], hx[160];
    int rc = pkm_registry_encode(d->reg, id, vals, s->n_fields, pkt_bytes, sizeof pkt_bytes, &len);
    if (rc < 0) return demo_error(d, "encode %s: %s", s->name, pkm_strerror(rc));
    pkm_packet_t p;
    pkm_packet_header_read(pkt_bytes, PKM_DEFAULT_MAX_SIZE, &p);
    describe(s, vals, desc, sizeof desc);
    double t = tool_now_ms();
    say(d, "client", "-> 0x%02X %s: %s", id, s->name, desc);
    more(d, "Hash 0x%08lX, Size %zu, content %s", (unsigned long)p.hash, p.size,
         hexsnip(pkt_bytes + PKM_HEADER_SIZE, p.size, 24, hx, sizeof hx));
    more(d, "%zu bytes on the wire: ((9 + %zu) / 16 + 1) * 16, AES-256-CBC continuing the chain",
         pkm_engine_wire_size(p.size), p.size);
    if (client_send(d, id, p.hash, pkt_bytes + PKM_HEADER_SIZE, p.size) < 0) return -1;
    pkm_packet_t echo;
    if (next_packet(d, &echo) < 0) return -1;
    double rtt = tool_now_ms() - t;
    pkm_msg_t *m;
    rc = pkm_registry_decode(d->reg, &echo, &m);
    if (rc < 0) return demo_error(d, "decode the echo: %s", pkm_strerror(rc));
    size_t nf;
    describe(s, pkm_msg_fields(m, &nf), desc, sizeof desc);
    pkm_msg_free(m);
    say(d, "client",
        "<- 0x%02X echo, decoded with the %s schema (Hash checked): round trip %.2f ms", echo.id,
        s->name, rtt);
    d->rtt_sum += rtt;
    d->rtt_n++;
    return 0;
}

/* Connect Request -> 0x05 Re-establish Secret (password) -> new KeyShares -> confirmation (the
 * observer shows those). */
static int client_password(struct demo *d, const pkm_value_t *connect_vals)
{
    uint8_t pkt_bytes[512];
    size_t len;
    const pkm_schema_t *connect_request = cmpl_schema(CONNECT_REQUEST_ID);
    int rc = pkm_registry_encode(d->reg, CONNECT_REQUEST_ID, connect_vals, 3, pkt_bytes,
                                 sizeof pkt_bytes, &len);
    if (rc < 0) return demo_error(d, "encode: %s", pkm_strerror(rc));
    pkm_packet_t p;
    pkm_packet_header_read(pkt_bytes, PKM_DEFAULT_MAX_SIZE, &p);
    char desc[512];
    describe(connect_request, connect_vals, desc, sizeof desc);
    say(d, "client", "-> 0x00 Connect Request: %s", desc);
    if (client_send(d, p.id, p.hash, pkt_bytes + PKM_HEADER_SIZE, p.size) < 0) return -1;

    pkm_packet_t trig;
    if (next_packet(d, &trig) < 0) return -1;
    pkm_msg_t *m;
    rc = pkm_registry_decode(d->reg, &trig, &m);
    if (rc < 0 || trig.id != REESTABLISH_ID) {
        pkm_msg_free(m);
        return demo_error(d, "expected 0x05 Re-establish Secret, got 0x%02X", trig.id);
    }
    uint64_t reason = pkm_msg_field(m, PKM_CMPL_REESTABLISH_REASON)->u64;
    pkm_msg_free(m);
    const pkm_cmpl_symbol_t *sym = pkm_cmpl_symbol_by_value(pkm_cmpl_by_id(REESTABLISH_ID),
                                                            PKM_CMPL_REESTABLISH_REASON, reason);
    say(d, "client",
        "<- 0x05 Re-establish Secret, Reason %llu (%s): the server requires a password",
        (unsigned long long)reason, sym ? sym->name : "?");
    rc = pkm_conn_rekey(d->c, (const uint8_t *)DEMO_PASSWORD, strlen(DEMO_PASSWORD),
                        DEMO_TIMEOUT_MS);
    if (rc < 0) return demo_error(d, "re-establishment failed: %s", pkm_conn_errmsg(d->c));
    return 0;
}

/* A second client, with the conn API, that knows the wrong password. */
static int wrong_password(struct demo *d, uint16_t port, const char *server_fp,
                          const pkm_value_t *connect_vals)
{
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    cfg.engine.pin_fingerprint = server_fp;
    char err[PKM_ERRMSG_SIZE];
    cfg.errbuf = err;
    cfg.errbuf_size = sizeof err;
    pkm_conn_t *c;
    say(d, "client2",
        "a second client (pkm_connect, the blocking API) with a wrong password, \"%s\"",
        WRONG_PASSWORD);
    int rc = pkm_connect("127.0.0.1", port, &cfg, &c);
    if (rc < 0) return demo_error(d, "second client: %s", err);
    uint8_t pkt_bytes[512];
    size_t len;
    rc = pkm_registry_encode(d->reg, CONNECT_REQUEST_ID, connect_vals, 3, pkt_bytes,
                             sizeof pkt_bytes, &len);
    pkm_packet_t p;
    pkm_packet_header_read(pkt_bytes, PKM_DEFAULT_MAX_SIZE, &p);
    if (rc == 0)
        rc = pkm_conn_send(c, p.id, p.hash, pkt_bytes + PKM_HEADER_SIZE, p.size, DEMO_TIMEOUT_MS);
    pkm_packet_t trig;
    if (rc == 0) rc = pkm_conn_recv(c, &trig, DEMO_TIMEOUT_MS);
    if (rc != 1 || trig.id != REESTABLISH_ID) {
        pkm_conn_close(c);
        return demo_error(d, "second client: no 0x05 (%s)", pkm_strerror(rc));
    }
    double t = tool_now_ms();
    rc =
        pkm_conn_rekey(c, (const uint8_t *)WRONG_PASSWORD, strlen(WRONG_PASSWORD), DEMO_TIMEOUT_MS);
    d->wrong = tool_now_ms() - t;
    if (rc == 0) {
        pkm_conn_close(c);
        return demo_error(d, "second client: a wrong password was accepted");
    }
    say(d, "client2", "re-establishment refused after %.2f ms:", d->wrong);
    more(d, "%s", pkm_conn_errmsg(c));
    pkm_conn_close(c);
    return 0;
}

static int demo_run(struct demo *d, pkm_key_t *skey, pkm_key_t *ckey, const char *server_fp)
{
    /* The server. */
    pkm_server_config_t cfg;
    pkm_server_config_init(&cfg);
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.engine.server_key = skey;
    cfg.raise_fd_limit = 0;
    cfg.engine.verify = srv_verify;
    cfg.engine.verify_ctx = d->reg;
    cfg.on_connect = srv_on_connect;
    cfg.on_packet = srv_on_packet;
    cfg.on_close = srv_on_close;
    cfg.on_log = srv_on_log;
    cfg.user = d;
    int rc = pkm_server_new(&cfg, &d->srv);
    if (rc < 0) {
        pkm_key_free(ckey);
        return demo_error(d, "cannot start the server: %s", pkm_strerror(rc));
    }
    uint16_t port = pkm_server_port(d->srv);
    pthread_t th;
    if (pthread_create(&th, NULL, server_thread, d) != 0) {
        pkm_key_free(ckey);
        pkm_server_free(d->srv);
        d->srv = NULL;
        return demo_error(d, "cannot start the server thread");
    }
    say(d, "server",
        "listening on 127.0.0.1:%u (libuv loop on its own thread; RSA private-key "
        "work on its thread pool)",
        port);

    /* The client: pkm_connect, pinned, with the hooks that show the handshake. */
    pkm_conn_config_t cc;
    pkm_conn_config_init(&cc);
    cc.engine.client_key = ckey; /* the connection owns it from here */
    cc.engine.pin_fingerprint = server_fp;
    cc.engine.check_peer = client_check_peer;
    cc.engine.check_peer_ctx = d;
    cc.engine.observe = client_observe;
    cc.engine.observe_ctx = d;
    cc.handshake_timeout_ms = DEMO_TIMEOUT_MS;
    cc.connect_timeout_ms = DEMO_TIMEOUT_MS;
    char cerr[PKM_ERRMSG_SIZE];
    cc.errbuf = cerr;
    cc.errbuf_size = sizeof cerr;
    d->server_fp = server_fp;
    say(d, "client", "connects with pkm_connect(); expects the server key %s (pinned)", server_fp);
    d->t_start = tool_now_ms();
    rc = pkm_connect("127.0.0.1", port, &cc, &d->c);
    if (rc < 0) rc = demo_error(d, "client: %s", cerr);

    /* Typed packets through the codec: schemas registered on both sides. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    static const uint8_t nature[4] = {0x0B, 0x0E, 0x0A, 0x0D};
    const pkm_value_t chat1[] = {PKM_V_STR("Hello from pkmcom demo!"),
                                 PKM_V_TIME((int64_t)now.tv_sec, (int32_t)now.tv_nsec),
                                 PKM_V_BOOL(false)};
    const pkm_value_t offer[] = {PKM_V_U(25), PKM_V_U(42), PKM_V_BOOL(true), PKM_V_F32(6.0f),
                                 PKM_V_BYTES(nature, 4)};
    const char *trainer = "{\"name\":\"Red\",\"hours\":42}";
    const pkm_value_t connect_vals[] = {PKM_V_VERSION(1, 0), PKM_V_STRN(trainer, strlen(trainer)),
                                        PKM_V_UUID(0x123e4567e89b42d3ull, 0xa456426614174000ull)};
    const pkm_value_t chat2[] = {PKM_V_STR("Under the new key, with the password."),
                                 PKM_V_TIME((int64_t)now.tv_sec + 1, 0), PKM_V_BOOL(true)};
    if (rc == 0) {
        blank(d);
        rc = typed_roundtrip(d, CHAT_ID, &chat, chat1);
    }
    if (rc == 0) rc = typed_roundtrip(d, TRADE_ID, &trade, offer);
    if (rc == 0) {
        blank(d);
        rc = client_password(d, connect_vals);
    }
    if (rc == 0) rc = typed_roundtrip(d, CHAT_ID, &chat, chat2);
    pkm_conn_close(d->c); /* the client leaves */
    d->c = NULL;
    if (rc == 0) {
        blank(d);
        rc = wrong_password(d, port, server_fp, connect_vals);
    }
    /* Let the server report both closes before stopping it. */
    for (int i = 0; i < 200; i++) {
        pthread_mutex_lock(&d->lock);
        unsigned closes = d->closes;
        pthread_mutex_unlock(&d->lock);
        if (closes >= 2 || rc != 0) break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    pkm_server_stop(d->srv);
    pthread_join(th, NULL);
    pkm_server_stats_t st;
    pkm_server_stats(d->srv, &st);
    pkm_server_free(d->srv);
    d->srv = NULL;
    if (rc != 0) return rc;

    printf("\nSummary (real timings on this machine)\n");
    printf("  server key generation, RSA-2048         %9.1f ms\n", d->server_keygen);
    printf("  client key generation, RSA-2048         %9.1f ms\n", d->client_keygen);
    printf("  TCP connect, to the first ServerKey byte %8.2f ms\n", d->connect);
    printf("  handshake, ServerKey to confirmation    %9.2f ms\n", d->handshake);
    printf("    client: check key + encrypt M_client  %9.2f ms\n", d->enc_m);
    printf("    client: decrypt M_server + derive K   %9.2f ms\n", d->dec_m);
    printf("  typed packets echoed: %u, round trip avg %9.2f ms\n", d->rtt_n,
           d->rtt_n ? d->rtt_sum / d->rtt_n : 0.0);
    printf("  re-establishment with a password        %9.2f ms\n", d->rekey);
    printf("  wrong password refused after            %9.2f ms\n", d->wrong);
    printf("  client bytes sent / received            %llu / %llu\n", (unsigned long long)d->tx,
           (unsigned long long)d->rx);
    printf("  server: %llu connections, %llu handshakes ok, %llu failed, %llu packets in, %llu "
           "out\n",
           (unsigned long long)st.accepted, (unsigned long long)st.handshakes_ok,
           (unsigned long long)st.handshakes_failed, (unsigned long long)st.packets_in,
           (unsigned long long)st.packets_out);
    printf("  total                                   %9.1f ms\n", tool_now_ms() - d->t0);
    return 0;
}

static int demo_live(void)
{
    struct demo d;
    memset(&d, 0, sizeof d);
    pthread_mutex_init(&d.lock, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    printf("pkmcom demo: a PkmCom/TCP server and a client in this process, over 127.0.0.1.\n"
           "Every byte count, fingerprint and timing below is real; nothing is precomputed.\n\n");
    d.t0 = tool_now_ms();
    int rc = 0;
    d.reg = pkm_registry_new();
    if (!d.reg) rc = demo_error(&d, "out of memory");
    if (rc == 0) rc = pkm_cmpl_register(d.reg); /* 0x00..0x07, as the spec defines them */
    if (rc == 0) rc = pkm_registry_register(d.reg, CHAT_ID, &chat);
    if (rc == 0) rc = pkm_registry_register(d.reg, TRADE_ID, &trade);
    if (rc < 0 && !d.err[0]) demo_error(&d, "registry: %s", pkm_strerror(rc));

    pkm_key_t *skey = NULL, *ckey = NULL;
    char fp[PKM_FINGERPRINT_SIZE] = "";
    if (rc == 0) {
        double t = tool_now_ms();
        rc = pkm_key_generate(&skey);
        d.server_keygen = tool_now_ms() - t;
        if (rc < 0) demo_error(&d, "key generation: %s", pkm_strerror(rc));
    }
    if (rc == 0) {
        pkm_key_fingerprint(skey, fp);
        say(&d, "server", "generated its long-term RSA-2048 key in %.1f ms: %s", d.server_keygen,
            fp);
        double t = tool_now_ms();
        rc = pkm_key_generate(&ckey);
        d.client_keygen = tool_now_ms() - t;
        if (rc < 0) demo_error(&d, "key generation: %s", pkm_strerror(rc));
    }
    if (rc == 0) {
        char cfp[PKM_FINGERPRINT_SIZE];
        pkm_key_fingerprint(ckey, cfp);
        say(&d, "client", "generated its ephemeral RSA-2048 key in %.1f ms: %s", d.client_keygen,
            cfp);
        rc = demo_run(&d, skey, ckey, fp);
    }
    pkm_key_free(skey);
    pkm_registry_free(d.reg);
    pthread_mutex_destroy(&d.lock);
    if (rc != 0) return tool_fail(TOOL_EXIT_FAIL, "demo: %s", d.err[0] ? d.err : "failed");
    return TOOL_EXIT_OK;
}

static const char demo_help[] =
    "usage: pkmcom demo [--codec]\n"
    "\n"
    "Starts a server on 127.0.0.1 on a free port with a fresh key, connects a client, shows\n"
    "each handshake step as it happens, exchanges typed packets, re-establishes the secret\n"
    "with a password, and ends with a summary with timings. Needs no setup and no files.\n"
    "\n"
    "  --codec      only the codec: encode, print and decode a sample packet\n"
    "  -h, --help   this help\n";

int cmd_demo(int argc, char **argv)
{
    int codec = 0;
    for (int i = 1; i < argc; i++) {
        if (tool_is_help(argv[i])) {
            fputs(demo_help, stdout);
            return TOOL_EXIT_OK;
        }
        if (strcmp(argv[i], "--codec") == 0)
            codec = 1;
        else
            return tool_usage_error("demo", "unexpected argument '%s'", argv[i]);
    }
    if (codec) return demo_codec();
    return demo_live();
}
