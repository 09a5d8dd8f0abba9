/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the APL decoder (pkm_registry_verify / pkm_registry_decode) over schemas of
 * every field kind, with round-trip and reference-hash oracles, and the Modified UTF-8 <-> UTF-8
 * conversions checked against small reference validators written here from WIRE-PROFILE.
 *
 * Input: byte 0 = packet id (ids with id % 16 < N_SCHEMAS have schema id % 16; 0xFF is the
 * handshake; the rest are unknown). Byte 1 = flags: bit 0 set -> the packet Hash is computed by
 * this file's own reference walker (so the fuzzer gets past the Hash check), else bytes 2..5
 * are the Hash; bit 1 set -> the rest is text for the string round trips instead of a packet. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pkmcom/apl.h"
#include "pkmcom/schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_schema: oracle failed at line %d: %s\n", __LINE__, #cond);       \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* ======================================================================== the schemas */

static const pkm_field_t f_byte = {.type = PKM_T_BYTE};
static const pkm_field_t f_int = {.type = PKM_T_INT};
static const pkm_field_t f_string = {.type = PKM_T_STRING};
static const pkm_field_t f_uuid = {.type = PKM_T_UUID};
static const pkm_field_t f_bool = {.type = PKM_T_BOOL};
static const pkm_field_t f_double = {.type = PKM_T_DOUBLE};
static const pkm_field_t f_instant = {.type = PKM_T_INSTANT};

/* 0: every fixed-size scalar. */
static const pkm_field_t scalars_fields[] = {
    {.name = "byte", .type = PKM_T_BYTE},       {.name = "sbyte", .type = PKM_T_SBYTE},
    {.name = "short", .type = PKM_T_SHORT},     {.name = "ushort", .type = PKM_T_USHORT},
    {.name = "int", .type = PKM_T_INT},         {.name = "uint", .type = PKM_T_UINT},
    {.name = "long", .type = PKM_T_LONG},       {.name = "float", .type = PKM_T_FLOAT},
    {.name = "double", .type = PKM_T_DOUBLE},   {.name = "bool", .type = PKM_T_BOOL},
    {.name = "version", .type = PKM_T_VERSION}, {.name = "uuid", .type = PKM_T_UUID},
    {.name = "instant", .type = PKM_T_INSTANT}, {.name = "duration", .type = PKM_T_DURATION},
};

/* 1: the four text types. */
static const pkm_field_t strings_fields[] = {
    {.name = "string", .type = PKM_T_STRING},
    {.name = "json", .type = PKM_T_JSON},
    {.name = "lstring", .type = PKM_T_LSTRING},
    {.name = "ljson", .type = PKM_T_LJSON},
};

/* 2: an Enum on every integer base, with values at the edges of each range. */
static const int64_t ev_byte[] = {0, 1, 2, 255};
static const int64_t ev_sbyte[] = {-128, -1, 0, 127};
static const int64_t ev_short[] = {-32768, 7, 32767};
static const int64_t ev_ushort[] = {0, 0x8000, 0xFFFF};
static const int64_t ev_int[] = {INT32_MIN, -1, 42, INT32_MAX};
static const int64_t ev_uint[] = {0, 0x504B4D00, 0xFFFFFFFF};
static const int64_t ev_long[] = {INT64_MIN, -2, 0, INT64_MAX};
#define ENUM_FIELD(nm, b, vals)                                                                    \
    {                                                                                              \
        .name = nm, .type = PKM_T_ENUM, .base = b, .enum_values = vals,                            \
        .n_enum_values = sizeof(vals) / sizeof(vals[0])                                            \
    }
static const pkm_field_t enums_fields[] = {
    ENUM_FIELD("e_byte", PKM_T_BYTE, ev_byte),    ENUM_FIELD("e_sbyte", PKM_T_SBYTE, ev_sbyte),
    ENUM_FIELD("e_short", PKM_T_SHORT, ev_short), ENUM_FIELD("e_ushort", PKM_T_USHORT, ev_ushort),
    ENUM_FIELD("e_int", PKM_T_INT, ev_int),       ENUM_FIELD("e_uint", PKM_T_UINT, ev_uint),
    ENUM_FIELD("e_long", PKM_T_LONG, ev_long),
};

/* 3: a Bitflag on every base, UUID included, with reserved bits (and one with none). */
static const pkm_field_t bitflags_fields[] = {
    {.name = "b_byte", .type = PKM_T_BITFLAG, .base = PKM_T_BYTE, .reserved_mask = 0x80},
    {.name = "b_sbyte", .type = PKM_T_BITFLAG, .base = PKM_T_SBYTE, .reserved_mask = 0x40},
    {.name = "b_short", .type = PKM_T_BITFLAG, .base = PKM_T_SHORT, .reserved_mask = 0x8001},
    {.name = "b_ushort", .type = PKM_T_BITFLAG, .base = PKM_T_USHORT, .reserved_mask = 0},
    {.name = "b_int", .type = PKM_T_BITFLAG, .base = PKM_T_INT, .reserved_mask = 0x80000000u},
    {.name = "b_uint", .type = PKM_T_BITFLAG, .base = PKM_T_UINT, .reserved_mask = 0xFF000000u},
    {.name = "b_long", .type = PKM_T_BITFLAG, .base = PKM_T_LONG, .reserved_mask = 1ull << 63},
    {.name = "b_uuid",
     .type = PKM_T_BITFLAG,
     .base = PKM_T_UUID,
     .reserved_mask = 0xF000000000000000ull,
     .reserved_mask_lo = 0x1}};

