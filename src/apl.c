/* SPDX-License-Identifier: MIT */
/* The APL types one value at a time: bytes, hashcode and preconditions of every non-composite
 * type (WIRE-PROFILE section 1), and the Json check (the one place jansson is used). */
#include <jansson.h>
#include "pkmcom/apl.h"
#include "internal.h"
#include "apl_internal.h"

#define SECONDS_LIMIT 31556889864401400ll
#define NANOS_LIMIT   1000000000

/* ---- single-value preconditions ---- */

int pkm_check_time(pkm_time_t t)
{
    if (t.nanos < 0 || t.nanos >= NANOS_LIMIT) return PKM_ENANOS;
    if (t.seconds <= -SECONDS_LIMIT || t.seconds > SECONDS_LIMIT) return PKM_ESECONDS;
    return 0;
}

int pkm_check_version(pkm_version_t v)
{
    if (v.major < 1 || v.major > 256 || v.minor > 255) return PKM_EVERSION;
    return 0;
}

static int check_float_bits(uint32_t u)
{
    /* exponent all ones and a non-zero fraction, whatever the sign and quiet bit */
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? PKM_ENAN : 0;
}

static int check_double_bits(uint64_t u)
{
    return (u & 0x7FFFFFFFFFFFFFFFull) > 0x7FF0000000000000ull ? PKM_ENAN : 0;
}

int pkm_check_float(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return check_float_bits(u);
}

int pkm_check_double(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return check_double_bits(u);
}

/* ---- Json ---- */

/* Feeds jansson the UTF-8 form of checked Modified UTF-8, a buffer at a time, so that a received
 * Json field is checked without a copy of our own. */
struct mstream {
    const uint8_t *m;
    size_t n, i;
};

static size_t mstream_read(void *buf, size_t buflen, void *data)
{
    struct mstream *s = data;
    size_t pos = 0;
    int rc = pkm__mutf8_convert(s->m, s->n, &s->i, buf, buflen, &pos);
    if (rc < 0 && (rc != PKM_ENOSPC || pos == 0)) return (size_t)-1;
    return pos;
}

/* Parses either UTF-8 text (utf8 set) or checked Modified UTF-8 (ms set). */
static int json_load(const char *utf8, size_t n, struct mstream *ms, json_t **out)
{
    /* DECODE_ANY so that a bare number is "valid JSON, not an object"; ALLOW_NUL for "\u0000";
     * no DISABLE_EOF_CHECK, so anything but white space after the value is an error. */
    size_t flags = JSON_DECODE_ANY | JSON_ALLOW_NUL;
    json_error_t err;
    json_t *j = NULL;
    for (int attempt = 0; attempt < 2 && !j; attempt++) {
        if (ms) {
            ms->i = 0;
            j = json_load_callback(mstream_read, ms, flags, &err);
        } else {
            j = json_loadb(utf8, n, flags, &err);
        }
        if (j) break;
        if (json_error_code(&err) == json_error_out_of_memory) return PKM_ENOMEM;
        /* An integer beyond int64 is still valid JSON: take it as a real number. */
        if (json_error_code(&err) != json_error_numeric_overflow) break;
        flags |= JSON_DECODE_INT_AS_REAL;
    }
    if (!j) return PKM_EJSON;
    if (!json_is_object(j)) {
        json_decref(j);
        return PKM_EJSON_NOTOBJ;
    }
    if (out)
        *out = j;
    else
        json_decref(j);
    return 0;
}

int pkm_json_check(const char *utf8, size_t n)
{
    if (!utf8 && n) return PKM_EINVAL;
    if (!utf8) utf8 = "";
    return json_load(utf8, n, NULL, NULL);
}

int pkm_json_parse(const char *utf8, size_t n, struct json_t **out)
{
    if ((!utf8 && n) || !out) return PKM_EINVAL;
    *out = NULL;
    if (!utf8) utf8 = "";
    return json_load(utf8, n, NULL, out);
}

int pkm_value_json(const pkm_value_t *v, struct json_t **out)
{
    if (!v) return PKM_EINVAL;
    return pkm_json_parse(v->str.ptr, v->str.len, out);
}

