/* SPDX-License-Identifier: MIT */
/* RSA-2048 keys: generation, PEM files (with ssh-style permission checks), DER
 * SubjectPublicKeyInfo with the WIRE-PROFILE section 3 checks, fingerprints and the key pool. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "buf.h"
#include "internal.h"
#include "keys_internal.h"

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

/* Largest PEM file pkm_key_load_pem reads; an RSA-2048 private key PEM is about 1.7 KiB. */
#define PKM_KEY_FILE_MAX (64 * 1024)

struct pkm_key {
    atomic_uint refs; /* pkm_key_ref / pkm_key_free */
    EVP_PKEY *pkey;
    uint8_t *der; /* DER SubjectPublicKeyInfo, pkm__malloc'd, computed once */
    size_t der_len;
    int is_private;
};

/* ------------------------------------------------------------------------------------------ */
/* Construction and checks                                                                    */

/* 0 if pkey is an RSA key (not RSA-PSS, not anything else) with an odd modulus of exactly 2048
 * bits and the public exponent 65537 (WIRE-PROFILE section 3 step 2: a peer refuses any other,
 * so a key with another exponent is of no use to PkmCom); PKM_EKEY otherwise. */
static int check_rsa2048(EVP_PKEY *pkey)
{
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA || !EVP_PKEY_is_a(pkey, "RSA")) return PKM_EKEY;
    BIGNUM *n = NULL, *e = NULL;
    /* An RSA modulus is a product of odd primes: an even one is no key (and OpenSSL's
     * Montgomery arithmetic refuses it at the first encryption, as PKM_ECRYPTO). The exponent
     * is exactly 65537. */
    int ok = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) == 1 &&
             EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) == 1 && !BN_is_negative(n) &&
             BN_num_bits(n) == 2048 && BN_is_odd(n) && !BN_is_negative(e) && BN_is_word(e, RSA_F4);
    BN_free(n);
    BN_free(e);
    ERR_clear_error();
    return ok ? 0 : PKM_EKEY;
}

/* Wraps pkey (ownership passes to the key, also on failure) and caches its DER SPKI. */
static int key_wrap(EVP_PKEY *pkey, int is_private, pkm_key_t **out)
{
    pkm_key_t *k = pkm__calloc(1, sizeof *k);
    if (k == NULL) {
        EVP_PKEY_free(pkey);
        return PKM_ENOMEM;
    }
    atomic_init(&k->refs, 1);
    k->pkey = pkey;
    k->is_private = is_private;
    int len = i2d_PUBKEY(pkey, NULL);
    if (len <= 0) {
        pkm_key_free(k);
        ERR_clear_error();
        return PKM_ECRYPTO;
    }
    k->der = pkm__malloc((size_t)len);
    if (k->der == NULL) {
        pkm_key_free(k);
        return PKM_ENOMEM;
    }
    unsigned char *p = k->der;
    if (i2d_PUBKEY(pkey, &p) != len) {
        pkm_key_free(k);
        ERR_clear_error();
        return PKM_ECRYPTO;
    }
    k->der_len = (size_t)len;
    *out = k;
    return 0;
}

int pkm_key_generate(pkm_key_t **out)
{
    PKM_ENSURE(out != NULL, PKM_EINVAL);
    *out = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *e = BN_new();
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_RSA, NULL);
    int ok = e != NULL && ctx != NULL && BN_set_word(e, RSA_F4) == 1 &&
             EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048) == 1 &&
             EVP_PKEY_CTX_set1_rsa_keygen_pubexp(ctx, e) == 1 && EVP_PKEY_keygen(ctx, &pkey) == 1;
    EVP_PKEY_CTX_free(ctx);
    BN_free(e);
    if (!ok) {
        EVP_PKEY_free(pkey);
        ERR_clear_error();
        return PKM_ECRYPTO;
    }
    return key_wrap(pkey, 1, out);
}