/* 4: arrays: fixed length, length from Unsigned Short / Signed Byte / Unsigned Int / Long fields,
 * Byte Arrays, arrays of strings, of UUIDs, of arrays, of structures. */
static const pkm_field_t pair_fields[] = {
    {.name = "flag", .type = PKM_T_BOOL},
    {.name = "name", .type = PKM_T_STRING},
};
static const pkm_schema_t pair_schema = {"Pair", pair_fields, 2};
static const pkm_field_t f_pair = {.type = PKM_T_STRUCT, .sub = &pair_schema};
static const pkm_field_t f_int_x3 = {.type = PKM_T_ARRAY, .elem = &f_int, .fixed_len = 3};
static const pkm_field_t arrays_fields[] = {
    {.name = "n_bytes", .type = PKM_T_USHORT},                                              /* 0 */
    {.name = "n_ints", .type = PKM_T_SBYTE},                                                /* 1 */
    {.name = "n_uuids", .type = PKM_T_UINT},                                                /* 2 */
    {.name = "n_pairs", .type = PKM_T_LONG},                                                /* 3 */
    {.name = "digest", .type = PKM_T_ARRAY, .elem = &f_byte, .fixed_len = 4},               /* 4 */
    {.name = "bytes", .type = PKM_T_ARRAY, .elem = &f_byte, .len_field = PKM_LEN_FIELD(0)}, /* 5 */
    {.name = "ints", .type = PKM_T_ARRAY, .elem = &f_int, .len_field = PKM_LEN_FIELD(1)},
    {.name = "names", .type = PKM_T_ARRAY, .elem = &f_string, .fixed_len = 2},
    {.name = "uuids", .type = PKM_T_ARRAY, .elem = &f_uuid, .len_field = PKM_LEN_FIELD(2)},
    {.name = "matrix", .type = PKM_T_ARRAY, .elem = &f_int_x3, .fixed_len = 2},
    {.name = "pairs", .type = PKM_T_ARRAY, .elem = &f_pair, .len_field = PKM_LEN_FIELD(3)},
    {.name = "bools", .type = PKM_T_ARRAY, .elem = &f_bool, .len_field = PKM_LEN_FIELD(1)},
    {.name = "empty", .type = PKM_T_ARRAY, .elem = &f_double, .fixed_len = 0},
};

/* 5: nested structures, with length fields inside inner structures and several levels deep. */
static const pkm_field_t leaf_fields[] = {
    {.name = "count", .type = PKM_T_BYTE},
    {.name = "stamps", .type = PKM_T_ARRAY, .elem = &f_instant, .len_field = PKM_LEN_FIELD(0)},
    {.name = "doc", .type = PKM_T_JSON},
};
static const pkm_schema_t leaf_schema = {"Leaf", leaf_fields, 3};
static const pkm_field_t f_leaf = {.type = PKM_T_STRUCT, .sub = &leaf_schema};
static const pkm_field_t mid_fields[] = {
    {.name = "n", .type = PKM_T_SHORT},
    {.name = "leaves", .type = PKM_T_ARRAY, .elem = &f_leaf, .len_field = PKM_LEN_FIELD(0)},
    {.name = "tail", .type = PKM_T_STRUCT, .sub = &pair_schema},
};
static const pkm_schema_t mid_schema = {"Mid", mid_fields, 3};
static const pkm_field_t deep3_fields[] = {
    {.name = "mid", .type = PKM_T_STRUCT, .sub = &mid_schema}};
static const pkm_schema_t deep3 = {"Deep3", deep3_fields, 1};
static const pkm_field_t deep2_fields[] = {{.name = "d", .type = PKM_T_STRUCT, .sub = &deep3},
                                           {.name = "v", .type = PKM_T_VERSION}};
static const pkm_schema_t deep2 = {"Deep2", deep2_fields, 2};
static const pkm_field_t nested_fields[] = {
    {.name = "head", .type = PKM_T_STRUCT, .sub = &leaf_schema},
    {.name = "body", .type = PKM_T_STRUCT, .sub = &deep2},
    {.name = "note", .type = PKM_T_LSTRING},
};

/* 6: no field at all (content must be empty). */

