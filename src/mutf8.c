/* SPDX-License-Identifier: MIT */
/* Modified UTF-8 (Java DataOutput.writeUTF without the length): the wire check of received bytes
 * and the conversions to and from the standard UTF-8 that applications use. See apl.h. */
#include "pkmcom/apl.h"
#include "internal.h"
#include "apl_internal.h"

/* Length of the prefix of p made of bytes 01-7F (plain ASCII, identical in both encodings),
 * eight bytes at a time while it can. */
static inline size_t ascii_run(const uint8_t *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    size_t i = 0;
    while (n - i >= 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        /* a high bit set, or a zero byte (the classic haszero test) */
        if ((x | ((x - ones) & ~x)) & highs) break;
        i += 8;
    }
    while (i < n && (uint8_t)(p[i] - 1) < 0x7F)
        i++;
    return i;
}

/* Takes the run of ASCII bytes the reader is at (ascii_run), borrowing it in *run. */
static inline size_t take_ascii(pkm_reader *r, const uint8_t **run)
{
    size_t k = ascii_run(pkm__reader_peek(r), pkm__reader_left(r));
    if (pkm__read_ptr(r, run, k) < 0) return 0; /* cannot happen: k <= left */
    return k;
}

/* Decodes the Modified UTF-8 sequence the reader is at into a UTF-16 code unit, and takes it
 * (after an error, where the reader stands is unspecified: callers read on from a copy). */
static inline int mutf8_unit(pkm_reader *r, uint32_t *unit)
{
    pkm_reader *q = r;
    uint8_t b, c;
    if (pkm__read_u8(q, &b) < 0) return PKM_EMUTF8_TRUNC;
    if (b == 0) return PKM_EMUTF8_NUL;
    if (b >= 0x80 && b < 0xC0) return PKM_EMUTF8_CONT;
    if (b >= 0xF0) return PKM_EMUTF8_BYTE;
    size_t k = b < 0x80 ? 0 : b < 0xE0 ? 1 : 2; /* continuation bytes */
    uint32_t u = k ? b & (0x7Fu >> (k + 1)) : b;
    for (size_t j = 0; j < k; j++) {
        /* too few, or not a continuation: the sequence is cut short either way */
        if (pkm__read_u8(q, &c) < 0 || (c & 0xC0) != 0x80) return PKM_EMUTF8_TRUNC;
        u = u << 6 | (c & 0x3F);
    }
    *unit = u;
    return 0;
}

/* Wire check only, without conversion. */
static int mutf8_validate(const uint8_t *m, size_t n)
{
    pkm_reader r;
    const uint8_t *run;
    uint32_t unit;
    pkm__reader_init(&r, m, n);
    while (pkm__reader_left(&r) > 0) {
        take_ascii(&r, &run);
        if (pkm__reader_left(&r) > 0) PKM_GUARD(mutf8_unit(&r, &unit));
    }
    return 0;
}

