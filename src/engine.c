/* SPDX-License-Identifier: MIT */
/* The sans-IO PkmCom/TCP engine: the handshake state machine (WIRE-PROFILE sections 3 and 5) over
 * caller-fed byte buffers, its RSA work (inline or as jobs), configuration and lifetime, the
 * re-establishment. The buffers and the packet layer of the channel are engine_stream.c's. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include "pkmcom/engine.h"
#include "buf.h"
#include "channel_internal.h"
#include "engine_internal.h"
#include "engine_state.h"
#include "internal.h"
#include "keylog_internal.h"
#include "keys_internal.h"

#define M_HALF     128 /* one RSA-2048 PKCS#1 v1.5 block carries at most 245 bytes: M in two */
#define LEN_PREFIX 4   /* the Int before a ServerKey/ClientKey */

/* The 0xFF packet of step 5, padded: 13 bytes + 3 bytes of 03 = one block. */
static const uint8_t confirm_block[PKM__BLOCK_SIZE] = {
    0xFF, 0x50, 0x4B, 0x6B, 0xE1, 0x00, 0x00, 0x00, 0x04, 0x50, 0x4B, 0x4D, 0x00, 0x03, 0x03, 0x03};

/* An RSA job (engine.h): what it does, with copies of its inputs, so that it runs on any thread
 * while the engine, which it never touches, goes on with its own. */
enum job_kind {
    JOB_KEYGEN = 1, /* client: make (or take from the pool) the ephemeral key pair */
    JOB_KEYSHARE,   /* decrypt the peer's KeyShare: M_peer from its two ciphertexts */
};

struct pkm_job {
    enum job_kind kind;
    int ran;                /* pkm_job_run() is done */
    int result;             /* its result: 0 or a negative PKM_E* */
    pkm_key_t *key;         /* KEYSHARE: a reference to the engine's private key (pkm_key_ref);
                               KEYGEN: the key made, until the engine takes it */
    pkm_keypool_t *pool;    /* KEYGEN: borrowed (keypool in the config), or NULL */
    uint8_t ct[2 * RSA_CT]; /* KEYSHARE: the peer's two RSA ciphertexts (public) */
    uint8_t m[PKM__M_SIZE]; /* KEYSHARE: M_peer, the result (secret: wiped by pkm_job_free) */
};

/* ---- small helpers ---- */

/* 1 if a == b, else 0, without a branch on the values. */
static unsigned ct_eq(size_t a, size_t b)
{
    size_t x = a ^ b;
    return 1u ^ (unsigned)((x | (0 - x)) >> (sizeof(size_t) * 8 - 1));
}

static const char *step_name(enum hs_step s)
{
    switch (s) {
    case HS_SERVERKEY: return "ServerKey";
    case HS_CLIENTKEY:
    case HS_OWNKEY: return "ClientKey";
    case HS_KEYSHARE:
    case HS_KEYSHARE_WORK: return "KeyShare";
    case HS_CONFIRM: return "confirmation (0xFF)";
    case HS_DONE: break;
    }
    return NULL;
}

static void wipe_handshake(pkm_engine_t *e)
{
    OPENSSL_cleanse(e->m_own, sizeof e->m_own);
    OPENSSL_cleanse(e->iv_own, sizeof e->iv_own);
    OPENSSL_cleanse(e->share_in, sizeof e->share_in);
    if (e->secret) pkm__engine_wipe_free(e->secret, e->secret_len);
    e->secret = NULL;
    e->secret_len = 0;
}

/* Closes the engine with err: no message is sent (unsent bytes are dropped), the handshake
 * material is wiped. Returns the error that closed it (the first one). */
static int fail(pkm_engine_t *e, int err)
{
    if (e->state == PKM_STATE_CLOSED) return e->err;
    if (e->state == PKM_STATE_HANDSHAKE || e->state == PKM_STATE_REKEYING)
        e->fail_step = step_name(e->hs);
    e->state = PKM_STATE_CLOSED;
    e->err = err < 0 ? err : PKM_EINTERNAL;
    e->job_state = JS_NONE; /* a job still out is freed by job_done (or its taker) */
    e->job_out = NULL;
    e->sstart = e->senc = e->slen = 0;
    wipe_handshake(e);
    return e->err;
}

/* ---- randomness and RSA ---- */