/* ---- integers ---- */

size_t pkm__int_width(pkm_type_t t)
{
    switch (t) {
    case PKM_T_BYTE:
    case PKM_T_SBYTE: return 1;
    case PKM_T_SHORT:
    case PKM_T_USHORT: return 2;
    case PKM_T_INT:
    case PKM_T_UINT: return 4;
    case PKM_T_LONG: return 8;
    default: return 0;
    }
}

bool pkm__int_signed(pkm_type_t t)
{
    return t == PKM_T_SBYTE || t == PKM_T_SHORT || t == PKM_T_INT || t == PKM_T_LONG;
}

size_t pkm__type_fixed_size(pkm_type_t t)
{
    switch (t) {
    case PKM_T_FLOAT: return 4;
    case PKM_T_DOUBLE: return 8;
    case PKM_T_BOOL: return 1;
    case PKM_T_VERSION: return 2;
    case PKM_T_UUID: return 16;
    case PKM_T_INSTANT:
    case PKM_T_DURATION: return 12;
    default: return pkm__int_width(t);
    }
}

size_t pkm__field_fixed_size(const pkm_field_t *f)
{
    if (f->type == PKM_T_ENUM || f->type == PKM_T_BITFLAG) return pkm__type_fixed_size(f->base);
    return pkm__type_fixed_size(f->type);
}

static uint64_t width_mask(size_t w)
{
    return w >= 8 ? ~0ull : (1ull << (w * 8)) - 1;
}

/* The bit pattern of width w sign-extended to 64 bits. */
static uint64_t sext(uint64_t pattern, size_t w)
{
    if (w >= 8) return pattern;
    uint64_t sign = 1ull << (w * 8 - 1);
    return ((pattern & width_mask(w)) ^ sign) - sign;
}

/* Hashcode of an integer type's value from its bit pattern. */
static uint32_t int_hash(pkm_type_t t, uint64_t pattern)
{
    size_t w = pkm__int_width(t);
    if (w == 8) return pkm_hash_long(pattern);
    if (pkm__int_signed(t)) return (uint32_t)sext(pattern, w); /* sign-extended to 32 bits */
    return (uint32_t)pattern;
}

/* The number an integer value has (for enums and length fields): the pattern, sign-extended
 * for signed types. */
static int64_t int_number(pkm_type_t t, uint64_t pattern)
{
    return pkm__int_signed(t) ? (int64_t)sext(pattern, pkm__int_width(t)) : (int64_t)pattern;
}

/* The pattern of an application's integer value for type t, or PKM_ERANGE. */
static int int_pattern(pkm_type_t t, const pkm_value_t *v, uint64_t *pattern)
{
    size_t w = pkm__int_width(t);
    if (pkm__int_signed(t)) {
        if (w < 8) {
            int64_t lim = (int64_t)1 << (w * 8 - 1);
            if (v->i64 < -lim || v->i64 >= lim) return PKM_ERANGE;
        }
        *pattern = (uint64_t)v->i64 & width_mask(w);
    } else {
        if (v->u64 > width_mask(w)) return PKM_ERANGE;
        *pattern = v->u64;
    }
    return 0;
}

static int write_uint(pkm_writer *w, size_t width, uint64_t pattern)
{
    switch (width) {
    case 1: return pkm__write_u8(w, (uint8_t)pattern);
    case 2: return pkm__write_u16(w, (uint16_t)pattern);
    case 4: return pkm__write_u32(w, (uint32_t)pattern);
    case 8: return pkm__write_u64(w, pattern);
    default: return PKM_ESCHEMA;
    }
}

static int read_uint(pkm_reader *r, size_t width, uint64_t *pattern)
{
    uint8_t b;
    uint16_t s;
    uint32_t i;
    switch (width) {
    case 1:
        PKM_GUARD(pkm__read_u8(r, &b));
        *pattern = b;
        return 0;
    case 2:
        PKM_GUARD(pkm__read_u16(r, &s));
        *pattern = s;
        return 0;
    case 4:
        PKM_GUARD(pkm__read_u32(r, &i));
        *pattern = i;
        return 0;
    case 8: return pkm__read_u64(r, pattern);
    default: return PKM_ESCHEMA;
    }
}

