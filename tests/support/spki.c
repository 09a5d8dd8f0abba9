/* SPDX-License-Identifier: MIT */
/* Test helper: the DER SubjectPublicKeyInfo of an RSA public key made from any (n, e), written by
 * OpenSSL (which encodes any exponent), for tests that feed the library keys it must refuse. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include "support.h"

/* The DER SPKI of an RSA (or RSA-PSS, by `alg`) public key built from n and e with
 * EVP_PKEY_fromdata, into out; returns its length. */
size_t t_spki_from_ne(const char *alg, const BIGNUM *n, const BIGNUM *e, uint8_t *out, size_t cap)
{
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    assert_non_null(b);
    assert_int_equal(OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_N, n), 1);
    assert_int_equal(OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_E, e), 1);
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(b);
    assert_non_null(params);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
    assert_non_null(ctx);
    EVP_PKEY *pk = NULL;
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params), 1);
    int len = i2d_PUBKEY(pk, NULL);
    assert_true(len > 0 && (size_t)len <= cap);
    unsigned char *p = out;
    assert_int_equal(i2d_PUBKEY(pk, &p), len);
    EVP_PKEY_free(pk);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(b);
    return (size_t)len;
}
