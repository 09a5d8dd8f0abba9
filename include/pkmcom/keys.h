/* RSA-2048 keys for PkmCom/TCP: generation, PEM files, DER SubjectPublicKeyInfo, fingerprints
 * (WIRE-PROFILE section 6) and a pool of pre-generated ephemeral keys for clients. */
#ifndef PKMCOM_KEYS_H
#define PKMCOM_KEYS_H

#include "pkmcom/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "SHA256:" + 43 characters of unpadded base64 + NUL. */
#define PKM_FINGERPRINT_SIZE 51
/* Longest DER SubjectPublicKeyInfo the handshake accepts (WIRE-PROFILE section 3). */
#define PKM_MAX_KEY_DER 1024

/* An RSA-2048 key: a key pair (private) or a public key only. Opaque. A key is immutable once
 * made, so one key may be used by many engines and threads at once (a server's long-term key). */
typedef struct pkm_key pkm_key_t;

/* Generates a fresh RSA-2048 key pair (e = 65537). *out is the caller's, freed with pkm_key_free.
 */
PKM_API int pkm_key_generate(pkm_key_t **out);

/* Loads a PEM file holding a private key (PKCS#8 or traditional RSA) or a public key
 * (SubjectPublicKeyInfo). A private key file readable by group or others is refused with
 * PKM_EKEYPERM, as ssh does. The key must be RSA-2048 with an odd exponent >= 3 (PKM_EKEY).
 * *out is the caller's. */
PKM_API int pkm_key_load_pem(const char *path, pkm_key_t **out);

/* Writes the private key as PKCS#8 PEM to `path`, created with mode 0600 (an existing file is
 * replaced, and left 0600). PKM_EINVAL if the key has no private half. */
PKM_API int pkm_key_save_pem(const pkm_key_t *key, const char *path);

/* Writes the public key as SubjectPublicKeyInfo PEM to `path` (mode 0644). */
PKM_API int pkm_key_save_public_pem(const pkm_key_t *key, const char *path);

/* Parses a DER SubjectPublicKeyInfo, with every check of WIRE-PROFILE section 3: PKM_EKEYLEN for
 * len outside 1..1024, PKM_EKEY for DER that does not parse, a non-RSA key, a modulus that is not
 * exactly 2048 bits, an even or < 3 exponent. *out (a public key) is the caller's. */
PKM_API int pkm_key_from_der(const uint8_t *der, size_t len, pkm_key_t **out);

/* The key's DER SubjectPublicKeyInfo (294 bytes for e = 65537). Returns its length, or
 * PKM_ENOSPC if cap is too small; out may be NULL with cap 0 to ask for the length. */
PKM_API int pkm_key_public_der(const pkm_key_t *key, uint8_t *out, size_t cap);

/* The fingerprint "SHA256:<unpadded base64 of SHA-256(DER SPKI)>", NUL-terminated into out. */
PKM_API int pkm_key_fingerprint(const pkm_key_t *key, char out[PKM_FINGERPRINT_SIZE]);

/* 1 if the key holds a private half, 0 if it is public only. */
PKM_API int pkm_key_is_private(const pkm_key_t *key);

/* Frees the key, wiping private material. NULL is allowed. */
PKM_API void pkm_key_free(pkm_key_t *key);

/* Constant-time comparison of two fingerprints (or any two NUL-terminated strings of equal
 * length): 1 if equal, 0 if not. */
PKM_API int pkm_fingerprint_equal(const char *a, const char *b);

/* A pool of pre-generated RSA-2048 key pairs, filled by a background thread so that a client's
 * connect does not wait ~100 ms for key generation. Each key taken is the taker's and is never
 * handed out twice. Thread-safe. */
typedef struct pkm_keypool pkm_keypool_t;

/* Starts a pool that keeps up to `capacity` (1..1024) keys ready. *out is the caller's. */
PKM_API int pkm_keypool_new(size_t capacity, pkm_keypool_t **out);

/* Takes a ready key; when none is ready, generates one in the calling thread. *out is the
 * caller's (pkm_key_free). */
PKM_API int pkm_keypool_take(pkm_keypool_t *pool, pkm_key_t **out);

/* How many keys are ready now. */
PKM_API size_t pkm_keypool_ready(pkm_keypool_t *pool);

/* Stops the background thread (waiting for a generation in progress) and frees, wiping, the
 * keys left. NULL is allowed. */
PKM_API void pkm_keypool_free(pkm_keypool_t *pool);

#ifdef __cplusplus
}
#endif
#endif