/* 7: a realistic packet mixing kinds (like the Complete Definition's Connect Request). */
static const int64_t ev_kind[] = {0, 1, 2};
static const pkm_field_t mixed_fields[] = {
    {.name = "version", .type = PKM_T_VERSION},
    ENUM_FIELD("kind", PKM_T_BYTE, ev_kind),
    {.name = "user", .type = PKM_T_STRING},
    {.name = "flags", .type = PKM_T_BITFLAG, .base = PKM_T_UINT, .reserved_mask = 0xFFFFFF00u},
    {.name = "n", .type = PKM_T_INT},
    {.name = "data", .type = PKM_T_ARRAY, .elem = &f_byte, .len_field = PKM_LEN_FIELD(4)},
    {.name = "extra", .type = PKM_T_LJSON},
    {.name = "when", .type = PKM_T_DURATION},
    {.name = "ratio", .type = PKM_T_FLOAT},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
static const pkm_schema_t schemas[] = {
    {"Scalars", scalars_fields, COUNT(scalars_fields)},
    {"Strings", strings_fields, COUNT(strings_fields)},
    {"Enums", enums_fields, COUNT(enums_fields)},
    {"Bitflags", bitflags_fields, COUNT(bitflags_fields)},
    {"Arrays", arrays_fields, COUNT(arrays_fields)},
    {"Nested", nested_fields, COUNT(nested_fields)},
    {"Empty", NULL, 0},
    {"Mixed", mixed_fields, COUNT(mixed_fields)},
};
#define N_SCHEMAS COUNT(schemas)

static pkm_registry_t *registry; /* made once, read-only afterwards */

/* ======================================================================== reference walker */

/* An independent reading of WIRE-PROFILE section 1: walks content by a schema, computing the
 * hashcode, without checking preconditions (only the structure: lengths and truncation). Also
 * notes whether every string's Modified UTF-8 survives mutf8 -> utf8 -> mutf8 unchanged
 * (overlong forms and unpaired surrogates do not: then re-encoding legitimately differs). */
struct ref {
    const uint8_t *p;
    size_t n, pos;
    int canonical;
};

static int ref_take(struct ref *r, size_t k, const uint8_t **out)
{
    if (r->n - r->pos < k) return -1;
    *out = r->p + r->pos;
    r->pos += k;
    return 0;
}

static uint64_t ref_be(const uint8_t *p, size_t k)
{
    uint64_t v = 0;
    for (size_t i = 0; i < k; i++)
        v = v << 8 | p[i];
    return v;
}

static size_t ref_int_width(pkm_type_t t)
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

static int ref_int_signed(pkm_type_t t)
{
    return t == PKM_T_SBYTE || t == PKM_T_SHORT || t == PKM_T_INT || t == PKM_T_LONG;
}

/* An integer of type t: its value as a number (for length fields) and its hashcode. */
static int ref_int(struct ref *r, pkm_type_t t, int64_t *num, uint32_t *h)
{
    size_t w = ref_int_width(t);
    const uint8_t *p;
    if (ref_take(r, w, &p) < 0) return -1;
    uint64_t u = ref_be(p, w);
    int64_t v;
    if (ref_int_signed(t)) {
        switch (w) {
        case 1: v = (int8_t)u; break;
        case 2: v = (int16_t)u; break;
        case 4: v = (int32_t)u; break;
        default: v = (int64_t)u; break;
        }
    } else {
        v = (int64_t)u;
    }
    *num = v;
    if (w == 8)
        *h = (uint32_t)(u >> 32) ^ (uint32_t)u;
    else
        *h = (uint32_t)v; /* sign-extended (signed) or zero-extended (unsigned) to 32 bits */
    return 0;
}

static uint32_t ref_hashsum(const uint8_t *p, size_t n)
{
    uint32_t h = 0;
    for (size_t i = 0; i < n; i++)
        h = h * 31u + p[i];
    return h;
}

static void ref_note_text(struct ref *r, const uint8_t *m, size_t n)
{
    if (!r->canonical) return;
    char *u = malloc(n + 1);
    uint8_t *m2 = malloc(2 * n + 1);
    size_t ulen, mlen;
    if (pkm_mutf8_to_utf8(m, n, u, n, &ulen) != 0 ||
        pkm_utf8_to_mutf8(u, ulen, m2, 2 * n, &mlen) != 0 || mlen != n ||
        (n && memcmp(m, m2, n) != 0))
        r->canonical = 0;
    free(u);
    free(m2);
}

static int ref_struct(struct ref *r, const pkm_schema_t *s, uint32_t *h);

static int ref_field(struct ref *r, const pkm_field_t *f, const int64_t *nums, uint32_t *h)
{
    const uint8_t *p;
    int64_t num;
    switch (f->type) {
    case PKM_T_BYTE:
    case PKM_T_SBYTE:
    case PKM_T_SHORT:
    case PKM_T_USHORT:
    case PKM_T_INT:
    case PKM_T_UINT:
    case PKM_T_LONG: return ref_int(r, f->type, &num, h);
    case PKM_T_ENUM: return ref_int(r, f->base, &num, h);
    case PKM_T_BITFLAG:
        if (f->base != PKM_T_UUID) return ref_int(r, f->base, &num, h);
        /* fall through: a UUID bitflag hashes as a UUID */
    case PKM_T_UUID:
        if (ref_take(r, 16, &p) < 0) return -1;
        *h = ((uint32_t)(ref_be(p, 8) >> 32) ^ (uint32_t)ref_be(p, 8)) * 31u +
             ((uint32_t)(ref_be(p + 8, 8) >> 32) ^ (uint32_t)ref_be(p + 8, 8));
        return 0;
    case PKM_T_FLOAT:
        if (ref_take(r, 4, &p) < 0) return -1;
        *h = (uint32_t)ref_be(p, 4);
        return 0;
    case PKM_T_DOUBLE:
        if (ref_take(r, 8, &p) < 0) return -1;
        *h = (uint32_t)(ref_be(p, 8) >> 32) ^ (uint32_t)ref_be(p, 8);
        return 0;
    case PKM_T_BOOL:
        if (ref_take(r, 1, &p) < 0) return -1;
        *h = p[0] ? 1337u : 1331u;
        return 0;
    case PKM_T_VERSION:
        if (ref_take(r, 2, &p) < 0) return -1;
        *h = ((uint32_t)p[0] + 1u) * 31u + p[1];
        return 0;
    case PKM_T_INSTANT:
    case PKM_T_DURATION:
        if (ref_take(r, 12, &p) < 0) return -1;
        *h = ((uint32_t)(ref_be(p, 8) >> 32) ^ (uint32_t)ref_be(p, 8)) * 31u +
             (uint32_t)ref_be(p + 8, 4);
        return 0;
    case PKM_T_STRING:
    case PKM_T_JSON:
    case PKM_T_LSTRING:
    case PKM_T_LJSON: {
        size_t w = (f->type == PKM_T_STRING || f->type == PKM_T_JSON) ? 2 : 4;
        if (ref_take(r, w, &p) < 0) return -1;
        uint64_t len = ref_be(p, w);
        if (len > INT32_MAX) return -1; /* a negative Long String length */
        if (ref_take(r, (size_t)len, &p) < 0) return -1;
        ref_note_text(r, p, (size_t)len);
        *h = ref_hashsum(p, (size_t)len);
        return 0;
    }
    case PKM_T_ARRAY: {
        int64_t n = f->len_field ? nums[f->len_field - 1] : (int64_t)f->fixed_len;
        if (n < 0 || (uint64_t)n > r->n - r->pos) return -1; /* each element takes >= 1 byte */
        uint32_t acc = 0;
        for (int64_t i = 0; i < n; i++) {
            uint32_t eh;
            if (ref_field(r, f->elem, NULL, &eh) < 0) return -1;
            acc = acc * 31u + eh;
        }
        *h = acc;
        return 0;
    }
    case PKM_T_STRUCT: return ref_struct(r, f->sub, h);
    default: abort();
    }
}

static int ref_struct(struct ref *r, const pkm_schema_t *s, uint32_t *h)
{
    int64_t nums[64] = {0}; /* the integer fields so far, for length fields */
    uint32_t acc = 0;
    for (size_t i = 0; i < s->n_fields; i++) {
        const pkm_field_t *f = &s->fields[i];
        uint32_t fh;
        int64_t num = 0;
        int rc =
            ref_int_width(f->type) ? ref_int(r, f->type, &num, &fh) : ref_field(r, f, nums, &fh);
        if (rc < 0) return -1;
        if (i < 64) nums[i] = num;
        acc = acc * 31u + fh;
    }
    *h = acc;
    return 0;
}

/* ======================================================================== value comparison */

static int val_equal(const pkm_field_t *f, const pkm_value_t *a, const pkm_value_t *b);

static int struct_equal(const pkm_schema_t *s, const pkm_value_t *a, const pkm_value_t *b)
{
    for (size_t i = 0; i < s->n_fields; i++)
        if (!val_equal(&s->fields[i], &a[i], &b[i])) return 0;
    return 1;
}

static int val_equal(const pkm_field_t *f, const pkm_value_t *a, const pkm_value_t *b)
{
    switch (f->type) {
    case PKM_T_FLOAT: return memcmp(&a->f32, &b->f32, sizeof a->f32) == 0;
    case PKM_T_DOUBLE: return memcmp(&a->f64, &b->f64, sizeof a->f64) == 0;
    case PKM_T_BOOL: return a->b == b->b;
    case PKM_T_STRING:
    case PKM_T_JSON:
    case PKM_T_LSTRING:
    case PKM_T_LJSON:
        return a->str.len == b->str.len && memcmp(a->str.ptr, b->str.ptr, a->str.len) == 0;
    case PKM_T_VERSION:
        return a->version.major == b->version.major && a->version.minor == b->version.minor;
    case PKM_T_UUID: return a->uuid.msb == b->uuid.msb && a->uuid.lsb == b->uuid.lsb;
    case PKM_T_INSTANT:
    case PKM_T_DURATION:
        return a->time.seconds == b->time.seconds && a->time.nanos == b->time.nanos;
    case PKM_T_BITFLAG:
        if (f->base == PKM_T_UUID) return a->uuid.msb == b->uuid.msb && a->uuid.lsb == b->uuid.lsb;
        return a->u64 == b->u64;
    case PKM_T_ARRAY:
        if (f->elem->type == PKM_T_BYTE)
            return a->bytes.len == b->bytes.len &&
                   (a->bytes.len == 0 || memcmp(a->bytes.ptr, b->bytes.ptr, a->bytes.len) == 0);
        if (a->array.n != b->array.n) return 0;
        for (size_t i = 0; i < a->array.n; i++)
            if (!val_equal(f->elem, &a->array.items[i], &b->array.items[i])) return 0;
        return 1;
    case PKM_T_STRUCT:
        return a->structure.n == b->structure.n &&
               struct_equal(f->sub, a->structure.fields, b->structure.fields);
    default: return a->u64 == b->u64; /* integers and enums */
    }
}

/* Every decoded string is NUL-terminated after its length (a documented convenience). */
static void check_terminated(const pkm_field_t *f, const pkm_value_t *v)
{
    switch (f->type) {
    case PKM_T_STRING:
    case PKM_T_JSON:
    case PKM_T_LSTRING:
    case PKM_T_LJSON: CHECK(v->str.ptr && v->str.ptr[v->str.len] == '\0'); break;
    case PKM_T_ARRAY:
        if (f->elem->type != PKM_T_BYTE)
            for (size_t i = 0; i < v->array.n; i++)
                check_terminated(f->elem, &v->array.items[i]);
        break;
    case PKM_T_STRUCT:
        for (size_t i = 0; i < f->sub->n_fields; i++)
            check_terminated(&f->sub->fields[i], &v->structure.fields[i]);
        break;
    default: break;
    }
}

/* ======================================================================== packets */

static void fuzz_packet(uint8_t id, int fix_hash, const uint8_t *data, size_t size)
{
    uint32_t hash = 0;
    if (!fix_hash) {
        if (size < 4) return;
        hash = (uint32_t)ref_be(data, 4);
        data += 4;
        size -= 4;
    }
    const pkm_schema_t *s = pkm_registry_lookup(registry, id);
    struct ref r = {data, size, 0, 1};
    uint32_t ref_h = 0;
    int ref_ok = s && ref_struct(&r, s, &ref_h) == 0 && r.pos == size;
    if (fix_hash) hash = pkm_packet_hash(id, ref_h);

    pkm_packet_t pkt = {id, hash, size ? data : NULL, size};
    int rv = pkm_registry_verify(registry, &pkt);
    pkm_msg_t *msg = NULL;
    int rd = pkm_registry_decode(registry, &pkt, &msg);
    CHECK(rv == rd);
    CHECK((rd == 0) == (msg != NULL));
    if (!s) {
        CHECK(rv == PKM_EUNKNOWNID);
        return;
    }
    /* The library accepts only what the reference can walk, and agrees with its Hash. */
    if (rv == 0) CHECK(ref_ok && pkm_packet_hash(id, ref_h) == hash);
    if (rv == PKM_EHASH) CHECK(ref_ok && pkm_packet_hash(id, ref_h) != hash);
    if (rv != 0) return;

    size_t n;
    const pkm_value_t *vals = pkm_msg_fields(msg, &n);
    CHECK(n == s->n_fields && pkm_msg_id(msg) == id && pkm_msg_schema(msg) == s);
    for (size_t i = 0; i < n; i++) {
        check_terminated(&s->fields[i], &vals[i]);
        if (s->fields[i].name) CHECK(pkm_msg_get(msg, s->fields[i].name) == &vals[i]);
    }

    /* Re-encode what was decoded: it must be accepted, and give back the same bytes and Hash
     * unless some string was not in canonical Modified UTF-8. */
    size_t want = 0;
    CHECK(pkm_schema_size(s, vals, n, &want) == 0);
    uint8_t *out = NULL;
    size_t len = 0;
    uint32_t ch = 0;
    CHECK(pkm_schema_encode_alloc(s, vals, n, &out, &len, &ch) == 0);
    CHECK(len == want && len <= size);
    if (r.canonical) {
        CHECK(len == size && (size == 0 || memcmp(out, data, size) == 0));
        CHECK(pkm_packet_hash(id, ch) == hash);
    } else {
        /* The canonical form is a fixed point and decodes to the same values. */
        pkm_packet_t again = {id, pkm_packet_hash(id, ch), len ? out : NULL, len};
        pkm_msg_t *m2 = NULL;
        CHECK(pkm_registry_decode(registry, &again, &m2) == 0);
        size_t n2;
        const pkm_value_t *v2 = pkm_msg_fields(m2, &n2);
        CHECK(n2 == n && struct_equal(s, vals, v2));
        uint8_t *out2 = NULL;
        size_t len2 = 0;
        uint32_t ch2 = 0;
        CHECK(pkm_schema_encode_alloc(s, v2, n2, &out2, &len2, &ch2) == 0);
        CHECK(len2 == len && (len == 0 || memcmp(out, out2, len) == 0) && ch2 == ch);
        pkm_bytes_free(out2);
        pkm_msg_free(m2);
    }
    /* The full-packet encoder frames the same content. */
    uint8_t *pk = malloc(PKM_HEADER_SIZE + len);
    size_t pklen = 0;
    CHECK(pkm_registry_encode(registry, id, vals, n, pk, PKM_HEADER_SIZE + len, &pklen) == 0);
    CHECK(pklen == PKM_HEADER_SIZE + len &&
          (len == 0 || memcmp(pk + PKM_HEADER_SIZE, out, len) == 0));
    pkm_packet_t hdr;
    CHECK(pkm_packet_header_read(pk, PKM_DEFAULT_MAX_SIZE, &hdr) == 0);
    CHECK(hdr.id == id && hdr.hash == pkm_packet_hash(id, ch) && hdr.size == len);
    if (len)
        CHECK(pkm_registry_encode(registry, id, vals, n, pk, PKM_HEADER_SIZE + len - 1, &pklen) ==
              PKM_ENOSPC);
    free(pk);
    pkm_bytes_free(out);
    pkm_msg_free(msg);
}

/* ======================================================================== text */

/* Reference check of received Modified UTF-8, from WIRE-PROFILE section 1. Also gives the UTF-16
 * units so that the UTF-8 length can be computed independently. */
static int ref_mutf8_check(const uint8_t *m, size_t n, size_t *utf8_len)
{
    size_t i = 0, out = 0;
    uint32_t prev_high = 0; /* a high surrogate waiting for its low half */
    while (i < n) {
        uint8_t b = m[i];
        uint32_t unit;
        if (b == 0) return PKM_EMUTF8_NUL;
        if (b >= 0xF0) return PKM_EMUTF8_BYTE;
        if (b >= 0x80 && b <= 0xBF) return PKM_EMUTF8_CONT;
        if (b < 0x80) {
            unit = b;
            i += 1;
        } else {
            size_t need = b < 0xE0 ? 1 : 2;
            for (size_t k = 1; k <= need; k++)
                if (i + k >= n || (m[i + k] & 0xC0) != 0x80) return PKM_EMUTF8_TRUNC;
            if (need == 1)
                unit = (uint32_t)(b & 0x1F) << 6 | (m[i + 1] & 0x3F);
            else
                unit = (uint32_t)(b & 0x0F) << 12 | (uint32_t)(m[i + 1] & 0x3F) << 6 |
                       (m[i + 2] & 0x3F);
            i += need + 1;
        }
        /* UTF-8 length of the units: a pair gives 4 bytes, a lone surrogate U+FFFD's 3. */
        if (prev_high && unit >= 0xDC00 && unit <= 0xDFFF) {
            out += 4;
            prev_high = 0;
            continue;
        }
        if (prev_high) out += 3;
        prev_high = 0;
        if (unit >= 0xD800 && unit <= 0xDBFF) {
            prev_high = unit;
            continue;
        }
        out += unit == 0 ? 1 : unit < 0x80 ? 1 : unit < 0x800 ? 2 : 3;
    }
    if (prev_high) out += 3;
    *utf8_len = out;
    return 0;
}

/* Reference RFC 3629 UTF-8 validity (Table 3-7 of the Unicode standard). */
static int ref_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t k;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            k = 1;
        } else if (b >= 0xE0 && b <= 0xEF) {
            k = 2;
            if (b == 0xE0) lo = 0xA0;
            if (b == 0xED) hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            k = 3;
            if (b == 0xF0) lo = 0x90;
            if (b == 0xF4) hi = 0x8F;
        } else {
            return 0;
        }
        if (n - i - 1 < k) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        i += k + 1;
    }
    return 1;
}

