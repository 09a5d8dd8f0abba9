/* SPDX-License-Identifier: MIT */
/* Server authentication under wire profile 2 (issue 11): the echoing impostor against the client
 * engine and against pkm_connect with a pin, reflections and 0xFF packets out of place, and keys
 * with a public exponent other than 65537 refused before any RSA operation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include "support.h"
#include "engine_internal.h"
#include "keys_internal.h"
#include "pkmcom/conn.h"

#define WAIT 10000

/* The padded 0xFF packet of step 5. */
static const uint8_t confirm_plain[16] = {0xFF, 0x50, 0x4B, 0x6B, 0xE1, 0x00, 0x00, 0x00,
                                          0x04, 0x50, 0x4B, 0x4D, 0x00, 0x03, 0x03, 0x03};

static uint8_t *take_all(pkm_engine_t *e, size_t *len)
{
    const uint8_t *p = pkm_engine_send_buf(e, len);
    uint8_t *copy = malloc(*len ? *len : 1);
    assert_non_null(copy);
    if (*len) memcpy(copy, p, *len);
    assert_int_equal(pkm_engine_send_ack(e, *len), 0);
    return copy;
}

static size_t move_all(pkm_engine_t *from, pkm_engine_t *to)
{
    size_t len = 0;
    uint8_t *p = take_all(from, &len);
    if (len) (void)pkm_engine_feed(to, p, len);
    free(p);
    return len;
}

static void assert_closed(pkm_engine_t *e, int err, const char *step)
{
    size_t len = 99;
    assert_int_equal(pkm_engine_state(e), PKM_STATE_CLOSED);
    if (pkm_engine_error(e) != err)
        print_error("closed with %s, expected %s\n", pkm_errname(pkm_engine_error(e)),
                    pkm_errname(err));
    assert_int_equal(pkm_engine_error(e), err);
    if (step)
        assert_string_equal(pkm_engine_fail_step(e), step);
    else
        assert_null(pkm_engine_fail_step(e));
    assert_null(pkm_engine_send_buf(e, &len)); /* nothing is sent after a failure */
    assert_int_equal(len, 0);
}

static const uint8_t *server_der(size_t *len)
{
    return pkm__key_der(t_shared_keys.server_key, len);
}

/* ---- (a) the echoing impostor against the client engine ---- */

/* Plays the impostor against client engine c, in memory: the real server's ServerKey, 528
 * random bytes as KeyShare, then the client's bytes after its KeyShare echoed back. Returns what
 * the last feed returned; *echoed is how many bytes were echoed. */
static int impostor_run(pkm_engine_t *c, size_t *echoed)
{
    size_t dlen = 0, len = 0;
    const uint8_t *der = server_der(&dlen);
    uint8_t hello[4 + 1024], share[528];
    size_t hl = t_impostor_hello(der, dlen, hello, sizeof hello);
    assert_int_equal(pkm_engine_feed(c, hello, hl), 0);
    uint8_t *first = take_all(c, &len);
    assert_int_equal(t_impostor_client_hello_len(first, len), len); /* ClientKey + KeyShare */
    free(first);
    assert_int_equal(RAND_bytes(share, sizeof share), 1);
    assert_int_equal(pkm_engine_feed(c, share, sizeof share), 0);
    uint8_t *rest = take_all(c, &len);
    assert_int_equal(len, 16); /* the client's 0xFF, under K_cs */
    int r = pkm_engine_feed(c, rest, len);
    free(rest);
    *echoed = len;
    return r;
}

static void impostor_engine(void **state)
{
    (void)state;
    /* pinned to the very key the impostor shows; unpinned; with a secret */
    t_opts pinned = {.pin = t_shared_keys.server_fp}, plain = {0},
           secret = {.pin = t_shared_keys.server_fp, .secret = "hunter2"};
    const t_opts *cases[] = {&pinned, &plain, &secret};
    for (size_t i = 0; i < 3; i++) {
        pkm_engine_t *c = t_client(&t_shared_keys, cases[i]);
        size_t echoed = 0;
        int r = impostor_run(c, &echoed);
        assert_int_equal(echoed, 16);
        assert_int_equal(r, PKM_ENOPROOF);
        assert_closed(c, PKM_ENOPROOF, "confirmation (0xFF)");
        assert_null(strstr(pkm_strerror(PKM_ENOPROOF), "unknown"));
        assert_non_null(strstr(pkm_strerror(PKM_ENOPROOF), "could not prove it holds"));
        assert_string_equal(pkm_errname(PKM_ENOPROOF), "PKM_ENOPROOF");
        pkm_packet_t pk;
        assert_int_equal(pkm_engine_next_packet(c, &pk), PKM_ENOPROOF);
        pkm_engine_free(c);
    }
}

