/* SPDX-License-Identifier: MIT */
/* Tests of schemas and the registry: the 0xFF packet, a nested packet worked by hand, the
 * validator, random round trips of nested schemas, truncation at every byte, Size and Hash
 * faults, hostile array lengths (no allocation up front), ENOSPC, and allocation counts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"
#include "pkmcom/schema.h"

/* ---- a counting allocator, to see what decode and verify allocate ---- */

static size_t n_allocs, fail_after = SIZE_MAX;

static void *count_malloc(size_t n)
{
    if (n_allocs >= fail_after) return NULL;
    n_allocs++;
    return malloc(n);
}

static void *count_realloc(void *p, size_t n)
{
    n_allocs++;
    return realloc(p, n);
}

static void count_alloc_start(size_t fail)
{
    n_allocs = 0;
    fail_after = fail;
    assert_int_equal(pkm_set_allocator(count_malloc, count_realloc, free), 0);
}

static void count_alloc_stop(void)
{
    assert_int_equal(pkm_set_allocator(NULL, NULL, NULL), 0);
    fail_after = SIZE_MAX;
}

/* ---- the schemas used below ---- */

static const pkm_field_t byte_elem = {.type = PKM_T_BYTE};
static const pkm_field_t long_elem = {.type = PKM_T_LONG};
static const pkm_field_t float_elem = {.type = PKM_T_FLOAT};

/* {UByte n, Byte Array data[n], Struct {Bool, Short}} */
static const pkm_field_t small_sub_f[] = {{.name = "flag", .type = PKM_T_BOOL},
                                          {.name = "delta", .type = PKM_T_SHORT}};
static const pkm_schema_t small_sub = {"SmallSub", small_sub_f, 2};
static const pkm_field_t small_f[] = {
    {.name = "n", .type = PKM_T_BYTE},
    {.name = "data", .type = PKM_T_ARRAY, .elem = &byte_elem, .len_field = PKM_LEN_FIELD(0)},
    {.name = "sub", .type = PKM_T_STRUCT, .sub = &small_sub},
};
static const pkm_schema_t small = {"Small", small_f, 3};

/* A schema using every type, nested. */
static const int64_t kinds[] = {-300, 0, 7, 32767};
static const pkm_field_t item_f[] = {
    {.name = "b", .type = PKM_T_BYTE},
    {.name = "s", .type = PKM_T_STRING},
    {.name = "t", .type = PKM_T_INSTANT},
};
static const pkm_schema_t item = {"Item", item_f, 3};
static const pkm_field_t item_elem = {.type = PKM_T_STRUCT, .sub = &item};
static const pkm_field_t inner_f[] = {
    {.name = "count", .type = PKM_T_USHORT},
    {.name = "items", .type = PKM_T_ARRAY, .elem = &item_elem, .len_field = PKM_LEN_FIELD(0)},
    {.name = "one", .type = PKM_T_STRUCT, .sub = &item},
};
static const pkm_schema_t inner = {"Inner", inner_f, 3};
static const pkm_field_t pair_elem = {.type = PKM_T_ARRAY, .elem = &float_elem, .fixed_len = 2};
static const pkm_field_t duo_elem = {.type = PKM_T_ARRAY, .elem = &byte_elem, .fixed_len = 2};
static const pkm_field_t every_f[] = {
    /* 0 */ {.name = "ver", .type = PKM_T_VERSION},
    /* 1 */ {.name = "n", .type = PKM_T_INT},
    /* 2 */
    {.name = "blob", .type = PKM_T_ARRAY, .elem = &byte_elem, .len_field = PKM_LEN_FIELD(1)},
    /* 3 */ {.name = "inner", .type = PKM_T_STRUCT, .sub = &inner},
    /* 4 */ {.name = "longs", .type = PKM_T_ARRAY, .elem = &long_elem, .fixed_len = 3},
    /* 5 */ {.name = "id", .type = PKM_T_UUID},
    /* 6 */ {.name = "info", .type = PKM_T_JSON},
    /* 7 */
    {.name = "flags", .type = PKM_T_BITFLAG, .base = PKM_T_UINT, .reserved_mask = 0xF0000000u},
    /* 8 */
    {.name = "kind",
     .type = PKM_T_ENUM,
     .base = PKM_T_SHORT,
     .enum_values = kinds,
     .n_enum_values = 4},
    /* 9 */ {.name = "x", .type = PKM_T_DOUBLE},
    /* 10 */ {.name = "ok", .type = PKM_T_BOOL},
    /* 11 */ {.name = "text", .type = PKM_T_LSTRING},
    /* 12 */ {.name = "dur", .type = PKM_T_DURATION},
    /* 13 */ {.name = "m", .type = PKM_T_SBYTE},
    /* 14 */
    {.name = "pairs", .type = PKM_T_ARRAY, .elem = &pair_elem, .len_field = PKM_LEN_FIELD(13)},
    /* 15 */ {.name = "duos", .type = PKM_T_ARRAY, .elem = &duo_elem, .fixed_len = 2},
    /* 16 */ {.name = "ljson", .type = PKM_T_LJSON},
    /* 17 */ {.name = "ub", .type = PKM_T_BITFLAG, .base = PKM_T_UUID, .reserved_mask_lo = 1},
    /* 18 */ {.name = "f", .type = PKM_T_FLOAT},
    /* 19 */ {.name = "l", .type = PKM_T_LONG},
    /* 20 */ {.name = "ui", .type = PKM_T_UINT},
    /* 21 */ {.name = "us", .type = PKM_T_USHORT},
};
static const pkm_schema_t every = {"Every", every_f, 22};

