/* SPDX-License-Identifier: MIT */
/* Modified UTF-8 (Java DataOutput.writeUTF without the length): the wire check of received bytes
 * and the conversions to and from the standard UTF-8 that applications use. See apl.h. */
#include "pkmcom/apl.h"
#include "internal.h"
#include "apl_internal.h"

/* Length of the prefix of p made of bytes 01-7F (plain ASCII, identical in both encodings),
 * eight bytes at a time while it can. */
static size_t ascii_run(const uint8_t *p, size_t n)
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

/* Decodes the Modified UTF-8 sequence at m[*i] (n total) into a UTF-16 code unit. */
static int mutf8_unit(const uint8_t *m, size_t n, size_t *i, uint32_t *unit)
{
    uint8_t b = m[*i];
    if (b < 0x80) {
        if (b == 0) return PKM_EMUTF8_NUL;
        *unit = b;
        *i += 1;
        return 0;
    }
    if (b < 0xC0) return PKM_EMUTF8_CONT;
    if (b >= 0xF0) return PKM_EMUTF8_BYTE;
    size_t need = b < 0xE0 ? 1 : 2;
    if (n - *i - 1 < need) return PKM_EMUTF8_TRUNC;
    const uint8_t *q = m + *i;
    if ((q[1] & 0xC0) != 0x80) return PKM_EMUTF8_TRUNC;
    if (need == 1) {
        *unit = (uint32_t)(b & 0x1F) << 6 | (q[1] & 0x3F);
    } else {
        if ((q[2] & 0xC0) != 0x80) return PKM_EMUTF8_TRUNC;
        *unit = (uint32_t)(b & 0x0F) << 12 | (uint32_t)(q[1] & 0x3F) << 6 | (q[2] & 0x3F);
    }
    *i += need + 1;
    return 0;
}

/* Wire check only, without conversion. */
static int mutf8_validate(const uint8_t *m, size_t n)
{
    size_t i = 0;
    while (i < n) {
        i += ascii_run(m + i, n - i);
        if (i >= n) break;
        uint32_t unit;
        int rc = mutf8_unit(m, n, &i, &unit);
        if (rc < 0) return rc;
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

/* One code point from the Modified UTF-8 at m[*j]: a surrogate pair is combined, an unpaired
 * surrogate becomes U+FFFD (standard UTF-8 cannot carry it). Advances *j past it. */
static int mutf8_char(const uint8_t *m, size_t n, size_t *j, uint32_t *cp)
{
    uint32_t u;
    PKM_GUARD(mutf8_unit(m, n, j, &u));
    if (u >= 0xD800 && u <= 0xDFFF) {
        uint32_t lo = 0;
        size_t k = *j;
        /* A following sequence that fails to decode is reported on the next turn. */
        if (u <= 0xDBFF && k < n && mutf8_unit(m, n, &k, &lo) == 0 && lo >= 0xDC00 &&
            lo <= 0xDFFF) {
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            *j = k;
        } else {
            u = 0xFFFD;
        }
    }
    *cp = u;
    return 0;
}

int pkm__mutf8_convert(const uint8_t *m, size_t n, size_t *i, char *out, size_t cap, size_t *pos)
{
    while (*i < n) {
        size_t run = ascii_run(m + *i, n - *i);
        if (run) {
            if (out) {
                size_t room = cap - *pos;
                if (room < run) {
                    memcpy(out + *pos, m + *i, room);
                    *pos += room;
                    *i += room;
                    return PKM_ENOSPC;
                }
                memcpy(out + *pos, m + *i, run);
            }
            *pos += run;
            *i += run;
            if (*i >= n) break;
        }
        size_t j = *i;
        uint32_t cp;
        PKM_GUARD(mutf8_char(m, n, &j, &cp));
        PKM_GUARD(put_utf8(out, cap, pos, cp));
        *i = j;
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

/* Decodes the standard UTF-8 character at s[*i] (RFC 3629, strict) into a code point. */
static int utf8_char(const uint8_t *s, size_t n, size_t *i, uint32_t *cp)
{
    uint8_t b = s[*i];
    const uint8_t *q = s + *i;
    size_t left = n - *i;
    if (b < 0x80) {
        *cp = b;
        *i += 1;
        return 0;
    }
    if (b >= 0xC2 && b <= 0xDF) {
        if (left < 2 || (q[1] & 0xC0) != 0x80) return PKM_EUTF8;
        *cp = (uint32_t)(b & 0x1F) << 6 | (q[1] & 0x3F);
        *i += 2;
        return 0;
    }
    if (b >= 0xE0 && b <= 0xEF) {
        /* E0 needs A0-BF (no overlong), ED needs 80-9F (no surrogate) */
        uint8_t lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
        if (left < 3 || q[1] < lo || q[1] > hi || (q[2] & 0xC0) != 0x80) return PKM_EUTF8;
        *cp = (uint32_t)(b & 0x0F) << 12 | (uint32_t)(q[1] & 0x3F) << 6 | (q[2] & 0x3F);
        *i += 3;
        return 0;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        /* F0 needs 90-BF (no overlong), F4 needs 80-8F (nothing above U+10FFFF) */
        uint8_t lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
        if (left < 4 || q[1] < lo || q[1] > hi || (q[2] & 0xC0) != 0x80 || (q[3] & 0xC0) != 0x80)
            return PKM_EUTF8;
        *cp = (uint32_t)(b & 0x07) << 18 | (uint32_t)(q[1] & 0x3F) << 12 |
              (uint32_t)(q[2] & 0x3F) << 6 | (q[3] & 0x3F);
        *i += 4;
        return 0;
    }
    return PKM_EUTF8; /* 80-BF stray continuation, C0/C1 overlong, F5-FF */
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
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0, pos = 0;
    uint32_t h = 0;
    if (!s && n) return PKM_EINVAL;
    while (i < n) {
        size_t run = ascii_run(s + i, n - i);
        if (run) {
            if (out) {
                if (cap - pos < run) return PKM_ENOSPC;
                memcpy(out + pos, s + i, run);
            }
            if (hash) h = pkm_hash_fold(h, s + i, run);
            pos += run;
            i += run;
            if (i >= n) break;
        }
        uint32_t cp;
        PKM_GUARD(utf8_char(s, n, &i, &cp));
        uint8_t tmp[6];
        size_t k = mutf8_of(cp, tmp);
        if (out) {
            if (cap - pos < k) return PKM_ENOSPC;
            memcpy(out + pos, tmp, k);
        }
        if (hash) h = pkm_hash_fold(h, tmp, k);
        pos += k;
    }
    if (out_len) *out_len = pos;
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