/* ---- pkm_key_from_der: the canonical SubjectPublicKeyInfo, checked by hand ----------------
 * OpenSSL 3's generic decoder (d2i_PUBKEY) costs about as much as one RSA-2048 private-key
 * operation, and the server runs it once per handshake. Since only one encoding of a key is
 * accepted (the canonical DER, exactly as i2d_PUBKEY writes it), the bytes are matched against
 * that layout directly, and the key is built from (n, e) with EVP_PKEY_fromdata:
 *
 *   30 L  SEQUENCE
 *     30 0D 06 09 2A 86 48 86 F7 0D 01 01 01 05 00   AlgorithmIdentifier: rsaEncryption, NULL
 *     03 L 00  BIT STRING, no unused bits, holding the DER RSAPublicKey:
 *       30 L  SEQUENCE
 *         02 82 01 01 00 <256 bytes, the first >= 0x80>   INTEGER n: positive, 2048 bits, odd
 *         02 03 01 00 01                                  INTEGER e = 65537
 *
 * with every length in its shortest form and nothing after the outer SEQUENCE. This accepts
 * exactly the inputs that d2i_PUBKEY + checks + a re-encoding comparison accept: an input parses
 * and re-encodes to itself if and only if it is this canonical layout (tests/test_keys_der.c
 * checks the two against each other). The exponent is matched as bytes before anything is built,
 * so a refused key costs no RSA work and no bignum arithmetic (WIRE-PROFILE section 3 step 2). */

static const uint8_t e65537[] = {0x01, 0x00, 0x01};

static const uint8_t rsa_alg_id[] = {0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86,
                                     0xF7, 0x0D, 0x01, 0x01, 0x01, 0x05, 0x00};

/* Reads the tag `tag` and a DER length in its shortest form whose content fills exactly the
 * rest of the reader when `whole` is set, or fits in it otherwise. Leaves the reader at the
 * content; the content length goes to *len. */
static int der_header(pkm_reader *r, uint8_t tag, int whole, size_t *len)
{
    uint8_t t, b;
    size_t n;
    PKM_ENSURE(pkm__read_u8(r, &t) == 0 && t == tag, PKM_EKEY);
    PKM_ENSURE(pkm__read_u8(r, &b) == 0, PKM_EKEY);
    if (b < 0x80) {
        n = b;
    } else if (b == 0x81) {
        uint8_t v;
        PKM_ENSURE(pkm__read_u8(r, &v) == 0 && v >= 0x80, PKM_EKEY); /* else the short form */
        n = v;
    } else if (b == 0x82) {
        uint16_t v;
        PKM_ENSURE(pkm__read_u16(r, &v) == 0 && v >> 8 != 0, PKM_EKEY); /* else one byte */
        n = v;
    } else {
        return PKM_EKEY; /* longer forms cannot describe anything within 1024 bytes */
    }
    size_t left = pkm__reader_left(r);
    PKM_ENSURE(left >= n && (!whole || left == n), PKM_EKEY);
    *len = n;
    return 0;
}

/* Borrows n bytes of DER content (PKM_EKEY when fewer are left). */
static int der_bytes(pkm_reader *r, const uint8_t **out, size_t n)
{
    PKM_ENSURE(pkm__read_ptr(r, out, n) == 0, PKM_EKEY);
    return 0;
}

/* Finds n (256 bytes, top bit set, odd) and e (which must be 65537, encoded minimally: 02 03 01 00
 * 01) in a canonical SPKI. PKM_EKEY otherwise. */
static int spki_parse(const uint8_t *der, size_t len, const uint8_t **n, const uint8_t **e,
                      size_t *elen)
{
    pkm_reader r;
    const uint8_t *p;
    uint8_t unused;
    size_t l;
    pkm__reader_init(&r, der, len);
    PKM_GUARD(der_header(&r, 0x30, 1, &l));
    PKM_GUARD(der_bytes(&r, &p, sizeof rsa_alg_id));
    PKM_ENSURE(memcmp(p, rsa_alg_id, sizeof rsa_alg_id) == 0, PKM_EKEY);
    PKM_GUARD(der_header(&r, 0x03, 1, &l));
    PKM_ENSURE(pkm__read_u8(&r, &unused) == 0 && unused == 0x00, PKM_EKEY); /* unused bits */
    PKM_GUARD(der_header(&r, 0x30, 1, &l));
    PKM_GUARD(der_header(&r, 0x02, 0, &l));
    PKM_ENSURE(l == 257, PKM_EKEY); /* exactly 2048 bits: */
    PKM_GUARD(der_bytes(&r, &p, l));
    PKM_ENSURE(p[0] == 0x00 && p[1] >= 0x80, PKM_EKEY);
    PKM_ENSURE(p[256] & 1, PKM_EKEY); /* even: no RSA modulus (see check_rsa2048) */
    *n = p + 1;
    PKM_GUARD(der_header(&r, 0x02, 1, &l));
    /* 65537 and nothing else, in its one minimal encoding (a leading zero is not canonical). */
    PKM_ENSURE(l == sizeof e65537, PKM_EKEY);
    PKM_GUARD(der_bytes(&r, &p, l));
    PKM_ENSURE(memcmp(p, e65537, sizeof e65537) == 0, PKM_EKEY);
    *e = p;
    *elen = l;
    return 0;
}