/* ---- the handshake packet and the registry ---- */

static void handshake_packet(void **state)
{
    (void)state;
    pkm_registry_t *reg = pkm_registry_new();
    assert_non_null(reg);
    assert_ptr_equal(pkm_registry_lookup(reg, 0xFF), pkm_handshake_schema());
    /* Hash = 0xFF*31 + 0x504B4D00 = 7905 + 1347112192 = 0x504B6BE1; Size 4 */
    uint8_t want[13], out[32];
    assert_int_equal(t_unhex("FF 50 4B 6B E1 00 00 00 04 50 4B 4D 00", want, 13), 13);
    pkm_value_t magic = PKM_V_U(PKM_HANDSHAKE_MAGIC);
    size_t len;
    assert_int_equal(pkm_registry_encode(reg, 0xFF, &magic, 1, out, sizeof out, &len), 0);
    assert_int_equal(len, 13);
    assert_memory_equal(out, want, 13);
    pkm_packet_t pkt;
    assert_int_equal(pkm_packet_header_read(want, PKM_DEFAULT_MAX_SIZE, &pkt), 0);
    pkt.content = want + 9;
    assert_int_equal(pkm_registry_verify(reg, &pkt), 0);
    pkm_msg_t *m;
    assert_int_equal(pkm_registry_decode(reg, &pkt, &m), 0);
    assert_int_equal(pkm_msg_id(m), 0xFF);
    assert_int_equal(pkm_msg_get(m, "magic")->u64, 0x504B4D00u);
    pkm_msg_free(m);
    /* another magic is refused on both sides */
    magic = PKM_V_U(0x504B4D01);
    assert_int_equal(pkm_registry_encode(reg, 0xFF, &magic, 1, out, sizeof out, &len), PKM_EENUM);
    uint8_t bad[4] = {0x50, 0x4B, 0x4D, 0x01};
    pkm_packet_t bp = {0xFF, 0x504B6BE2u, bad, 4};
    assert_int_equal(pkm_registry_verify(reg, &bp), PKM_EENUM);
    /* 0xFF cannot be registered or replaced */
    assert_int_equal(pkm_registry_register(reg, 0xFF, &small), PKM_EINVAL);
    assert_ptr_equal(pkm_registry_lookup(reg, 0xFF), pkm_handshake_schema());
    pkm_registry_free(reg);
}

static void registry_ids(void **state)
{
    (void)state;
    pkm_registry_t *reg = pkm_registry_new();
    uint8_t c[1] = {0};
    pkm_packet_t pkt = {0x05, 0, c, 1};
    pkm_msg_t *m = (pkm_msg_t *)1;
    assert_int_equal(pkm_registry_verify(reg, &pkt), PKM_EUNKNOWNID);
    assert_int_equal(pkm_registry_decode(reg, &pkt, &m), PKM_EUNKNOWNID);
    assert_null(m);
    uint8_t out[64];
    size_t len;
    assert_int_equal(pkm_registry_encode(reg, 0x05, NULL, 0, out, sizeof out, &len),
                     PKM_EUNKNOWNID);
    assert_null(pkm_registry_lookup(reg, 0x05));
    assert_int_equal(pkm_registry_register(reg, 0x05, &small), 0);
    assert_ptr_equal(pkm_registry_lookup(reg, 0x05), &small);
    assert_int_equal(pkm_registry_register(reg, 0x05, &small), PKM_ESTATE);
    assert_int_equal(pkm_registry_register(reg, 0x00, &every), 0);
    assert_int_equal(pkm_registry_register(reg, 0xFE, &small), 0);
    static const pkm_field_t badf[] = {{.name = "e", .type = PKM_T_ENUM, .base = PKM_T_BYTE}};
    static const pkm_schema_t bad = {"Bad", badf, 1};
    assert_int_equal(pkm_registry_register(reg, 0x06, &bad), PKM_ESCHEMA);
    assert_null(pkm_registry_lookup(reg, 0x06));
    assert_int_equal(pkm_registry_register(NULL, 0x06, &small), PKM_EINVAL);
    assert_int_equal(pkm_registry_register(reg, 0x06, NULL), PKM_EINVAL);
    pkm_registry_free(reg);
    pkm_registry_free(NULL);
}

/* ---- a nested packet by hand ---- */

