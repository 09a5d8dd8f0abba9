/* SPDX-License-Identifier: MIT */
/* Differential test of pkm_key_from_der against an oracle built from OpenSSL's own decoder: the
 * rule of WIRE-PROFILE section 3 (d2i_PUBKEY parses it all, rsaEncryption, odd 2048-bit n,
 * e = 65537, and i2d_PUBKEY gives back the very bytes) on thousands of mutated encodings. */
#include "support.h"
#include <stdio.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include "keys_internal.h"
#include "pkmcom/keys.h"

/* The oracle: 1 if the rule accepts der, with the decoded key in *out; 0 if it refuses it. */
static int oracle(const uint8_t *der, size_t len, EVP_PKEY **out)
{
    *out = NULL;
    if (len < 1 || len > PKM_MAX_KEY_DER) return 0;
    const unsigned char *p = der;
    EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)len);
    int ok = k != NULL && p == der + len && EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA &&
             EVP_PKEY_is_a(k, "RSA");
    BIGNUM *n = NULL, *e = NULL;
    if (ok)
        ok = EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n) == 1 &&
             EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e) == 1 && !BN_is_negative(n) &&
             BN_num_bits(n) == 2048 && BN_is_odd(n) && !BN_is_negative(e) && BN_is_word(e, 65537);
    if (ok) {
        unsigned char re[PKM_MAX_KEY_DER + 64], *q = re;
        int rl = i2d_PUBKEY(k, NULL);
        ok = rl > 0 && (size_t)rl <= sizeof re && i2d_PUBKEY(k, &q) == rl && (size_t)rl == len &&
             memcmp(re, der, len) == 0;
    }
    BN_free(n);
    BN_free(e);
    ERR_clear_error();
    if (!ok) {
        EVP_PKEY_free(k);
        return 0;
    }
    *out = k;
    return 1;
}

static int g_cases, g_accepted;

/* pkm_key_from_der and the oracle agree on der: same verdict; when accepted, the same key (n
 * and e), the same DER and a fingerprint over those bytes. */
static void agree(const uint8_t *der, size_t len)
{
    EVP_PKEY *want = NULL;
    int accept = oracle(der, len, &want);
    pkm_key_t *k = NULL;
    int rc = pkm_key_from_der(der, len, &k);
    g_cases++;
    if ((rc == 0) != accept) {
        print_error("case %d (%zu bytes): oracle %s, pkm_key_from_der %s\n", g_cases, len,
                    accept ? "accepts" : "refuses", pkm_errname(rc));
        fail();
    }
    if (accept) {
        g_accepted++;
        assert_int_equal(EVP_PKEY_eq(pkm__key_evp(k), want), 1);
        size_t dl = 0;
        const uint8_t *d = pkm__key_der(k, &dl);
        assert_int_equal(dl, len);
        assert_memory_equal(d, der, len);
        assert_int_equal(pkm_key_is_private(k), 0);
    } else {
        assert_int_equal(rc, len == 0 || len > PKM_MAX_KEY_DER ? PKM_EKEYLEN : PKM_EKEY);
        assert_null(k);
    }
    pkm_key_free(k);
    EVP_PKEY_free(want);
}

/* A canonical SPKI for (n, e), written by OpenSSL. */
static size_t spki(const BIGNUM *n, const BIGNUM *e, uint8_t *out, size_t cap)
{
    return t_spki_from_ne("RSA", n, e, out, cap);
}

static BIGNUM *g_n; /* a 2048-bit modulus (of a generated key) */
static uint8_t g_der[PKM_MAX_KEY_DER];
static size_t g_len;

static int setup(void **state)
{
    (void)state;
    pkm_key_t *k = NULL;
    if (pkm_key_generate(&k) != 0) return -1;
    if (EVP_PKEY_get_bn_param(pkm__key_evp(k), OSSL_PKEY_PARAM_RSA_N, &g_n) != 1) return -1;
    int l = pkm_key_public_der(k, g_der, sizeof g_der);
    pkm_key_free(k);
    if (l != 294) return -1;
    g_len = (size_t)l;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    BN_free(g_n);
    fprintf(stderr, "test_keys_der: %d cases, %d accepted\n", g_cases, g_accepted);
    return 0;
}

/* Every exponent shape: small, large, around n, even, 1, 0, and each with its DER. Of them all,
 * only 65537 is accepted (WIRE-PROFILE version 2): 3, n - 2 and 2^16 + 3 among the refused. */