/* The same echo during a re-establishment: a relay between the client and the real server that
 * swaps the server's new KeyShare for random bytes and echoes the client's new 0xFF fails too. */
static void impostor_rekey(void **state)
{
    (void)state;
    pkm_engine_t *c = t_client(&t_shared_keys, NULL), *s = t_server(&t_shared_keys, NULL);
    t_handshake(c, s, 0);
    uint8_t reason = 0;
    /* The real server sends the trigger; the relay passes it on, then plays the server. */
    assert_int_equal(pkm_engine_queue_packet(s, 0x05, pkm_packet_hash(0x05, reason), &reason, 1),
                     0);
    size_t len = 0;
    uint8_t *trig = take_all(s, &len);
    assert_int_equal(len, 16);
    assert_int_equal(pkm_engine_feed(c, trig, len), 0);
    free(trig);
    pkm_packet_t pk;
    assert_int_equal(pkm_engine_next_packet(c, &pk), 1);
    assert_int_equal(pk.id, 0x05);
    assert_int_equal(pkm_engine_rekey(c, NULL, 0), 0);
    uint8_t *ks = take_all(c, &len);
    assert_int_equal(len, 528); /* the client's new KeyShare, and nothing else */
    free(ks);
    uint8_t share[528];
    assert_int_equal(RAND_bytes(share, sizeof share), 1);
    assert_int_equal(pkm_engine_feed(c, share, sizeof share), 0);
    uint8_t *ff = take_all(c, &len);
    assert_int_equal(len, 16);
    assert_int_equal(pkm_engine_feed(c, ff, len), PKM_ENOPROOF);
    free(ff);
    assert_closed(c, PKM_ENOPROOF, "confirmation (0xFF)");
    pkm_engine_free(c);
    pkm_engine_free(s);
}

/* ---- (b) the same impostor over TCP against pkm_connect ---- */

static void impostor_connect(void **state)
{
    (void)state;
    size_t dlen = 0;
    const uint8_t *der = server_der(&dlen);
    t_impostor *im = t_impostor_start(der, dlen);
    const char *secrets[] = {NULL, "hunter2"};
    for (int i = 0; i < 2; i++) {
        char eb[PKM_ERRMSG_SIZE];
        pkm_conn_config_t cfg;
        pkm_conn_config_init(&cfg);
        cfg.engine.client_key = t_client_key(&t_shared_keys);
        cfg.engine.pin_fingerprint = t_shared_keys.server_fp; /* the key the impostor shows */
        cfg.handshake_timeout_ms = WAIT;
        cfg.errbuf = eb;
        cfg.errbuf_size = sizeof eb;
        if (secrets[i]) {
            cfg.engine.secret = (const uint8_t *)secrets[i];
            cfg.engine.secret_len = strlen(secrets[i]);
        }
        pkm_conn_t *c = NULL;
        int r = pkm_connect("127.0.0.1", t_impostor_port(im), &cfg, &c);
        if (r != PKM_ENOPROOF) print_error("pkm_connect: %s: %s\n", pkm_errname(r), eb);
        assert_int_equal(r, PKM_ENOPROOF);
        assert_null(c);
        /* The sentence says what failed and where. */
        assert_non_null(strstr(eb, "the server could not prove it holds"));
        assert_non_null(strstr(eb, "confirmation (0xFF)"));
        assert_non_null(strstr(eb, "127.0.0.1:"));
    }
    assert_int_equal(t_impostor_connections(im), 2);
    /* Stopping waits for the impostor to see the client go: each client's 0xFF went back to it
     * (16 bytes each), and the client closed on reading that echo. */
    assert_int_equal(t_impostor_stop(im), 32);
}

/* ---- (c) reflections against the server, 0xFF packets out of place ---- */

/* The server's own 0xFF answer, sent back to it after the client's: decrypted under K_cs it is
 * garbage, and the server closes. */
