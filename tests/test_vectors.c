/* SPDX-License-Identifier: MIT */
/* The wire test vectors of docs/test-vectors/: `test_vectors --generate DIR` (re)writes
 * handshake.json with the engine; without arguments (ctest) it checks the committed files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include "support.h"
#include "engine_internal.h"
#include "pkmcom/schema.h"

/*
 * The check (no arguments) is independent of the engine where it can be:
 * - K_cs = SHA-256(M || S || 0x43), K_sc = SHA-256(M || S || 0x53) (M = M_client XOR M_server)
 *   and IV = IV_client XOR IV_server with EVP_Digest (wire profile 2);
 * - every KeyShare ciphertext decrypted with the committed private key (EVP, RSA PKCS#1 v1.5);
 * - every encrypted message decrypted with plain EVP AES-256-CBC: one run per direction and key
 *   (so the chain continues across packets), and each message alone from its recorded chain IV;
 *   plaintexts rebuilt from the header / padding rules (hashsum by a loop written here);
 * - keys: the public DER and the fingerprint recomputed from the PEM with EVP;
 * - then the client transcript is replayed into a fresh server engine (and the server's into a
 *   client engine), with the recorded M/IV as the engines' randomness: every byte they emit that
 *   does not depend on RSA padding randomness is compared, their KeyShares are decrypted.
 * apl.json (written by apl_vectors.py, in Python) is checked against the codec.
 */

#define MAX_MSG 4096

static json_t *HS;  /* handshake.json */
static json_t *APL; /* apl.json */
static char DIRPATH[1024];

/* ---- small helpers ---- */

static void hex_of(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = 0;
}

static json_t *jhex(const uint8_t *p, size_t n)
{
    char *s = malloc(2 * n + 1);
    assert_non_null(s);
    hex_of(p, n, s);
    json_t *j = json_string(s);
    free(s);
    assert_non_null(j);
    return j;
}

static void jset(json_t *o, const char *k, json_t *v)
{
    assert_non_null(v);
    assert_int_equal(json_object_set_new(o, k, v), 0);
}

static json_t *jget(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!v) fail_msg("vector field \"%s\" missing", k);
    return v;
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(jget(o, k));
    if (!s) fail_msg("vector field \"%s\" is not a string", k);
    return s;
}

static long long jint(const json_t *o, const char *k)
{
    json_t *v = jget(o, k);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

/* Hex field k of o into out[cap]; returns the length. */
static size_t jbytes(const json_t *o, const char *k, uint8_t *out, size_t cap)
{
    int n = t_unhex(jstr(o, k), out, cap);
    if (n < 0) fail_msg("vector field \"%s\" is not hex of at most %zu bytes", k, cap);
    return (size_t)n;
}

/* The same into a fresh allocation (free it). */
static uint8_t *jbytes_alloc(const json_t *o, const char *k, size_t *len)
{
    size_t cap = strlen(jstr(o, k)) / 2 + 1;
    uint8_t *p = malloc(cap);
    assert_non_null(p);
    *len = jbytes(o, k, p, cap);
    return p;
}

/* hashsum of bytes, written here from the definition (not pkm_hashsum_bytes). */
static uint32_t ref_hashsum(const uint8_t *p, size_t n)
{
    uint32_t h = 0;
    for (size_t i = 0; i < n; i++)
        h = i == 0 ? p[0] : h * 31u + p[i];
    return h;
}

static size_t padded(size_t size)
{
    return ((9 + size) / 16 + 1) * 16;
}

/* header + content + PKCS#7 padding, from the rules. Returns the length. */
static size_t packet_plain(uint8_t id, uint32_t hash, const uint8_t *content, size_t size,
                           uint8_t *out)
{
    size_t total = padded(size);
    out[0] = id;
    for (int i = 0; i < 4; i++) {
        out[1 + i] = (uint8_t)(hash >> (24 - 8 * i));
        out[5 + i] = (uint8_t)(size >> (24 - 8 * i));
    }
    if (size) memcpy(out + 9, content, size);
    memset(out + 9 + size, (int)(total - 9 - size), total - 9 - size);
    return total;
}

static const uint8_t CONFIRM[16] = {0xFF, 0x50, 0x4B, 0x6B, 0xE1, 0x00, 0x00, 0x00,
                                    0x04, 0x50, 0x4B, 0x4D, 0x00, 0x03, 0x03, 0x03};

static void aes_cbc_dec(const uint8_t key[32], const uint8_t iv[16], const uint8_t *in, size_t n,
                        uint8_t *out)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = 0;
    assert_non_null(ctx);
    assert_int_equal(EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, iv), 1);
    assert_int_equal(EVP_CIPHER_CTX_set_padding(ctx, 0), 1);
    assert_int_equal(EVP_DecryptUpdate(ctx, out, &l1, in, (int)n), 1);
    assert_int_equal(EVP_DecryptFinal_ex(ctx, out + l1, &l2), 1);
    assert_int_equal((size_t)(l1 + l2), n);
    EVP_CIPHER_CTX_free(ctx);
}

static EVP_PKEY *pem_private(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    assert_non_null(b);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(k);
    return k;
}

/* RSAES-PKCS1-v1_5 decryption with EVP; returns the plaintext length. */
static size_t rsa_dec(EVP_PKEY *k, const uint8_t ct[256], uint8_t out[256])
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
    assert_non_null(c);
    assert_true(EVP_PKEY_decrypt_init(c) > 0);
    assert_true(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) > 0);
    size_t outlen = 256;
    assert_true(EVP_PKEY_decrypt(c, out, &outlen, ct, 256) > 0);
    EVP_PKEY_CTX_free(c);
    return outlen;
}

/* Copies `pem` to a new 0600 temporary file and loads it as a pkm key (the committed file's
 * mode is whatever git gave it; pkm_key_load_pem refuses group/world-readable private keys). */
static pkm_key_t *pkm_key_from_pem_text(const char *pem)
{
    char path[] = "/tmp/pkm_vec_key_XXXXXX";
    int fd = mkstemp(path); /* mode 0600 */
    assert_true(fd >= 0);
    size_t n = strlen(pem);
    assert_int_equal(write(fd, pem, n), (ssize_t)n);
    close(fd);
    pkm_key_t *k = NULL;
    int rc = pkm_key_load_pem(path, &k);
    unlink(path);
    assert_int_equal(rc, 0);
    return k;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

/* ---- engine plumbing ---- */

/* The engines' randomness: the recorded M and IV, in the order asked (M then IV per KeyShare). */
typedef struct {
    uint8_t buf[8][256];
    size_t len[8];
    size_t n, next;
} rq_t;

static void rq_push(rq_t *q, const uint8_t *p, size_t n)
{
    assert_true(q->n < 8 && n <= 256);
    memcpy(q->buf[q->n], p, n);
    q->len[q->n++] = n;
}

static int rq_random(void *ctx, uint8_t *out, size_t n)
{
    rq_t *q = ctx;
    if (q->next >= q->n || q->len[q->next] != n) return -1;
    memcpy(out, q->buf[q->next++], n);
    return 0;
}

typedef struct {
    uint8_t k_cs[4][32], k_sc[4][32], iv[4][16];
    int n;
} klog_t;

static void klog_cb(void *ctx, const uint8_t k_cs[32], const uint8_t k_sc[32], const uint8_t iv[16])
{
    klog_t *k = ctx;
    assert_true(k->n < 4);
    memcpy(k->k_cs[k->n], k_cs, 32);
    memcpy(k->k_sc[k->n], k_sc, 32);
    memcpy(k->iv[k->n], iv, 16);
    k->n++;
}

static void feed(pkm_engine_t *e, const uint8_t *p, size_t n)
{
    assert_int_equal(pkm_engine_feed(e, p, n), 0);
}

/* Takes exactly n of the bytes the engine has to send. */
static void take(pkm_engine_t *e, uint8_t *out, size_t n)
{
    size_t len = 0;
    const uint8_t *p = pkm_engine_send_buf(e, &len);
    if (len < n) fail_msg("engine has %zu bytes to send, expected at least %zu", len, n);
    memcpy(out, p, n);
    assert_int_equal(pkm_engine_send_ack(e, n), 0);
}

static size_t pending(pkm_engine_t *e)
{
    size_t len = 0;
    (void)pkm_engine_send_buf(e, &len);
    return len;
}

static pkm_engine_t *make_engine(int role, pkm_key_t *key, const char *pin, const char *secret,
                                 rq_t *rq, klog_t *kl)
{
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, role);
    if (role == PKM_ROLE_SERVER)
        cfg.server_key = key;
    else
        cfg.client_key = key; /* ownership passes */
    cfg.pin_fingerprint = pin;
    if (secret) {
        cfg.secret = (const uint8_t *)secret;
        cfg.secret_len = strlen(secret);
    }
    cfg.random = rq_random;
    cfg.random_ctx = rq;
    pkm_engine_t *e = NULL;
    assert_int_equal(pkm_engine_new(&cfg, &e), 0);
    pkm__engine_set_keylog(e, klog_cb, kl);
    return e;
}