static void small_packet_by_hand(void **state)
{
    (void)state;
    /* n = 2, data = [10 20], sub = {true, -1}. Content 02 10 20 01 FF FF.
     * Field hashcodes: n -> 2; data -> 0x10*31 + 0x20 = 528; sub -> 1337*31 + 0xFFFFFFFF
     * = 41447 - 1 = 41446. Content = (2*31 + 528)*31 + 41446 = 590*31 + 41446 = 59736.
     * Packet 0x05: 5*31 + 59736 = 59891 = 0x0000E9F3. */
    static const uint8_t data[] = {0x10, 0x20};
    const pkm_value_t sub[] = {PKM_V_BOOL(true), PKM_V_I(-1)};
    const pkm_value_t v[] = {PKM_V_U(2), PKM_V_BYTES(data, 2), PKM_V_STRUCT(sub, 2)};
    uint8_t want[15], out[15];
    assert_int_equal(t_unhex("05 00 00 E9 F3 00 00 00 06 02 10 20 01 FF FF", want, 15), 15);
    size_t len;
    assert_int_equal(pkm_schema_encode_packet(&small, 0x05, v, 3, out, sizeof out, &len), 0);
    assert_int_equal(len, 15);
    assert_memory_equal(out, want, 15);
    uint32_t ch;
    assert_int_equal(pkm_schema_encode(&small, v, 3, out, sizeof out, &len, &ch), 0);
    assert_int_equal(ch, 59736);
    pkm_packet_t pkt = {0x05, 59891, want + 9, 6};
    pkm_msg_t *m;
    assert_int_equal(pkm_schema_decode(&small, &pkt, &m), 0);
    size_t n;
    const pkm_value_t *f = pkm_msg_fields(m, &n);
    assert_int_equal(n, 3);
    assert_int_equal(f[0].u64, 2);
    assert_int_equal(f[1].bytes.len, 2);
    assert_memory_equal(f[1].bytes.ptr, data, 2);
    assert_true(f[2].structure.fields[0].b);
    assert_int_equal(f[2].structure.fields[1].i64, -1);
    assert_ptr_equal(pkm_msg_get(m, "sub"), &f[2]);
    assert_null(pkm_msg_get(m, "nope"));
    assert_null(pkm_msg_field(m, 3));
    assert_ptr_equal(pkm_msg_schema(m), &small);
    assert_int_equal(pkm_msg_id(m), 5);
    pkm_msg_free(m);
    /* the same packet read with a different id fails its Hash */
    pkt.id = 0x06;
    assert_int_equal(pkm_schema_verify(&small, &pkt), PKM_EHASH);
}

/* ---- validator ---- */

static int validate_one(pkm_field_t f)
{
    static const pkm_field_t pre[] = {{.type = PKM_T_INT}, {.type = PKM_T_STRING}};
    pkm_field_t fs[3] = {pre[0], pre[1], f};
    pkm_schema_t s = {"V", fs, 3};
    return pkm_schema_validate(&s);
}

static const pkm_schema_t empty_schema = {"Empty", NULL, 0};
static const pkm_field_t empty_elem = {.type = PKM_T_STRUCT, .sub = &empty_schema};
static const pkm_field_t zero_arr_elem = {.type = PKM_T_ARRAY, .elem = &byte_elem, .fixed_len = 0};
/* a structure that contains itself */
static const pkm_schema_t loop;
static const pkm_field_t loop_f[] = {{.type = PKM_T_BYTE}, {.type = PKM_T_STRUCT, .sub = &loop}};
static const pkm_schema_t loop = {"Loop", loop_f, 2};