/* An RSA public key from the magnitudes of n and e, through the provider (no decoder). */
static EVP_PKEY *rsa_from_ne(const uint8_t *n, size_t nlen, const uint8_t *e, size_t elen)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    int ok = bld && bn && be && ctx &&
             OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
             OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1 &&
             (params = OSSL_PARAM_BLD_to_param(bld)) != NULL && EVP_PKEY_fromdata_init(ctx) == 1 &&
             EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1;
    if (!ok) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    ERR_clear_error();
    return pkey;
}

int pkm_key_from_der(const uint8_t *der, size_t len, pkm_key_t **out)
{
    PKM_ENSURE(out != NULL, PKM_EINVAL);
    *out = NULL;
    PKM_ENSURE(len >= 1 && len <= PKM_MAX_KEY_DER, PKM_EKEYLEN);
    PKM_ENSURE(der != NULL, PKM_EINVAL);
    const uint8_t *n = NULL, *e = NULL;
    size_t elen = 0;
    PKM_GUARD(spki_parse(der, len, &n, &e, &elen));
    pkm_key_t *k = pkm__calloc(1, sizeof *k);
    PKM_ENSURE(k != NULL, PKM_ENOMEM);
    atomic_init(&k->refs, 1);
    k->der = pkm__malloc(len);
    if (k->der == NULL) {
        pkm_key_free(k);
        return PKM_ENOMEM;
    }
    memcpy(k->der, der, len); /* canonical: these are the bytes i2d_PUBKEY would write */
    k->der_len = len;
    k->pkey = rsa_from_ne(n, 256, e, elen);
    if (k->pkey == NULL) {
        pkm_key_free(k);
        return PKM_ECRYPTO;
    }
    *out = k;
    return 0;
}

pkm_key_t *pkm_key_ref(pkm_key_t *key)
{
    if (key != NULL) atomic_fetch_add_explicit(&key->refs, 1, memory_order_relaxed);
    return key;
}

void pkm_key_free(pkm_key_t *key)
{
    if (key == NULL) return;
    if (atomic_fetch_sub_explicit(&key->refs, 1, memory_order_acq_rel) != 1) return;
    EVP_PKEY_free(key->pkey); /* clears the private bignums */
    if (key->der != NULL) {
        OPENSSL_cleanse(key->der, key->der_len);
        pkm__free(key->der);
    }
    OPENSSL_cleanse(key, sizeof *key);
    pkm__free(key);
}

EVP_PKEY *pkm__key_evp(const pkm_key_t *key)
{
    return key->pkey;
}

const uint8_t *pkm__key_der(const pkm_key_t *key, size_t *len)
{
    *len = key->der_len;
    return key->der;
}

int pkm_key_is_private(const pkm_key_t *key)
{
    return key != NULL && key->is_private;
}

int pkm_key_public_der(const pkm_key_t *key, uint8_t *out, size_t cap)
{
    PKM_ENSURE(key != NULL, PKM_EINVAL);
    PKM_ENSURE(out != NULL || cap == 0, PKM_EINVAL);
    if (out == NULL) return (int)key->der_len;
    PKM_ENSURE(cap >= key->der_len, PKM_ENOSPC);
    memcpy(out, key->der, key->der_len);
    return (int)key->der_len;
}

int pkm_key_fingerprint(const pkm_key_t *key, char out[PKM_FINGERPRINT_SIZE])
{
    PKM_ENSURE(key != NULL && out != NULL, PKM_EINVAL);
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_Digest(key->der, key->der_len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
        ERR_clear_error();
        return PKM_ECRYPTO;
    }
    /* EVP_EncodeBlock writes 4*ceil(32/3) = 44 characters and a NUL: 43 + one '=' of padding. */
    unsigned char b64[45];
    if (EVP_EncodeBlock(b64, md, 32) != 44 || b64[43] != '=') return PKM_EINTERNAL;
    memcpy(out, "SHA256:", 7);
    memcpy(out + 7, b64, 43);
    out[50] = '\0';
    return 0;
}