/* ======================================================================================
 * Generation: `test_vectors --generate DIR` writes DIR/handshake.json.
 * ====================================================================================== */

typedef struct {
    const char *name;
    const char *description;
    const char *secret0; /* first handshake, or NULL */
    const char *secret1; /* re-establishment, or NULL */
    uint8_t reason;      /* the trigger's Reason (Complete Definition packet 0x05) */
    uint64_t seed;       /* for M and IV */
} gen_spec;

typedef struct {
    json_t *msgs;
    uint8_t c2s[65536], s2c[65536];
    size_t c2s_len, s2c_len;
} gen_t;

static json_t *gen_msg(gen_t *g, int c2s, const char *kind, int epoch, const uint8_t *p, size_t n)
{
    json_t *m = json_object();
    assert_non_null(m);
    jset(m, "dir", json_string(c2s ? "c2s" : "s2c"));
    jset(m, "kind", json_string(kind));
    if (epoch >= 0) jset(m, "epoch", json_integer(epoch));
    jset(m, "bytes", jhex(p, n));
    jset(m, "deterministic", json_boolean(strcmp(kind, "KeyShare") != 0));
    assert_int_equal(json_array_append_new(g->msgs, m), 0);
    if (c2s) {
        assert_true(g->c2s_len + n <= sizeof g->c2s);
        memcpy(g->c2s + g->c2s_len, p, n);
        g->c2s_len += n;
    } else {
        assert_true(g->s2c_len + n <= sizeof g->s2c);
        memcpy(g->s2c + g->s2c_len, p, n);
        g->s2c_len += n;
    }
    return m;
}

static void gen_keymsg(gen_t *g, int c2s, const uint8_t *p, size_t n, const pkm_key_t *k)
{
    json_t *m = gen_msg(g, c2s, c2s ? "ClientKey" : "ServerKey", -1, p, n);
    char fp[PKM_FINGERPRINT_SIZE];
    assert_int_equal(pkm_key_fingerprint(k, fp), 0);
    jset(m, "length", json_integer((json_int_t)n - 4));
    jset(m, "der", jhex(p + 4, n - 4));
    jset(m, "fingerprint", json_string(fp));
}

static void gen_keyshare(gen_t *g, int c2s, int epoch, const uint8_t p[528])
{
    json_t *m = gen_msg(g, c2s, "KeyShare", epoch, p, 528);
    jset(m, "ciphertext1", jhex(p, 256));
    jset(m, "ciphertext2", jhex(p + 256, 256));
    jset(m, "iv", jhex(p + 512, 16));
}

static void gen_confirm(gen_t *g, int c2s, int epoch, const uint8_t ct[16])
{
    json_t *m = gen_msg(g, c2s, "Confirm", epoch, ct, 16);
    jset(m, "plaintext", jhex(CONFIRM, 16));
}

/* Queues a packet on `from`, records its ciphertext, delivers it to `to` and checks it there. */
static void gen_packet(gen_t *g, pkm_engine_t *from, pkm_engine_t *to, int c2s, int epoch,
                       uint8_t id, const uint8_t *content, size_t size, int trigger)
{
    uint32_t hash = pkm_packet_hash(id, ref_hashsum(content, size));
    assert_int_equal(pkm_engine_queue_packet(from, id, hash, content, size), 0);
    uint8_t ct[MAX_MSG], plain[MAX_MSG];
    size_t total = packet_plain(id, hash, content, size, plain);
    assert_int_equal(pending(from), total);
    take(from, ct, total);
    json_t *m = gen_msg(g, c2s, "Packet", epoch, ct, total);
    jset(m, "id", json_integer(id));
    jset(m, "hash", json_integer(hash));
    jset(m, "size", json_integer((json_int_t)size));
    jset(m, "content", jhex(content, size));
    jset(m, "padding", json_integer((json_int_t)(total - 9 - size)));
    jset(m, "plaintext", jhex(plain, total));
    if (trigger) jset(m, "trigger", json_true());
    if (!trigger) {
        feed(to, ct, total);
        pkm_packet_t pk;
        assert_int_equal(pkm_engine_next_packet(to, &pk), 1);
        assert_int_equal(pk.size, size);
        if (size) assert_memory_equal(pk.content, content, size);
    }
}

static json_t *gen_secret(const char *s)
{
    if (!s) return json_null();
    json_t *o = json_object();
    jset(o, "utf8", json_string(s));
    jset(o, "hex", jhex((const uint8_t *)s, strlen(s)));
    return o;
}

static json_t *gen_epoch(const char *secret, const uint8_t mc[256], const uint8_t ivc[16],
                         const uint8_t ms[256], const uint8_t ivs[16], const klog_t *kc,
                         const klog_t *ks, int i)
{
    assert_memory_equal(kc->k_cs[i], ks->k_cs[i], 32);
    assert_memory_equal(kc->k_sc[i], ks->k_sc[i], 32);
    assert_memory_equal(kc->iv[i], ks->iv[i], 16);
    uint8_t m[256];
    for (int j = 0; j < 256; j++)
        m[j] = mc[j] ^ ms[j];
    json_t *o = json_object(), *c = json_object(), *s = json_object();
    jset(o, "secret", gen_secret(secret));
    jset(c, "M", jhex(mc, 256));
    jset(c, "IV", jhex(ivc, 16));
    jset(s, "M", jhex(ms, 256));
    jset(s, "IV", jhex(ivs, 16));
    jset(o, "client", c);
    jset(o, "server", s);
    jset(o, "M", jhex(m, 256));
    jset(o, "K_cs", jhex(kc->k_cs[i], 32));
    jset(o, "K_sc", jhex(kc->k_sc[i], 32));
    jset(o, "IV", jhex(kc->iv[i], 16));
    return o;
}

/* Content bytes for the channel packets: readable where it helps. */
static void fill_content(uint8_t *p, size_t n, uint8_t salt)
{
    static const char text[] = "PkmCom/TCP test vector packet ";
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(text[i % (sizeof text - 1)] ^ (i >= 30 ? salt : 0));
}

/* After the run: each encrypted message's chain IV (the previous ciphertext block in its
 * direction under the same key, or the key's IV). */