/* Every RSA operation the engines of this process perform (public-key encryption, private-key
 * decryption, ephemeral key generation), for tests that must show a key was refused before any
 * was spent on it (engine_internal.h). */
static atomic_ulong rsa_ops;

static void count_rsa_op(void)
{
    atomic_fetch_add_explicit(&rsa_ops, 1, memory_order_relaxed);
}

static int get_random(pkm_engine_t *e, uint8_t *out, size_t n)
{
    if (e->random) return e->random(e->random_ctx, out, n) == 0 ? 0 : PKM_ERANDOM;
    return RAND_bytes(out, (int)n) == 1 ? 0 : PKM_ERANDOM;
}

static int rsa_ctx(EVP_PKEY *pkey, int encrypt, EVP_PKEY_CTX **out)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    PKM_ENSURE(c != NULL, PKM_ENOMEM);
    int ok = (encrypt ? EVP_PKEY_encrypt_init(c) : EVP_PKEY_decrypt_init(c)) > 0 &&
             EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) > 0;
    if (!ok) EVP_PKEY_CTX_free(c);
    *out = ok ? c : NULL;
    return ok ? 0 : PKM_ECRYPTO;
}

/* RSAES-PKCS1-v1_5 encryption of one 128-byte half of M under the peer's public key. */
static int rsa_encrypt_half(EVP_PKEY *peer, const uint8_t in[M_HALF], uint8_t out[RSA_CT])
{
    EVP_PKEY_CTX *c;
    count_rsa_op();
    PKM_GUARD(rsa_ctx(peer, 1, &c));
    size_t outlen = RSA_CT;
    int ok = EVP_PKEY_encrypt(c, out, &outlen, in, M_HALF) > 0 && outlen == RSA_CT;
    EVP_PKEY_CTX_free(c);
    return ok ? 0 : PKM_ECRYPTO;
}

/* Decrypts one 256-byte ciphertext of the peer's KeyShare into a 128-byte half of M, with
 * implicit rejection: when decryption fails or yields other than 128 bytes, `out` receives 128
 * fresh random bytes instead, chosen by a constant-time mask, and nothing is reported, so the
 * handshake goes on and fails at step 5 exactly as with a wrong key: no Bleichenbacher oracle.
 * OpenSSL 3.0 has no built-in implicit rejection for PKCS#1 v1.5 (3.2 added one), hence this.
 * The only errors returned are local ones that do not depend on the ciphertext. */
static int rsa_decrypt_half(EVP_PKEY *own, const uint8_t in[RSA_CT], uint8_t out[M_HALF])
{
    uint8_t plain[RSA_CT];
    uint8_t subst[M_HALF];
    EVP_PKEY_CTX *c = NULL;
    int rc;
    memset(plain, 0, sizeof plain);
    count_rsa_op();
    PKM_ENSURE_GOTO(rc, RAND_bytes(subst, sizeof subst) == 1, PKM_ERANDOM);
    PKM_GUARD_GOTO(rc, rsa_ctx(own, 0, &c));
    size_t outlen = sizeof plain;
    int ok = EVP_PKEY_decrypt(c, plain, &outlen, in, RSA_CT);
    ERR_clear_error(); /* leave no trace of a padding failure in the error queue */
    unsigned good = ct_eq((size_t)(unsigned)ok, 1) & ct_eq(outlen, M_HALF);
    uint8_t mask = (uint8_t)(0u - good);
    for (size_t i = 0; i < M_HALF; i++)
        out[i] = (uint8_t)((plain[i] & mask) | (subst[i] & (uint8_t)~mask));
cleanup:
    EVP_PKEY_CTX_free(c);
    OPENSSL_cleanse(plain, sizeof plain);
    OPENSSL_cleanse(subst, sizeof subst);
    return rc;
}

/* Both halves of M_peer from a KeyShare's two ciphertexts (implicit rejection in each). */
static int rsa_decrypt_share(EVP_PKEY *own, const uint8_t ct[2 * RSA_CT], uint8_t m[PKM__M_SIZE])
{
    PKM_GUARD(rsa_decrypt_half(own, ct, m));
    return rsa_decrypt_half(own, ct + RSA_CT, m + M_HALF);
}

/* ---- handshake messages ---- */