static int check_enum(const pkm_field_t *f, int64_t value)
{
    if (!f->enum_values) return PKM_ESCHEMA;
    for (size_t i = 0; i < f->n_enum_values; i++)
        if (f->enum_values[i] == value) return 0;
    return PKM_EENUM;
}

/* ---- strings ---- */

static bool is_json(pkm_type_t t)
{
    return t == PKM_T_JSON || t == PKM_T_LJSON;
}

static bool is_long_string(pkm_type_t t)
{
    return t == PKM_T_LSTRING || t == PKM_T_LJSON;
}

static int write_string(pkm_writer *w, const pkm_field_t *f, const pkm_value_t *v, unsigned flags,
                        uint32_t *hash)
{
    const pkm_str_t *s = &v->str;
    if (!s->ptr && s->len) return PKM_EINVAL;
    size_t mlen;
    PKM_GUARD(pkm_utf8_mutf8_len(s->ptr, s->len, &mlen));
    if (mlen > (is_long_string(f->type) ? (size_t)INT32_MAX : (size_t)UINT16_MAX))
        return PKM_ETOOLONG;
    if (is_json(f->type) && !(flags & PKM__W_NOJSON)) PKM_GUARD(pkm_json_check(s->ptr, s->len));
    if (is_long_string(f->type))
        PKM_GUARD(pkm__write_u32(w, (uint32_t)mlen));
    else
        PKM_GUARD(pkm__write_u16(w, (uint16_t)mlen));
    size_t at;
    PKM_GUARD(pkm__write_reserve(w, mlen, &at));
    uint8_t *dst = pkm__writer_at(w, at);
    if (dst) {
        size_t got;
        int rc = pkm_utf8_to_mutf8(s->ptr, s->len, dst, mlen, &got);
        if (rc < 0 || got != mlen) return PKM_EINTERNAL;
        *hash = pkm_hashsum_bytes(dst, mlen);
    } else {
        *hash = 0;
    }
    return 0;
}

static int read_string(pkm_reader *r, const pkm_field_t *f, pkm_value_t *v, pkm__text *text,
                       uint32_t *hash)
{
    size_t n;
    if (is_long_string(f->type)) {
        uint32_t len;
        PKM_GUARD(pkm__read_u32(r, &len));
        if (len > INT32_MAX) return PKM_ENEGLEN;
        n = len;
    } else {
        uint16_t len;
        PKM_GUARD(pkm__read_u16(r, &len));
        n = len;
    }
    const uint8_t *m;
    PKM_GUARD(pkm__read_ptr(r, &m, n));
    if (hash) *hash = pkm_hashsum_bytes(m, n);
    if (!text) {
        PKM_GUARD(pkm_mutf8_check(m, n, NULL));
        if (is_json(f->type)) {
            struct mstream ms = {m, n, 0};
            PKM_GUARD(json_load(NULL, 0, &ms, NULL));
        }
        v->str.ptr = NULL;
        v->str.len = n;
        return 0;
    }
    /* fill: the UTF-8 is never longer than the Modified UTF-8, plus one NUL */
    size_t i = 0, start = text->pos, pos = text->pos;
    if (text->cap - text->pos < n + 1) return PKM_EINTERNAL;
    PKM_GUARD(pkm__mutf8_convert(m, n, &i, text->p, text->cap, &pos));
    text->p[pos] = '\0';
    text->pos = pos + 1;
    v->str.ptr = text->p + start;
    v->str.len = pos - start;
    return 0;
}

/* ---- one value ---- */