static void gen_chain_ivs(json_t *session)
{
    json_t *msgs = jget(session, "messages"), *epochs = jget(session, "epochs");
    uint8_t last[2][16];
    int last_epoch[2] = {-1, -1};
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        const char *kind = jstr(m, "kind");
        if (strcmp(kind, "Confirm") != 0 && strcmp(kind, "Packet") != 0) continue;
        int d = strcmp(jstr(m, "dir"), "c2s") == 0;
        int ep = (int)jint(m, "epoch");
        uint8_t ct[MAX_MSG], iv[16];
        size_t n = jbytes(m, "bytes", ct, sizeof ct);
        if (last_epoch[d] == ep)
            memcpy(iv, last[d], 16);
        else
            jbytes(json_array_get(epochs, (size_t)ep), "IV", iv, 16);
        jset(m, "chain_iv", jhex(iv, 16));
        memcpy(last[d], ct + n - 16, 16);
        last_epoch[d] = ep;
    }
}

static json_t *gen_session(const gen_spec *sp, const char *server_pem, const char *client_pem,
                           const char *server_fp)
{
    static const size_t sizes[] = {0, 5, 16, 100};
    gen_t *g = calloc(1, sizeof *g);
    assert_non_null(g);
    g->msgs = json_array();
    t_rng rng;
    t_rng_seed(&rng, sp->seed);
    uint8_t mc[2][256], ivc[2][16], ms[2][256], ivs[2][16];
    rq_t qc = {0}, qs = {0};
    for (int i = 0; i < 2; i++) {
        t_rng_bytes(&rng, mc[i], 256);
        t_rng_bytes(&rng, ivc[i], 16);
        t_rng_bytes(&rng, ms[i], 256);
        t_rng_bytes(&rng, ivs[i], 16);
        rq_push(&qc, mc[i], 256);
        rq_push(&qc, ivc[i], 16);
        rq_push(&qs, ms[i], 256);
        rq_push(&qs, ivs[i], 16);
    }
    klog_t kc = {0}, ks = {0};
    pkm_key_t *skey = pkm_key_from_pem_text(server_pem);
    pkm_key_t *ckey = pkm_key_from_pem_text(client_pem);
    pkm_key_t *ckey_pub = pkm_key_ref(ckey);
    pkm_engine_t *s = make_engine(PKM_ROLE_SERVER, skey, NULL, sp->secret0, &qs, &ks);
    pkm_engine_t *c = make_engine(PKM_ROLE_CLIENT, ckey, server_fp, sp->secret0, &qc, &kc);
    uint8_t buf[MAX_MSG], ct[16];

    /* Handshake. */
    size_t n = pending(s);
    take(s, buf, n);
    gen_keymsg(g, 0, buf, n, skey);
    feed(c, buf, n);
    n = pending(c);
    assert_int_equal(n, 4 + 294 + 528);
    take(c, buf, n);
    gen_keymsg(g, 1, buf, 4 + 294, ckey_pub);
    gen_keyshare(g, 1, 0, buf + 4 + 294);
    feed(s, buf, n);
    take(s, buf, 528);
    gen_keyshare(g, 0, 0, buf);
    feed(c, buf, 528);
    take(c, ct, 16);
    gen_confirm(g, 1, 0, ct);
    feed(s, ct, 16);
    take(s, ct, 16);
    gen_confirm(g, 0, 0, ct);
    feed(c, ct, 16);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);

    /* Channel. */
    uint8_t content[128];
    for (size_t i = 0; i < 4; i++) {
        fill_content(content, sizes[i], 0x20);
        gen_packet(g, c, s, 1, 0, (uint8_t)(0x01 + i), content, sizes[i], 0);
    }
    for (size_t i = 0; i < 4; i++) {
        fill_content(content, sizes[i], 0x40);
        gen_packet(g, s, c, 0, 0, (uint8_t)(0x81 + i), content, sizes[i], 0);
    }

    /* Re-establishment: trigger, server KeyShare, client KeyShare, 0xFF both ways. */
    uint8_t trig[MAX_MSG];
    gen_packet(g, s, c, 0, 0, 0x05, &sp->reason, 1, 1);
    json_t *tm = json_array_get(g->msgs, json_array_size(g->msgs) - 1);
    size_t tlen = jbytes(tm, "bytes", trig, sizeof trig);
    const uint8_t *s1 = (const uint8_t *)sp->secret1;
    size_t s1len = sp->secret1 ? strlen(sp->secret1) : 0;
    assert_int_equal(pkm_engine_rekey(s, s1, s1len), 0);
    take(s, buf, 528);
    gen_keyshare(g, 0, 1, buf);
    /* Trigger and KeyShare in one read: only the trigger is decrypted (lazily). */
    uint8_t both[MAX_MSG];
    memcpy(both, trig, tlen);
    memcpy(both + tlen, buf, 528);
    feed(c, both, tlen + 528);
    pkm_packet_t pk;
    assert_int_equal(pkm_engine_next_packet(c, &pk), 1);
    assert_int_equal(pk.id, 0x05);
    assert_int_equal(pkm_engine_rekey(c, s1, s1len), 0);
    assert_int_equal(pending(c), 528 + 16);
    take(c, buf, 528 + 16);
    gen_keyshare(g, 1, 1, buf);
    gen_confirm(g, 1, 1, buf + 528);
    feed(s, buf, 528 + 16);
    take(s, ct, 16);
    gen_confirm(g, 0, 1, ct);
    feed(c, ct, 16);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);

    /* A packet each way under the new key. */
    fill_content(content, 7, 0);
    gen_packet(g, c, s, 1, 1, 0x06, content, 7, 0); /* 9 + 7 = 16: a whole block of padding */
    fill_content(content, 17, 0);
    gen_packet(g, s, c, 0, 1, 0x86, content, 17, 0);
    assert_int_equal(pending(c), 0);
    assert_int_equal(pending(s), 0);
    assert_int_equal(kc.n, 2);
    assert_int_equal(ks.n, 2);

    json_t *o = json_object(), *epochs = json_array(), *tr = json_object();
    jset(o, "name", json_string(sp->name));
    jset(o, "description", json_string(sp->description));
    json_array_append_new(epochs,
                          gen_epoch(sp->secret0, mc[0], ivc[0], ms[0], ivs[0], &kc, &ks, 0));
    json_array_append_new(epochs,
                          gen_epoch(sp->secret1, mc[1], ivc[1], ms[1], ivs[1], &kc, &ks, 1));
    jset(o, "epochs", epochs);
    jset(o, "messages", g->msgs);
    jset(tr, "c2s", jhex(g->c2s, g->c2s_len));
    jset(tr, "s2c", jhex(g->s2c, g->s2c_len));
    jset(o, "transcript", tr);
    gen_chain_ivs(o);
    pkm_engine_free(c);
    pkm_engine_free(s);
    pkm_key_free(skey);
    pkm_key_free(ckey_pub);
    free(g);
    return o;
}

static json_t *gen_key(const char *role, const char *pem)
{
    pkm_key_t *k = pkm_key_from_pem_text(pem);
    uint8_t der[PKM_MAX_KEY_DER];
    int n = pkm_key_public_der(k, der, sizeof der);
    assert_true(n > 0);
    char fp[PKM_FINGERPRINT_SIZE];
    assert_int_equal(pkm_key_fingerprint(k, fp), 0);
    pkm_key_free(k);
    json_t *o = json_object();
    jset(o, "role", json_string(role));
    jset(o, "private_key_pem", json_string(pem));
    jset(o, "public_der", jhex(der, (size_t)n));
    jset(o, "fingerprint", json_string(fp));
    return o;
}