static void fuzz_text(const uint8_t *data, size_t size)
{
    /* As received Modified UTF-8. */
    size_t ref_len = 0, lib_len = 0;
    int rr = ref_mutf8_check(data, size, &ref_len);
    int rl = pkm_mutf8_check(data, size, &lib_len);
    CHECK(rr == rl);
    char *u = malloc(size + 1);
    if (rl == 0) {
        CHECK(lib_len == ref_len && lib_len <= size);
        size_t ulen = 0;
        CHECK(pkm_mutf8_to_utf8(data, size, u, size, &ulen) == 0 && ulen == lib_len);
        if (ulen) CHECK(pkm_mutf8_to_utf8(data, size, u, ulen - 1, &ulen) == PKM_ENOSPC);
        CHECK(pkm_mutf8_to_utf8(data, size, u, size, &ulen) == 0);
        CHECK(ref_utf8_valid((const uint8_t *)u, ulen));
        /* Back to Modified UTF-8, and forth again: a fixed point. */
        size_t mlen = 0, mlen2 = 0;
        CHECK(pkm_utf8_mutf8_len(u, ulen, &mlen) == 0 && mlen <= size);
        uint8_t *m2 = malloc(mlen + 1);
        CHECK(pkm_utf8_to_mutf8(u, ulen, m2, mlen, &mlen2) == 0 && mlen2 == mlen);
        char *u2 = malloc(mlen + 1);
        size_t ulen2 = 0;
        CHECK(pkm_mutf8_to_utf8(m2, mlen, u2, mlen, &ulen2) == 0);
        CHECK(ulen2 == ulen && (ulen == 0 || memcmp(u, u2, ulen) == 0));
        uint32_t h = 0;
        CHECK(pkm_utf8_hash(u, ulen, &h) == 0 && h == ref_hashsum(m2, mlen));
        free(m2);
        free(u2);
    } else {
        size_t ulen = 0;
        CHECK(pkm_mutf8_to_utf8(data, size, u, size, &ulen) == rl);
    }
    free(u);

    /* As application UTF-8: valid text must survive utf8 -> mutf8 -> utf8 exactly. */
    int valid = ref_utf8_valid(data, size);
    size_t mlen = 0;
    int rv = pkm_utf8_mutf8_len((const char *)data, size, &mlen);
    CHECK((rv == 0) == valid);
    if (rv != 0) {
        CHECK(rv == PKM_EUTF8);
        uint32_t h = 0;
        CHECK(pkm_utf8_hash((const char *)data, size, &h) == PKM_EUTF8);
        return;
    }
    CHECK(mlen <= 2 * size);
    uint8_t *m = malloc(mlen + 1);
    size_t got = 0;
    CHECK(pkm_utf8_to_mutf8((const char *)data, size, m, mlen, &got) == 0 && got == mlen);
    if (mlen) CHECK(pkm_utf8_to_mutf8((const char *)data, size, m, mlen - 1, &got) == PKM_ENOSPC);
    CHECK(pkm_utf8_to_mutf8((const char *)data, size, m, mlen, &got) == 0);
    size_t back_len = 0;
    CHECK(pkm_mutf8_check(m, mlen, &back_len) == 0 && back_len == size);
    char *back = malloc(size + 1);
    size_t blen = 0;
    CHECK(pkm_mutf8_to_utf8(m, mlen, back, size, &blen) == 0);
    CHECK(blen == size && (size == 0 || memcmp(back, data, size) == 0));
    uint32_t h = 0;
    CHECK(pkm_utf8_hash((const char *)data, size, &h) == 0 && h == ref_hashsum(m, mlen));
    /* The Json check must not crash on any valid text (its verdict is jansson's). */
    int rj = pkm_json_check((const char *)data, size);
    CHECK(rj == 0 || rj == PKM_EJSON || rj == PKM_EJSON_NOTOBJ);
    free(back);
    free(m);
}