static void exponents(void **state)
{
    (void)state;
    int accepted_before = g_accepted;
    static const unsigned long small[] = {
        0,           1,   2,   3,   4,     5,     17,           127,
        128,         129, 255, 257, 65535, 65537, 0x7fffffffUL, 0x80000001UL,
        0xffffffffUL};
    uint8_t der[1200];
    BIGNUM *e = BN_new();
    assert_non_null(e);
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        assert_int_equal(BN_set_word(e, small[i]), 1);
        agree(der, spki(g_n, e, der, sizeof der));
    }
    /* e = n - 2, n - 1, n, n + 2 (n is odd), and 2^k +- 1 for k around the byte boundaries */
    for (int d = -2; d <= 2; d++) {
        assert_non_null(BN_copy(e, g_n));
        if (d < 0) assert_int_equal(BN_sub_word(e, (BN_ULONG)-d), 1);
        if (d > 0) assert_int_equal(BN_add_word(e, (BN_ULONG)d), 1);
        agree(der, spki(g_n, e, der, sizeof der));
    }
    for (int k = 2; k <= 2049; k += (k < 40 || k > 2030) ? 1 : 97) {
        for (int d = -1; d <= 1; d += 2) {
            BN_zero(e);
            assert_int_equal(BN_set_bit(e, k), 1);
            if (d < 0) assert_int_equal(BN_sub_word(e, 1), 1);
            if (d > 0) assert_int_equal(BN_add_word(e, 1), 1);
            agree(der, spki(g_n, e, der, sizeof der));
        }
    }
    /* 2^16 + 3, and 65537 itself once more, next to each other */
    assert_int_equal(BN_set_word(e, 65539), 1);
    agree(der, spki(g_n, e, der, sizeof der));
    assert_int_equal(BN_set_word(e, 65537), 1);
    agree(der, spki(g_n, e, der, sizeof der));
    /* 65537 twice (the list and the line above), 2^16 + 1 from the powers of two: nothing else */
    assert_int_equal(g_accepted - accepted_before, 3);
    BN_free(e);
}

/* Moduli of other sizes and shapes. */
static void moduli(void **state)
{
    (void)state;
    uint8_t der[1200];
    BIGNUM *n = BN_new(), *e = BN_new();
    assert_non_null(n);
    assert_non_null(e);
    assert_int_equal(BN_set_word(e, 65537), 1);
    static const int bits[] = {1024, 2040, 2046, 2047, 2049, 2056, 3072};
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
        assert_int_equal(BN_rand(n, bits[i], BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ODD), 1);
        agree(der, spki(n, e, der, sizeof der));
    }
    /* 2048 bits, even */
    assert_int_equal(BN_rand(n, 2048, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY), 1);
    assert_int_equal(BN_clear_bit(n, 0), 1);
    agree(der, spki(n, e, der, sizeof der));
    /* 2048 bits with only the top bit and the bottom bit set; and all ones */
    BN_zero(n);
    assert_int_equal(BN_set_bit(n, 2047), 1);
    assert_int_equal(BN_set_bit(n, 0), 1);
    agree(der, spki(n, e, der, sizeof der));
    BN_zero(n);
    assert_int_equal(BN_set_bit(n, 2048), 1);
    assert_int_equal(BN_sub_word(n, 1), 1);
    agree(der, spki(n, e, der, sizeof der));
    BN_free(n);
    BN_free(e);
}

/* Each byte of the valid encoding replaced by a few values; every truncation; a byte inserted or
 * removed at every position in the structure. */
static void byte_mutations(void **state)
{
    (void)state;
    static const uint8_t vals[] = {0x00, 0x01, 0x02, 0x03, 0x05, 0x30,
                                   0x7f, 0x80, 0x81, 0x82, 0x83, 0xff};
    uint8_t m[PKM_MAX_KEY_DER + 2];
    for (size_t i = 0; i < g_len; i++) {
        /* inside n only a sample of positions: the structure is what matters */
        if (i > 40 && i < g_len - 10 && i % 37 != 0) continue;
        for (size_t v = 0; v < sizeof vals; v++) {
            memcpy(m, g_der, g_len);
            m[i] = vals[v];
            agree(m, g_len);
            m[i] = g_der[i] ^ 0x01;
            agree(m, g_len);
        }
    }
    for (size_t len = 0; len <= g_len + 1; len++) {
        memcpy(m, g_der, g_len);
        m[g_len] = 0;
        agree(m, len);
    }
    for (size_t i = 0; i < 40; i++) {
        memcpy(m, g_der, i);
        m[i] = 0x00;
        memcpy(m + i + 1, g_der + i, g_len - i);
        agree(m, g_len + 1);
        memcpy(m, g_der, i);
        memcpy(m + i, g_der + i + 1, g_len - i - 1);
        agree(m, g_len - 1);
    }
}

/* Random multi-byte mutations of the structure and random lengths. */
static void random_mutations(void **state)
{
    (void)state;
    t_rng r;
    t_rng_seed(&r, 0x4445522d66617374ULL);
    uint8_t m[PKM_MAX_KEY_DER + 2];
    for (int i = 0; i < 3000; i++) {
        memcpy(m, g_der, g_len);
        int flips = 1 + (int)(t_rng_next(&r) % 3);
        for (int f = 0; f < flips; f++) {
            size_t at = t_rng_next(&r) % 2 ? t_rng_next(&r) % 32 : t_rng_next(&r) % g_len;
            m[at] = (uint8_t)t_rng_next(&r);
        }
        agree(m, g_len);
    }
    for (int i = 0; i < 300; i++) {
        size_t len = (size_t)(t_rng_next(&r) % (PKM_MAX_KEY_DER + 2));
        t_rng_bytes(&r, m, len);
        if (i % 2 && len >= 24) memcpy(m, g_der, 24); /* a plausible start */
        agree(m, len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exponents),
        cmocka_unit_test(moduli),
        cmocka_unit_test(byte_mutations),
        cmocka_unit_test(random_mutations),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
