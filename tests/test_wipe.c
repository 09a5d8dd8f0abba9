/* SPDX-License-Identifier: MIT */
/* Proof that secrets are wiped: every heap block freed by libpkmcom or by OpenSSL during a full
 * handshake with a secret, packets and a re-establishment, and the live engines once established,
 * are scanned for the secret material (M halves, M, K, K', the secrets, the client's private
 * exponent); none may hold any of it. */
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include "support.h"
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_MAKE_MEM_DEFINED
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#endif
#include "internal.h"
#include "engine_internal.h"
#include "keys_internal.h"

/* ---- a scanning allocator: a 16-byte header holds the block's size ---- */

#define MAX_PATTERNS 64
#define PATLEN       32
static uint8_t patterns[MAX_PATTERNS][PATLEN];
static size_t pattern_len[MAX_PATTERNS];
static int n_patterns;
static int violations;
static char violation_what[256];

static void add_pattern(const uint8_t *p, size_t len)
{
    if (n_patterns == MAX_PATTERNS) return;
    if (len > PATLEN) len = PATLEN;
    memcpy(patterns[n_patterns], p, len);
    pattern_len[n_patterns++] = len;
}

static void scan(const uint8_t *b, size_t n, const char *who)
{
    /* The scan reads whole blocks, parts of which were never written: tell memcheck that is
     * intended (a no-op outside valgrind). */
    (void)VALGRIND_MAKE_MEM_DEFINED(b, n);
    for (int i = 0; i < n_patterns; i++) {
        size_t l = pattern_len[i];
        for (size_t off = 0; off + l <= n; off++) {
            if (b[off] == patterns[i][0] && memcmp(b + off, patterns[i], l) == 0) {
                if (violations++ == 0)
                    snprintf(violation_what, sizeof violation_what,
                             "%s: a %zu-byte block holding secret pattern %d at offset %zu", who, n,
                             i, off);
                return;
            }
        }
    }
}

static void *hdr_alloc(size_t n)
{
    uint8_t *p = malloc(n + 16);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    return p + 16;
}

static size_t hdr_size(void *p)
{
    size_t n;
    memcpy(&n, (uint8_t *)p - 16, sizeof n);
    return n;
}

static void hdr_free(void *p, const char *who)
{
    if (!p) return;
    scan(p, hdr_size(p), who);
    free((uint8_t *)p - 16);
}

static void *hdr_realloc(void *p, size_t n, const char *who)
{
    if (!p) return hdr_alloc(n);
    void *q = hdr_alloc(n);
    if (!q) return NULL;
    size_t old = hdr_size(p);
    memcpy(q, p, old < n ? old : n);
    hdr_free(p, who);
    return q;
}

static long pkm_live; /* blocks libpkmcom allocated and has not freed */

static void *pkm_m(size_t n)
{
    void *p = hdr_alloc(n);
    if (p) pkm_live++;
    return p;
}
static void *pkm_r(void *p, size_t n)
{
    return hdr_realloc(p, n, "freed by libpkmcom");
}
static void pkm_f(void *p)
{
    if (p) pkm_live--;
    hdr_free(p, "freed by libpkmcom");
}
static void *ossl_m(size_t n, const char *file, int line)
{
    (void)file, (void)line;
    return hdr_alloc(n);
}
static void *ossl_r(void *p, size_t n, const char *file, int line)
{
    (void)file, (void)line;
    return hdr_realloc(p, n, "freed by OpenSSL");
}
static void ossl_f(void *p, const char *file, int line)
{
    (void)file, (void)line;
    hdr_free(p, "freed by OpenSSL");
}

/* ---- recording hooks ---- */

static uint8_t m_seen[4][256]; /* the M values handed out, in order */
static int n_m;

static int recording_random(void *ctx, uint8_t *out, size_t n)
{
    (void)ctx;
    if (RAND_bytes_ex(NULL, out, n, 0) != 1) return PKM_ERANDOM;
    if (n == 256) {
        if (n_m < 4) memcpy(m_seen[n_m++], out, 256);
        add_pattern(out, 32);       /* first half's start */
        add_pattern(out + 128, 32); /* second half's start */
    }
    return 0;
}

static void keylog(void *ctx, const uint8_t k_cs[32], const uint8_t k_sc[32], const uint8_t iv[16])
{
    (void)ctx, (void)iv; /* the IV is derived from values sent in the clear: not a secret */
    add_pattern(k_cs, 32);
    add_pattern(k_sc, 32);
}