/* Tells the observer, if any, about a handshake message (public bytes only). */
static void observe(const pkm_engine_t *e, int msg, int sent, const uint8_t *bytes, size_t len)
{
    if (!e->observe) return;
    pkm_hs_event_t ev = {msg, sent, e->state == PKM_STATE_REKEYING, bytes, len};
    e->observe(e->observe_ctx, &ev);
}

/* The pin as a trust check: ctx is the engine's copy of the pinned fingerprint. */
static int pin_check(void *ctx, const uint8_t *der, size_t der_len, const char *fingerprint)
{
    (void)der;
    (void)der_len;
    return pkm_fingerprint_equal(fingerprint, (const char *)ctx) ? 0 : PKM_EPIN;
}

/* Runs the trust checks on the peer's key, in order; the first refusal wins. */
static int trust_peer(const pkm_engine_t *e, const uint8_t *der, size_t der_len)
{
    for (int i = 0; i < e->ntrust; i++) {
        int r = e->trust[i].fn(e->trust[i].ctx, der, der_len, e->peer_fp);
        if (r != 0) return r < 0 ? r : PKM_EPIN;
    }
    return 0;
}

/* ServerKey / ClientKey: Int n, then n bytes of DER SubjectPublicKeyInfo. */
static int send_key_msg(pkm_engine_t *e, const pkm_key_t *key)
{
    size_t len = 0;
    const uint8_t *der = pkm__key_der(key, &len);
    if (!der || len < 1 || len > PKM_MAX_KEY_DER) return PKM_EINTERNAL;
    uint8_t *p = pkm__engine_send_insert(e, LEN_PREFIX + len);
    if (!p) return PKM_ENOMEM;
    pkm__store_be32(p, (uint32_t)len);
    memcpy(p + LEN_PREFIX, der, len);
    observe(e, e->client ? PKM_HS_CLIENT_KEY : PKM_HS_SERVER_KEY, 1, p, LEN_PREFIX + len);
    return 0;
}

/* Reads the peer's ServerKey / ClientKey. Returns 1 when accepted, 0 when more bytes are needed,
 * or PKM_EKEYLEN (n outside 1..1024, seen as soon as the prefix is in: the body is never
 * awaited), PKM_EKEY, PKM_EPIN. pkm_key_from_der refuses every key WIRE-PROFILE section 3 step 2
 * refuses (exponent other than 65537, DER that is not canonical, ...) by looking at its bytes
 * alone, so a refused key costs no RSA operation: nothing is encrypted to it, and a client does
 * not even generate its own key. */
static int read_key_msg(pkm_engine_t *e)
{
    pkm_reader in = pkm__engine_received(e);
    uint32_t n; /* an Int: negative values are above PKM_MAX_KEY_DER as unsigned */
    const uint8_t *der;
    if (pkm__read_u32(&in, &n) < 0) return 0;
    if (n < 1 || n > PKM_MAX_KEY_DER) return PKM_EKEYLEN;
    if (pkm__read_ptr(&in, &der, n) < 0) return 0;
    observe(e, e->client ? PKM_HS_SERVER_KEY : PKM_HS_CLIENT_KEY, 0, in.p, in.pos);
    pkm_key_t *key = NULL;
    int rc;
    PKM_GUARD(pkm_key_from_der(der, n, &key));
    if ((rc = pkm_key_fingerprint(key, e->peer_fp)) < 0) {
        memset(e->peer_fp, 0, sizeof e->peer_fp);
        goto cleanup;
    }
    /* On a refusal peer_fp keeps the key's fingerprint (public), for the conn API's sentence. */
    PKM_GUARD_GOTO(rc, trust_peer(e, der, (size_t)n));
    e->peer_key = key;
    e->rpos += in.pos;
    return 1;
cleanup:
    pkm_key_free(key);
    return rc;
}

/* KeyShare: fresh M (256 bytes) and IV (16 bytes); M's halves each encrypted under the peer's
 * key, then the IV in the clear. M and IV stay in the engine until derivation. */
static int send_keyshare(pkm_engine_t *e)
{
    PKM_GUARD(get_random(e, e->m_own, PKM__M_SIZE));
    PKM_GUARD(get_random(e, e->iv_own, PKM__IV_SIZE));
    uint8_t *p = pkm__engine_send_insert(e, KEYSHARE_SIZE);
    if (!p) return PKM_ENOMEM;
    EVP_PKEY *peer = pkm__key_evp(e->peer_key);
    PKM_GUARD(rsa_encrypt_half(peer, e->m_own, p));
    PKM_GUARD(rsa_encrypt_half(peer, e->m_own + M_HALF, p + RSA_CT));
    memcpy(p + 2 * RSA_CT, e->iv_own, PKM__IV_SIZE);
    observe(e, PKM_HS_KEYSHARE, 1, p, KEYSHARE_SIZE);
    return 0;
}

