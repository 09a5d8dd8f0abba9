/* SPDX-License-Identifier: MIT */
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

/* Generates a fresh RSA-2048 key pair (e = 65537); takes ~50-200 ms. *out is the caller's, freed
 * with pkm_key_free. PKM_ECRYPTO if OpenSSL fails, PKM_ENOMEM. On any error *out is NULL. */
PKM_API int pkm_key_generate(pkm_key_t **out);

/* Loads a PEM file holding a private key (PKCS#8 or traditional RSA) or a public key
 * (SubjectPublicKeyInfo); if it holds several, the first private key wins. Errors:
 *   PKM_EKEYFILE  the file cannot be opened or read, or is not a regular file;
 *   PKM_EKEYPERM  it holds a private key and its mode grants group or others any permission
 *                 (mode & 077), as ssh does; checked on the opened file (fstat), before the
 *                 checks below. A public key file may have any mode;
 *   PKM_EKEY      the content is not a usable key: no PEM key in it, a PEM that does not parse,
 *                 an encrypted private key (passphrases are not supported and never prompted
 *                 for), a file over 64 KiB, or a key that is not RSA-2048 (odd modulus) with
 *                 the public exponent 65537. A PkmCom peer refuses any other exponent
 *                 (WIRE-PROFILE version 2, section 3 step 2), so a private key with e = 3, say,
 *                 is refused here rather than at every handshake; a public key likewise.
 * The file's bytes are wiped from memory after parsing. *out is the caller's (pkm_key_free);
 * NULL on any error. */
PKM_API int pkm_key_load_pem(const char *path, pkm_key_t **out);

/* pkm_key_load_pem, saying what failed: on error a NUL-terminated sentence naming the path, the
 * problem and, for a system call, errno's text goes to errbuf (truncated to errbuf_size; NULL/0
 * for none; "" on success), e.g. "key file /etc/k.pem: cannot open: No such file or directory",
 * "key file k.pem: private key readable by group or others (chmod 600 it)", "key file k.pem: no
 * usable key in it: expected an unencrypted PEM key (...)". */
PKM_API int pkm_key_load_pem_errbuf(const char *path, pkm_key_t **out, char *errbuf,
                                    size_t errbuf_size);

/* Writes the private key as unencrypted PKCS#8 PEM to `path`, mode 0600, atomically: the PEM
 * goes to a new temporary file "<path>.tmp-<random>" in the same directory, created with O_EXCL
 * and mode 0600 (never an existing file, never through a link), which is fsync'ed and then
 * renamed over `path`, and the directory fsync'ed. A reader (or a crash) sees the old file or
 * the whole new one, never a part; the temporary file is removed on every failure.
 * Refused, with nothing created or changed (PKM_EKEYFILE, errno saying why):
 *   a symbolic link at `path` (ELOOP): the link is neither followed nor replaced, so a key is
 *     never written somewhere other than where the caller named; resolve it first if meant;
 *   a directory (EISDIR) or another non-regular file (EINVAL);
 *   a regular file with more than one hard link (EMLINK): replacing one name would leave the
 *     old key under the others;
 *   with PKM_KEY_SAVE_NOREPLACE, anything existing at `path` (EEXIST), checked race-free: the
 *     new file is put in place with link(), which fails if `path` appeared meanwhile.
 * Without the flag an existing regular file is replaced (its mode and owner are the new file's).
 * Other failures (a missing directory, a full disk, ...) are PKM_EKEYFILE with errno from the
 * failed call. PKM_EINVAL if the key has no private half, or for unknown flags. */
#define PKM_KEY_SAVE_NOREPLACE 0x1u
PKM_API int pkm_key_save_pem_flags(const pkm_key_t *key, const char *path, unsigned flags);

/* pkm_key_save_pem_flags(key, path, 0): replaces an existing regular file atomically. */
PKM_API int pkm_key_save_pem(const pkm_key_t *key, const char *path);

/* Writes the public key as SubjectPublicKeyInfo PEM to `path`, with mode 0644. The same atomic
 * write, refusals, flags and errors as pkm_key_save_pem_flags. Works on any key. */
PKM_API int pkm_key_save_public_pem_flags(const pkm_key_t *key, const char *path, unsigned flags);