static void reflect_to_server(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 8; seed++) {
        t_rng rc, rs;
        t_rng_seed(&rc, seed * 2);
        t_rng_seed(&rs, seed * 2 + 1);
        t_opts oc = {.rng = &rc}, os = {.rng = &rs};
        pkm_engine_t *c = t_client(&t_shared_keys, &oc), *s = t_server(&t_shared_keys, &os);
        assert_true(move_all(s, c) > 0); /* ServerKey */
        assert_true(move_all(c, s) > 0); /* ClientKey + KeyShare */
        assert_true(move_all(s, c) > 0); /* server KeyShare */
        size_t len = 0;
        uint8_t *ff = take_all(c, &len);
        assert_int_equal(len, 16);
        assert_int_equal(pkm_engine_feed(s, ff, len), 0);
        assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
        uint8_t *answer = take_all(s, &len);
        assert_int_equal(len, 16);
        assert_memory_not_equal(answer, ff, 16); /* profile 1 would have sent ff back */
        /* reflected: the server must not take it as a packet, nor wait for more of it forever;
         * whatever its decrypted header says, the stream ending there is a protocol error */
        int r = pkm_engine_feed(s, answer, len);
        pkm_packet_t pk;
        if (r == 0) r = pkm_engine_next_packet(s, &pk);
        assert_int_not_equal(r, 1);
        if (r == 0) {
            r = pkm_engine_recv_eof(s);
            if (r == 0) r = pkm_engine_next_packet(s, &pk);
        }
        assert_true(r < 0);
        assert_int_equal(pkm_engine_state(s), PKM_STATE_CLOSED);
        /* and the genuine answer still works on the client */
        assert_int_equal(pkm_engine_feed(c, answer, 16), 0);
        assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
        free(ff);
        free(answer);
        pkm_engine_free(c);
        pkm_engine_free(s);
    }
}

/* A client's packet echoed back to it after the handshake does not decrypt as the server's. */
static void reflect_to_client(void **state)
{
    (void)state;
    pkm_engine_t *c = t_client(&t_shared_keys, NULL), *s = t_server(&t_shared_keys, NULL);
    t_handshake(c, s, 0);
    uint8_t content[100];
    memset(content, 0x5A, sizeof content);
    assert_int_equal(pkm_engine_queue_packet(c, 1, 0, content, sizeof content), 0);
    size_t len = 0;
    uint8_t *wire = take_all(c, &len);
    int r = pkm_engine_feed(c, wire, len);
    pkm_packet_t pk;
    if (r == 0) r = pkm_engine_next_packet(c, &pk);
    assert_int_not_equal(r, 1);
    if (r == 0) {
        r = pkm_engine_recv_eof(c);
        if (r == 0) r = pkm_engine_next_packet(c, &pk);
    }
    assert_true(r < 0);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_CLOSED);
    free(wire);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

/* A well-encrypted 0xFF packet after the handshake, in either direction, is a protocol error;
 * and the same after a re-establishment. */
static void ff_out_of_place(void **state)
{
    (void)state;
    for (int rekeyed = 0; rekeyed < 2; rekeyed++) {
        for (int to_server = 0; to_server < 2; to_server++) {
            pkm_engine_t *c = t_client(&t_shared_keys, NULL), *s = t_server(&t_shared_keys, NULL);
            t_handshake(c, s, 0);
            if (rekeyed) {
                uint8_t reason = 0;
                assert_int_equal(
                    pkm_engine_queue_packet(s, 5, pkm_packet_hash(5, reason), &reason, 1), 0);
                assert_int_equal(pkm_engine_rekey(s, NULL, 0), 0);
                t_pump p;
                t_pump_init(&p, c, s, 0);
                t_pump_run(&p);
                pkm_packet_t pk;
                assert_int_equal(pkm_engine_next_packet(c, &pk), 1);
                assert_int_equal(pkm_engine_rekey(c, NULL, 0), 0);
                t_pump_run(&p);
                assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
                assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
            }
            pkm_engine_t *from = to_server ? c : s, *to = to_server ? s : c;
            assert_int_equal(pkm__engine_queue_raw(from, confirm_plain, 16), 0);
            assert_int_equal(move_all(from, to), 16);
            pkm_packet_t pk;
            assert_int_equal(pkm_engine_next_packet(to, &pk), PKM_EPROTO);
            assert_closed(to, PKM_EPROTO, NULL);
            pkm_engine_free(c);
            pkm_engine_free(s);
        }
    }
}