static void validator(void **state)
{
    (void)state;
    static const int64_t v300[] = {300}, v255[] = {255}, vneg[] = {-1}, v128[] = {-128, 127};
    assert_int_equal(pkm_schema_validate(&small), 0);
    assert_int_equal(pkm_schema_validate(&every), 0);
    assert_int_equal(pkm_schema_validate(&empty_schema), 0);
    assert_int_equal(pkm_schema_validate(NULL), PKM_EINVAL);
    /* unknown types */
    assert_int_equal(validate_one((pkm_field_t){.type = 0}), PKM_ESCHEMA);
    assert_int_equal(validate_one((pkm_field_t){.type = (pkm_type_t)99}), PKM_ESCHEMA);
    /* enums: no values, no base, values out of the base's range */
    assert_int_equal(validate_one((pkm_field_t){.type = PKM_T_ENUM, .base = PKM_T_BYTE}),
                     PKM_ESCHEMA);
    assert_int_equal(
        validate_one((pkm_field_t){.type = PKM_T_ENUM, .enum_values = v255, .n_enum_values = 1}),
        PKM_ESCHEMA);
    assert_int_equal(
        validate_one((pkm_field_t){
            .type = PKM_T_ENUM, .base = PKM_T_BYTE, .enum_values = v255, .n_enum_values = 1}),
        0);
    assert_int_equal(
        validate_one((pkm_field_t){
            .type = PKM_T_ENUM, .base = PKM_T_BYTE, .enum_values = v300, .n_enum_values = 1}),
        PKM_ESCHEMA);
    assert_int_equal(
        validate_one((pkm_field_t){
            .type = PKM_T_ENUM, .base = PKM_T_UINT, .enum_values = vneg, .n_enum_values = 1}),
        PKM_ESCHEMA);
    assert_int_equal(
        validate_one((pkm_field_t){
            .type = PKM_T_ENUM, .base = PKM_T_SBYTE, .enum_values = v128, .n_enum_values = 2}),
        0);
    assert_int_equal(
        validate_one((pkm_field_t){
            .type = PKM_T_ENUM, .base = PKM_T_STRING, .enum_values = v255, .n_enum_values = 1}),
        PKM_ESCHEMA);
    /* bitflags: mask wider than the base, lo mask on an integer, bad base */
    assert_int_equal(validate_one((pkm_field_t){
                         .type = PKM_T_BITFLAG, .base = PKM_T_BYTE, .reserved_mask = 0x100}),
                     PKM_ESCHEMA);
    assert_int_equal(validate_one((pkm_field_t){
                         .type = PKM_T_BITFLAG, .base = PKM_T_LONG, .reserved_mask_lo = 1}),
                     PKM_ESCHEMA);
    assert_int_equal(validate_one((pkm_field_t){.type = PKM_T_BITFLAG, .base = PKM_T_FLOAT}),
                     PKM_ESCHEMA);
    assert_int_equal(validate_one((pkm_field_t){.type = PKM_T_BITFLAG,
                                                .base = PKM_T_UUID,
                                                .reserved_mask = ~0ull,
                                                .reserved_mask_lo = 1}),
                     0);
    /* arrays: no element, length field not earlier / not an integer / itself */
    assert_int_equal(validate_one((pkm_field_t){.type = PKM_T_ARRAY, .fixed_len = 2}), PKM_ESCHEMA);
    assert_int_equal(validate_one((pkm_field_t){
                         .type = PKM_T_ARRAY, .elem = &byte_elem, .len_field = PKM_LEN_FIELD(0)}),
                     0);
    assert_int_equal(validate_one((pkm_field_t){
                         .type = PKM_T_ARRAY, .elem = &byte_elem, .len_field = PKM_LEN_FIELD(1)}),
                     PKM_ESCHEMA); /* a String */
    assert_int_equal(validate_one((pkm_field_t){
                         .type = PKM_T_ARRAY, .elem = &byte_elem, .len_field = PKM_LEN_FIELD(2)}),
                     PKM_ESCHEMA); /* itself */
    assert_int_equal(validate_one((pkm_field_t){
                         .type = PKM_T_ARRAY, .elem = &byte_elem, .len_field = PKM_LEN_FIELD(7)}),
                     PKM_ESCHEMA); /* later */
    /* an element with its own len_field has no structure to take it from */
    static const pkm_field_t dyn_elem = {
        .type = PKM_T_ARRAY, .elem = &byte_elem, .len_field = PKM_LEN_FIELD(0)};
    assert_int_equal(
        validate_one((pkm_field_t){.type = PKM_T_ARRAY, .elem = &dyn_elem, .fixed_len = 2}),
        PKM_ESCHEMA);
    /* elements that encode to zero bytes */
    assert_int_equal(validate_one((pkm_field_t){
                         .type = PKM_T_ARRAY, .elem = &empty_elem, .len_field = PKM_LEN_FIELD(0)}),
                     PKM_ESCHEMA);
    assert_int_equal(
        validate_one((pkm_field_t){.type = PKM_T_ARRAY, .elem = &zero_arr_elem, .fixed_len = 3}),
        PKM_ESCHEMA);
    /* structs: no schema, a cycle, fields NULL with a count */
    assert_int_equal(validate_one((pkm_field_t){.type = PKM_T_STRUCT}), PKM_ESCHEMA);
    assert_int_equal(pkm_schema_validate(&loop), PKM_ESCHEMA);
    pkm_schema_t nof = {"NoFields", NULL, 2};
    assert_int_equal(pkm_schema_validate(&nof), PKM_ESCHEMA);
    /* a length field beyond the first 64 */
    pkm_field_t many[70];
    for (int i = 0; i < 70; i++)
        many[i] = (pkm_field_t){.type = PKM_T_BYTE};
    many[69] =
        (pkm_field_t){.type = PKM_T_ARRAY, .elem = &byte_elem, .len_field = PKM_LEN_FIELD(63)};
    pkm_schema_t ms = {"Many", many, 70};
    assert_int_equal(pkm_schema_validate(&ms), 0);
    many[69].len_field = PKM_LEN_FIELD(64);
    assert_int_equal(pkm_schema_validate(&ms), PKM_ESCHEMA);
    /* a cyclic schema used directly fails safely */
    uint8_t c[64] = {0};
    pkm_packet_t pkt = {1, 0, c, sizeof c};
    assert_int_equal(pkm_schema_verify(&loop, &pkt), PKM_ESCHEMA);
}

/* ---- random values for a schema ---- */

typedef struct {
    t_rng rng;
    pkm_value_t vals[4096];
    size_t nv;
    uint8_t bytes[65536];
    size_t nb;
} gen_t;

static pkm_value_t *gen_take(gen_t *g, size_t n)
{
    assert_true(g->nv + n <= sizeof g->vals / sizeof g->vals[0]);
    pkm_value_t *p = g->vals + g->nv;
    g->nv += n;
    return p;
}

static uint8_t *gen_bytes(gen_t *g, size_t n)
{
    assert_true(g->nb + n <= sizeof g->bytes);
    uint8_t *p = g->bytes + g->nb;
    g->nb += n;
    return p;
}

static size_t put_cp(uint32_t cp, uint8_t *o)
{
    if (cp < 0x80) return o[0] = (uint8_t)cp, 1;
    if (cp < 0x800) return o[0] = (uint8_t)(0xC0 + cp / 64), o[1] = (uint8_t)(0x80 + cp % 64), 2;
    if (cp < 0x10000)
        return o[0] = (uint8_t)(0xE0 + cp / 4096), o[1] = (uint8_t)(0x80 + cp / 64 % 64),
               o[2] = (uint8_t)(0x80 + cp % 64), 3;
    o[0] = (uint8_t)(0xF0 + cp / 262144);
    o[1] = (uint8_t)(0x80 + cp / 4096 % 64);
    o[2] = (uint8_t)(0x80 + cp / 64 % 64);
    o[3] = (uint8_t)(0x80 + cp % 64);
    return 4;
}

static pkm_str_t gen_text(gen_t *g)
{
    size_t chars = t_rng_next(&g->rng) % 12, n = 0;
    uint8_t *p = gen_bytes(g, chars * 4);
    for (size_t i = 0; i < chars; i++) {
        uint64_t r = t_rng_next(&g->rng);
        uint32_t cp = (uint32_t)(r >> 16) % (r % 3 == 0 ? 0x80 : 0x110000);
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0;
        n += put_cp(cp, p + n);
    }
    return (pkm_str_t){(const char *)p, n};
}