/* The key log: the config's callback and the PKMCOM_KEYLOGFILE file, if any. */
static void emit_keylog(pkm_engine_t *e, const uint8_t client_iv[PKM__IV_SIZE],
                        const uint8_t k_cs[PKM__KEY_SIZE], const uint8_t k_sc[PKM__KEY_SIZE],
                        const uint8_t iv[PKM__IV_SIZE])
{
    if (!e->keylog_fn && !e->keylog_path) return;
    pkm_keylog_entry_t ent;
    memcpy(ent.client_iv, client_iv, sizeof ent.client_iv);
    memcpy(ent.k_cs, k_cs, sizeof ent.k_cs);
    memcpy(ent.k_sc, k_sc, sizeof ent.k_sc);
    memcpy(ent.iv, iv, sizeof ent.iv);
    if (e->keylog_fn) e->keylog_fn(e->keylog_ctx, &ent);
    if (e->keylog_path) pkm__keylog_append(e->keylog_path, &ent);
    OPENSSL_cleanse(&ent, sizeof ent);
}

/* With M_peer decrypted from the peer's KeyShare (inline, or by a job): derives K_cs, K_sc and
 * IV (step 4), starts both chains (a client sends under K_cs and receives under K_sc, a server
 * the other way round) and wipes everything but the cipher contexts. */
static int derive(pkm_engine_t *e, const uint8_t m_peer[PKM__M_SIZE])
{
    uint8_t m[PKM__M_SIZE], iv[PKM__IV_SIZE];
    uint8_t k_cs[PKM__KEY_SIZE], k_sc[PKM__KEY_SIZE];
    for (size_t i = 0; i < PKM__M_SIZE; i++)
        m[i] = e->m_own[i] ^ m_peer[i];
    for (size_t i = 0; i < PKM__IV_SIZE; i++)
        iv[i] = e->iv_own[i] ^ e->share_in[2 * RSA_CT + i];
    int rc;
    PKM_GUARD_GOTO(rc, pkm__derive_keys(m, e->secret, e->secret_len, k_cs, k_sc));
    emit_keylog(e, e->client ? e->iv_own : e->share_in + 2 * RSA_CT, k_cs, k_sc, iv);
    rc = e->client ? pkm__channel_start(&e->ch, k_cs, k_sc, iv)
                   : pkm__channel_start(&e->ch, k_sc, k_cs, iv);
cleanup:
    OPENSSL_cleanse(m, sizeof m);
    OPENSSL_cleanse(k_cs, sizeof k_cs);
    OPENSSL_cleanse(k_sc, sizeof k_sc);
    OPENSSL_cleanse(iv, sizeof iv);
    wipe_handshake(e);
    return rc;
}

/* The engine's own private key: the client's ephemeral one, or the server's long-term one. */
static const pkm_key_t *own_private(const pkm_engine_t *e)
{
    return e->client ? e->own_key : e->server_key;
}

/* Decrypts the peer's KeyShare here (two RSA private operations) and derives. */
static int take_keyshare(pkm_engine_t *e)
{
    uint8_t m_peer[PKM__M_SIZE];
    int rc;
    PKM_GUARD_GOTO(rc, rsa_decrypt_share(pkm__key_evp(own_private(e)), e->share_in, m_peer));
    rc = derive(e, m_peer);
cleanup:
    OPENSSL_cleanse(m_peer, sizeof m_peer);
    if (rc < 0) wipe_handshake(e);
    return rc;
}

/* The encrypted 0xFF packet, inserted ahead of any held plaintext. */
static int send_confirm(pkm_engine_t *e)
{
    uint8_t *p = pkm__engine_send_insert(e, PKM__BLOCK_SIZE);
    if (!p) return PKM_ENOMEM;
    memcpy(p, confirm_block, PKM__BLOCK_SIZE);
    PKM_GUARD(pkm__channel_encrypt(&e->ch, p, PKM__BLOCK_SIZE));
    observe(e, PKM_HS_CONFIRM, 1, p, PKM__BLOCK_SIZE);
    return 0;
}