int pkm__apl_write(pkm_writer *w, const pkm_field_t *f, const pkm_value_t *v, unsigned flags,
                   uint32_t *hash)
{
    pkm_type_t t = f->type;
    uint64_t pattern;
    switch (t) {
    case PKM_T_BYTE:
    case PKM_T_SBYTE:
    case PKM_T_SHORT:
    case PKM_T_USHORT:
    case PKM_T_INT:
    case PKM_T_UINT:
    case PKM_T_LONG:
        PKM_GUARD(int_pattern(t, v, &pattern));
        PKM_GUARD(write_uint(w, pkm__int_width(t), pattern));
        *hash = int_hash(t, pattern);
        return 0;
    case PKM_T_ENUM: {
        size_t wd = pkm__int_width(f->base);
        if (!wd) return PKM_ESCHEMA;
        PKM_GUARD(int_pattern(f->base, v, &pattern));
        PKM_GUARD(check_enum(f, int_number(f->base, pattern)));
        PKM_GUARD(write_uint(w, wd, pattern));
        *hash = int_hash(f->base, pattern);
        return 0;
    }
    case PKM_T_BITFLAG: {
        if (f->base == PKM_T_UUID) {
            if ((v->uuid.msb & f->reserved_mask) || (v->uuid.lsb & f->reserved_mask_lo))
                return PKM_EBITFLAG;
            PKM_GUARD(pkm__write_u64(w, v->uuid.msb));
            PKM_GUARD(pkm__write_u64(w, v->uuid.lsb));
            *hash = pkm_hash_uuid(v->uuid);
            return 0;
        }
        size_t wd = pkm__int_width(f->base);
        if (!wd) return PKM_ESCHEMA;
        pattern = v->u64;
        if (pattern > width_mask(wd)) {
            /* a signed base may also be given as a sign-extended negative number */
            if (!pkm__int_signed(f->base) || int_pattern(f->base, v, &pattern) < 0)
                return PKM_ERANGE;
        }
        if (pattern & f->reserved_mask) return PKM_EBITFLAG;
        PKM_GUARD(write_uint(w, wd, pattern));
        *hash = int_hash(f->base, pattern);
        return 0;
    }
    case PKM_T_FLOAT: {
        uint32_t u;
        memcpy(&u, &v->f32, sizeof u);
        PKM_GUARD(check_float_bits(u));
        PKM_GUARD(pkm__write_u32(w, u));
        *hash = u;
        return 0;
    }
    case PKM_T_DOUBLE: {
        uint64_t u;
        memcpy(&u, &v->f64, sizeof u);
        PKM_GUARD(check_double_bits(u));
        PKM_GUARD(pkm__write_u64(w, u));
        *hash = pkm_hash_long(u);
        return 0;
    }
    case PKM_T_BOOL: {
        /* read the byte, not the bool: an application may have stored something else there */
        uint8_t raw;
        memcpy(&raw, &v->b, 1);
        if (raw > 1) return PKM_EBOOL;
        PKM_GUARD(pkm__write_u8(w, raw));
        *hash = pkm_hash_bool(raw);
        return 0;
    }
    case PKM_T_STRING:
    case PKM_T_JSON:
    case PKM_T_LSTRING:
    case PKM_T_LJSON: return write_string(w, f, v, flags, hash);
    case PKM_T_VERSION:
        PKM_GUARD(pkm_check_version(v->version));
        PKM_GUARD(pkm__write_u8(w, (uint8_t)(v->version.major - 1)));
        PKM_GUARD(pkm__write_u8(w, (uint8_t)v->version.minor));
        *hash = pkm_hash_version(v->version);
        return 0;
    case PKM_T_UUID:
        PKM_GUARD(pkm__write_u64(w, v->uuid.msb));
        PKM_GUARD(pkm__write_u64(w, v->uuid.lsb));
        *hash = pkm_hash_uuid(v->uuid);
        return 0;
    case PKM_T_INSTANT:
    case PKM_T_DURATION:
        PKM_GUARD(pkm_check_time(v->time));
        PKM_GUARD(pkm__write_u64(w, (uint64_t)v->time.seconds));
        PKM_GUARD(pkm__write_u32(w, (uint32_t)v->time.nanos));
        *hash = pkm_hash_time(v->time);
        return 0;
    default: return PKM_ESCHEMA; /* ARRAY and STRUCT are the schema walker's */
    }
}