static t_keys g_keys;

static int setup(void **state)
{
    (void)state;
    t_keys_init(&g_keys);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    t_keys_free(&g_keys);
    return 0;
}

/* The scanner itself must catch a secret left in a freed block, or the test proves nothing. */
static void scanner_catches_an_unwiped_block(void **state)
{
    (void)state;
    int before = violations;
    uint8_t secret[32];
    memset(secret, 0xA5, sizeof secret);
    secret[0] = 0x5A;
    add_pattern(secret, sizeof secret);
    uint8_t *leak = pkm__malloc(100);
    assert_non_null(leak);
    memcpy(leak + 10, secret, sizeof secret);
    pkm__free(leak); /* not wiped */
    assert_int_equal(violations, before + 1);
    uint8_t *wiped = pkm__malloc(100);
    memcpy(wiped + 10, secret, sizeof secret);
    OPENSSL_cleanse(wiped, 100);
    pkm__free(wiped);
    assert_int_equal(violations, before + 1);
    n_patterns--;
    violations = before;
}

static void engine_session_leaves_no_secret_in_freed_memory(void **state)
{
    (void)state;
    static const char s1[] = "correct horse battery staple";
    static const char s2[] = "a new secret for the rekey";
    add_pattern((const uint8_t *)s1, sizeof s1 - 1);
    add_pattern((const uint8_t *)s2, sizeof s2 - 1);

    pkm_engine_config_t cc, sc;
    pkm_engine_config_init(&cc, PKM_ROLE_CLIENT);
    pkm_engine_config_init(&sc, PKM_ROLE_SERVER);
    cc.client_key = t_client_key(&g_keys);
    /* The client's private exponent, as OpenSSL's little-endian limbs hold it. */
    BIGNUM *d = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pkm__key_evp(cc.client_key), OSSL_PKEY_PARAM_RSA_D, &d),
                     1);
    uint8_t dle[256];
    assert_int_equal(BN_bn2lebinpad(d, dle, sizeof dle), 256);
    BN_clear_free(d);
    add_pattern(dle, 32);
    OPENSSL_cleanse(dle, sizeof dle);
    sc.server_key = g_keys.server_key;
    cc.secret = sc.secret = (const uint8_t *)s1;
    cc.secret_len = sc.secret_len = sizeof s1 - 1;
    cc.random = sc.random = recording_random;

    pkm_engine_t *c = NULL, *s = NULL;
    assert_int_equal(pkm_engine_new(&cc, &c), 0);
    assert_int_equal(pkm_engine_new(&sc, &s), 0);
    pkm__engine_set_keylog(c, keylog, NULL);
    pkm__engine_set_keylog(s, keylog, NULL);
    t_handshake(c, s, 0);

    /* M = M_client XOR M_server, as hashed into K. */
    assert_true(n_m >= 2);
    uint8_t m[32];
    for (int i = 0; i < 32; i++)
        m[i] = m_seen[0][i] ^ m_seen[1][i];
    add_pattern(m, 32);

    /* Once established, the live engines themselves hold no M, K or secret any more. */
    scan((const uint8_t *)c, hdr_size(c), "the live client engine");
    scan((const uint8_t *)s, hdr_size(s), "the live server engine");

    t_pump pump;
    t_pump_init(&pump, c, s, 0);
    uint8_t content[300];
    memset(content, 'x', sizeof content);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pkm_engine_queue_packet(c, 0x10, 0, content, sizeof content), 0);
        assert_int_equal(pkm_engine_queue_packet(s, 0x11, 0, content, 40), 0);
    }
    t_pump_run(&pump);
    pkm_packet_t pkt;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pkm_engine_next_packet(s, &pkt), 1);
        assert_int_equal(pkm_engine_next_packet(c, &pkt), 1);
    }
    /* Re-establish with a new secret (the server triggers with packet 0x05). */
    assert_int_equal(pkm_engine_queue_packet(s, 0x05, 155, NULL, 0), 0);
    assert_int_equal(pkm_engine_rekey(s, (const uint8_t *)s2, sizeof s2 - 1), 0);
    t_pump_run(&pump);
    assert_int_equal(pkm_engine_next_packet(c, &pkt), 1);
    assert_int_equal(pkt.id, 0x05);
    assert_int_equal(pkm_engine_rekey(c, (const uint8_t *)s2, sizeof s2 - 1), 0);
    t_pump_run(&pump);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    assert_true(n_m >= 4);
    for (int i = 0; i < 32; i++)
        m[i] = m_seen[2][i] ^ m_seen[3][i];
    add_pattern(m, 32);
    OPENSSL_cleanse(m, sizeof m);
    scan((const uint8_t *)c, hdr_size(c), "the live client engine");
    scan((const uint8_t *)s, hdr_size(s), "the live server engine");
    assert_int_equal(pkm_engine_queue_packet(c, 0x10, 0, content, 100), 0);
    t_pump_run(&pump);
    assert_int_equal(pkm_engine_next_packet(s, &pkt), 1);
    t_pump_done(&pump);

    pkm_engine_free(c); /* frees the client's ephemeral key too */
    pkm_engine_free(s);
    if (violations) fail_msg("%d block(s) held secrets; first: %s", violations, violation_what);
    assert_true(n_patterns >= 10); /* 4 M halves x2, 2 M, 2 K, 2 secrets, d */
}