static int generate(const char *dir)
{
    static const gen_spec specs[] = {
        {"plain",
         "Handshake without a secret (K_cs = SHA-256(M || 0x43), K_sc = SHA-256(M || 0x53)); "
         "packets of 0, 5, 16 and 100 bytes "
         "each way; the server re-establishes the secret with a password (Reason 1, "
         "S = \"correct horse\"); one packet each way under the new key.",
         NULL, "correct horse", 1, 0x504B4D0001ull},
        {"secret",
         "Alternative handshaking with S = \"hunter2\" (K_cs = SHA-256(M || S || 0x43), K_sc = "
         "SHA-256(M || S || 0x53)); packets of "
         "0, 5, 16 and 100 bytes each way; the server re-establishes the secret normally "
         "(Reason 0, no secret); one packet each way under the new key.",
         "hunter2", NULL, 0, 0x504B4D0002ull},
    };
    char path[1200];
    snprintf(path, sizeof path, "%s/server_key.TEST-ONLY.pem", dir);
    char *spem = read_text(path);
    snprintf(path, sizeof path, "%s/client_key.TEST-ONLY.pem", dir);
    char *cpem = read_text(path);
    json_t *doc = json_object(), *keys = json_object(), *sessions = json_array();
    jset(doc, "format", json_string("pkmcom-test-vectors/handshake/2"));
    jset(doc, "warning",
         json_string("TEST KEYS: the private keys below are published. Never use "
                     "them for anything but these test vectors."));
    jset(doc, "generated_by",
         json_string("tests/test_vectors.c --generate (libpkmcom's engine with fixed keys and "
                     "fixed M/IV; RSA PKCS#1 v1.5 padding is random, so KeyShare ciphertexts "
                     "differ on each generation)"));
    jset(keys, "server", gen_key("server long-term key (ServerKey)", spem));
    jset(keys, "client", gen_key("client ephemeral key (ClientKey)", cpem));
    jset(doc, "keys", keys);
    json_t *sk = jget(keys, "server");
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        json_array_append_new(sessions,
                              gen_session(&specs[i], spem, cpem, jstr(sk, "fingerprint")));
    jset(doc, "sessions", sessions);
    snprintf(path, sizeof path, "%s/handshake.json", dir);
    int rc = json_dump_file(doc, path, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(doc);
    free(spem);
    free(cpem);
    if (rc == 0) printf("wrote %s\n", path);
    return rc == 0 ? 0 : 1;
}

/* ======================================================================================
 * Checks of handshake.json.
 * ====================================================================================== */

static json_t *sessions(void)
{
    json_t *s = jget(HS, "sessions");
    assert_true(json_array_size(s) >= 2);
    return s;
}

/* The committed PEM files, the JSON's PEM, public DER and fingerprint agree (EVP only). */
static void keys_consistent(void **state)
{
    (void)state;
    static const char *roles[2] = {"server", "client"};
    for (int r = 0; r < 2; r++) {
        json_t *k = jget(jget(HS, "keys"), roles[r]);
        char path[1200];
        snprintf(path, sizeof path, "%s/%s_key.TEST-ONLY.pem", DIRPATH, roles[r]);
        char *file = read_text(path);
        assert_string_equal(file, jstr(k, "private_key_pem"));
        free(file);
        EVP_PKEY *pk = pem_private(jstr(k, "private_key_pem"));
        assert_int_equal(EVP_PKEY_get_bits(pk), 2048);
        uint8_t *der = NULL;
        int n = i2d_PUBKEY(pk, &der);
        assert_true(n > 0);
        uint8_t want[PKM_MAX_KEY_DER];
        assert_int_equal(jbytes(k, "public_der", want, sizeof want), (size_t)n);
        assert_memory_equal(der, want, (size_t)n);
        uint8_t md[32];
        unsigned mdlen = 0;
        assert_int_equal(EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL), 1);
        char b64[64], fp[80];
        assert_int_equal(EVP_EncodeBlock((unsigned char *)b64, md, 32), 44);
        assert_int_equal(b64[43], '=');
        b64[43] = 0;
        snprintf(fp, sizeof fp, "SHA256:%s", b64);
        assert_string_equal(fp, jstr(k, "fingerprint"));
        OPENSSL_free(der);
        EVP_PKEY_free(pk);
        /* And the key messages carry exactly that DER. */
        size_t i, j;
        json_t *s, *m;
        json_array_foreach(sessions(), i, s) json_array_foreach(jget(s, "messages"), j, m)
        {
            if (strcmp(jstr(m, "kind"), r == 0 ? "ServerKey" : "ClientKey") != 0) continue;
            uint8_t msg[MAX_MSG];
            size_t len = jbytes(m, "bytes", msg, sizeof msg);
            assert_int_equal(len, 4 + (size_t)n);
            assert_int_equal(msg[0] << 24 | msg[1] << 16 | msg[2] << 8 | msg[3], n);
            assert_memory_equal(msg + 4, want, (size_t)n);
            assert_string_equal(jstr(m, "fingerprint"), fp);
        }
    }
}

/* K_cs = SHA-256(M || S || 0x43), K_sc = SHA-256(M || S || 0x53) with M = M_c XOR M_s, and
 * IV = IV_c XOR IV_s, recomputed with EVP. */
static void derivations(void **state)
{
    (void)state;
    size_t i, j;
    json_t *s, *ep;
    int with_secret = 0, without = 0;
    json_array_foreach(sessions(), i, s) json_array_foreach(jget(s, "epochs"), j, ep)
    {
        uint8_t mc[256], ms[256], ivc[16], ivs[16], m[256 + PKM_MAX_SECRET + 1], k[32], iv[16];
        uint8_t want_m[256], want_cs[32], want_sc[32], want_iv[16];
        assert_int_equal(jbytes(jget(ep, "client"), "M", mc, 256), 256);
        assert_int_equal(jbytes(jget(ep, "server"), "M", ms, 256), 256);
        assert_int_equal(jbytes(jget(ep, "client"), "IV", ivc, 16), 16);
        assert_int_equal(jbytes(jget(ep, "server"), "IV", ivs, 16), 16);
        assert_int_equal(jbytes(ep, "M", want_m, 256), 256);
        assert_int_equal(jbytes(ep, "K_cs", want_cs, 32), 32);
        assert_int_equal(jbytes(ep, "K_sc", want_sc, 32), 32);
        assert_null(json_object_get(ep, "K")); /* profile 1's single key is gone */
        assert_int_equal(jbytes(ep, "IV", want_iv, 16), 16);
        for (int b = 0; b < 256; b++)
            m[b] = mc[b] ^ ms[b];
        for (int b = 0; b < 16; b++)
            iv[b] = ivc[b] ^ ivs[b];
        assert_memory_equal(m, want_m, 256);
        assert_memory_equal(iv, want_iv, 16);
        size_t mlen = 256;
        json_t *sec = jget(ep, "secret");
        if (!json_is_null(sec)) {
            const char *u = jstr(sec, "utf8");
            size_t slen = jbytes(sec, "hex", m + 256, PKM_MAX_SECRET);
            assert_int_equal(slen, strlen(u));
            assert_memory_equal(m + 256, u, slen);
            mlen += slen;
            with_secret++;
        } else {
            without++;
        }
        unsigned kl = 0;
        m[mlen] = 0x43; /* 'C' */
        assert_int_equal(EVP_Digest(m, mlen + 1, k, &kl, EVP_sha256(), NULL), 1);
        assert_memory_equal(k, want_cs, 32);
        m[mlen] = 0x53; /* 'S' */
        assert_int_equal(EVP_Digest(m, mlen + 1, k, &kl, EVP_sha256(), NULL), 1);
        assert_memory_equal(k, want_sc, 32);
        assert_memory_not_equal(want_cs, want_sc, 32);
    }
    assert_true(with_secret >= 2 && without >= 2);
}