int pkm_fingerprint_equal(const char *a, const char *b)
{
    if (a == NULL || b == NULL) return 0;
    size_t la = strlen(a), lb = strlen(b);
    size_t n = la < lb ? la : lb;
    int same = CRYPTO_memcmp(a, b, n) == 0;
    return same & (la == lb);
}

/* ------------------------------------------------------------------------------------------ */
/* PEM files                                                                                  */

/* Refuses every passphrase request, so that OpenSSL never prompts on a terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Reads the whole regular file behind fd into a fresh pkm__malloc'd buffer. */
static int read_all(int fd, const struct stat *st, uint8_t **out, size_t *outlen)
{
    if (st->st_size > PKM_KEY_FILE_MAX) return PKM_EKEY;
    size_t cap = (size_t)st->st_size + 1, len = 0;
    uint8_t *buf = pkm__malloc(cap);
    PKM_ENSURE(buf != NULL, PKM_ENOMEM);
    int rc;
    for (;;) {
        /* len == cap: the file grew since fstat (bounded by PKM_KEY_FILE_MAX + 1). */
        PKM_ENSURE_GOTO(rc, len < cap, PKM_EKEY);
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        PKM_ENSURE_GOTO(rc, r >= 0, PKM_EKEYFILE); /* errno says why */
        if (r == 0) break;
        len += (size_t)r;
    }
    *out = buf;
    *outlen = len;
    return 0;
cleanup:
    OPENSSL_cleanse(buf, len);
    pkm__free(buf);
    return rc;
}

/* pkm_key_load_pem_errbuf's refusal: "key file PATH: WHY" into eb (when given), and err. */
static int load_failed(char *eb, size_t ebn, const char *path, int err, const char *why, int errnum)
{
    if (eb && ebn) {
        char text[128] = "";
        if (errnum && strerror_r(errnum, text, sizeof text) != 0)
            (void)snprintf(text, sizeof text, "error %d", errnum);
        /* A sentence longer than the buffer is cut: the return value is deliberately ignored. */
        int n = snprintf(eb, ebn, "key file %s: %s%s%s", path, why, errnum ? ": " : "", text);
        (void)n;
    }
    return err;
}

int pkm_key_load_pem(const char *path, pkm_key_t **out)
{
    return pkm_key_load_pem_errbuf(path, out, NULL, 0);
}

int pkm_key_load_pem_errbuf(const char *path, pkm_key_t **out, char *errbuf, size_t errbuf_size)
{
    char *eb = errbuf;
    size_t ebn = errbuf_size;
    if (eb && ebn) eb[0] = '\0';
    if (out) *out = NULL;
    if (!out || !path) return load_failed(eb, ebn, "(NULL)", PKM_EINVAL, "path or out is NULL", 0);
    /* O_NONBLOCK: opening a FIFO must not block; the S_ISREG check below refuses it. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return load_failed(eb, ebn, path, PKM_EKEYFILE, "cannot open", errno);
    struct stat st;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc, errnum = 0;
    const char *why = NULL;
    if (fstat(fd, &st) != 0) {
        errnum = errno;
        rc = PKM_EKEYFILE;
        why = "cannot stat";
    } else if (!S_ISREG(st.st_mode)) {
        rc = PKM_EKEYFILE;
        why = "not a regular file";
    } else {
        rc = read_all(fd, &st, &buf, &len);
        errnum = rc == PKM_EKEYFILE ? errno : 0;
        why = rc == PKM_EKEYFILE ? "read failed" : "larger than 64 KiB: not a key file";
    }
    close(fd);
    if (rc < 0)
        return load_failed(eb, ebn, path, rc, rc == PKM_ENOMEM ? "out of memory" : why, errnum);

    EVP_PKEY *pkey = NULL;
    int is_private = 0;
    BIO *bio = BIO_new_mem_buf(buf, (int)len);
    PKM_ENSURE_GOTO(rc, bio != NULL, PKM_ENOMEM); /* "out of memory" below */
    pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (pkey != NULL) {
        is_private = 1;
    } else {
        BIO_free(bio);
        bio = BIO_new_mem_buf(buf, (int)len);
        PKM_ENSURE_GOTO(rc, bio != NULL, PKM_ENOMEM);
        pkey = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    }
    /* Not PEM, no key in it, an encrypted key, or a key that does not parse. */
    why = "no usable key in it: expected an unencrypted PEM key (\"-----BEGIN PRIVATE KEY-----\" "
          "or \"-----BEGIN PUBLIC KEY-----\"; passphrases are not supported)";
    PKM_ENSURE_GOTO(rc, pkey != NULL, PKM_EKEY);
    why = "private key readable by group or others (chmod 600 it)";
    PKM_ENSURE_GOTO(rc, !is_private || (st.st_mode & 077) == 0, PKM_EKEYPERM);
    why = "not an RSA-2048 key with public exponent 65537";
    PKM_GUARD_GOTO(rc, check_rsa2048(pkey));
    rc = key_wrap(pkey, is_private, out);
    pkey = NULL; /* owned by the key now, or freed */
cleanup:
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    OPENSSL_cleanse(buf, len);
    pkm__free(buf);
    ERR_clear_error();
    return rc < 0 ? load_failed(eb, ebn, path, rc, rc == PKM_ENOMEM ? "out of memory" : why, 0)
                  : rc;
}