/* Reads, decrypts and checks the peer's 0xFF packet (1 when it passes, 0 when more bytes are
 * needed): Id, Hash, Size, magic and padding are one 16-byte
 * block, compared at once in constant time. The server checks the client's under K_cs, the
 * client the server's answer under K_sc: a different key from its own 0xFF's, so bytes echoed
 * back (a reflection) fail here, and an answer that passes proves the server derived K_sc, which
 * needs M_client, which only the holder of the ServerKey's private key could decrypt
 * (WIRE-PROFILE section 6). A client's failure is therefore PKM_ENOPROOF: the server did not
 * prove it holds its key (or its secret differs, or it speaks wire profile 1); a server's is
 * PKM_EHANDSHAKE. */
static int check_confirm(pkm_engine_t *e)
{
    pkm_reader in = pkm__engine_received(e);
    uint8_t blk[PKM__BLOCK_SIZE];
    if (pkm__read_bytes(&in, blk, sizeof blk) < 0) return 0;
    observe(e, PKM_HS_CONFIRM, 0, blk, sizeof blk); /* the ciphertext, before decryption */
    PKM_GUARD(pkm__channel_decrypt(&e->ch, blk, sizeof blk));
    e->rpos += in.pos;
    PKM_ENSURE(CRYPTO_memcmp(blk, confirm_block, sizeof blk) == 0,
               e->client ? PKM_ENOPROOF : PKM_EHANDSHAKE);
    return 1;
}

static int acquire_own_key(pkm_engine_t *e)
{
    count_rsa_op();
    if (e->keypool) return pkm_keypool_take(e->keypool, &e->own_key);
    return pkm_key_generate(&e->own_key);
}

/* Established (again): encrypt the packets held during a re-establishment, in one run that
 * continues the chain after the 0xFF packet. */
static int established(pkm_engine_t *e)
{
    observe(e, PKM_HS_ESTABLISHED, 0, NULL, 0);
    e->hs = HS_DONE;
    e->state = PKM_STATE_ESTABLISHED;
    if (e->slen > e->senc) {
        PKM_GUARD(pkm__channel_encrypt(&e->ch, e->sbuf + e->senc, e->slen - e->senc));
        e->senc = e->slen;
    }
    return 0;
}

/* The peer's KeyShare is decrypted and K derived: step 5, the client speaks first. */
static int keyshare_taken(pkm_engine_t *e)
{
    if (e->client) PKM_GUARD(send_confirm(e));
    e->hs = HS_CONFIRM;
    return 0;
}

/* One step of the handshake: 1 when it went on (or now waits for a job), 0 when bytes are
 * missing, or a negative error (advance closes the engine with it). */
static int step(pkm_engine_t *e)
{
    int r;
    switch (e->hs) {
    case HS_SERVERKEY:
    case HS_CLIENTKEY:
        if ((r = read_key_msg(e)) <= 0) return r;
        if (e->client) {
            e->hs = HS_OWNKEY;
            return 1;
        }
        PKM_GUARD(send_keyshare(e)); /* the server answers ClientKey with its KeyShare at once */
        e->hs = HS_KEYSHARE;
        return 1;
    case HS_OWNKEY:
        if (!e->own_key && e->defer) {
            e->job_state = JS_WANTED; /* JOB_KEYGEN */
            return 1;
        }
        if (!e->own_key) PKM_GUARD(acquire_own_key(e));
        PKM_GUARD(send_key_msg(e, e->own_key)); /* ClientKey and KeyShare in one write */
        PKM_GUARD(send_keyshare(e));
        e->hs = HS_KEYSHARE;
        return 1;
    case HS_KEYSHARE: {
        pkm_reader in = pkm__engine_received(e);
        if (pkm__read_bytes(&in, e->share_in, KEYSHARE_SIZE) < 0) return 0;
        observe(e, PKM_HS_KEYSHARE, 0, in.p, KEYSHARE_SIZE);
        e->rpos += in.pos;
        e->hs = HS_KEYSHARE_WORK;
        return 1;
    }
    case HS_KEYSHARE_WORK:
        if (e->defer) {
            e->job_state = JS_WANTED; /* JOB_KEYSHARE */
            return 1;
        }
        PKM_GUARD(take_keyshare(e));
        PKM_GUARD(keyshare_taken(e));
        return 1;
    case HS_CONFIRM:
        if ((r = check_confirm(e)) <= 0) return r;
        if (!e->client) PKM_GUARD(send_confirm(e));
        PKM_GUARD(established(e));
        return 1;
    case HS_DONE: break;
    }
    return 1;
}