/* Every KeyShare: 528 bytes = ct1 | ct2 | IV; ct1, ct2 decrypt (with the receiver's committed
 * private key) to the sender's M halves; the IV is the sender's. */
static void keyshares(void **state)
{
    (void)state;
    EVP_PKEY *spk = pem_private(jstr(jget(jget(HS, "keys"), "server"), "private_key_pem"));
    EVP_PKEY *cpk = pem_private(jstr(jget(jget(HS, "keys"), "client"), "private_key_pem"));
    size_t i, j;
    json_t *s, *m;
    int count = 0;
    json_array_foreach(sessions(), i, s) json_array_foreach(jget(s, "messages"), j, m)
    {
        if (strcmp(jstr(m, "kind"), "KeyShare") != 0) continue;
        int c2s = strcmp(jstr(m, "dir"), "c2s") == 0;
        json_t *ep = json_array_get(jget(s, "epochs"), (size_t)jint(m, "epoch"));
        json_t *sender = jget(ep, c2s ? "client" : "server");
        uint8_t b[528], ct[256], iv[16], mm[256], half[256];
        assert_int_equal(jbytes(m, "bytes", b, sizeof b), 528);
        assert_int_equal(jbytes(m, "ciphertext1", ct, 256), 256);
        assert_memory_equal(ct, b, 256);
        assert_int_equal(jbytes(m, "ciphertext2", ct, 256), 256);
        assert_memory_equal(ct, b + 256, 256);
        assert_int_equal(jbytes(m, "iv", iv, 16), 16);
        assert_memory_equal(iv, b + 512, 16);
        jbytes(sender, "M", mm, 256);
        jbytes(sender, "IV", iv, 16);
        assert_memory_equal(iv, b + 512, 16);
        for (int h = 0; h < 2; h++) {
            assert_int_equal(rsa_dec(c2s ? spk : cpk, b + 256 * h, half), 128);
            assert_memory_equal(half, mm + 128 * h, 128);
        }
        assert_false(json_is_true(jget(m, "deterministic")));
        count++;
    }
    assert_int_equal(count, 8);
    EVP_PKEY_free(spk);
    EVP_PKEY_free(cpk);
}

/* Encrypted messages: each direction under each epoch decrypts as ONE AES-256-CBC run from its
 * direction key and IV (K_cs for c2s, K_sc for s2c; the chain continues across packets); each
 * message also decrypts alone from its chain_iv; plaintexts follow the header/padding rules;
 * Confirm is the fixed 0xFF block, and the server's answer is not the client's block. */
static void channel(void **state)
{
    (void)state;
    size_t i;
    json_t *s;
    json_array_foreach(sessions(), i, s)
    {
        json_t *epochs = jget(s, "epochs"), *msgs = jget(s, "messages");
        for (size_t ep = 0; ep < json_array_size(epochs); ep++) {
            for (int d = 0; d < 2; d++) {
                uint8_t key[32], iv[16];
                /* d = 1: c2s under K_cs; d = 0: s2c under K_sc */
                assert_int_equal(jbytes(json_array_get(epochs, ep), d ? "K_cs" : "K_sc", key, 32),
                                 32);
                jbytes(json_array_get(epochs, ep), "IV", iv, 16);
                uint8_t *run_ct = malloc(65536), *run_pt = malloc(65536), *run_dec = malloc(65536);
                assert_non_null(run_ct);
                assert_non_null(run_pt);
                assert_non_null(run_dec);
                size_t run = 0, j, packets = 0;
                uint8_t prev[16];
                memcpy(prev, iv, 16);
                json_t *m;
                json_array_foreach(msgs, j, m)
                {
                    const char *kind = jstr(m, "kind");
                    int confirm = strcmp(kind, "Confirm") == 0;
                    if (!confirm && strcmp(kind, "Packet") != 0) continue;
                    if ((strcmp(jstr(m, "dir"), "c2s") == 0) != d) continue;
                    if ((size_t)jint(m, "epoch") != ep) continue;
                    uint8_t ct[MAX_MSG], pt[MAX_MSG], want[MAX_MSG], civ[16];
                    size_t n = jbytes(m, "bytes", ct, sizeof ct);
                    assert_int_equal(jbytes(m, "plaintext", pt, sizeof pt), n);
                    assert_int_equal(jbytes(m, "chain_iv", civ, 16), 16);
                    assert_memory_equal(civ, prev, 16);
                    /* the first message under a key is the 0xFF confirmation */
                    assert_int_equal(confirm, run == 0);
                    if (confirm) {
                        assert_int_equal(n, 16);
                        assert_memory_equal(pt, CONFIRM, 16);
                    } else {
                        uint8_t content[MAX_MSG];
                        size_t size = jbytes(m, "content", content, sizeof content);
                        assert_int_equal((size_t)jint(m, "size"), size);
                        uint8_t id = (uint8_t)jint(m, "id");
                        uint32_t hash = (uint32_t)jint(m, "hash");
                        assert_int_equal(hash, (uint32_t)id * 31u + ref_hashsum(content, size));
                        assert_int_equal(n, padded(size));
                        assert_int_equal((size_t)jint(m, "padding"), n - 9 - size);
                        assert_int_equal(packet_plain(id, hash, content, size, want), n);
                        assert_memory_equal(pt, want, n);
                        packets++;
                    }
                    aes_cbc_dec(key, civ, ct, n, want);
                    assert_memory_equal(want, pt, n);
                    assert_true(run + n <= 65536);
                    memcpy(run_ct + run, ct, n);
                    memcpy(run_pt + run, pt, n);
                    run += n;
                    memcpy(prev, ct + n - 16, 16);
                }
                assert_true(run > 0 && packets >= 1);
                aes_cbc_dec(key, iv, run_ct, run, run_dec);
                assert_memory_equal(run_dec, run_pt, run);
                free(run_ct);
                free(run_pt);
                free(run_dec);
            }
        }
    }
}

/* The transcripts are the messages of each direction, in order; the handshake order is right. */
static void transcripts(void **state)
{
    (void)state;
    static const char *order[] = {"s2c ServerKey", "c2s ClientKey", "c2s KeyShare",
                                  "s2c KeyShare",  "c2s Confirm",   "s2c Confirm"};
    size_t i;
    json_t *s;
    json_array_foreach(sessions(), i, s)
    {
        for (int d = 0; d < 2; d++) {
            size_t tlen = 0, j, at = 0;
            uint8_t *t = jbytes_alloc(jget(s, "transcript"), d ? "c2s" : "s2c", &tlen);
            json_t *m;
            json_array_foreach(jget(s, "messages"), j, m)
            {
                char name[64];
                snprintf(name, sizeof name, "%s %s", jstr(m, "dir"), jstr(m, "kind"));
                if (j < 6) assert_string_equal(name, order[j]);
                if ((strcmp(jstr(m, "dir"), "c2s") == 0) != d) continue;
                size_t n = 0;
                uint8_t *b = jbytes_alloc(m, "bytes", &n);
                assert_true(at + n <= tlen);
                assert_memory_equal(t + at, b, n);
                at += n;
                free(b);
            }
            assert_int_equal(at, tlen);
            free(t);
        }
        /* Wire profile 2: the server's 0xFF answer (under K_sc) is not the client's 0xFF block
         * (under K_cs) echoed: a reflection would not pass. */
        size_t n1 = 0, n2 = 0;
        uint8_t *c1 = jbytes_alloc(json_array_get(jget(s, "messages"), 4), "bytes", &n1);
        uint8_t *c2 = jbytes_alloc(json_array_get(jget(s, "messages"), 5), "bytes", &n2);
        assert_int_equal(n1, 16);
        assert_int_equal(n2, 16);
        assert_memory_not_equal(c1, c2, 16);
        free(c1);
        free(c2);
    }
}