/* Checks what is at `path` before a key is written there: 0 if nothing is (ENOENT) or, unless
 * noreplace, a regular file with one link; otherwise -1 with errno: EEXIST (noreplace and
 * something is there), ELOOP (a symbolic link), EISDIR (a directory), EINVAL (not a regular
 * file), EMLINK (a regular file with more than one hard link), or lstat's own error. */
static int check_target(const char *path, int noreplace)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    if (S_ISLNK(st.st_mode))
        errno = ELOOP;
    else if (noreplace)
        errno = EEXIST;
    else if (S_ISDIR(st.st_mode))
        errno = EISDIR;
    else if (!S_ISREG(st.st_mode))
        errno = EINVAL;
    else if (st.st_nlink > 1)
        errno = EMLINK;
    else
        return 0;
    return -1;
}

/* The directory part of path ("." for none) into dir. 0, or -1 (ENAMETOOLONG). */
static int dir_of(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 1 : slash == path ? 1 : (size_t)(slash - path);
    if (n + 1 > cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(dir, slash == NULL ? "." : path, n);
    dir[n] = '\0';
    return 0;
}

/* Creates a new file next to path, "<path>.tmp-<16 hex digits>", with O_EXCL (never an existing
 * file, never through a link) and mode 0600. Returns the descriptor with its name in tmp, or -1. */
static int create_temp(const char *path, char *tmp, size_t cap)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        uint8_t r[8];
        if (RAND_bytes(r, sizeof r) != 1) {
            errno = EIO;
            return -1;
        }
        int n = snprintf(tmp, cap, "%s.tmp-%02x%02x%02x%02x%02x%02x%02x%02x", path, r[0], r[1],
                         r[2], r[3], r[4], r[5], r[6], r[7]);
        if (n < 0 || (size_t)n >= cap) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;
}

/* A file step of save_pem failed: keeps errno in *err (cleanup's close and unlink may change
 * errno; save_pem sets it back) and returns PKM_EKEYFILE. */
static int file_failed(int *err)
{
    *err = errno;
    return PKM_EKEYFILE;
}

/* Writes the PEM of the key (private_half: PKCS#8 private key; else SubjectPublicKeyInfo) to
 * `path` atomically, with exactly `mode`: a new temporary file in the same directory (O_EXCL,
 * 0600), written, fchmod'ed, fsync'ed, then linked (noreplace: fails if path exists) or renamed
 * over path, and the directory fsync'ed. Readers see the old file or the whole new one, never a
 * part. The memory BIO is wiped before it is freed (it may hold a private key). On PKM_EKEYFILE
 * errno says why; the temporary file is removed on every failure. */