/* ======================================================================== seeds */

/* PKM_FUZZ_SEEDS=<dir>: writes one valid packet per schema (values chosen to touch edge cases:
 * a NUL and a supplementary character in strings, negative numbers, nested arrays), in both
 * hash modes, plus text seeds, then exits. */
static void write_seed(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(p, 1, n, f) == n);
    fclose(f);
}

static void seed_packet(const char *dir, unsigned k, const pkm_value_t *v, size_t n)
{
    uint8_t buf[4096];
    size_t len = 0;
    CHECK(pkm_schema_encode_packet(&schemas[k], (uint8_t)k, v, n, buf + 2, sizeof buf - 2, &len) ==
          0);
    char name[64];
    /* flags 1: the content alone (hash fixed by the reference walker) */
    uint8_t out[4096];
    out[0] = (uint8_t)k;
    out[1] = 1;
    memcpy(out + 2, buf + 2 + PKM_HEADER_SIZE, len - PKM_HEADER_SIZE);
    snprintf(name, sizeof name, "%s_fixed_hash", schemas[k].name);
    write_seed(dir, name, out, 2 + len - PKM_HEADER_SIZE);
    /* flags 0: the Hash from the header, then the content */
    out[1] = 0;
    memcpy(out + 2, buf + 2 + 1, 4);
    memcpy(out + 6, buf + 2 + PKM_HEADER_SIZE, len - PKM_HEADER_SIZE);
    snprintf(name, sizeof name, "%s_given_hash", schemas[k].name);
    write_seed(dir, name, out, 6 + len - PKM_HEADER_SIZE);
}