/* ---- replays into fresh engines ---- */

static const char *epoch_secret(json_t *s, size_t ep)
{
    json_t *sec = jget(json_array_get(jget(s, "epochs"), ep), "secret");
    return json_is_null(sec) ? NULL : jstr(sec, "utf8");
}

static void push_epochs(json_t *s, const char *side, rq_t *q)
{
    size_t ep;
    json_t *e;
    json_array_foreach(jget(s, "epochs"), ep, e)
    {
        uint8_t m[256], iv[16];
        jbytes(jget(e, side), "M", m, 256);
        jbytes(jget(e, side), "IV", iv, 16);
        rq_push(q, m, 256);
        rq_push(q, iv, 16);
    }
}

/* A KeyShare the engine emitted: same IV; ciphertexts decrypt (with the peer's private key) to
 * the engine's M halves. */
static void check_own_keyshare(const uint8_t got[528], json_t *m, json_t *s, EVP_PKEY *peer,
                               const char *side)
{
    uint8_t want[528], mm[256], half[256];
    assert_int_equal(jbytes(m, "bytes", want, sizeof want), 528);
    assert_memory_equal(got + 512, want + 512, 16);
    jbytes(jget(json_array_get(jget(s, "epochs"), (size_t)jint(m, "epoch")), side), "M", mm, 256);
    for (int h = 0; h < 2; h++) {
        assert_int_equal(rsa_dec(peer, got + 256 * h, half), 128);
        assert_memory_equal(half, mm + 128 * h, 128);
    }
}

static void check_received(pkm_engine_t *e, json_t *m)
{
    pkm_packet_t pk;
    uint8_t content[MAX_MSG];
    size_t size = jbytes(m, "content", content, sizeof content);
    assert_int_equal(pkm_engine_next_packet(e, &pk), 1);
    assert_int_equal(pk.id, (uint8_t)jint(m, "id"));
    assert_int_equal(pk.hash, (uint32_t)jint(m, "hash"));
    assert_int_equal(pk.size, size);
    if (size) assert_memory_equal(pk.content, content, size);
}

static void check_keylog(const klog_t *kl, json_t *s)
{
    size_t ep;
    json_t *e;
    assert_int_equal((size_t)kl->n, json_array_size(jget(s, "epochs")));
    json_array_foreach(jget(s, "epochs"), ep, e)
    {
        uint8_t k[32], iv[16];
        jbytes(e, "K_cs", k, 32);
        assert_memory_equal(kl->k_cs[ep], k, 32);
        jbytes(e, "K_sc", k, 32);
        assert_memory_equal(kl->k_sc[ep], k, 32);
        jbytes(e, "IV", iv, 16);
        assert_memory_equal(kl->iv[ep], iv, 16);
    }
}

/* Replays one session into a fresh engine playing `client` (or the server): bytes of the
 * peer's direction are fed in; the engine's own messages are taken and compared (KeyShares by
 * decryption); its packets are queued from the vector's id/hash/content. */
static void replay(json_t *s, int client)
{
    json_t *keys = jget(HS, "keys");
    EVP_PKEY *peer_priv =
        pem_private(jstr(jget(keys, client ? "server" : "client"), "private_key_pem"));
    const char *side = client ? "client" : "server";
    pkm_key_t *skey =
        client ? NULL : pkm_key_from_pem_text(jstr(jget(keys, "server"), "private_key_pem"));
    pkm_key_t *own =
        client ? pkm_key_from_pem_text(jstr(jget(keys, "client"), "private_key_pem")) : skey;
    rq_t q = {0};
    klog_t kl = {0};
    push_epochs(s, side, &q);
    pkm_engine_t *e = make_engine(client ? PKM_ROLE_CLIENT : PKM_ROLE_SERVER, own,
                                  client ? jstr(jget(keys, "server"), "fingerprint") : NULL,
                                  epoch_secret(s, 0), &q, &kl);
    size_t j, epoch = 0;
    int fed_already = 0;
    json_t *m, *msgs = jget(s, "messages");
    json_array_foreach(msgs, j, m)
    {
        int mine = (strcmp(jstr(m, "dir"), "c2s") == 0) == client;
        const char *kind = jstr(m, "kind");
        uint8_t b[MAX_MSG], got[MAX_MSG];
        size_t n = jbytes(m, "bytes", b, sizeof b);
        if (!mine) {
            json_t *next = json_array_get(msgs, j + 1);
            if (client && json_is_true(json_object_get(m, "trigger")) && next &&
                strcmp(jstr(next, "dir"), "s2c") == 0) {
                /* The trigger and the server's new KeyShare in one read: the engine must decrypt
                 * only the trigger (lazily) and leave the clear KeyShare alone. */
                n += jbytes(next, "bytes", b + n, sizeof b - n);
                feed(e, b, n);
                fed_already = 1;
            } else if (fed_already) {
                fed_already = 0;
            } else {
                feed(e, b, n);
            }
            if (strcmp(kind, "Packet") == 0) {
                check_received(e, m);
                if (json_is_true(json_object_get(m, "trigger"))) {
                    /* client: re-establish right after taking the trigger */
                    epoch++;
                    const char *sec = epoch_secret(s, epoch);
                    assert_int_equal(
                        pkm_engine_rekey(e, (const uint8_t *)sec, sec ? strlen(sec) : 0), 0);
                    assert_int_equal(pkm_engine_state(e), PKM_STATE_REKEYING);
                }
            }
            continue;
        }
        if (strcmp(kind, "Packet") == 0) {
            uint8_t content[MAX_MSG];
            size_t size = jbytes(m, "content", content, sizeof content);
            assert_int_equal(pkm_engine_queue_packet(e, (uint8_t)jint(m, "id"),
                                                     (uint32_t)jint(m, "hash"), content, size),
                             0);
        }
        take(e, got, n);
        if (strcmp(kind, "KeyShare") == 0)
            check_own_keyshare(got, m, s, peer_priv, side);
        else
            assert_memory_equal(got, b, n); /* deterministic: byte for byte */
        if (strcmp(kind, "Packet") == 0 && json_is_true(json_object_get(m, "trigger"))) {
            /* server: re-establish right after queueing the trigger */
            epoch++;
            const char *sec = epoch_secret(s, epoch);
            assert_int_equal(pkm_engine_rekey(e, (const uint8_t *)sec, sec ? strlen(sec) : 0), 0);
        }
    }
    assert_int_equal(pkm_engine_state(e), PKM_STATE_ESTABLISHED);
    assert_int_equal(pending(e), 0);
    assert_int_equal(q.next, q.n);
    check_keylog(&kl, s);
    pkm_engine_free(e);
    pkm_key_free(skey);
    EVP_PKEY_free(peer_priv);
}

static void replay_server(void **state)
{
    (void)state;
    size_t i;
    json_t *s;
    json_array_foreach(sessions(), i, s) replay(s, 0);
}

static void replay_client(void **state)
{
    (void)state;
    size_t i;
    json_t *s;
    json_array_foreach(sessions(), i, s) replay(s, 1);
}

/* ======================================================================================
 * Checks of apl.json against the codec.
 * ====================================================================================== */

typedef struct {
    void *p[512];
    size_t n;
} arena_t;

static void *arena_alloc(arena_t *a, size_t n)
{
    assert_true(a->n < 512);
    void *p = calloc(1, n ? n : 1);
    assert_non_null(p);
    a->p[a->n++] = p;
    return p;
}

static void arena_free(arena_t *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->p[i]);
    a->n = 0;
}