/* Runs the handshake as far as the buffered bytes (and the defer flag) allow. Missing bytes are
 * fine unless the peer has closed. */
static int advance(pkm_engine_t *e)
{
    for (;;) {
        if (e->state == PKM_STATE_CLOSED) return e->err;
        if (e->job_state != JS_NONE || e->hs == HS_DONE) return 0;
        int r = step(e);
        if (r < 0) return fail(e, r);
        if (r == 0) return e->eof ? fail(e, PKM_EHANDSHAKE) : 0;
    }
}

static int process(pkm_engine_t *e)
{
    if (e->state == PKM_STATE_CLOSED) return e->err;
    if (e->state == PKM_STATE_ESTABLISHED) return 0; /* packets are taken lazily */
    return advance(e);
}

/* For engine_stream.c (engine_state.h). */
int pkm__engine_fail(pkm_engine_t *e, int err)
{
    return fail(e, err);
}

int pkm__engine_process(pkm_engine_t *e)
{
    return process(e);
}

/* ---- configuration and lifetime ---- */

void pkm_engine_config_init(pkm_engine_config_t *cfg, int role)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->role = role;
    cfg->max_packet_size = PKM_DEFAULT_MAX_SIZE;
    cfg->max_send_buffer = PKM_DEFAULT_MAX_SEND_BUFFER;
}

int pkm_engine_new(const pkm_engine_config_t *cfg, pkm_engine_t **out)
{
    if (out) *out = NULL;
    PKM_ENSURE(cfg && out, PKM_EINVAL);
    pkm_key_t *client_key = cfg->client_key; /* ours from here on: freed even on failure */
    pkm_engine_t *e = NULL;
    int rc;
    PKM_GUARD_GOTO(rc, pkm__engine_config_check(cfg));
    PKM_ENSURE_GOTO(rc, (e = pkm__calloc(1, sizeof *e)) != NULL, PKM_ENOMEM);
    e->client = cfg->role == PKM_ROLE_CLIENT;
    e->state = PKM_STATE_HANDSHAKE;
    e->hs = e->client ? HS_SERVERKEY : HS_CLIENTKEY;
    e->defer = cfg->defer_crypto != 0;
    e->server_key = e->client ? NULL : cfg->server_key;
    e->own_key = client_key;
    client_key = NULL; /* the engine's now */
    e->keypool = e->client ? cfg->keypool : NULL;
    if (cfg->pin_fingerprint) {
        memcpy(e->pin, cfg->pin_fingerprint, PKM_FINGERPRINT_SIZE);
        e->has_pin = 1;
        e->trust[e->ntrust].fn = pin_check;
        e->trust[e->ntrust++].ctx = e->pin;
    }
    if (cfg->check_peer) {
        e->trust[e->ntrust].fn = cfg->check_peer;
        e->trust[e->ntrust++].ctx = cfg->check_peer_ctx;
    }
    e->observe = cfg->observe;
    e->observe_ctx = cfg->observe_ctx;
    e->max_packet = cfg->max_packet_size;
    e->max_send = cfg->max_send_buffer;
    e->verify = cfg->verify;
    e->verify_ctx = cfg->verify_ctx;
    e->random = cfg->random;
    e->random_ctx = cfg->random_ctx;
    e->keylog_fn = cfg->keylog_fn;
    e->keylog_ctx = cfg->keylog_ctx;
    /* Read once per engine; ignored in set-id programs (the file would be written with their
     * privileges, and hold their secrets). */
    const char *klpath =
        getuid() == geteuid() && getgid() == getegid() ? getenv(PKM_KEYLOG_ENV) : NULL;
    if (klpath && *klpath) {
        size_t kn = strlen(klpath) + 1;
        e->keylog_path = pkm__malloc(kn);
        PKM_ENSURE_GOTO(rc, e->keylog_path != NULL, PKM_ENOMEM);
        memcpy(e->keylog_path, klpath, kn);
    }
    if (cfg->secret_len) {
        e->secret = pkm__malloc(cfg->secret_len);
        PKM_ENSURE_GOTO(rc, e->secret != NULL, PKM_ENOMEM);
        memcpy(e->secret, cfg->secret, cfg->secret_len);
        e->secret_len = cfg->secret_len;
    }
    PKM_GUARD_GOTO(rc, pkm__channel_init(&e->ch));
    if (!e->client) PKM_GUARD_GOTO(rc, send_key_msg(e, e->server_key)); /* it speaks first */
    *out = e;
    return 0;
cleanup:
    pkm_key_free(client_key);
    pkm_engine_free(e);
    return rc;
}

