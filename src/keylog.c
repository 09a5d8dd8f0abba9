/* SPDX-License-Identifier: MIT */
/* The key log: PKMCOM_KEYS_V2 lines (format, parse, append to PKMCOM_KEYLOGFILE) and the
 * decoder that follows one direction of a captured stream with a key log (pkmcom/keylog.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include "pkmcom/keylog.h"
#include "buf.h"
#include "channel_internal.h"
#include "internal.h"
#include "keylog_internal.h"

#define LABEL_LEN   (sizeof PKM_KEYLOG_LABEL - 1)
#define KEYSHARE    528
#define KS_IV_AT    512
#define BLOCK       16
#define MAX_KEY_DER 1024

/* ---- lines ---- */

static void hex(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
}

void pkm_keylog_format(const pkm_keylog_entry_t *e, char out[PKM_KEYLOG_LINE_SIZE])
{
    char *p = out;
    memcpy(p, PKM_KEYLOG_LABEL, LABEL_LEN);
    p += LABEL_LEN;
    const uint8_t *parts[4] = {e->client_iv, e->k_cs, e->k_sc, e->iv};
    const size_t lens[4] = {16, 32, 32, 16};
    for (int i = 0; i < 4; i++) {
        *p++ = ' ';
        hex(p, parts[i], lens[i]);
        p += 2 * lens[i];
    }
    *p++ = '\n';
    *p = '\0';
}