static const char *jsons[] = {"{}", "{\"name\":\"Ash\",\"hours\":12.5}",
                              " {\"a\":[1,2,3],\"b\":{\"c\":null}} ",
                              "{\"emoji\":\"\xF0\x9F\x98\x80\",\"nul\":\"\\u0000\"}"};

static void gen_struct(gen_t *g, const pkm_schema_t *s, pkm_value_t *out);

static void gen_field(gen_t *g, const pkm_field_t *f, pkm_value_t *v, pkm_value_t *siblings)
{
    uint64_t r = t_rng_next(&g->rng);
    memset(v, 0, sizeof *v);
    switch (f->type) {
    case PKM_T_BYTE: v->u64 = r & 0xFF; break;
    case PKM_T_SBYTE: v->i64 = (int8_t)r; break;
    case PKM_T_SHORT: v->i64 = (int16_t)r; break;
    case PKM_T_USHORT: v->u64 = r & 0xFFFF; break;
    case PKM_T_INT: v->i64 = (int32_t)r; break;
    case PKM_T_UINT: v->u64 = r & 0xFFFFFFFFu; break;
    case PKM_T_LONG: v->i64 = (int64_t)r; break;
    case PKM_T_FLOAT: {
        uint32_t b = (uint32_t)r;
        if ((b & 0x7F800000u) == 0x7F800000u) b &= 0xBFFFFFFFu; /* no NaN (nor infinity) */
        memcpy(&v->f32, &b, 4);
        break;
    }
    case PKM_T_DOUBLE:
        if ((r & 0x7FF0000000000000ull) == 0x7FF0000000000000ull) r &= 0xBFFFFFFFFFFFFFFFull;
        memcpy(&v->f64, &r, 8);
        break;
    case PKM_T_BOOL: v->b = r & 1; break;
    case PKM_T_STRING:
    case PKM_T_LSTRING: v->str = gen_text(g); break;
    case PKM_T_JSON:
    case PKM_T_LJSON: {
        const char *j = jsons[r % 4];
        v->str = (pkm_str_t){j, strlen(j)};
        break;
    }
    case PKM_T_VERSION:
        v->version.major = (uint16_t)(1 + r % 256);
        v->version.minor = (uint16_t)(r >> 16 & 0xFF);
        break;
    case PKM_T_UUID: v->uuid = (pkm_uuid_t){r, t_rng_next(&g->rng)}; break;
    case PKM_T_INSTANT:
    case PKM_T_DURATION:
        v->time.seconds =
            (int64_t)(t_rng_next(&g->rng) % 63113779728802800ull) - 31556889864401399ll;
        v->time.nanos = (int32_t)(r % 1000000000u);
        break;
    case PKM_T_ENUM: v->i64 = f->enum_values[r % f->n_enum_values]; break;
    case PKM_T_BITFLAG:
        if (f->base == PKM_T_UUID) {
            v->uuid =
                (pkm_uuid_t){r & ~f->reserved_mask, t_rng_next(&g->rng) & ~f->reserved_mask_lo};
        } else {
            size_t w = f->base == PKM_T_LONG ? 8 : f->base == PKM_T_UINT ? 4 : 1;
            v->u64 = r & ~f->reserved_mask & (w == 8 ? ~0ull : (1ull << (8 * w)) - 1);
        }
        break;
    case PKM_T_ARRAY: {
        size_t n = f->fixed_len;
        if (f->len_field) {
            n = r % 5;
            siblings[f->len_field - 1].i64 = (int64_t)n; /* also the u64, n >= 0 */
        }
        if (f->elem->type == PKM_T_BYTE) {
            uint8_t *p = gen_bytes(g, n);
            t_rng_bytes(&g->rng, p, n);
            v->bytes = (pkm_bytes_t){p, n};
        } else {
            pkm_value_t *items = gen_take(g, n);
            for (size_t i = 0; i < n; i++)
                gen_field(g, f->elem, &items[i], NULL);
            v->array = (pkm_array_t){items, n};
        }
        break;
    }
    case PKM_T_STRUCT: {
        pkm_value_t *fs = gen_take(g, f->sub->n_fields);
        gen_struct(g, f->sub, fs);
        v->structure = (pkm_structure_t){fs, f->sub->n_fields};
        break;
    }
    }
}

static void gen_struct(gen_t *g, const pkm_schema_t *s, pkm_value_t *out)
{
    for (size_t i = 0; i < s->n_fields; i++)
        gen_field(g, &s->fields[i], &out[i], out);
}

/* Deep comparison of values by schema (text compared as UTF-8 bytes). */
static void same_struct(const pkm_schema_t *s, const pkm_value_t *a, const pkm_value_t *b);