void pkm_engine_free(pkm_engine_t *e)
{
    if (!e) return;
    wipe_handshake(e);
    pkm__channel_free(&e->ch);
    pkm_key_free(e->own_key);
    pkm_key_free(e->peer_key);
    pkm__engine_wipe_free(e->rbuf, e->rcap);
    pkm__engine_wipe_free(e->sbuf, e->scap);
    pkm__free(e->keylog_path);
    OPENSSL_cleanse(e, sizeof *e);
    pkm__free(e);
}

/* ---- re-establishing the secret ---- */

int pkm_engine_rekey(pkm_engine_t *e, const uint8_t *secret, size_t secret_len)
{
    if (!e) return PKM_EINVAL;
    if (e->state == PKM_STATE_CLOSED) return PKM_ECLOSED;
    if (e->state != PKM_STATE_ESTABLISHED || !e->peer_key) return PKM_ESTATE;
    if (secret_len > PKM_MAX_SECRET || (secret_len && !secret)) return PKM_EINVAL;
    uint8_t *copy = NULL;
    if (secret_len) {
        if (!(copy = pkm__malloc(secret_len))) return PKM_ENOMEM;
        memcpy(copy, secret, secret_len);
    }
    wipe_handshake(e);
    e->secret = copy;
    e->secret_len = secret_len;
    e->state = PKM_STATE_REKEYING;
    e->hs = HS_KEYSHARE;
    observe(e, PKM_HS_REKEY, 0, NULL, 0);
    /* A packet half taken means packet bytes where the peer's KeyShare belongs: on a server, a
     * client packet was in flight; on a client, next_packet was called after the trigger. So do
     * bytes a server decrypted ahead (rdec): client packets sent before the trigger. */
    if (e->pk_head || e->rdec) return fail(e, PKM_EHANDSHAKE);
    int r = send_keyshare(e);
    if (r < 0) return fail(e, r);
    return advance(e);
}

/* ---- RSA work as jobs ---- */

int pkm_engine_job_take(pkm_engine_t *e, pkm_job_t **out)
{
    if (out) *out = NULL;
    if (!e || !out) return PKM_EINVAL;
    if (e->state == PKM_STATE_CLOSED) return e->err;
    if (e->job_state != JS_WANTED) return PKM_ESTATE;
    pkm_job_t *job = pkm__calloc(1, sizeof *job);
    if (!job) return fail(e, PKM_ENOMEM);
    if (e->hs == HS_OWNKEY) {
        job->kind = JOB_KEYGEN;
        job->pool = e->keypool;
    } else {
        /* HS_KEYSHARE_WORK. The key is only ever read; the reference keeps it alive for a job
         * that outlives its engine (a server's key may then be freed by its owner). */
        job->kind = JOB_KEYSHARE;
        job->key = pkm_key_ref((pkm_key_t *)(uintptr_t)own_private(e));
        memcpy(job->ct, e->share_in, sizeof job->ct);
    }
    e->job_state = JS_OUT;
    e->job_out = job;
    *out = job;
    return 0;
}

int pkm_job_run(pkm_job_t *job)
{
    if (!job) return PKM_EINVAL;
    if (job->ran) return job->result;
    if (job->kind == JOB_KEYGEN) {
        count_rsa_op();
        job->result =
            job->pool ? pkm_keypool_take(job->pool, &job->key) : pkm_key_generate(&job->key);
    } else {
        job->result = rsa_decrypt_share(pkm__key_evp(job->key), job->ct, job->m);
    }
    job->ran = 1;
    /* Release this thread's OpenSSL state (DRBGs, error queue): pool threads such as libuv's are
     * never joined before exit, so it would stay allocated (valgrind: definitely lost). OpenSSL
     * allocates it again on the thread's next use, microseconds next to the RSA work. */
    OPENSSL_thread_stop();
    return job->result;
}