/* ---- a wire-profile-1 peer fails at step 5 ---- */

static void rsa_op(EVP_PKEY *k, int enc, const uint8_t *in, size_t inl, uint8_t *out, size_t *outl)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
    assert_non_null(c);
    assert_int_equal(enc ? EVP_PKEY_encrypt_init(c) : EVP_PKEY_decrypt_init(c), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING), 1);
    assert_int_equal(
        enc ? EVP_PKEY_encrypt(c, out, outl, in, inl) : EVP_PKEY_decrypt(c, out, outl, in, inl), 1);
    EVP_PKEY_CTX_free(c);
}

/* A KeyShare of (m, iv) to `peer`, written with EVP alone. */
static void v1_keyshare(EVP_PKEY *peer, const uint8_t m[256], const uint8_t iv[16],
                        uint8_t out[528])
{
    for (int h = 0; h < 2; h++) {
        size_t ol = 256;
        rsa_op(peer, 1, m + 128 * h, 128, out + 256 * h, &ol);
        assert_int_equal(ol, 256);
    }
    memcpy(out + 512, iv, 16);
}

/* The peer's M and IV from its KeyShare, with our private key. */
static void v1_open(EVP_PKEY *own, const uint8_t share[528], uint8_t m[256], uint8_t iv[16])
{
    for (int h = 0; h < 2; h++) {
        uint8_t out[256];
        size_t ol = sizeof out;
        rsa_op(own, 0, share + 256 * h, 256, out, &ol);
        assert_int_equal(ol, 128);
        memcpy(m + 128 * h, out, 128);
    }
    memcpy(iv, share + 512, 16);
}

/* Profile 1's confirmation: the 0xFF block under K = SHA-256(M), from IV. */
static void v1_confirm(const uint8_t mc[256], const uint8_t ms[256], const uint8_t ivc[16],
                       const uint8_t ivs[16], uint8_t out[16])
{
    uint8_t m[256], k[32], iv[16];
    unsigned kl = 0;
    for (int i = 0; i < 256; i++)
        m[i] = mc[i] ^ ms[i];
    for (int i = 0; i < 16; i++)
        iv[i] = ivc[i] ^ ivs[i];
    assert_int_equal(EVP_Digest(m, 256, k, &kl, EVP_sha256(), NULL), 1);
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int ol = 0;
    assert_non_null(x);
    assert_int_equal(EVP_EncryptInit_ex(x, EVP_aes_256_cbc(), NULL, k, iv), 1);
    assert_int_equal(EVP_CIPHER_CTX_set_padding(x, 0), 1);
    assert_int_equal(EVP_EncryptUpdate(x, out, &ol, confirm_plain, 16), 1);
    assert_int_equal(ol, 16);
    EVP_CIPHER_CTX_free(x);
}

/* A profile-1 server holding the real private key: it follows the handshake to the letter, but
 * answers under the single K = SHA-256(M). The client fails at step 5, never silently. */
static void profile1_server(void **state)
{
    (void)state;
    pkm_engine_t *c = t_client(&t_shared_keys, &(t_opts){.pin = t_shared_keys.server_fp});
    size_t dlen = 0, len = 0;
    const uint8_t *der = server_der(&dlen);
    uint8_t hello[4 + 1024];
    assert_int_equal(pkm_engine_feed(c, hello, t_impostor_hello(der, dlen, hello, sizeof hello)),
                     0);
    uint8_t *first = take_all(c, &len);
    assert_int_equal(len, 4 + 294 + 528);
    const unsigned char *p = first + 4;
    EVP_PKEY *ck = d2i_PUBKEY(NULL, &p, 294);
    assert_non_null(ck);
    uint8_t mc[256], ivc[16], ms[256], ivs[16], share[528], answer[16];
    v1_open(pkm__key_evp(t_shared_keys.server_key), first + 298, mc, ivc);
    assert_int_equal(RAND_bytes(ms, 256), 1);
    assert_int_equal(RAND_bytes(ivs, 16), 1);
    v1_keyshare(ck, ms, ivs, share);
    assert_int_equal(pkm_engine_feed(c, share, 528), 0);
    uint8_t *ff = take_all(c, &len);
    assert_int_equal(len, 16);
    v1_confirm(mc, ms, ivc, ivs, answer);
    assert_memory_not_equal(ff, answer, 16); /* the client did not use profile 1's K either */
    assert_int_equal(pkm_engine_feed(c, answer, 16), PKM_ENOPROOF);
    assert_closed(c, PKM_ENOPROOF, "confirmation (0xFF)");
    free(first);
    free(ff);
    EVP_PKEY_free(ck);
    pkm_engine_free(c);
}