static void same_field(const pkm_field_t *f, const pkm_value_t *a, const pkm_value_t *b)
{
    switch (f->type) {
    case PKM_T_FLOAT: assert_memory_equal(&a->f32, &b->f32, 4); break;
    case PKM_T_DOUBLE: assert_memory_equal(&a->f64, &b->f64, 8); break;
    case PKM_T_BOOL: assert_int_equal(a->b, b->b); break;
    case PKM_T_STRING:
    case PKM_T_LSTRING:
    case PKM_T_JSON:
    case PKM_T_LJSON:
        assert_int_equal(a->str.len, b->str.len);
        assert_memory_equal(a->str.ptr, b->str.ptr, a->str.len);
        assert_int_equal(b->str.ptr[b->str.len], '\0');
        break;
    case PKM_T_VERSION:
        assert_int_equal(a->version.major, b->version.major);
        assert_int_equal(a->version.minor, b->version.minor);
        break;
    case PKM_T_UUID: assert_true(a->uuid.msb == b->uuid.msb && a->uuid.lsb == b->uuid.lsb); break;
    case PKM_T_INSTANT:
    case PKM_T_DURATION:
        assert_true(a->time.seconds == b->time.seconds);
        assert_int_equal(a->time.nanos, b->time.nanos);
        break;
    case PKM_T_BITFLAG:
        if (f->base == PKM_T_UUID)
            assert_true(a->uuid.msb == b->uuid.msb && a->uuid.lsb == b->uuid.lsb);
        else
            assert_true(a->u64 == b->u64);
        break;
    case PKM_T_ARRAY:
        if (f->elem->type == PKM_T_BYTE) {
            assert_int_equal(a->bytes.len, b->bytes.len);
            if (a->bytes.len) assert_memory_equal(a->bytes.ptr, b->bytes.ptr, a->bytes.len);
        } else {
            assert_int_equal(a->array.n, b->array.n);
            for (size_t i = 0; i < a->array.n; i++)
                same_field(f->elem, &a->array.items[i], &b->array.items[i]);
        }
        break;
    case PKM_T_STRUCT:
        assert_int_equal(b->structure.n, f->sub->n_fields);
        same_struct(f->sub, a->structure.fields, b->structure.fields);
        break;
    default: assert_true(a->i64 == b->i64); break;
    }
}

static void same_struct(const pkm_schema_t *s, const pkm_value_t *a, const pkm_value_t *b)
{
    for (size_t i = 0; i < s->n_fields; i++)
        same_field(&s->fields[i], &a[i], &b[i]);
}

/* Encodes random values, decodes, compares, re-encodes the decoded values to the same bytes. */
static void round_trip(const pkm_schema_t *s, uint64_t seed, int iters)
{
    static gen_t g;
    static uint8_t out[65536], again[65536];
    t_rng_seed(&g.rng, seed);
    for (int it = 0; it < iters; it++) {
        g.nv = g.nb = 0;
        pkm_value_t *v = gen_take(&g, s->n_fields);
        gen_struct(&g, s, v);
        size_t len, size, len2;
        assert_int_equal(pkm_schema_size(s, v, s->n_fields, &size), 0);
        assert_int_equal(pkm_schema_encode_packet(s, 0x42, v, s->n_fields, out, sizeof out, &len),
                         0);
        assert_int_equal(len, PKM_HEADER_SIZE + size);
        pkm_packet_t pkt;
        assert_int_equal(pkm_packet_header_read(out, PKM_DEFAULT_MAX_SIZE, &pkt), 0);
        pkt.content = out + PKM_HEADER_SIZE;
        assert_int_equal(pkm_schema_verify(s, &pkt), 0);
        pkm_msg_t *m;
        assert_int_equal(pkm_schema_decode(s, &pkt, &m), 0);
        size_t n;
        const pkm_value_t *d = pkm_msg_fields(m, &n);
        assert_int_equal(n, s->n_fields);
        same_struct(s, v, d);
        assert_int_equal(pkm_schema_encode_packet(s, 0x42, d, n, again, sizeof again, &len2), 0);
        assert_int_equal(len2, len);
        assert_memory_equal(again, out, len);
        pkm_msg_free(m);
    }
}

static void random_round_trips(void **state)
{
    (void)state;
    round_trip(&small, 1, 300);
    round_trip(&inner, 2, 300);
    round_trip(&every, 3, 300);
}

/* ---- faults on an encoded packet ---- */

static size_t encode_every(uint64_t seed, uint8_t *out, size_t cap)
{
    static gen_t g;
    t_rng_seed(&g.rng, seed);
    g.nv = g.nb = 0;
    pkm_value_t *v = gen_take(&g, every.n_fields);
    gen_struct(&g, &every, v);
    size_t len;
    assert_int_equal(pkm_schema_encode_packet(&every, 0x42, v, every.n_fields, out, cap, &len), 0);
    return len;
}

static void truncation_size_hash(void **state)
{
    (void)state;
    static uint8_t out[65536], copy[65536];
    for (uint64_t seed = 10; seed < 20; seed++) {
        size_t len = encode_every(seed, out, sizeof out);
        pkm_packet_t pkt;
        assert_int_equal(pkm_packet_header_read(out, PKM_DEFAULT_MAX_SIZE, &pkt), 0);
        size_t size = pkt.size;
        assert_int_equal(size, len - PKM_HEADER_SIZE);
        /* content cut at every byte: a copy of exactly that many bytes, so ASan sees any
         * read past the end */
        for (size_t k = 0; k < size; k++) {
            uint8_t *c = malloc(k ? k : 1);
            memcpy(c, out + PKM_HEADER_SIZE, k);
            pkm_packet_t t = {pkt.id, pkt.hash, c, k};
            pkm_msg_t *m = (pkm_msg_t *)1;
            assert_int_equal(pkm_schema_verify(&every, &t), PKM_ETRUNC);
            assert_int_equal(pkm_schema_decode(&every, &t, &m), PKM_ETRUNC);
            assert_null(m);
            free(c);
        }
        /* one byte more is a Size fault */
        memcpy(copy, out + PKM_HEADER_SIZE, size);
        copy[size] = 0;
        pkm_packet_t t = {pkt.id, pkt.hash, copy, size + 1};
        assert_int_equal(pkm_schema_verify(&every, &t), PKM_ESIZE);
        /* every flipped Hash bit is a Hash fault */
        for (int bit = 0; bit < 32; bit++) {
            t = (pkm_packet_t){pkt.id, pkt.hash ^ (1u << bit), copy, size};
            assert_int_equal(pkm_schema_verify(&every, &t), PKM_EHASH);
        }
        t = (pkm_packet_t){pkt.id, pkt.hash, copy, size};
        assert_int_equal(pkm_schema_verify(&every, &t), 0);
    }
    /* an empty content with a zero-field schema: Hash = id*31 */
    pkm_packet_t e = {0x10, 0x10 * 31, NULL, 0};
    assert_int_equal(pkm_schema_verify(&empty_schema, &e), 0);
    e.hash++;
    assert_int_equal(pkm_schema_verify(&empty_schema, &e), PKM_EHASH);
    e = (pkm_packet_t){0x10, 0, NULL, 5};
    assert_int_equal(pkm_schema_verify(&empty_schema, &e), PKM_EINVAL);
}