void pkm_job_free(pkm_job_t *job)
{
    if (!job) return;
    pkm_key_free(job->key); /* a reference dropped, or a key never taken: freed and wiped */
    OPENSSL_cleanse(job, sizeof *job);
    pkm__free(job);
}

int pkm_engine_job_done(pkm_engine_t *e, pkm_job_t *job)
{
    if (!e || !job) {
        pkm_job_free(job);
        return PKM_EINVAL;
    }
    if (e->state == PKM_STATE_CLOSED) {
        pkm_job_free(job);
        return e->err;
    }
    if (e->job_state != JS_OUT || job != e->job_out) {
        pkm_job_free(job); /* not this engine's job: the engine is unchanged */
        return PKM_EINVAL;
    }
    e->job_state = JS_NONE;
    e->job_out = NULL;
    int rc;
    PKM_GUARD_GOTO(rc, pkm_job_run(job)); /* nothing to do when it ran already, as it should */
    if (job->kind == JOB_KEYGEN) {
        e->own_key = job->key;
        job->key = NULL;
    } else {
        PKM_GUARD_GOTO(rc, derive(e, job->m));
        PKM_GUARD_GOTO(rc, keyshare_taken(e));
    }
cleanup:
    pkm_job_free(job);
    return rc < 0 ? fail(e, rc) : advance(e);
}

/* ---- status ---- */

int pkm_engine_state(const pkm_engine_t *e)
{
    return e ? e->state : PKM_STATE_CLOSED;
}

int pkm_engine_error(const pkm_engine_t *e)
{
    return e ? e->err : PKM_EINVAL;
}

const char *pkm_engine_fail_step(const pkm_engine_t *e)
{
    return e ? e->fail_step : NULL;
}

void pkm_engine_close(pkm_engine_t *e, int err)
{
    if (!e) return;
    fail(e, err < 0 ? err : PKM_ECLOSED);
}

const pkm_key_t *pkm_engine_peer_key(const pkm_engine_t *e)
{
    return e ? e->peer_key : NULL;
}

const char *pkm_engine_peer_fingerprint(const pkm_engine_t *e)
{
    return e && e->peer_key ? e->peer_fp : NULL;
}

const char *pkm__engine_offered_fingerprint(const pkm_engine_t *e)
{
    return e && e->peer_fp[0] ? e->peer_fp : NULL;
}

const char *pkm__engine_pin(const pkm_engine_t *e)
{
    return e && e->has_pin ? e->pin : NULL;
}

int pkm_engine_is_client(const pkm_engine_t *e)
{
    return e ? e->client : 0;
}

/* ---- test-only hooks (engine_internal.h) ---- */

static void test_keylog_adapter(void *ctx, const pkm_keylog_entry_t *ent)
{
    pkm_engine_t *e = ctx;
    e->test_keylog(e->test_keylog_ctx, ent->k_cs, ent->k_sc, ent->iv);
}

void pkm__engine_set_keylog(pkm_engine_t *e, pkm__keylog_fn fn, void *ctx)
{
    e->test_keylog = fn;
    e->test_keylog_ctx = ctx;
    e->keylog_fn = fn ? test_keylog_adapter : NULL;
    e->keylog_ctx = e;
}

int pkm__engine_test_start(pkm_engine_t *e, const uint8_t key[32], const uint8_t iv[16])
{
    if (e->state != PKM_STATE_HANDSHAKE || e->rend != 0) return PKM_ESTATE;
    PKM_GUARD(pkm__channel_start(&e->ch, key, key, iv));
    wipe_handshake(e);
    e->sstart = e->senc = e->slen = 0; /* a server's queued ServerKey */
    return established(e);
}

size_t pkm_engine_partial_held(const pkm_engine_t *e)
{
    if (!e || (e->state != PKM_STATE_ESTABLISHED && e->state != PKM_STATE_REKEYING)) return 0;
    if (e->rend <= e->rpos && !e->pk_head) return 0;
    return e->rcap ? e->rcap : e->rend - e->rpos;
}

unsigned long pkm__engine_rsa_ops(void)
{
    return atomic_load_explicit(&rsa_ops, memory_order_relaxed);
}