static pkm_type_t type_named(const char *name)
{
    static const struct {
        const char *name;
        pkm_type_t t;
    } map[] = {
        {"Byte", PKM_T_BYTE},
        {"Signed Byte", PKM_T_SBYTE},
        {"Short", PKM_T_SHORT},
        {"Unsigned Short", PKM_T_USHORT},
        {"Int", PKM_T_INT},
        {"Unsigned Int", PKM_T_UINT},
        {"Long", PKM_T_LONG},
        {"Float", PKM_T_FLOAT},
        {"Double", PKM_T_DOUBLE},
        {"Boolean", PKM_T_BOOL},
        {"String", PKM_T_STRING},
        {"Json", PKM_T_JSON},
        {"Long String", PKM_T_LSTRING},
        {"Long Json", PKM_T_LJSON},
        {"Version", PKM_T_VERSION},
        {"UUID", PKM_T_UUID},
        {"Instant", PKM_T_INSTANT},
        {"Duration", PKM_T_DURATION},
        {"Enum", PKM_T_ENUM},
        {"Bitflag", PKM_T_BITFLAG},
        {"Array", PKM_T_ARRAY},
        {"Structure", PKM_T_STRUCT},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].name, name) == 0) return map[i].t;
    fail_msg("unknown type \"%s\"", name);
    return PKM_T_BYTE;
}

static void build_field(json_t *t, pkm_field_t *f, arena_t *a);

static pkm_schema_t *build_struct(json_t *fields, arena_t *a)
{
    pkm_schema_t *s = arena_alloc(a, sizeof *s);
    size_t n = json_array_size(fields);
    pkm_field_t *fs = arena_alloc(a, n * sizeof *fs);
    for (size_t i = 0; i < n; i++)
        build_field(json_array_get(fields, i), &fs[i], a);
    s->name = "vector";
    s->fields = n ? fs : NULL;
    s->n_fields = n;
    return s;
}

static void build_field(json_t *t, pkm_field_t *f, arena_t *a)
{
    memset(f, 0, sizeof *f);
    f->type = type_named(jstr(t, "type"));
    if (f->type == PKM_T_ENUM || f->type == PKM_T_BITFLAG) f->base = type_named(jstr(t, "base"));
    if (f->type == PKM_T_ENUM) {
        json_t *vals = jget(t, "enum_values");
        int64_t *v = arena_alloc(a, json_array_size(vals) * sizeof *v);
        for (size_t i = 0; i < json_array_size(vals); i++)
            v[i] = json_integer_value(json_array_get(vals, i));
        f->enum_values = v;
        f->n_enum_values = json_array_size(vals);
    }
    if (f->type == PKM_T_BITFLAG) f->reserved_mask = (uint64_t)jint(t, "reserved_mask");
    if (f->type == PKM_T_ARRAY) {
        pkm_field_t *e = arena_alloc(a, sizeof *e);
        build_field(jget(t, "elem"), e, a);
        f->elem = e;
        if (json_object_get(t, "length"))
            f->fixed_len = (uint32_t)jint(t, "length");
        else
            f->len_field = PKM_LEN_FIELD(jint(t, "length_field"));
    }
    if (f->type == PKM_T_STRUCT) f->sub = build_struct(jget(t, "fields"), a);
}

static int unsigned_type(pkm_type_t t)
{
    return t == PKM_T_BYTE || t == PKM_T_USHORT || t == PKM_T_UINT;
}

static int64_t dec_string(json_t *v)
{
    const char *s = json_string_value(v);
    assert_non_null(s);
    return strtoll(s, NULL, 10);
}

static void build_value(const pkm_field_t *f, json_t *v, pkm_value_t *out, arena_t *a)
{
    memset(out, 0, sizeof *out);
    pkm_type_t t = f->type == PKM_T_ENUM || f->type == PKM_T_BITFLAG ? f->base : f->type;
    switch (t) {
    case PKM_T_BYTE:
    case PKM_T_USHORT:
    case PKM_T_UINT: out->u64 = (uint64_t)json_integer_value(v); break;
    case PKM_T_SBYTE:
    case PKM_T_SHORT:
    case PKM_T_INT: out->i64 = json_integer_value(v); break;
    case PKM_T_LONG: out->i64 = dec_string(v); break;
    case PKM_T_FLOAT: {
        uint8_t b[4];
        assert_int_equal(jbytes(v, "bits", b, 4), 4);
        uint32_t u = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        memcpy(&out->f32, &u, 4);
        break;
    }
    case PKM_T_DOUBLE: {
        uint8_t b[8];
        assert_int_equal(jbytes(v, "bits", b, 8), 8);
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
            u = u << 8 | b[i];
        memcpy(&out->f64, &u, 8);
        break;
    }
    case PKM_T_BOOL: out->b = json_is_true(v); break;
    case PKM_T_STRING:
    case PKM_T_JSON:
    case PKM_T_LSTRING:
    case PKM_T_LJSON:
        out->str.ptr = json_string_value(v);
        out->str.len = json_string_length(v);
        break;
    case PKM_T_VERSION:
        out->version.major = (uint16_t)jint(v, "major");
        out->version.minor = (uint16_t)jint(v, "minor");
        break;
    case PKM_T_UUID: {
        uint8_t b[16];
        char hex[40];
        size_t k = 0;
        for (const char *p = json_string_value(v); *p; p++)
            if (*p != '-') hex[k++] = *p;
        hex[k] = 0;
        assert_int_equal(t_unhex(hex, b, 16), 16);
        for (int i = 0; i < 8; i++) {
            out->uuid.msb = out->uuid.msb << 8 | b[i];
            out->uuid.lsb = out->uuid.lsb << 8 | b[8 + i];
        }
        break;
    }
    case PKM_T_INSTANT:
    case PKM_T_DURATION:
        out->time.seconds = dec_string(jget(v, "seconds"));
        out->time.nanos = (int32_t)jint(v, "nanos");
        break;
    case PKM_T_ARRAY: {
        size_t n = json_array_size(v);
        if (f->elem->type == PKM_T_BYTE) {
            uint8_t *b = arena_alloc(a, n);
            for (size_t i = 0; i < n; i++)
                b[i] = (uint8_t)json_integer_value(json_array_get(v, i));
            out->bytes.ptr = b;
            out->bytes.len = n;
        } else {
            pkm_value_t *items = arena_alloc(a, n * sizeof *items);
            for (size_t i = 0; i < n; i++)
                build_value(f->elem, json_array_get(v, i), &items[i], a);
            out->array.items = items;
            out->array.n = n;
        }
        break;
    }
    case PKM_T_STRUCT: {
        size_t n = json_array_size(v);
        assert_int_equal(n, f->sub->n_fields);
        pkm_value_t *fs = arena_alloc(a, n * sizeof *fs);
        for (size_t i = 0; i < n; i++)
            build_value(&f->sub->fields[i], json_array_get(v, i), &fs[i], a);
        out->structure.fields = fs;
        out->structure.n = n;
        break;
    }
    default: fail_msg("type %d", (int)t);
    }
}