/* A profile-1 client: the server finds its 0xFF wrong and closes at step 5. */
static void profile1_client(void **state)
{
    (void)state;
    pkm_engine_t *s = t_server(&t_shared_keys, NULL);
    pkm_key_t *ck = t_client_key(&t_shared_keys);
    size_t len = 0, dl = 0;
    free(take_all(s, &len)); /* ServerKey */
    const uint8_t *cder = pkm__key_der(ck, &dl);
    uint8_t msg[4 + 1024 + 528], mc[256], ivc[16], ms[256], ivs[16], ff[16];
    size_t ml = t_impostor_hello(cder, dl, msg, sizeof msg);
    assert_int_equal(RAND_bytes(mc, 256), 1);
    assert_int_equal(RAND_bytes(ivc, 16), 1);
    v1_keyshare(pkm__key_evp(t_shared_keys.server_key), mc, ivc, msg + ml);
    assert_int_equal(pkm_engine_feed(s, msg, ml + 528), 0);
    uint8_t *share = take_all(s, &len);
    assert_int_equal(len, 528);
    v1_open(pkm__key_evp(ck), share, ms, ivs);
    v1_confirm(mc, ms, ivc, ivs, ff);
    assert_int_equal(pkm_engine_feed(s, ff, 16), PKM_EHANDSHAKE);
    assert_closed(s, PKM_EHANDSHAKE, "confirmation (0xFF)");
    free(share);
    pkm_key_free(ck);
    pkm_engine_free(s);
}

/* ---- (d) keys with another exponent: refused before any RSA operation ---- */

/* The server's modulus with exponent 3, n - 2 and 2^16 + 3; and rsa2048_e3.pub.der (made by the
 * openssl CLI with rsa_keygen_pubexp:3). */
enum { N_BAD = 4 };
static size_t bad_keys(uint8_t der[N_BAD][1100], size_t len[N_BAD])
{
    BIGNUM *n = NULL, *e = BN_new();
    assert_non_null(e);
    assert_int_equal(
        EVP_PKEY_get_bn_param(pkm__key_evp(t_shared_keys.server_key), OSSL_PKEY_PARAM_RSA_N, &n),
        1);
    assert_int_equal(BN_set_word(e, 3), 1);
    len[0] = t_spki_from_ne("RSA", n, e, der[0], sizeof der[0]);
    assert_non_null(BN_copy(e, n));
    assert_int_equal(BN_sub_word(e, 2), 1);
    len[1] = t_spki_from_ne("RSA", n, e, der[1], sizeof der[1]);
    assert_int_equal(BN_set_word(e, 65539), 1);
    len[2] = t_spki_from_ne("RSA", n, e, der[2], sizeof der[2]);
    BN_free(n);
    BN_free(e);
    char path[1024];
    const char *src = getenv("PKM_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/tests/data/rsa2048_e3.pub.der", src ? src : ".");
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    len[3] = fread(der[3], 1, sizeof der[3], f);
    fclose(f);
    assert_int_equal(len[3], 292);
    return N_BAD;
}

/* A message Int n || der. */
static size_t key_msg(const uint8_t *der, size_t len, uint8_t *out)
{
    return t_impostor_hello(der, len, out, 4 + 1100);
}