static int save_pem(const pkm_key_t *key, const char *path, mode_t mode, int private_half,
                    unsigned flags)
{
    PKM_ENSURE(key != NULL && path != NULL && *path != '\0', PKM_EINVAL);
    PKM_ENSURE((flags & ~(unsigned)PKM_KEY_SAVE_NOREPLACE) == 0, PKM_EINVAL);
    int noreplace = (flags & PKM_KEY_SAVE_NOREPLACE) != 0;
    BIO *bio = BIO_new(BIO_s_secmem());
    PKM_ENSURE(bio != NULL, PKM_ENOMEM);
    int ok = private_half
                 ? PEM_write_bio_PrivateKey(bio, key->pkey, NULL, NULL, 0, no_passphrase, NULL)
                 : PEM_write_bio_PUBKEY(bio, key->pkey);
    BUF_MEM *mem = NULL;
    int rc = 0, err = 0, fd = -1;
    char tmp[4096 + 32], dir[4096];
    tmp[0] = '\0';
    PKM_ENSURE_GOTO(rc, ok == 1 && BIO_get_mem_ptr(bio, &mem) == 1 && mem != NULL, PKM_ECRYPTO);
    /* Refused before anything is created: a link, a non-regular file, a file with other hard
     * links (its other names would keep the old key), or any existing file under noreplace. */
    PKM_ENSURE_GOTO(rc,
                    check_target(path, noreplace) == 0 && dir_of(path, dir, sizeof dir) == 0 &&
                        (fd = create_temp(path, tmp, sizeof tmp)) >= 0,
                    file_failed(&err));
    size_t off = 0;
    while (off < mem->length) {
        ssize_t w = write(fd, mem->data + off, mem->length - off);
        if (w < 0 && errno == EINTR) continue;
        if (w == 0) errno = EIO;
        PKM_ENSURE_GOTO(rc, w > 0, file_failed(&err));
        off += (size_t)w;
    }
    /* fchmod: the exact mode whatever the umask (0644 for a public key). */
    PKM_ENSURE_GOTO(rc, fchmod(fd, mode) == 0 && fsync(fd) == 0, file_failed(&err));
    int c = close(fd);
    fd = -1;
    PKM_ENSURE_GOTO(rc, c == 0, file_failed(&err));
    /* link() fails with EEXIST if path appeared meanwhile: no existing file is ever replaced. */
    PKM_ENSURE_GOTO(rc, noreplace ? link(tmp, path) == 0 : rename(tmp, path) == 0,
                    file_failed(&err));
    if (noreplace) unlink(tmp);
    tmp[0] = '\0'; /* the new file is in place under path */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    /* On a failure here the file is in place, but its name may not survive a crash. */
    if (dfd < 0 || fsync(dfd) != 0) rc = file_failed(&err);
    if (dfd >= 0) close(dfd);
cleanup:
    if (fd >= 0) close(fd);
    if (tmp[0] != '\0') unlink(tmp);
    if (mem != NULL && mem->data != NULL) OPENSSL_cleanse(mem->data, mem->max);
    BIO_free(bio);
    ERR_clear_error();
    if (rc == PKM_EKEYFILE) errno = err;
    return rc;
}

int pkm_key_save_pem_flags(const pkm_key_t *key, const char *path, unsigned flags)
{
    PKM_ENSURE(key != NULL && key->is_private, PKM_EINVAL);
    return save_pem(key, path, 0600, 1, flags);
}

int pkm_key_save_public_pem_flags(const pkm_key_t *key, const char *path, unsigned flags)
{
    return save_pem(key, path, 0644, 0, flags);
}

int pkm_key_save_pem(const pkm_key_t *key, const char *path)
{
    return pkm_key_save_pem_flags(key, path, 0);
}