static void value_equal(const pkm_field_t *f, const pkm_value_t *want, const pkm_value_t *got)
{
    pkm_type_t t = f->type == PKM_T_ENUM || f->type == PKM_T_BITFLAG ? f->base : f->type;
    switch (t) {
    case PKM_T_FLOAT: assert_memory_equal(&want->f32, &got->f32, 4); break;
    case PKM_T_DOUBLE: assert_memory_equal(&want->f64, &got->f64, 8); break;
    case PKM_T_BOOL: assert_int_equal(want->b, got->b); break;
    case PKM_T_STRING:
    case PKM_T_JSON:
    case PKM_T_LSTRING:
    case PKM_T_LJSON:
        assert_int_equal(want->str.len, got->str.len);
        assert_memory_equal(want->str.ptr, got->str.ptr, want->str.len);
        break;
    case PKM_T_VERSION:
        assert_int_equal(want->version.major, got->version.major);
        assert_int_equal(want->version.minor, got->version.minor);
        break;
    case PKM_T_UUID:
        assert_int_equal(want->uuid.msb, got->uuid.msb);
        assert_int_equal(want->uuid.lsb, got->uuid.lsb);
        break;
    case PKM_T_INSTANT:
    case PKM_T_DURATION:
        assert_int_equal(want->time.seconds, got->time.seconds);
        assert_int_equal(want->time.nanos, got->time.nanos);
        break;
    case PKM_T_ARRAY:
        if (f->elem->type == PKM_T_BYTE) {
            assert_int_equal(want->bytes.len, got->bytes.len);
            if (want->bytes.len)
                assert_memory_equal(want->bytes.ptr, got->bytes.ptr, want->bytes.len);
        } else {
            assert_int_equal(want->array.n, got->array.n);
            for (size_t i = 0; i < want->array.n; i++)
                value_equal(f->elem, &want->array.items[i], &got->array.items[i]);
        }
        break;
    case PKM_T_STRUCT:
        assert_int_equal(want->structure.n, got->structure.n);
        for (size_t i = 0; i < want->structure.n; i++)
            value_equal(&f->sub->fields[i], &want->structure.fields[i], &got->structure.fields[i]);
        break;
    default:
        if (unsigned_type(t))
            assert_int_equal(want->u64, got->u64);
        else
            assert_int_equal(want->i64, got->i64);
    }
}

/* Each value: encodes to the vector's bytes and hashcode; the bytes decode to the value. */
static void apl_values(void **state)
{
    (void)state;
    size_t i;
    json_t *v;
    int seen[PKM_T_STRUCT + 1] = {0};
    json_array_foreach(jget(APL, "values"), i, v)
    {
        arena_t a = {0};
        pkm_field_t f;
        build_field(jget(v, "type"), &f, &a);
        seen[f.type] = 1;
        pkm_schema_t s = {"vector", &f, 1};
        assert_int_equal(pkm_schema_validate(&s), 0);
        pkm_value_t val;
        build_value(&f, jget(v, "value"), &val, &a);
        uint8_t want[256], got[256];
        size_t n = jbytes(v, "bytes", want, sizeof want), len = 0;
        uint32_t h = 0, wh = (uint32_t)jint(v, "hashcode");
        int rc = pkm_schema_encode(&s, &val, 1, got, sizeof got, &len, &h);
        if (rc != 0) fail_msg("%s: encode: %s", jstr(v, "name"), pkm_errname(rc));
        assert_int_equal(len, n);
        assert_memory_equal(got, want, n);
        assert_int_equal(h, wh);
        /* decode: a packet of id 0 has Hash = 0*31 + hashcode */
        pkm_packet_t pkt = {0, wh, want, n};
        pkm_msg_t *msg = NULL;
        rc = pkm_schema_decode(&s, &pkt, &msg);
        if (rc != 0) fail_msg("%s: decode: %s", jstr(v, "name"), pkm_errname(rc));
        value_equal(&f, &val, pkm_msg_field(msg, 0));
        pkm_msg_free(msg);
        arena_free(&a);
    }
    for (int t = PKM_T_BYTE; t < PKM_T_STRUCT; t++)
        if (!seen[t]) fail_msg("apl.json has no value of type %d", t);
}

/* Each invalid encoding is refused by the receiver, for its content (not for the Hash). */
static void apl_invalid(void **state)
{
    (void)state;
    size_t i;
    json_t *v;
    json_array_foreach(jget(APL, "invalid"), i, v)
    {
        arena_t a = {0};
        pkm_field_t f;
        build_field(jget(v, "type"), &f, &a);
        pkm_schema_t s = {"vector", &f, 1};
        uint8_t b[256];
        size_t n = jbytes(v, "bytes", b, sizeof b);
        pkm_packet_t pkt = {0, 0, b, n};
        int rc = pkm_schema_verify(&s, &pkt);
        if (rc >= 0 || rc == PKM_EHASH)
            fail_msg("%s: accepted or refused for the Hash (%s)", jstr(v, "name"), pkm_errname(rc));
        arena_free(&a);
    }
}

/* Each packet: encodes to its bytes (header with Hash and Size, then content) and verifies. */
static void apl_packets(void **state)
{
    (void)state;
    size_t i;
    json_t *p;
    json_array_foreach(jget(APL, "packets"), i, p)
    {
        arena_t a = {0};
        pkm_schema_t *s = build_struct(jget(p, "fields"), &a);
        assert_int_equal(pkm_schema_validate(s), 0);
        json_t *vals = jget(p, "values");
        pkm_value_t *v = arena_alloc(&a, json_array_size(vals) * sizeof *v);
        for (size_t k = 0; k < s->n_fields; k++)
            build_value(&s->fields[k], json_array_get(vals, k), &v[k], &a);
        uint8_t want[512], got[512], content[512];
        size_t n = jbytes(p, "packet", want, sizeof want), len = 0;
        size_t cn = jbytes(p, "content", content, sizeof content);
        uint8_t id = (uint8_t)jint(p, "id");
        int rc = pkm_schema_encode_packet(s, id, s->n_fields ? v : NULL, s->n_fields, got,
                                          sizeof got, &len);
        if (rc != 0) fail_msg("%s: %s", jstr(p, "name"), pkm_errname(rc));
        assert_int_equal(len, n);
        assert_memory_equal(got, want, n);
        uint32_t ch = 0;
        assert_int_equal(
            pkm_schema_encode(s, s->n_fields ? v : NULL, s->n_fields, got, sizeof got, &len, &ch),
            0);
        assert_int_equal(ch, (uint32_t)jint(p, "content_hash"));
        assert_int_equal(pkm_packet_hash(id, ch), (uint32_t)jint(p, "hash"));
        pkm_packet_t pkt;
        assert_int_equal(pkm_packet_header_read(want, PKM_DEFAULT_MAX_SIZE, &pkt), 0);
        assert_int_equal(pkt.size, cn);
        pkt.content = want + 9;
        assert_memory_equal(pkt.content, content, cn);
        assert_int_equal(pkm_schema_verify(s, &pkt), 0);
        arena_free(&a);
    }
}

/* ---- main ---- */

static int setup(void **state)
{
    (void)state;
    json_error_t err;
    char path[1200];
    snprintf(path, sizeof path, "%s/handshake.json", DIRPATH);
    HS = json_load_file(path, JSON_ALLOW_NUL, &err);
    if (!HS) fprintf(stderr, "%s: %s (line %d)\n", path, err.text, err.line);
    snprintf(path, sizeof path, "%s/apl.json", DIRPATH);
    APL = json_load_file(path, JSON_ALLOW_NUL, &err);
    if (!APL) fprintf(stderr, "%s: %s (line %d)\n", path, err.text, err.line);
    return HS && APL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(HS);
    json_decref(APL);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--generate") == 0) return generate(argv[2]);
    if (argc != 1) {
        fprintf(stderr, "usage: %s [--generate DIR]\n", argv[0]);
        return 2;
    }
    const char *src = getenv("PKM_SOURCE_DIR");
    snprintf(DIRPATH, sizeof DIRPATH, "%s/docs/test-vectors", src ? src : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keys_consistent), cmocka_unit_test(derivations),
        cmocka_unit_test(keyshares),       cmocka_unit_test(channel),
        cmocka_unit_test(transcripts),     cmocka_unit_test(replay_server),
        cmocka_unit_test(replay_client),   cmocka_unit_test(apl_values),
        cmocka_unit_test(apl_invalid),     cmocka_unit_test(apl_packets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
