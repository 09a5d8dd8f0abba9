/* SPDX-License-Identifier: MIT */
/* The AES-256-CBC channel of PkmCom/TCP: one EVP context per direction, each under its own key,
 * padding done by the engine, and the step-4 derivation of the direction keys
 * K_cs = SHA-256(M || S || 0x43) and K_sc = SHA-256(M || S || 0x53) (wire profile 2). */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include "channel_internal.h"
#include "internal.h"

int pkm__channel_init(pkm__channel_t *ch)
{
    ch->enc = EVP_CIPHER_CTX_new();
    ch->dec = EVP_CIPHER_CTX_new();
    if (!ch->enc || !ch->dec) {
        pkm__channel_free(ch);
        return PKM_ENOMEM;
    }
    return 0;
}

void pkm__channel_free(pkm__channel_t *ch)
{
    /* EVP_CIPHER_CTX_free clears the key schedule and chain state before freeing. */
    EVP_CIPHER_CTX_free(ch->enc);
    EVP_CIPHER_CTX_free(ch->dec);
    ch->enc = NULL;
    ch->dec = NULL;
}

int pkm__channel_start(pkm__channel_t *ch, const uint8_t send_key[PKM__KEY_SIZE],
                       const uint8_t recv_key[PKM__KEY_SIZE], const uint8_t iv[PKM__IV_SIZE])
{
    const EVP_CIPHER *aes = EVP_aes_256_cbc();
    int ok = EVP_EncryptInit_ex(ch->enc, aes, NULL, send_key, iv) == 1 &&
             EVP_CIPHER_CTX_set_padding(ch->enc, 0) == 1 &&
             EVP_DecryptInit_ex(ch->dec, aes, NULL, recv_key, iv) == 1 &&
             EVP_CIPHER_CTX_set_padding(ch->dec, 0) == 1;
    return ok ? 0 : PKM_ECRYPTO;
}

/* EVP takes int lengths: anything up to 1 GiB goes in one call (every packet of a normal size),
 * a larger run in 1 GiB pieces, which continue the same chain. */
static int cbc_update(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in, size_t n, int enc)
{
    const size_t piece = (size_t)1 << 30;
    PKM_ENSURE(n % PKM__BLOCK_SIZE == 0, PKM_EINTERNAL);
    while (n > 0) {
        int len = (int)(n < piece ? n : piece), outl = 0;
        int ok = enc ? EVP_EncryptUpdate(ctx, out, &outl, in, len)
                     : EVP_DecryptUpdate(ctx, out, &outl, in, len);
        PKM_ENSURE(ok == 1 && outl == len, PKM_ECRYPTO);
        out += len;
        in += len;
        n -= (size_t)len;
    }
    return 0;
}

int pkm__channel_encrypt(pkm__channel_t *ch, uint8_t *p, size_t n)
{
    return cbc_update(ch->enc, p, p, n, 1);
}

int pkm__channel_encrypt_from(pkm__channel_t *ch, uint8_t *out, const uint8_t *in, size_t n)
{
    return cbc_update(ch->enc, out, in, n, 1);
}

int pkm__channel_decrypt(pkm__channel_t *ch, uint8_t *p, size_t n)
{
    return cbc_update(ch->dec, p, p, n, 0);
}

/* SHA-256(M || S || label): one direction's key. */
static int derive_one(const uint8_t m[PKM__M_SIZE], const uint8_t *s, size_t slen, uint8_t label,
                      uint8_t key[PKM__KEY_SIZE])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int outl = 0;
    int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(md, m, PKM__M_SIZE) == 1 &&
             (slen == 0 || EVP_DigestUpdate(md, s, slen) == 1) &&
             EVP_DigestUpdate(md, &label, 1) == 1 && EVP_DigestFinal_ex(md, key, &outl) == 1 &&
             outl == PKM__KEY_SIZE;
    EVP_MD_CTX_free(md); /* clears the digest state */
    return ok ? 0 : PKM_ECRYPTO;
}

int pkm__derive_keys(const uint8_t m[PKM__M_SIZE], const uint8_t *s, size_t slen,
                     uint8_t k_cs[PKM__KEY_SIZE], uint8_t k_sc[PKM__KEY_SIZE])
{
    int rc;
    PKM_GUARD_GOTO(rc, derive_one(m, s, slen, PKM__LABEL_CS, k_cs));
    PKM_GUARD_GOTO(rc, derive_one(m, s, slen, PKM__LABEL_SC, k_sc));
cleanup:
    if (rc < 0) { /* no half-derived key is left */
        OPENSSL_cleanse(k_cs, PKM__KEY_SIZE);
        OPENSSL_cleanse(k_sc, PKM__KEY_SIZE);
    }
    return rc;
}