/* RSA jobs (defer_crypto): a job holding the decrypted M_peer is wiped when freed, whether given
 * back or dropped; a job dropped without running is freed with everything it held. */
static void jobs_leave_no_secret_in_freed_memory(void **state)
{
    (void)state;
    pkm_engine_config_t cc, sc;
    pkm_engine_config_init(&cc, PKM_ROLE_CLIENT);
    pkm_engine_config_init(&sc, PKM_ROLE_SERVER);
    cc.client_key = t_client_key(&g_keys);
    sc.server_key = g_keys.server_key;
    cc.random = sc.random = recording_random; /* the M halves become patterns */
    cc.defer_crypto = sc.defer_crypto = 1;
    for (int round = 0; round < 2; round++) {
        pkm_engine_t *c = NULL, *s = NULL;
        if (round == 1) cc.client_key = t_client_key(&g_keys);
        assert_int_equal(pkm_engine_new(&cc, &c), 0);
        assert_int_equal(pkm_engine_new(&sc, &s), 0);
        t_pump pump;
        t_pump_init(&pump, c, s, 0);
        pump.no_work = 1;
        t_pump_run(&pump); /* up to both KeyShares: each side wants its decryption job */
        assert_int_equal(pkm_engine_wants(c) & PKM_WANT_JOB, PKM_WANT_JOB);
        assert_int_equal(pkm_engine_wants(s) & PKM_WANT_JOB, PKM_WANT_JOB);
        pkm_job_t *jc = NULL, *js = NULL;
        if (round == 0) {
            /* Dropped without running: the job and its key reference go, nothing is left. */
            long live0 = pkm_live;
            assert_int_equal(pkm_engine_job_take(s, &js), 0);
            assert_int_equal(pkm_live, live0 + 1);
            assert_int_equal(pkm_engine_wants(s) & PKM_WANT_JOB, 0); /* taken */
            pkm_job_free(js);
            assert_int_equal(pkm_live, live0);
            /* Run, then dropped (its connection went away): it holds M_server until freed. */
            assert_int_equal(pkm_engine_job_take(c, &jc), 0);
            assert_int_equal(pkm_job_run(jc), 0);
            int v0 = violations;
            scan((const uint8_t *)jc, hdr_size(jc), "a live job");
            assert_int_equal(violations, v0 + 1); /* so the wipe below is what the test sees */
            violations = v0;
            pkm_job_free(jc);
        } else {
            /* Run and given back: the engines go on to establish. */
            pump.no_work = 0;
            t_pump_run(&pump);
            assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
            assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
        }
        t_pump_done(&pump);
        pkm_engine_free(c);
        pkm_engine_free(s);
    }
    if (violations) fail_msg("%d block(s) held secrets; first: %s", violations, violation_what);
}

int main(void)
{
    /* Before OpenSSL allocates anything: every block it frees is scanned too. */
    if (!CRYPTO_set_mem_functions(ossl_m, ossl_r, ossl_f)) {
        fprintf(stderr, "test_wipe: OpenSSL allocated before main; cannot hook its allocator\n");
        return 1;
    }
    pkm_set_allocator(pkm_m, pkm_r, pkm_f);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scanner_catches_an_unwiped_block),
        cmocka_unit_test(engine_session_leaves_no_secret_in_freed_memory),
        cmocka_unit_test(jobs_leave_no_secret_in_freed_memory),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    pkm_set_allocator(NULL, NULL, NULL);
    return rc;
}