static void bad_exponent_client_key(void **state)
{
    (void)state;
    uint8_t der[N_BAD][1100], msg[4 + 1100 + 528];
    size_t len[N_BAD];
    size_t nb = bad_keys(der, len);
    for (size_t i = 0; i < nb; i++) {
        pkm_engine_t *s = t_server(&t_shared_keys, NULL);
        size_t l = 0;
        free(take_all(s, &l)); /* its ServerKey */
        size_t ml = key_msg(der[i], len[i], msg);
        assert_int_equal(RAND_bytes(msg + ml, 528), 1); /* a KeyShare behind it, in one write */
        unsigned long before = pkm__engine_rsa_ops();
        assert_int_equal(pkm_engine_feed(s, msg, ml + 528), PKM_EKEY);
        assert_int_equal(pkm__engine_rsa_ops(), before); /* no KeyShare encrypted to it */
        assert_closed(s, PKM_EKEY, "ClientKey");
        pkm_engine_free(s);
    }
    /* The counter does count: the real ClientKey costs the server two encryptions at once. */
    pkm_engine_t *s = t_server(&t_shared_keys, NULL);
    pkm_key_t *ck = t_client_key(&t_shared_keys);
    size_t dl = 0, l = 0;
    const uint8_t *d = pkm__key_der(ck, &dl);
    size_t ml = key_msg(d, dl, msg);
    free(take_all(s, &l));
    unsigned long before = pkm__engine_rsa_ops();
    assert_int_equal(pkm_engine_feed(s, msg, ml), 0);
    assert_int_equal(pkm__engine_rsa_ops(), before + 2);
    pkm_key_free(ck);
    pkm_engine_free(s);
}

static void bad_exponent_server_key(void **state)
{
    (void)state;
    uint8_t der[N_BAD][1100], msg[4 + 1100];
    size_t len[N_BAD];
    size_t nb = bad_keys(der, len);
    for (int gen = 0; gen < 2; gen++) { /* a given client key, and one the engine would make */
        for (size_t i = 0; i < nb; i++) {
            t_opts o = {.generate_key = gen};
            pkm_engine_t *c = t_client(&t_shared_keys, &o);
            size_t ml = key_msg(der[i], len[i], msg);
            unsigned long before = pkm__engine_rsa_ops();
            assert_int_equal(pkm_engine_feed(c, msg, ml), PKM_EKEY);
            /* no key generated, nothing encrypted to it */
            assert_int_equal(pkm__engine_rsa_ops(), before);
            assert_closed(c, PKM_EKEY, "ServerKey");
            assert_null(pkm_engine_peer_key(c));
            pkm_engine_free(c);
        }
    }
    /* The counter does count: the real ServerKey costs the client a key and two encryptions. */
    t_opts o = {.generate_key = 1};
    pkm_engine_t *c = t_client(&t_shared_keys, &o);
    size_t dl = 0;
    const uint8_t *d = server_der(&dl);
    size_t ml = key_msg(d, dl, msg);
    unsigned long before = pkm__engine_rsa_ops();
    assert_int_equal(pkm_engine_feed(c, msg, ml), 0);
    assert_int_equal(pkm__engine_rsa_ops(), before + 3);
    pkm_engine_free(c);
}

/* `test_engine_auth --impostor KEY.pem [PORT]`: runs the impostor as a process, for the CLI tests
 * (tests/cli_impostor.sh). KEY.pem is the real server's key (public or private PEM; only the
 * public half is shown). Prints "impostor listening on 127.0.0.1:PORT" on stdout, then serves
 * connections until its standard input reaches end of file, then prints "echoed N" and exits 0. */
static int impostor_process(int argc, char **argv)
{
    pkm_key_t *k = NULL;
    int rc = pkm_key_load_pem(argv[2], &k);
    if (rc < 0) {
        fprintf(stderr, "impostor: %s: %s\n", argv[2], pkm_strerror(rc));
        return 2;
    }
    size_t dlen = 0;
    const uint8_t *der = pkm__key_der(k, &dlen);
    t_impostor *im = t_impostor_start_port(der, dlen, argc > 3 ? (uint16_t)atoi(argv[3]) : 0);
    printf("impostor listening on 127.0.0.1:%u\n", (unsigned)t_impostor_port(im));
    fflush(stdout);
    char buf[256];
    while (fread(buf, 1, sizeof buf, stdin) > 0) {
    }
    printf("echoed %zu\n", t_impostor_stop(im));
    pkm_key_free(k);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--impostor") == 0) return impostor_process(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(impostor_engine),         cmocka_unit_test(impostor_rekey),
        cmocka_unit_test(impostor_connect),        cmocka_unit_test(reflect_to_server),
        cmocka_unit_test(reflect_to_client),       cmocka_unit_test(ff_out_of_place),
        cmocka_unit_test(profile1_server),         cmocka_unit_test(profile1_client),
        cmocka_unit_test(bad_exponent_client_key), cmocka_unit_test(bad_exponent_server_key),
    };
    return cmocka_run_group_tests(tests, t_keys_setup, t_keys_teardown);
}