static int unhex1(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int is_blank(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* Takes the bytes the reader is at while they are blanks (blank set) or are not (blank clear);
 * returns how many, borrowed in *out. */
static size_t take_span(pkm_reader *r, int blank, const uint8_t **out)
{
    const uint8_t *p = pkm__reader_peek(r);
    size_t n = 0, left = pkm__reader_left(r);
    while (n < left && is_blank(p[n]) == blank)
        n++;
    (void)pkm__read_ptr(r, out, n); /* n <= left */
    return n;
}

/* Reads exactly n bytes of hex, which a blank or the end must follow, then skips blanks. 0 or
 * -1. */
static int read_hex(pkm_reader *r, uint8_t *out, size_t n)
{
    const uint8_t *h, *blanks;
    if (pkm__read_ptr(r, &h, 2 * n) < 0) return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = unhex1((char)h[2 * i]), lo = unhex1((char)h[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    if (take_span(r, 1, &blanks) == 0 && pkm__reader_left(r) > 0) return -1;
    return 0;
}

int pkm_keylog_parse_line(const char *line, size_t len, pkm_keylog_entry_t *out)
{
    PKM_ENSURE(line && out, PKM_EINVAL);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ' ||
                       line[len - 1] == '\t'))
        len--;
    pkm_reader r;
    const uint8_t *word;
    pkm__reader_init(&r, (const uint8_t *)line, len);
    take_span(&r, 1, &word);
    if (pkm__reader_left(&r) == 0 || *pkm__reader_peek(&r) == '#') return 0;
    size_t n = take_span(&r, 0, &word);
    if (n != LABEL_LEN || memcmp(word, PKM_KEYLOG_LABEL, LABEL_LEN) != 0) return 0;
    take_span(&r, 1, &word);
    if (read_hex(&r, out->client_iv, 16) < 0 || read_hex(&r, out->k_cs, 32) < 0 ||
        read_hex(&r, out->k_sc, 32) < 0 || read_hex(&r, out->iv, 16) < 0 ||
        pkm__reader_left(&r) != 0) {
        OPENSSL_cleanse(out, sizeof *out);
        return PKM_EINVAL;
    }
    return 1;
}

/* ---- a parsed key log ---- */

struct pkm_keylog {
    pkm_keylog_entry_t *e;
    size_t n, cap;
};

void pkm_keylog_free(pkm_keylog_t *kl)
{
    if (!kl) return;
    if (kl->e) {
        OPENSSL_cleanse(kl->e, kl->cap * sizeof *kl->e);
        pkm__free(kl->e);
    }
    pkm__free(kl);
}

static int push(pkm_keylog_t *kl, const pkm_keylog_entry_t *e)
{
    if (kl->n == kl->cap) {
        size_t ncap = kl->cap ? kl->cap * 2 : 8;
        if (ncap > SIZE_MAX / sizeof *kl->e) return PKM_ENOMEM;
        pkm_keylog_entry_t *ne = pkm__malloc(ncap * sizeof *ne);
        PKM_ENSURE(ne != NULL, PKM_ENOMEM);
        if (kl->n) memcpy(ne, kl->e, kl->n * sizeof *ne);
        if (kl->e) {
            OPENSSL_cleanse(kl->e, kl->cap * sizeof *kl->e);
            pkm__free(kl->e);
        }
        kl->e = ne;
        kl->cap = ncap;
    }
    kl->e[kl->n++] = *e;
    return 0;
}

int pkm_keylog_parse(const char *text, size_t len, pkm_keylog_t **out, size_t *bad)
{
    if (out) *out = NULL;
    if (bad) *bad = 0;
    if (!out || (!text && len)) return PKM_EINVAL;
    pkm_keylog_t *kl = pkm__calloc(1, sizeof *kl);
    PKM_ENSURE(kl != NULL, PKM_ENOMEM);
    size_t i = 0;
    int rc = 0;
    while (i < len) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t l = nl ? (size_t)(nl - (text + i)) : len - i;
        pkm_keylog_entry_t e;
        int r = pkm_keylog_parse_line(text + i, l, &e);
        if (r == 1) {
            rc = push(kl, &e);
            OPENSSL_cleanse(&e, sizeof e);
            if (rc < 0) goto cleanup;
        } else if (r < 0 && bad) {
            (*bad)++;
        }
        i += l + (nl ? 1 : 0);
    }
    *out = kl;
    return 0;
cleanup:
    pkm_keylog_free(kl);
    return rc;
}

int pkm_keylog_load(const char *path, pkm_keylog_t **out, size_t *bad)
{
    if (out) *out = NULL;
    PKM_ENSURE(path && out, PKM_EINVAL);
    FILE *f = fopen(path, "rb");
    PKM_ENSURE(f != NULL, PKM_EKEYFILE);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc;
    for (;;) {
        if (cap - n < 4096) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *nb = pkm__malloc(ncap);
            PKM_ENSURE_GOTO(rc, nb != NULL, PKM_ENOMEM);
            if (n) memcpy(nb, buf, n);
            if (buf) {
                OPENSSL_cleanse(buf, cap);
                pkm__free(buf);
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    PKM_ENSURE_GOTO(rc, !ferror(f), PKM_EKEYFILE);
    rc = pkm_keylog_parse(buf, n, out, bad);
cleanup:
    fclose(f);
    if (buf) {
        OPENSSL_cleanse(buf, cap);
        pkm__free(buf);
    }
    return rc;
}

size_t pkm_keylog_count(const pkm_keylog_t *kl)
{
    return kl ? kl->n : 0;
}

const pkm_keylog_entry_t *pkm_keylog_get(const pkm_keylog_t *kl, size_t i)
{
    return kl && i < kl->n ? &kl->e[i] : NULL;
}

const pkm_keylog_entry_t *pkm_keylog_find(const pkm_keylog_t *kl, int dir,
                                          const uint8_t keyshare_iv[16])
{
    if (!kl || !keyshare_iv) return NULL;
    for (size_t i = 0; i < kl->n; i++) {
        const pkm_keylog_entry_t *e = &kl->e[i];
        uint8_t want[16];
        for (int j = 0; j < 16; j++)
            want[j] = dir == PKM_DIR_C2S ? e->client_iv[j] : (uint8_t)(e->iv[j] ^ e->client_iv[j]);
        if (memcmp(want, keyshare_iv, 16) == 0) return e;
    }
    return NULL;
}

/* ---- PKMCOM_KEYLOGFILE ---- */

void pkm__keylog_append(const char *path, const pkm_keylog_entry_t *e)
{
    if (!path || !*path) return;
    char line[PKM_KEYLOG_LINE_SIZE];
    pkm_keylog_format(e, line);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd >= 0) {
        /* One write() per line: concurrent writers with O_APPEND do not interleave. Errors are
         * ignored: a key log is a debugging aid and must never break a connection. */
        ssize_t w;
        do {
            w = write(fd, line, PKM_KEYLOG_LINE_SIZE - 1);
        } while (w < 0 && errno == EINTR);
        close(fd);
    }
    OPENSSL_cleanse(line, sizeof line);
}

/* ---- the stream decoder ---- */

enum dec_phase { PH_KEY, PH_KEYSHARE, PH_RECORDS, PH_OPAQUE };

struct pkm_streamdec {
    const pkm_keylog_t *kl;
    int dir;
    size_t max_size;
    enum dec_phase phase;
    const pkm_keylog_entry_t *cur; /* the entry whose keys are in use */
    uint8_t chain[BLOCK];          /* the previous ciphertext block (or the IV) */
    int lost;                      /* the error that made the rest opaque */
};

int pkm_streamdec_new(const pkm_keylog_t *kl, int dir, size_t max_size, pkm_streamdec_t **out)
{
    if (out) *out = NULL;
    if (!out || (dir != PKM_DIR_C2S && dir != PKM_DIR_S2C) || max_size > INT32_MAX)
        return PKM_EINVAL;
    pkm_streamdec_t *d = pkm__calloc(1, sizeof *d);
    PKM_ENSURE(d != NULL, PKM_ENOMEM);
    d->kl = kl;
    d->dir = dir;
    d->max_size = max_size ? max_size : PKM_DEFAULT_MAX_SIZE;
    d->phase = PH_KEY;
    *out = d;
    return 0;
}

void pkm_streamdec_free(pkm_streamdec_t *d)
{
    if (!d) return;
    OPENSSL_cleanse(d, sizeof *d);
    pkm__free(d);
}

void pkm_streamdec_set_keylog(pkm_streamdec_t *d, const pkm_keylog_t *kl)
{
    if (d) d->kl = kl;
}

static const uint8_t *dir_key(const pkm_streamdec_t *d)
{
    return d->dir == PKM_DIR_C2S ? d->cur->k_cs : d->cur->k_sc;
}

/* AES-256-CBC decryption of n bytes (a multiple of 16) from in to out, chained from iv. */
static int cbc_decrypt(const uint8_t key[32], const uint8_t iv[16], const uint8_t *in, uint8_t *out,
                       size_t n)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    PKM_ENSURE(c != NULL, PKM_ENOMEM);
    int ok = EVP_DecryptInit_ex(c, EVP_aes_256_cbc(), NULL, key, iv) == 1 &&
             EVP_CIPHER_CTX_set_padding(c, 0) == 1;
    size_t done = 0;
    while (ok && done < n) {
        size_t chunk = n - done > (1u << 30) ? (1u << 30) : n - done;
        int outl = 0;
        ok = EVP_DecryptUpdate(c, out + done, &outl, in + done, (int)chunk) == 1 &&
             (size_t)outl == chunk;
        done += chunk;
    }
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : PKM_ECRYPTO;
}

/* The IV of the KeyShare at p (its last 16 bytes), or NULL when fewer bytes than a KeyShare's. */
static const uint8_t *keyshare_iv(const uint8_t *p, size_t avail)
{
    pkm_reader r;
    const uint8_t *iv;
    pkm__reader_init(&r, p, avail);
    if (pkm__read_skip(&r, KS_IV_AT) < 0 || pkm__read_ptr(&r, &iv, BLOCK) < 0) return NULL;
    return iv;
}

/* A KeyShare met between records: its IV matches a key-log entry other than the current one. */
static const pkm_keylog_entry_t *rekey_share(const pkm_streamdec_t *d, const uint8_t *p,
                                             size_t avail)
{
    const uint8_t *iv = keyshare_iv(p, avail);
    const pkm_keylog_entry_t *e = iv ? pkm_keylog_find(d->kl, d->dir, iv) : NULL;
    return e && e != d->cur ? e : NULL;
}

/* The record at p (avail bytes): its header, decrypted from its first block. *len = its wire
 * length, or 16 (one block) with an error for a Size that is negative or over the limit, or for
 * fewer than 16 bytes (PKM_ETRUNC). */
static int peek_record(const pkm_streamdec_t *d, const uint8_t *p, size_t avail, size_t *len)
{
    pkm_reader r;
    const uint8_t *block;
    uint8_t first[BLOCK];
    pkm_packet_t hdr;
    *len = BLOCK;
    pkm__reader_init(&r, p, avail);
    PKM_GUARD(pkm__read_ptr(&r, &block, BLOCK));
    PKM_GUARD(cbc_decrypt(dir_key(d), d->chain, block, first, BLOCK));
    int rc = pkm_packet_header_read(first, d->max_size, &hdr);
    OPENSSL_cleanse(first, sizeof first);
    PKM_GUARD(rc);
    *len = pkm__padded_size(hdr.size);
    return 0;
}

/* A key message's Int length prefix: 0 and *n, or PKM_ETRUNC when fewer than 4 bytes are there. */
static int key_len(const uint8_t *p, size_t avail, int32_t *n)
{
    pkm_reader r;
    uint32_t v;
    pkm__reader_init(&r, p, avail);
    PKM_GUARD(pkm__read_u32(&r, &v));
    *n = (int32_t)v;
    return 0;
}

size_t pkm_streamdec_next_len(pkm_streamdec_t *d, const uint8_t *p, size_t avail, size_t *need)
{
    *need = 0;
    if (!d || (!p && avail)) return 0;
    switch (d->phase) {
    case PH_KEY: {
        int32_t n;
        if (key_len(p, avail, &n) < 0) {
            *need = 4;
            return 0;
        }
        if (n < 1 || n > MAX_KEY_DER) return avail; /* not PkmCom/TCP: taken as opaque */
        return 4 + (size_t)n;
    }
    case PH_KEYSHARE: return KEYSHARE;
    case PH_RECORDS: {
        if (avail < BLOCK) {
            *need = BLOCK;
            return 0;
        }
        if (rekey_share(d, p, avail)) return KEYSHARE;
        size_t len;
        int r = peek_record(d, p, avail, &len);
        /* Fewer bytes than a KeyShare and not a plausible record: perhaps a KeyShare whose
         * segments have not all arrived. */
        if (r < 0 && avail < KEYSHARE && pkm_keylog_count(d->kl) > 1) {
            *need = KEYSHARE;
            return 0;
        }
        return len;
    }
    case PH_OPAQUE: break;
    }
    return avail ? avail : 1;
}

int pkm_streamdec_take(pkm_streamdec_t *d, const uint8_t *p, size_t len, uint8_t *plain,
                       pkm_unit_t *u)
{
    if (!d || !p || !u || len == 0) return PKM_EINVAL;
    memset(u, 0, sizeof *u);
    u->len = len;
    switch (d->phase) {
    case PH_KEY: {
        int32_t n = -1;
        (void)key_len(p, len, &n); /* fewer than 4 bytes leave n at -1: refused below */
        if (n < 1 || n > MAX_KEY_DER || len != 4 + (size_t)n) {
            d->phase = PH_OPAQUE;
            d->lost = PKM_EKEYLEN;
            u->kind = PKM_UNIT_OPAQUE;
            u->err = PKM_EKEYLEN;
            return 0;
        }
        u->kind = PKM_UNIT_KEY;
        d->phase = PH_KEYSHARE;
        return 0;
    }
    case PH_KEYSHARE: {
        if (len != KEYSHARE) return PKM_EINVAL;
        u->kind = PKM_UNIT_KEYSHARE;
        u->entry = pkm_keylog_find(d->kl, d->dir, keyshare_iv(p, len));
        if (u->entry) {
            d->cur = u->entry;
            memcpy(d->chain, u->entry->iv, BLOCK);
            d->phase = PH_RECORDS;
        } else {
            d->phase = PH_OPAQUE;
            d->lost = PKM_EHANDSHAKE;
        }
        return 0;
    }
    case PH_RECORDS: {
        const pkm_keylog_entry_t *e = len == KEYSHARE ? rekey_share(d, p, len) : NULL;
        if (e) {
            u->kind = PKM_UNIT_KEYSHARE;
            u->entry = e;
            u->rekey = 1;
            d->cur = e;
            memcpy(d->chain, e->iv, BLOCK);
            return 0;
        }
        size_t want;
        int r = peek_record(d, p, len, &want);
        if (r == PKM_ECRYPTO || r == PKM_ENOMEM) return r;
        if (want != len || !plain) return PKM_EINVAL;
        u->kind = PKM_UNIT_RECORD;
        PKM_GUARD(cbc_decrypt(dir_key(d), d->chain, p, plain, len));
        memcpy(d->chain, p + len - BLOCK, BLOCK);
        (void)pkm_packet_header_read(plain, d->max_size, &u->pkt); /* r has its verdict */
        u->pkt.content = NULL;
        if (r < 0) {
            /* The length is unknown past this block: the rest cannot be followed. */
            u->pkt.size = 0;
            u->err = r;
            d->phase = PH_OPAQUE;
            d->lost = r;
            return 0;
        }
        /* Content, then the PKCS#7 padding: 1..16 bytes, each equal to their count. */
        pkm_reader body;
        const uint8_t *pad;
        pkm__reader_init(&body, plain, len);
        PKM_GUARD(pkm__read_skip(&body, PKM_HEADER_SIZE));
        PKM_GUARD(pkm__read_ptr(&body, &u->pkt.content, u->pkt.size));
        size_t npad = pkm__reader_left(&body);
        PKM_GUARD(pkm__read_ptr(&body, &pad, npad));
        u->pad_len = npad;
        int pad_ok = npad >= 1 && npad <= BLOCK;
        for (size_t i = 0; pad_ok && i < npad; i++)
            pad_ok = pad[i] == npad;
        if (!pad_ok) u->err = PKM_EPADDING;
        return 0;
    }
    case PH_OPAQUE:
        u->kind = PKM_UNIT_OPAQUE;
        u->err = d->lost;
        return 0;
    }
    return PKM_EINVAL;
}