int pkm__apl_read(pkm_reader *r, const pkm_field_t *f, pkm_value_t *v, pkm__text *text,
                  uint32_t *hash)
{
    pkm_type_t t = f->type;
    uint64_t pattern;
    uint32_t h = 0;
    switch (t) {
    case PKM_T_BYTE:
    case PKM_T_SBYTE:
    case PKM_T_SHORT:
    case PKM_T_USHORT:
    case PKM_T_INT:
    case PKM_T_UINT:
    case PKM_T_LONG:
        PKM_GUARD(read_uint(r, pkm__int_width(t), &pattern));
        v->i64 = int_number(t, pattern);
        h = int_hash(t, pattern);
        break;
    case PKM_T_ENUM: {
        size_t wd = pkm__int_width(f->base);
        if (!wd) return PKM_ESCHEMA;
        PKM_GUARD(read_uint(r, wd, &pattern));
        int64_t num = int_number(f->base, pattern);
        PKM_GUARD(check_enum(f, num));
        v->i64 = num;
        h = int_hash(f->base, pattern);
        break;
    }
    case PKM_T_BITFLAG:
        if (f->base == PKM_T_UUID) {
            PKM_GUARD(pkm__read_u64(r, &v->uuid.msb));
            PKM_GUARD(pkm__read_u64(r, &v->uuid.lsb));
            if ((v->uuid.msb & f->reserved_mask) || (v->uuid.lsb & f->reserved_mask_lo))
                return PKM_EBITFLAG;
            h = pkm_hash_uuid(v->uuid);
            break;
        } else {
            size_t wd = pkm__int_width(f->base);
            if (!wd) return PKM_ESCHEMA;
            PKM_GUARD(read_uint(r, wd, &pattern));
            if (pattern & f->reserved_mask) return PKM_EBITFLAG;
            v->u64 = pattern;
            h = int_hash(f->base, pattern);
            break;
        }
    case PKM_T_FLOAT: {
        uint32_t u;
        PKM_GUARD(pkm__read_u32(r, &u));
        PKM_GUARD(check_float_bits(u));
        memcpy(&v->f32, &u, sizeof u);
        h = u;
        break;
    }
    case PKM_T_DOUBLE: {
        uint64_t u;
        PKM_GUARD(pkm__read_u64(r, &u));
        PKM_GUARD(check_double_bits(u));
        memcpy(&v->f64, &u, sizeof u);
        h = pkm_hash_long(u);
        break;
    }
    case PKM_T_BOOL: {
        uint8_t b;
        PKM_GUARD(pkm__read_u8(r, &b));
        if (b > 1) return PKM_EBOOL;
        v->b = b != 0;
        h = pkm_hash_bool(b);
        break;
    }
    case PKM_T_STRING:
    case PKM_T_JSON:
    case PKM_T_LSTRING:
    case PKM_T_LJSON: return read_string(r, f, v, text, hash);
    case PKM_T_VERSION: {
        uint8_t a, b;
        PKM_GUARD(pkm__read_u8(r, &a));
        PKM_GUARD(pkm__read_u8(r, &b));
        v->version.major = (uint16_t)(a + 1);
        v->version.minor = b;
        h = pkm_hash_version(v->version);
        break;
    }
    case PKM_T_UUID:
        PKM_GUARD(pkm__read_u64(r, &v->uuid.msb));
        PKM_GUARD(pkm__read_u64(r, &v->uuid.lsb));
        h = pkm_hash_uuid(v->uuid);
        break;
    case PKM_T_INSTANT:
    case PKM_T_DURATION: {
        uint64_t s;
        uint32_t ns;
        PKM_GUARD(pkm__read_u64(r, &s));
        PKM_GUARD(pkm__read_u32(r, &ns));
        pkm_time_t tm = {(int64_t)s, (int32_t)ns};
        PKM_GUARD(pkm_check_time(tm));
        v->time = tm;
        h = pkm_hash_time(tm);
        break;
    }
    default: return PKM_ESCHEMA;
    }
    if (hash) *hash = h;
    return 0;
}