/* Appends code point cp as standard UTF-8 to out (NULL: count only). */
static int put_utf8(char *out, size_t cap, size_t *pos, uint32_t cp)
{
    uint8_t tmp[4];
    size_t k;
    if (cp < 0x80) {
        tmp[0] = (uint8_t)cp;
        k = 1;
    } else if (cp < 0x800) {
        tmp[0] = (uint8_t)(0xC0 | cp >> 6);
        tmp[1] = (uint8_t)(0x80 | (cp & 0x3F));
        k = 2;
    } else if (cp < 0x10000) {
        tmp[0] = (uint8_t)(0xE0 | cp >> 12);
        tmp[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        tmp[2] = (uint8_t)(0x80 | (cp & 0x3F));
        k = 3;
    } else {
        tmp[0] = (uint8_t)(0xF0 | cp >> 18);
        tmp[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
        tmp[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        tmp[3] = (uint8_t)(0x80 | (cp & 0x3F));
        k = 4;
    }
    if (out) {
        if (cap - *pos < k) return PKM_ENOSPC;
        memcpy(out + *pos, tmp, k);
    }
    *pos += k;
    return 0;
}

/* One code point from the Modified UTF-8 the reader is at: a surrogate pair is combined, an
 * unpaired surrogate becomes U+FFFD (standard UTF-8 cannot carry it). Takes it. */
static int mutf8_char(pkm_reader *r, uint32_t *cp)
{
    uint32_t u;
    PKM_GUARD(mutf8_unit(r, &u));
    if (u >= 0xD800 && u <= 0xDFFF) {
        uint32_t lo = 0;
        pkm_reader k = *r;
        /* A following sequence that fails to decode (or none) is reported on the next turn. */
        if (u <= 0xDBFF && mutf8_unit(&k, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            *r = k;
        } else {
            u = 0xFFFD;
        }
    }
    *cp = u;
    return 0;
}

int pkm__mutf8_convert(const uint8_t *m, size_t n, size_t *i, char *out, size_t cap, size_t *pos)
{
    pkm_reader r;
    const uint8_t *run;
    pkm__reader_init(&r, m, n);
    if (pkm__read_skip(&r, *i) < 0) return 0; /* *i at or past the end: nothing left */
    while (pkm__reader_left(&r) > 0) {
        pkm_reader at = r;
        size_t k = take_ascii(&r, &run);
        if (k && out && cap - *pos < k) {
            /* As much of the run as fits, then no room. */
            r = at;
            k = cap - *pos;
            if (pkm__read_ptr(&r, &run, k) == 0) memcpy(out + *pos, run, k);
            *pos += k;
            *i = r.pos;
            return PKM_ENOSPC;
        }
        if (k && out) memcpy(out + *pos, run, k);
        *pos += k;
        *i = r.pos;
        if (pkm__reader_left(&r) == 0) break;
        uint32_t cp;
        PKM_GUARD(mutf8_char(&r, &cp));
        PKM_GUARD(put_utf8(out, cap, pos, cp));
        *i = r.pos;
    }
    return 0;
}

/* Converts (out != NULL) or measures (out == NULL) received Modified UTF-8 as standard UTF-8. */
static int mutf8_convert(const uint8_t *m, size_t n, char *out, size_t cap, size_t *out_len)
{
    size_t i = 0, pos = 0;
    PKM_GUARD(pkm__mutf8_convert(m, n, &i, out, cap, &pos));
    *out_len = pos;
    return 0;
}

/* Decodes the standard UTF-8 character the reader is at (RFC 3629, strict) into a code point,
 * and takes it. */
static inline int utf8_char(pkm_reader *r, uint32_t *cp)
{
    uint8_t b;
    const uint8_t *c;
    PKM_ENSURE(pkm__read_u8(r, &b) == 0, PKM_EUTF8);
    /* C2-DF: one continuation byte; E0-EF: two; F0-F4: three. 80-BF (a stray continuation),
     * C0/C1 (overlong) and F5-FF are no lead byte. */
    size_t k = b < 0x80 ? 0 : b < 0xC2 ? 4 : b < 0xE0 ? 1 : b < 0xF0 ? 2 : b < 0xF5 ? 3 : 4;
    PKM_ENSURE(k < 4 && pkm__read_ptr(r, &c, k) == 0, PKM_EUTF8);
    /* The first continuation's range: E0 needs A0-BF (no overlong), ED 80-9F (no surrogate),
     * F0 90-BF (no overlong), F4 80-8F (nothing above U+10FFFF); the others 80-BF. */
    uint8_t lo = b == 0xE0 ? 0xA0 : b == 0xF0 ? 0x90 : 0x80;
    uint8_t hi = b == 0xED ? 0x9F : b == 0xF4 ? 0x8F : 0xBF;
    uint32_t v = k ? b & (0x7Fu >> (k + 1)) : b;
    for (size_t j = 0; j < k; j++) {
        PKM_ENSURE(c[j] >= lo && c[j] <= hi, PKM_EUTF8);
        v = v << 6 | (c[j] & 0x3F);
        lo = 0x80;
        hi = 0xBF;
    }
    *cp = v;
    return 0;
}

/* The Modified UTF-8 bytes of one code point; returns their count (1..6). */
static size_t mutf8_of(uint32_t cp, uint8_t out[6])
{
    if (cp == 0) {
        out[0] = 0xC0;
        out[1] = 0x80;
        return 2;
    }
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    uint32_t v = cp - 0x10000, hi = 0xD800 + (v >> 10), lo = 0xDC00 + (v & 0x3FF);
    out[0] = (uint8_t)(0xE0 | hi >> 12);
    out[1] = (uint8_t)(0x80 | (hi >> 6 & 0x3F));
    out[2] = (uint8_t)(0x80 | (hi & 0x3F));
    out[3] = (uint8_t)(0xE0 | lo >> 12);
    out[4] = (uint8_t)(0x80 | (lo >> 6 & 0x3F));
    out[5] = (uint8_t)(0x80 | (lo & 0x3F));
    return 6;
}

/* The three uses of one walk over application UTF-8: measure (out NULL, hash NULL), convert
 * (out set) or hash (hash set). */
static int utf8_walk(const char *str, size_t n, uint8_t *out, size_t cap, size_t *out_len,
                     uint32_t *hash)
{
    pkm_reader r;
    pkm_writer w; /* with out NULL it only counts */
    const uint8_t *run;
    uint32_t h = 0;
    if (!str && n) return PKM_EINVAL;
    pkm__reader_init(&r, (const uint8_t *)str, n);
    pkm__writer_init(&w, out, cap);
    while (pkm__reader_left(&r) > 0) {
        size_t k = take_ascii(&r, &run);
        if (k) {
            PKM_GUARD(pkm__write_bytes(&w, run, k));
            if (hash) h = pkm_hash_fold(h, run, k);
            if (pkm__reader_left(&r) == 0) break;
        }
        uint32_t cp;
        PKM_GUARD(utf8_char(&r, &cp));
        uint8_t tmp[6];
        k = mutf8_of(cp, tmp);
        PKM_GUARD(pkm__write_bytes(&w, tmp, k));
        if (hash) h = pkm_hash_fold(h, tmp, k);
    }
    if (out_len) *out_len = w.pos;
    if (hash) *hash = h;
    return 0;
}

int pkm_mutf8_check(const uint8_t *m, size_t n, size_t *utf8_len)
{
    if (!m && n) return PKM_EINVAL;
    if (utf8_len) return mutf8_convert(m, n, NULL, 0, utf8_len);
    return mutf8_validate(m, n);
}

int pkm_mutf8_to_utf8(const uint8_t *m, size_t n, char *out, size_t cap, size_t *out_len)
{
    if ((!m && n) || (!out && cap) || !out_len) return PKM_EINVAL;
    if (!out) {
        /* cap == 0: only an empty result fits */
        size_t need;
        PKM_GUARD(mutf8_convert(m, n, NULL, 0, &need));
        if (need) return PKM_ENOSPC;
        *out_len = 0;
        return 0;
    }
    return mutf8_convert(m, n, out, cap, out_len);
}

int pkm_utf8_mutf8_len(const char *s, size_t n, size_t *mutf8_len)
{
    if (!mutf8_len) return PKM_EINVAL;
    return utf8_walk(s, n, NULL, 0, mutf8_len, NULL);
}

int pkm_utf8_to_mutf8(const char *s, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    if (!out_len || (!out && cap)) return PKM_EINVAL;
    if (!out) {
        size_t need;
        PKM_GUARD(utf8_walk(s, n, NULL, 0, &need, NULL));
        if (need) return PKM_ENOSPC;
        *out_len = 0;
        return 0;
    }
    return utf8_walk(s, n, out, cap, out_len, NULL);
}

int pkm_utf8_hash(const char *s, size_t n, uint32_t *hash)
{
    if (!hash) return PKM_EINVAL;
    uint32_t h;
    PKM_GUARD(utf8_walk(s, n, NULL, 0, NULL, &h));
    *hash = h;
    return 0;
}