static void encode_short_room(void **state)
{
    (void)state;
    static uint8_t full[65536], out[65536];
    size_t len = encode_every(99, full, sizeof full);
    static gen_t g;
    t_rng_seed(&g.rng, 99);
    g.nv = g.nb = 0;
    pkm_value_t *v = gen_take(&g, every.n_fields);
    gen_struct(&g, &every, v);
    for (size_t cap = 0; cap < len; cap++) {
        uint8_t *o = malloc(cap ? cap : 1);
        size_t got;
        assert_int_equal(pkm_schema_encode_packet(&every, 0x42, v, every.n_fields, o, cap, &got),
                         PKM_ENOSPC);
        free(o);
    }
    size_t got;
    assert_int_equal(pkm_schema_encode_packet(&every, 0x42, v, every.n_fields, out, len, &got), 0);
    assert_memory_equal(out, full, len);
    /* the allocating encoders */
    uint8_t *a;
    size_t alen;
    uint32_t ch;
    assert_int_equal(pkm_schema_encode_alloc(&every, v, every.n_fields, &a, &alen, &ch), 0);
    assert_int_equal(alen, len - PKM_HEADER_SIZE);
    assert_memory_equal(a, full + PKM_HEADER_SIZE, alen);
    assert_int_equal(pkm_packet_hash(0x42, ch),
                     (uint32_t)full[1] << 24 | full[2] << 16 | full[3] << 8 | full[4]);
    pkm_bytes_free(a);
    pkm_registry_t *reg = pkm_registry_new();
    assert_int_equal(pkm_registry_register(reg, 0x42, &every), 0);
    assert_int_equal(pkm_registry_encode_alloc(reg, 0x42, v, every.n_fields, &a, &alen), 0);
    assert_int_equal(alen, len);
    assert_memory_equal(a, full, len);
    pkm_bytes_free(a);
    pkm_registry_free(reg);
}

/* ---- array lengths ---- */

static void array_lengths(void **state)
{
    (void)state;
    static const pkm_field_t f[] = {
        {.name = "n", .type = PKM_T_INT},
        {.name = "v", .type = PKM_T_ARRAY, .elem = &long_elem, .len_field = PKM_LEN_FIELD(0)},
    };
    static const pkm_schema_t s = {"Dyn", f, 2};
    assert_int_equal(pkm_schema_validate(&s), 0);
    uint8_t out[64];
    size_t len;
    const pkm_value_t items[] = {PKM_V_I(1), PKM_V_I(2)};
    pkm_value_t v[] = {PKM_V_I(2), PKM_V_ARRAY(items, 2)};
    assert_int_equal(pkm_schema_encode(&s, v, 2, out, sizeof out, &len, NULL), 0);
    assert_int_equal(len, 4 + 16);
    /* the length field must match */
    v[0] = PKM_V_I(3);
    assert_int_equal(pkm_schema_encode(&s, v, 2, out, sizeof out, &len, NULL), PKM_EARRLEN);
    v[0] = PKM_V_I(-2);
    assert_int_equal(pkm_schema_encode(&s, v, 2, out, sizeof out, &len, NULL), PKM_EARRLEN);
    /* fixed lengths must match too */
    static const pkm_field_t fx[] = {
        {.name = "v", .type = PKM_T_ARRAY, .elem = &byte_elem, .fixed_len = 4}};
    static const pkm_schema_t sx = {"Fixed", fx, 1};
    static const uint8_t three[3] = {1, 2, 3};
    pkm_value_t bv = PKM_V_BYTES(three, 3);
    assert_int_equal(pkm_schema_encode(&sx, &bv, 1, out, sizeof out, &len, NULL), PKM_EARRLEN);
    /* wrong field counts */
    assert_int_equal(pkm_schema_encode(&s, v, 1, out, sizeof out, &len, NULL), PKM_ETYPE);
    pkm_value_t sv = PKM_V_STRUCT(NULL, 1);
    pkm_field_t sf = {.type = PKM_T_STRUCT, .sub = &small};
    pkm_schema_t ss = {"S", &sf, 1};
    assert_int_equal(pkm_schema_encode(&ss, &sv, 1, out, sizeof out, &len, NULL), PKM_ETYPE);

    /* decode: negative length */
    uint8_t in[64];
    int n = t_unhex("FF FF FF FF", in, sizeof in);
    pkm_packet_t pkt = {1, 0, in, (size_t)n};
    assert_int_equal(pkm_schema_verify(&s, &pkt), PKM_ENEGLEN);
    n = t_unhex("80 00 00 00", in, sizeof in);
    assert_int_equal(pkm_schema_verify(&s, &pkt), PKM_ENEGLEN);
    /* a length beyond the remaining content: 2 Longs announced, 15 bytes present */
    n = t_unhex("00 00 00 02 000000000000000100000000000000", in, sizeof in);
    pkt.size = (size_t)n;
    assert_int_equal(pkm_schema_verify(&s, &pkt), PKM_ETRUNC);
    /* a hostile length is refused before anything is allocated for it */
    n = t_unhex("7F FF FF FF 0000000000000001", in, sizeof in);
    pkt.size = (size_t)n;
    pkm_msg_t *m = (pkm_msg_t *)1;
    count_alloc_start(SIZE_MAX);
    assert_int_equal(pkm_schema_verify(&s, &pkt), PKM_ETRUNC);
    assert_int_equal(pkm_schema_decode(&s, &pkt, &m), PKM_ETRUNC);
    count_alloc_stop();
    assert_int_equal(n_allocs, 0);
    assert_null(m);
    /* same for a Byte Array with an Unsigned Int length */
    static const pkm_field_t fb[] = {
        {.name = "n", .type = PKM_T_UINT},
        {.name = "v", .type = PKM_T_ARRAY, .elem = &byte_elem, .len_field = PKM_LEN_FIELD(0)},
    };
    static const pkm_schema_t sb = {"DynB", fb, 2};
    n = t_unhex("FF FF FF FF 01 02", in, sizeof in);
    pkt.size = (size_t)n;
    assert_int_equal(pkm_schema_verify(&sb, &pkt), PKM_ETRUNC);
}