static void make_seeds(const char *dir)
{
    static const char nul_and_emoji[] = "a\0b \xF0\x9F\x98\x80 \xC3\xA9";
    pkm_value_t scal[] = {PKM_V_U(255),
                          PKM_V_I(-128),
                          PKM_V_I(-2),
                          PKM_V_U(65535),
                          PKM_V_I(INT32_MIN),
                          PKM_V_U(0xFFFFFFFFu),
                          PKM_V_I(-1),
                          PKM_V_F32(-0.0f),
                          PKM_V_F64(1e300),
                          PKM_V_BOOL(true),
                          PKM_V_VERSION(256, 255),
                          PKM_V_UUID(0x0123456789ABCDEFull, 0xFEDCBA9876543210ull),
                          PKM_V_TIME(31556889864401400ll, 999999999),
                          PKM_V_TIME(-31556889864401399ll, 0)};
    seed_packet(dir, 0, scal, COUNT(scal));
    pkm_value_t str[] = {PKM_V_STRN(nul_and_emoji, sizeof nul_and_emoji - 1),
                         PKM_V_STR("{\"a\": [1, 2.5, \"\\u00e9\"], \"b\": {}}"), PKM_V_STR(""),
                         PKM_V_STR(" {\"k\": null} ")};
    seed_packet(dir, 1, str, COUNT(str));
    pkm_value_t en[] = {PKM_V_U(255),       PKM_V_I(-128),       PKM_V_I(32767),    PKM_V_U(0x8000),
                        PKM_V_I(INT32_MIN), PKM_V_U(0x504B4D00), PKM_V_I(INT64_MIN)};
    seed_packet(dir, 2, en, COUNT(en));
    pkm_value_t bf[] = {PKM_V_U(0x7F),       PKM_V_U(0xBF),
                        PKM_V_U(0x7FFE),     PKM_V_U(0xFFFF),
                        PKM_V_U(0x7FFFFFFF), PKM_V_U(0x00FFFFFF),
                        PKM_V_U(~0ull >> 1), PKM_V_UUID(0x0FFFFFFFFFFFFFFFull, ~1ull)};
    seed_packet(dir, 3, bf, COUNT(bf));
    static const uint8_t digest[4] = {0xDE, 0xAD, 0xBE, 0xEF}, bytes[3] = {0, 0x80, 0xFF};
    pkm_value_t ints[2] = {PKM_V_I(-1), PKM_V_I(INT32_MAX)};
    pkm_value_t names[2] = {PKM_V_STR("x"), PKM_V_STR("\xE2\x82\xAC")};
    pkm_value_t uuids[1] = {PKM_V_UUID(1, 2)};
    pkm_value_t row0[3] = {PKM_V_I(1), PKM_V_I(2), PKM_V_I(3)};
    pkm_value_t row1[3] = {PKM_V_I(-4), PKM_V_I(-5), PKM_V_I(-6)};
    pkm_value_t matrix[2] = {PKM_V_ARRAY(row0, 3), PKM_V_ARRAY(row1, 3)};
    pkm_value_t pair0[2] = {PKM_V_BOOL(false), PKM_V_STR("p")};
    pkm_value_t pairs[1] = {PKM_V_STRUCT(pair0, 2)};
    pkm_value_t bools[2] = {PKM_V_BOOL(true), PKM_V_BOOL(false)};
    pkm_value_t arr[] = {PKM_V_U(3),
                         PKM_V_I(2),
                         PKM_V_U(1),
                         PKM_V_I(1),
                         PKM_V_BYTES(digest, 4),
                         PKM_V_BYTES(bytes, 3),
                         PKM_V_ARRAY(ints, 2),
                         PKM_V_ARRAY(names, 2),
                         PKM_V_ARRAY(uuids, 1),
                         PKM_V_ARRAY(matrix, 2),
                         PKM_V_ARRAY(pairs, 1),
                         PKM_V_ARRAY(bools, 2),
                         PKM_V_ARRAY(NULL, 0)};
    seed_packet(dir, 4, arr, COUNT(arr));
    pkm_value_t stamps[2] = {PKM_V_TIME(0, 0), PKM_V_TIME(-1, 5)};
    pkm_value_t leaf0[3] = {PKM_V_U(2), PKM_V_ARRAY(stamps, 2), PKM_V_STR("{}")};
    pkm_value_t leaf1[3] = {PKM_V_U(0), PKM_V_ARRAY(NULL, 0), PKM_V_STR("{\"x\":1}")};
    pkm_value_t leaves[1] = {PKM_V_STRUCT(leaf1, 3)};
    pkm_value_t tail[2] = {PKM_V_BOOL(true), PKM_V_STR("tail")};
    pkm_value_t mid[3] = {PKM_V_I(1), PKM_V_ARRAY(leaves, 1), PKM_V_STRUCT(tail, 2)};
    pkm_value_t d3[1] = {PKM_V_STRUCT(mid, 3)};
    pkm_value_t d2[2] = {PKM_V_STRUCT(d3, 1), PKM_V_VERSION(1, 0)};
    pkm_value_t nested[] = {PKM_V_STRUCT(leaf0, 3), PKM_V_STRUCT(d2, 2), PKM_V_STR("note")};
    seed_packet(dir, 5, nested, COUNT(nested));
    seed_packet(dir, 6, NULL, 0);
    static const uint8_t data[5] = {1, 2, 3, 4, 5};
    pkm_value_t mixed[] = {PKM_V_VERSION(1, 2),
                           PKM_V_U(1),
                           PKM_V_STR("Ash"),
                           PKM_V_U(0x81),
                           PKM_V_I(5),
                           PKM_V_BYTES(data, 5),
                           PKM_V_STR("{\"lang\":\"en\"}"),
                           PKM_V_TIME(3600, 500),
                           PKM_V_F32(1.5f)};
    seed_packet(dir, 7, mixed, COUNT(mixed));
    /* The handshake packet (id 0xFF) and an unknown id. */
    static const uint8_t hs[] = {0xFF, 0, 0x50, 0x4B, 0x6B, 0xE1, 0x50, 0x4B, 0x4D, 0x00};
    write_seed(dir, "handshake_0xFF", hs, sizeof hs);
    static const uint8_t unknown[] = {0x0F, 1, 1, 2, 3};
    write_seed(dir, "unknown_id", unknown, sizeof unknown);
    /* Text: Modified UTF-8 with C0 80, a surrogate pair, a lone surrogate, an overlong 'A'. */
    static const uint8_t text1[] = {0,    2,    'h',  0xC0, 0x80, 0xED, 0xA0, 0xBD, 0xED,
                                    0xB8, 0x80, 0xED, 0xA0, 0x80, 0xC1, 0x81, 'z'};
    write_seed(dir, "text_mutf8", text1, sizeof text1);
    static const uint8_t text2[] = {0, 2, '{', '"', 0xF0, 0x9F, 0x98, 0x80, '"', ':', '1', '}'};
    write_seed(dir, "text_utf8_json", text2, sizeof text2);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    registry = pkm_registry_new();
    CHECK(registry != NULL);
    for (unsigned id = 0; id < 0xFF; id++)
        if (id % 16 < N_SCHEMAS)
            CHECK(pkm_registry_register(registry, (uint8_t)id, &schemas[id % 16]) == 0);
    const char *dir = getenv("PKM_FUZZ_SEEDS");
    if (dir) {
        make_seeds(dir);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t id = data[0], flags = data[1];
    if (flags & 2)
        fuzz_text(data + 2, size - 2);
    else
        fuzz_packet(id, flags & 1, data + 2, size - 2);
    return 0;
}