int pkm_key_save_public_pem(const pkm_key_t *key, const char *path)
{
    return pkm_key_save_public_pem_flags(key, path, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Key pool                                                                                   */

struct pkm_keypool {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* signalled when a key is taken, and on stop */
    pthread_t thread;
    pkm_key_t **keys; /* keys[0..count) are ready */
    size_t capacity, count;
    int stop;
    pid_t
        pid; /* the creating process: after fork() the child must not hand out the parent's keys */
};

/* The background generator: tops the pool up to capacity, sleeps while it is full. */
static void *pool_main(void *arg)
{
    pkm_keypool_t *pool = arg;
    pthread_mutex_lock(&pool->mu);
    while (!pool->stop) {
        if (pool->count >= pool->capacity) {
            pthread_cond_wait(&pool->wake, &pool->mu);
            continue;
        }
        pthread_mutex_unlock(&pool->mu);
        pkm_key_t *k = NULL;
        int rc = pkm_key_generate(&k);
        pthread_mutex_lock(&pool->mu);
        if (rc < 0) {
            /* Generation failed (out of memory?): retry in a second, unless told to stop. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            if (!pool->stop) pthread_cond_timedwait(&pool->wake, &pool->mu, &ts);
            continue;
        }
        if (pool->stop || pool->count >= pool->capacity) {
            pthread_mutex_unlock(&pool->mu);
            pkm_key_free(k);
            pthread_mutex_lock(&pool->mu);
            continue;
        }
        pool->keys[pool->count++] = k;
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

int pkm_keypool_new(size_t capacity, pkm_keypool_t **out)
{
    PKM_ENSURE(out != NULL, PKM_EINVAL);
    *out = NULL;
    PKM_ENSURE(capacity >= 1 && capacity <= 1024, PKM_EINVAL);
    pkm_keypool_t *pool = pkm__calloc(1, sizeof *pool);
    PKM_ENSURE(pool != NULL, PKM_ENOMEM);
    int rc, have_mu = 0, have_wake = 0;
    pool->keys = pkm__calloc(capacity, sizeof *pool->keys);
    PKM_ENSURE_GOTO(rc, pool->keys != NULL, PKM_ENOMEM);
    pool->capacity = capacity;
    pool->pid = getpid();
    PKM_ENSURE_GOTO(rc, (have_mu = pthread_mutex_init(&pool->mu, NULL) == 0), PKM_ENOMEM);
    PKM_ENSURE_GOTO(rc, (have_wake = pthread_cond_init(&pool->wake, NULL) == 0), PKM_ENOMEM);
    /* The generator thread blocks every signal, so that the application's handlers run only in
     * its own threads. It inherits the mask in force at pthread_create. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&pool->thread, NULL, pool_main, pool);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    PKM_ENSURE_GOTO(rc, err == 0, err == EAGAIN ? PKM_ENOMEM : PKM_EINTERNAL);
    *out = pool;
    return 0;
cleanup:
    if (have_wake) pthread_cond_destroy(&pool->wake);
    if (have_mu) pthread_mutex_destroy(&pool->mu);
    pkm__free(pool->keys);
    pkm__free(pool);
    return rc;
}

int pkm_keypool_take(pkm_keypool_t *pool, pkm_key_t **out)
{
    PKM_ENSURE(out != NULL, PKM_EINVAL);
    *out = NULL;
    PKM_ENSURE(pool != NULL, PKM_EINVAL);
    /* In a child after fork() the ready keys are copies of the parent's, which the parent hands
     * out too, and the generator thread does not exist: always generate afresh there. */
    if (getpid() != pool->pid) return pkm_key_generate(out);
    pkm_key_t *k = NULL;
    pthread_mutex_lock(&pool->mu);
    if (pool->count > 0) {
        k = pool->keys[--pool->count];
        pool->keys[pool->count] = NULL;
    }
    pthread_cond_signal(&pool->wake); /* there is room again (or will be) */
    pthread_mutex_unlock(&pool->mu);
    if (k != NULL) {
        *out = k;
        return 0;
    }
    return pkm_key_generate(out);
}

size_t pkm_keypool_ready(pkm_keypool_t *pool)
{
    if (pool == NULL || getpid() != pool->pid) return 0;
    pthread_mutex_lock(&pool->mu);
    size_t n = pool->count;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

void pkm_keypool_free(pkm_keypool_t *pool)
{
    if (pool == NULL) return;
    if (getpid() != pool->pid) {
        /* A child after fork(): no generator thread to stop, and the mutex may have been copied
         * locked. Only free the memory (single-threaded use in the child is assumed). */
        for (size_t i = 0; i < pool->count; i++)
            pkm_key_free(pool->keys[i]);
        pkm__free(pool->keys);
        pkm__free(pool);
        return;
    }
    pthread_mutex_lock(&pool->mu);
    pool->stop = 1;
    pthread_cond_signal(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    pthread_join(pool->thread, NULL);
    for (size_t i = 0; i < pool->count; i++)
        pkm_key_free(pool->keys[i]);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mu);
    pkm__free(pool->keys);
    pkm__free(pool);
}