/* pkm_key_save_public_pem_flags(key, path, 0). */
PKM_API int pkm_key_save_public_pem(const pkm_key_t *key, const char *path);

/* Parses a DER SubjectPublicKeyInfo, with every check of WIRE-PROFILE section 3 step 2:
 * PKM_EKEYLEN for len outside 1..1024, PKM_EKEY for DER that does not parse or has bytes after it,
 * a key that is not rsaEncryption (RSA-PSS, EC, ... are refused), a modulus that is not exactly
 * 2048 bits or is even, a public exponent other than 65537. The encoding must also be the
 * canonical DER, exactly as OpenSSL (and Java's getEncoded) writes it, with NULL
 * AlgorithmIdentifier parameters: any other encoding of a key is PKM_EKEY, so one key has one
 * encoding and one fingerprint. Every check looks at the bytes only, before any bignum is built:
 * a refused key costs no RSA work (the engine relies on this for ServerKey and ClientKey). The
 * bytes are copied; *out (a public key) is the caller's, NULL on any error. */
PKM_API int pkm_key_from_der(const uint8_t *der, size_t len, pkm_key_t **out);

/* Copies the key's DER SubjectPublicKeyInfo (294 bytes for e = 65537, at most PKM_MAX_KEY_DER)
 * into out. Returns its length, or PKM_ENOSPC if cap is too small; out may be NULL with cap 0 to
 * ask for the length (out NULL with cap > 0 is PKM_EINVAL). */
PKM_API int pkm_key_public_der(const pkm_key_t *key, uint8_t *out, size_t cap);

/* The fingerprint "SHA256:<unpadded base64 of SHA-256(DER SPKI)>" (WIRE-PROFILE section 6;
 * standard base64 alphabet with + and /, as OpenSSH prints), NUL-terminated into out: always 50
 * characters. Returns 0, or PKM_EINVAL for a NULL argument. */
PKM_API int pkm_key_fingerprint(const pkm_key_t *key, char out[PKM_FINGERPRINT_SIZE]);

/* 1 if the key holds a private half, 0 if it is public only (or key is NULL). */
PKM_API int pkm_key_is_private(const pkm_key_t *key);

/* Takes one more reference to the key and returns it: a key is freed when pkm_key_free() has
 * been called once for its creation and once per pkm_key_ref(). Thread-safe. Lets one key be
 * handed to several owners (e.g. the same client key given to many engines in a test). */
PKM_API pkm_key_t *pkm_key_ref(pkm_key_t *key);

/* Frees the key, wiping private material. NULL is allowed. The key must not be in use by
 * another thread (or an engine) any more. */
PKM_API void pkm_key_free(pkm_key_t *key);

/* Comparison of two fingerprints (or any two NUL-terminated strings) whose time does not depend
 * on where they differ (CRYPTO_memcmp; only the lengths may leak): 1 if equal, 0 if not or if
 * either is NULL. */
PKM_API int pkm_fingerprint_equal(const char *a, const char *b);

/* A pool of pre-generated RSA-2048 key pairs, filled by a background thread so that a client's
 * connect does not wait ~100 ms for key generation. Each key taken is the taker's and is never
 * handed out twice. Thread-safe. The thread blocks all signals. After fork(), a child never gets
 * the parent's ready keys: take generates afresh, ready is 0, and free releases the memory only;
 * use the pool in the child from one thread. */
typedef struct pkm_keypool pkm_keypool_t;

/* Starts a pool that keeps up to `capacity` (1..1024) keys ready. *out is the caller's. */
PKM_API int pkm_keypool_new(size_t capacity, pkm_keypool_t **out);

/* Takes a ready key; when none is ready, generates one in the calling thread (and the background
 * thread keeps refilling). *out is the caller's (pkm_key_free), and outlives the pool. */
PKM_API int pkm_keypool_take(pkm_keypool_t *pool, pkm_key_t **out);

/* How many keys are ready now. */
PKM_API size_t pkm_keypool_ready(pkm_keypool_t *pool);

/* Stops the background thread (waiting for a generation in progress, up to one key generation)
 * and frees, wiping, the keys left. Keys already taken stay valid. NULL is allowed. No other
 * thread may be using the pool. */
PKM_API void pkm_keypool_free(pkm_keypool_t *pool);

#ifdef __cplusplus
}
#endif
#endif