static void allocation_counts(void **state)
{
    (void)state;
    static uint8_t out[65536];
    size_t len = encode_every(7, out, sizeof out);
    pkm_packet_t pkt;
    assert_int_equal(pkm_packet_header_read(out, PKM_DEFAULT_MAX_SIZE, &pkt), 0);
    pkt.content = out + PKM_HEADER_SIZE;
    (void)len;
    pkm_registry_t *reg = pkm_registry_new();
    assert_int_equal(pkm_registry_register(reg, 0x42, &every), 0);
    count_alloc_start(SIZE_MAX);
    /* (jansson's own allocations for the Json check do not go through the hook) */
    assert_int_equal(pkm_registry_verify(reg, &pkt), 0);
    assert_int_equal(n_allocs, 0);
    pkm_msg_t *m;
    assert_int_equal(pkm_registry_decode(reg, &pkt, &m), 0);
    assert_int_equal(n_allocs, 1);
    pkm_msg_free(m);
    /* encoding into caller memory allocates nothing */
    n_allocs = 0;
    static uint8_t again[65536];
    size_t n, l2;
    pkm_msg_t *m2;
    count_alloc_stop();
    assert_int_equal(pkm_registry_decode(reg, &pkt, &m2), 0);
    const pkm_value_t *vals = pkm_msg_fields(m2, &n);
    count_alloc_start(SIZE_MAX);
    assert_int_equal(pkm_registry_encode(reg, 0x42, vals, n, again, sizeof again, &l2), 0);
    assert_int_equal(n_allocs, 0);
    /* a failing allocator: ENOMEM, nothing leaked (ASan checks) */
    count_alloc_start(0);
    m = (pkm_msg_t *)1;
    assert_int_equal(pkm_registry_decode(reg, &pkt, &m), PKM_ENOMEM);
    assert_null(m);
    assert_null(pkm_registry_new());
    uint8_t *a;
    assert_int_equal(pkm_registry_encode_alloc(reg, 0x42, vals, n, &a, &l2), PKM_ENOMEM);
    count_alloc_stop();
    pkm_msg_free(m2);
    pkm_registry_free(reg);
}

static void deep_nesting(void **state)
{
    (void)state;
    /* a chain of structures PKM_SCHEMA_MAX_DEPTH deep is fine, one more is not */
    static pkm_schema_t chain[PKM_SCHEMA_MAX_DEPTH + 2];
    static pkm_field_t cf[PKM_SCHEMA_MAX_DEPTH + 2];
    static const pkm_field_t leaf = {.type = PKM_T_BYTE};
    chain[0] = (pkm_schema_t){"leaf", &leaf, 1};
    for (int i = 1; i < PKM_SCHEMA_MAX_DEPTH + 2; i++) {
        cf[i] = (pkm_field_t){.type = PKM_T_STRUCT, .sub = &chain[i - 1]};
        chain[i] = (pkm_schema_t){"link", &cf[i], 1};
    }
    assert_int_equal(pkm_schema_validate(&chain[PKM_SCHEMA_MAX_DEPTH]), 0);
    assert_int_equal(pkm_schema_validate(&chain[PKM_SCHEMA_MAX_DEPTH + 1]), PKM_ESCHEMA);
    uint8_t one[1] = {7};
    /* 32 nested levels around one Byte 7: each single-field level keeps the hash 7 */
    pkm_packet_t pkt = {0, 7, one, 1};
    assert_int_equal(pkm_schema_verify(&chain[PKM_SCHEMA_MAX_DEPTH], &pkt), 0);
    assert_int_equal(pkm_schema_verify(&chain[PKM_SCHEMA_MAX_DEPTH + 1], &pkt), PKM_ESCHEMA);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handshake_packet),     cmocka_unit_test(registry_ids),
        cmocka_unit_test(small_packet_by_hand), cmocka_unit_test(validator),
        cmocka_unit_test(random_round_trips),   cmocka_unit_test(truncation_size_hash),
        cmocka_unit_test(encode_short_room),    cmocka_unit_test(array_lengths),
        cmocka_unit_test(allocation_counts),    cmocka_unit_test(deep_nesting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
