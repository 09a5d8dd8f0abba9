/* SPDX-License-Identifier: MIT */
/* Packet schemas: the validator, the generic encoder and the two-pass decoder (verify without
 * memory, then fill one arena), decoded messages, and the id -> schema registry. */
#include <stdalign.h>
#include "pkmcom/schema.h"
#include "internal.h"
#include "apl_internal.h"
#include "schema_err.h"

/* ======================================================================== validation */

struct vctx {
    size_t budget; /* field visits left: bounds the work on a pathological (e.g. cyclic) table */
};

static bool is_plain_int(pkm_type_t t)
{
    return pkm__int_width(t) != 0;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a + b < a ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    if (a && b > UINT64_MAX / a) return UINT64_MAX;
    return a * b;
}

static int validate_struct(struct vctx *c, const pkm_schema_t *s, int depth, uint64_t *min);

/* Validates field f (index `index` of structure s, or an array element when s is NULL) and gives
 * the least number of bytes it can encode to. */
static int validate_field(struct vctx *c, const pkm_field_t *f, const pkm_schema_t *s, size_t index,
                          int depth, uint64_t *min)
{
    if (depth > PKM_SCHEMA_MAX_DEPTH || c->budget == 0) return PKM_ESCHEMA;
    c->budget--;
    switch (f->type) {
    case PKM_T_BYTE:
    case PKM_T_SBYTE:
    case PKM_T_SHORT:
    case PKM_T_USHORT:
    case PKM_T_INT:
    case PKM_T_UINT:
    case PKM_T_LONG:
    case PKM_T_FLOAT:
    case PKM_T_DOUBLE:
    case PKM_T_BOOL:
    case PKM_T_VERSION:
    case PKM_T_UUID:
    case PKM_T_INSTANT:
    case PKM_T_DURATION: *min = pkm__type_fixed_size(f->type); return 0;
    case PKM_T_STRING:
    case PKM_T_JSON: *min = 2; return 0;
    case PKM_T_LSTRING:
    case PKM_T_LJSON: *min = 4; return 0;
    case PKM_T_ENUM: {
        size_t w = pkm__int_width(f->base);
        if (!w || !f->enum_values || f->n_enum_values == 0) return PKM_ESCHEMA;
        int64_t lo, hi;
        if (w == 8) {
            lo = INT64_MIN;
            hi = INT64_MAX;
        } else if (pkm__int_signed(f->base)) {
            hi = ((int64_t)1 << (w * 8 - 1)) - 1;
            lo = -hi - 1;
        } else {
            lo = 0;
            hi = ((int64_t)1 << (w * 8)) - 1;
        }
        for (size_t i = 0; i < f->n_enum_values; i++)
            if (f->enum_values[i] < lo || f->enum_values[i] > hi) return PKM_ESCHEMA;
        *min = w;
        return 0;
    }
    case PKM_T_BITFLAG:
        if (f->base == PKM_T_UUID) {
            *min = 16;
            return 0;
        } else {
            size_t w = pkm__int_width(f->base);
            if (!w || f->reserved_mask_lo) return PKM_ESCHEMA;
            if (w < 8 && (f->reserved_mask >> (w * 8))) return PKM_ESCHEMA;
            *min = w;
            return 0;
        }
    case PKM_T_ARRAY: {
        if (!f->elem) return PKM_ESCHEMA;
        if (f->len_field) {
            size_t k = f->len_field - 1;
            if (!s || k >= index || k >= PKM_SCHEMA_MAX_LEN_INDEX ||
                !is_plain_int(s->fields[k].type))
                return PKM_ESCHEMA;
        }
        uint64_t emin;
        PKM_GUARD(validate_field(c, f->elem, NULL, 0, depth + 1, &emin));
        /* An element of zero bytes would let a length word stand for work without input. */
        if (emin == 0) return PKM_ESCHEMA;
        *min = f->len_field ? 0 : sat_mul(emin, f->fixed_len);
        return 0;
    }
    case PKM_T_STRUCT:
        if (!f->sub) return PKM_ESCHEMA;
        return validate_struct(c, f->sub, depth + 1, min);
    default: return PKM_ESCHEMA;
    }
}

static int validate_struct(struct vctx *c, const pkm_schema_t *s, int depth, uint64_t *min)
{
    if (depth > PKM_SCHEMA_MAX_DEPTH) return PKM_ESCHEMA;
    if (!s->fields && s->n_fields) return PKM_ESCHEMA;
    uint64_t total = 0;
    for (size_t i = 0; i < s->n_fields; i++) {
        uint64_t m;
        PKM_GUARD(validate_field(c, &s->fields[i], s, i, depth, &m));
        total = sat_add(total, m);
    }
    *min = total;
    return 0;
}

int pkm_schema_validate(const pkm_schema_t *s)
{
    if (!s) return PKM_EINVAL;
    struct vctx c = {1u << 16};
    uint64_t min;
    PKM_GUARD(validate_struct(&c, s, 0, &min));
    return min > INT32_MAX ? PKM_ESCHEMA : 0;
}

/* ======================================================================== encoding */

static int enc_struct(pkm_writer *w, const pkm_schema_t *s, const pkm_value_t *vals, size_t n,
                      unsigned flags, int depth, uint32_t *hash);

/* The element count an array field must have: fixed_len, or the value of its length field
 * (vals[k] of the enclosing structure's values). */
static int enc_expected_len(const pkm_field_t *f, const pkm_schema_t *s, const pkm_value_t *vals,
                            size_t index, uint64_t *n)
{
    if (!f->len_field) {
        *n = f->fixed_len;
        return 0;
    }
    size_t k = f->len_field - 1;
    if (!s || k >= index || !is_plain_int(s->fields[k].type)) return PKM_ESCHEMA;
    if (pkm__int_signed(s->fields[k].type)) {
        if (vals[k].i64 < 0) return PKM_EARRLEN;
        *n = (uint64_t)vals[k].i64;
    } else {
        *n = vals[k].u64;
    }
    return 0;
}

static int enc_field(pkm_writer *w, const pkm_field_t *f, const pkm_value_t *v,
                     const pkm_schema_t *s, const pkm_value_t *vals, size_t index, unsigned flags,
                     int depth, uint32_t *hash)
{
    if (depth > PKM_SCHEMA_MAX_DEPTH) return PKM_ESCHEMA;
    if (f->type == PKM_T_STRUCT) {
        if (!f->sub) return PKM_ESCHEMA;
        return enc_struct(w, f->sub, v->structure.fields, v->structure.n, flags, depth + 1, hash);
    }
    if (f->type != PKM_T_ARRAY) return pkm__apl_write(w, f, v, flags, hash);

    const pkm_field_t *e = f->elem;
    if (!e) return PKM_ESCHEMA;
    uint64_t want;
    PKM_GUARD(enc_expected_len(f, s, vals, index, &want));
    if (e->type == PKM_T_BYTE) {
        /* Byte Array: one contiguous run, hashed as a whole */
        if (!v->bytes.ptr && v->bytes.len) return PKM_EINVAL;
        if (v->bytes.len != want) return PKM_EARRLEN;
        size_t at;
        PKM_GUARD(pkm__write_reserve(w, v->bytes.len, &at));
        uint8_t *dst = pkm__writer_at(w, at);
        if (dst && v->bytes.len) memcpy(dst, v->bytes.ptr, v->bytes.len);
        *hash = dst ? pkm_hashsum_bytes(dst, v->bytes.len) : 0;
        return 0;
    }
    if (!v->array.items && v->array.n) return PKM_EINVAL;
    if (v->array.n != want) return PKM_EARRLEN;
    uint32_t h = 0;
    for (size_t j = 0; j < v->array.n; j++) {
        uint32_t eh;
        size_t at = w->pos;
        int rc = enc_field(w, e, &v->array.items[j], NULL, NULL, 0, flags, depth + 1, &eh);
        if (rc < 0) return pkm__serr_elem(rc, j, at);
        h = pkm_hash_step(h, eh);
    }
    *hash = h;
    return 0;
}

static int enc_struct(pkm_writer *w, const pkm_schema_t *s, const pkm_value_t *vals, size_t n,
                      unsigned flags, int depth, uint32_t *hash)
{
    if (depth > PKM_SCHEMA_MAX_DEPTH || (!s->fields && s->n_fields)) return PKM_ESCHEMA;
    if (n != s->n_fields)
        return pkm__serr_note(PKM_ETYPE, w->pos, "%zu values given for the %zu fields of %.40s", n,
                              s->n_fields, s->name ? s->name : "the structure");
    if (n && !vals) return PKM_EINVAL;
    uint32_t h = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t fh;
        size_t at = w->pos;
        int rc = enc_field(w, &s->fields[i], &vals[i], s, vals, i, flags, depth, &fh);
        if (rc < 0) return pkm__serr_field(rc, s->fields[i].name, i, at);
        h = pkm_hash_step(h, fh);
    }
    *hash = h;
    return 0;
}

static int encode_content(const pkm_schema_t *s, const pkm_value_t *fields, size_t n, pkm_writer *w,
                          unsigned flags, uint32_t *hash)
{
    if (!s) return PKM_EINVAL;
    size_t start = w->pos;
    PKM_GUARD(enc_struct(w, s, fields, n, flags, 0, hash));
    if (w->pos - start > INT32_MAX)
        return pkm__serr_note(PKM_ETOOLONG, PKM__SERR_NO_OFFSET, "content of %zu bytes",
                              w->pos - start);
    return 0;
}

int pkm_schema_size(const pkm_schema_t *s, const pkm_value_t *fields, size_t n, size_t *size)
{
    pkm__serr_reset();
    if (!size) return PKM_EINVAL;
    pkm_writer w;
    pkm__writer_init(&w, NULL, 0);
    uint32_t h;
    PKM_GUARD(pkm__serr_top(encode_content(s, fields, n, &w, PKM__W_NOJSON, &h), -1, s));
    *size = w.pos;
    return 0;
}

int pkm_schema_encode(const pkm_schema_t *s, const pkm_value_t *fields, size_t n, uint8_t *out,
                      size_t cap, size_t *len, uint32_t *content_hash)
{
    pkm__serr_reset();
    if (!out || !len) return PKM_EINVAL;
    pkm_writer w;
    pkm__writer_init(&w, out, cap);
    uint32_t h;
    PKM_GUARD(pkm__serr_top(encode_content(s, fields, n, &w, 0, &h), -1, s));
    *len = w.pos;
    if (content_hash) *content_hash = h;
    return 0;
}

int pkm_schema_encode_alloc(const pkm_schema_t *s, const pkm_value_t *fields, size_t n,
                            uint8_t **out, size_t *len, uint32_t *content_hash)
{
    pkm__serr_reset();
    if (!out || !len) return PKM_EINVAL;
    *out = NULL;
    size_t size;
    PKM_GUARD(pkm_schema_size(s, fields, n, &size));
    uint8_t *buf = pkm__malloc(size ? size : 1);
    PKM_ENSURE(buf != NULL, PKM_ENOMEM);
    int rc;
    PKM_GUARD_GOTO(rc, pkm_schema_encode(s, fields, n, buf, size, len, content_hash));
    *out = buf;
    return 0;
cleanup:
    pkm__free(buf);
    return rc;
}

int pkm_schema_encode_packet(const pkm_schema_t *s, uint8_t id, const pkm_value_t *fields, size_t n,
                             uint8_t *out, size_t cap, size_t *len)
{
    pkm__serr_reset();
    if (!out || !len) return PKM_EINVAL;
    if (cap < PKM_HEADER_SIZE) return pkm__serr_top(PKM_ENOSPC, id, s);
    size_t clen;
    uint32_t ch;
    PKM_GUARD(pkm__serr_top(
        pkm_schema_encode(s, fields, n, out + PKM_HEADER_SIZE, cap - PKM_HEADER_SIZE, &clen, &ch),
        id, s));
    PKM_GUARD(pkm_packet_header_write(out, id, pkm_packet_hash(id, ch), clen));
    *len = PKM_HEADER_SIZE + clen;
    return 0;
}

void pkm_bytes_free(uint8_t *p)
{
    pkm__free(p);
}

/* ======================================================================== decoding */

/* Pass 1 (verify: nodes == NULL) checks everything and counts the value slots needed; pass 2
 * (fill) runs over the same, now trusted, bytes and stores values into one arena. */
struct dec {
    pkm_reader r;
    pkm_value_t *nodes; /* fill: the arena's value slots */
    size_t node_cap, node_pos;
    size_t node_count; /* verify: slots needed below the top level */
    pkm__text text;    /* fill: where text and Byte Arrays go */
};

static int dec_struct(struct dec *d, const pkm_schema_t *s, pkm_value_t *out, int depth,
                      uint32_t *hash);

/* Takes n value slots: from the arena (fill) or from the count (verify: *slots = NULL). */
static int take_slots(struct dec *d, size_t n, pkm_value_t **slots)
{
    if (!d->nodes) {
        if (d->node_count > SIZE_MAX - n) return PKM_ETOOLONG;
        d->node_count += n;
        *slots = NULL;
        return 0;
    }
    if (d->node_cap - d->node_pos < n) return PKM_EINTERNAL;
    *slots = d->nodes + d->node_pos;
    d->node_pos += n;
    return 0;
}

/* lens: the enclosing structure's integer values so far (NULL for an array element). */
static int dec_field(struct dec *d, const pkm_field_t *f, pkm_value_t *v, const pkm_schema_t *s,
                     const int64_t *lens, size_t index, int depth, uint32_t *hash)
{
    bool fill = d->nodes != NULL;
    if (depth > PKM_SCHEMA_MAX_DEPTH) return PKM_ESCHEMA;
    if (f->type == PKM_T_STRUCT) {
        const pkm_schema_t *sub = f->sub;
        if (!sub) return PKM_ESCHEMA;
        pkm_value_t *slots;
        PKM_GUARD(take_slots(d, sub->n_fields, &slots));
        v->structure.fields = slots;
        v->structure.n = sub->n_fields;
        return dec_struct(d, sub, slots, depth + 1, hash);
    }
    if (f->type != PKM_T_ARRAY) return pkm__apl_read(&d->r, f, v, fill ? &d->text : NULL, hash);

    const pkm_field_t *e = f->elem;
    if (!e) return PKM_ESCHEMA;
    size_t left = pkm__reader_left(&d->r);
    uint64_t n = f->fixed_len;
    if (f->len_field) {
        size_t k = f->len_field - 1;
        if (!lens || k >= index || k >= PKM_SCHEMA_MAX_LEN_INDEX ||
            !is_plain_int(s->fields[k].type))
            return PKM_ESCHEMA;
        if (lens[k] < 0) return PKM_ENEGLEN;
        /* Never trust a length word further than the bytes that are actually there. */
        if ((uint64_t)lens[k] > left) return PKM_ETRUNC;
        n = (uint64_t)lens[k];
    }
    size_t esize = pkm__field_fixed_size(e);
    if (esize && n > left / esize) return PKM_ETRUNC;

    if (e->type == PKM_T_BYTE) {
        const uint8_t *p;
        PKM_GUARD(pkm__read_ptr(&d->r, &p, (size_t)n));
        if (fill) {
            if (d->text.cap - d->text.pos < n) return PKM_EINTERNAL;
            uint8_t *dst = (uint8_t *)d->text.p + d->text.pos;
            if (n) memcpy(dst, p, (size_t)n);
            d->text.pos += (size_t)n;
            v->bytes.ptr = dst;
        } else {
            v->bytes.ptr = NULL;
            *hash = pkm_hashsum_bytes(p, (size_t)n);
        }
        v->bytes.len = (size_t)n;
        return 0;
    }
    pkm_value_t *items;
    PKM_GUARD(take_slots(d, (size_t)n, &items));
    v->array.items = items;
    v->array.n = (size_t)n;
    uint32_t h = 0;
    for (size_t j = 0; j < n; j++) {
        pkm_value_t tmp;
        uint32_t eh = 0;
        size_t at = d->r.pos;
        int rc = dec_field(d, e, items ? &items[j] : &tmp, NULL, NULL, 0, depth + 1, &eh);
        if (rc < 0) return pkm__serr_elem(rc, j, at);
        h = pkm_hash_step(h, eh);
    }
    *hash = h;
    return 0;
}

static int dec_struct(struct dec *d, const pkm_schema_t *s, pkm_value_t *out, int depth,
                      uint32_t *hash)
{
    if (depth > PKM_SCHEMA_MAX_DEPTH || (!s->fields && s->n_fields)) return PKM_ESCHEMA;
    /* The integer fields seen so far, for arrays whose length one of them gives. Kept here, not
     * in `out`, because the verify pass stores no values. */
    int64_t lens[PKM_SCHEMA_MAX_LEN_INDEX];
    uint32_t h = 0;
    for (size_t i = 0; i < s->n_fields; i++) {
        const pkm_field_t *f = &s->fields[i];
        pkm_value_t tmp, *v = out ? &out[i] : &tmp;
        uint32_t fh = 0;
        size_t at = d->r.pos;
        int rc = dec_field(d, f, v, s, lens, i, depth, &fh);
        if (rc < 0) return pkm__serr_field(rc, f->name, i, at);
        if (i < PKM_SCHEMA_MAX_LEN_INDEX && is_plain_int(f->type)) lens[i] = v->i64;
        h = pkm_hash_step(h, fh);
    }
    *hash = h;
    return 0;
}

static int check_packet(const pkm_schema_t *s, const pkm_packet_t *pkt)
{
    if (!s || !pkt || (!pkt->content && pkt->size)) return PKM_EINVAL;
    if (pkt->size > INT32_MAX) return PKM_ENEGLEN;
    return 0;
}

/* Pass 1. *slots receives the number of value slots a message needs. */
static int verify(const pkm_schema_t *s, const pkm_packet_t *pkt, size_t *slots)
{
    PKM_GUARD(check_packet(s, pkt));
    struct dec d;
    memset(&d, 0, sizeof d);
    pkm__reader_init(&d.r, pkt->content, pkt->size);
    uint32_t h;
    PKM_GUARD(dec_struct(&d, s, NULL, 0, &h));
    size_t left = pkm__reader_left(&d.r);
    if (left != 0)
        return pkm__serr_note(PKM_ESIZE, d.r.pos, "%zu bytes after the last field", left);
    uint32_t want = pkm_packet_hash(pkt->id, h);
    if (want != pkt->hash)
        return pkm__serr_note(PKM_EHASH, PKM__SERR_NO_OFFSET,
                              "the packet says 0x%08X, its content gives 0x%08X",
                              (unsigned)pkt->hash, (unsigned)want);
    if (d.node_count > SIZE_MAX - s->n_fields) return PKM_ETOOLONG;
    *slots = d.node_count + s->n_fields;
    return 0;
}

int pkm_schema_verify(const pkm_schema_t *s, const pkm_packet_t *pkt)
{
    size_t slots;
    pkm__serr_reset();
    return pkm__serr_top(verify(s, pkt, &slots), pkt ? pkt->id : -1, s);
}

struct pkm_msg {
    const pkm_schema_t *schema;
    pkm_value_t *fields;
    size_t n_fields;
    uint8_t id;
};

/* The arena: the header, rounded up so that the value slots that follow are aligned, then the
 * slots, then the text (every string's UTF-8 plus NUL is no longer than its prefix and Modified
 * UTF-8, and a Byte Array is as long as itself, so the content size bounds it). */
#define MSG_HEAD                                                                                   \
    ((sizeof(struct pkm_msg) + alignof(pkm_value_t) - 1) / alignof(pkm_value_t) *                  \
     alignof(pkm_value_t))

int pkm_schema_decode(const pkm_schema_t *s, const pkm_packet_t *pkt, pkm_msg_t **out)
{
    pkm__serr_reset();
    if (!out) return PKM_EINVAL;
    *out = NULL;
    size_t slots;
    PKM_GUARD(pkm__serr_top(verify(s, pkt, &slots), pkt ? pkt->id : -1, s));
    if (slots > (SIZE_MAX - MSG_HEAD - pkt->size - 1) / sizeof(pkm_value_t)) return PKM_ENOMEM;
    size_t text_cap = pkt->size + 1;
    size_t total = MSG_HEAD + slots * sizeof(pkm_value_t) + text_cap;
    uint8_t *mem = pkm__malloc(total);
    PKM_ENSURE(mem != NULL, PKM_ENOMEM);
    struct pkm_msg *m = (struct pkm_msg *)(void *)mem;
    m->schema = s;
    m->id = pkt->id;
    m->fields = (pkm_value_t *)(void *)(mem + MSG_HEAD);
    m->n_fields = s->n_fields;

    struct dec d;
    memset(&d, 0, sizeof d);
    pkm__reader_init(&d.r, pkt->content, pkt->size);
    d.nodes = m->fields;
    d.node_cap = slots;
    d.node_pos = s->n_fields;
    d.text.p = (char *)(mem + MSG_HEAD + slots * sizeof(pkm_value_t));
    d.text.cap = text_cap;
    uint32_t h;
    int rc;
    PKM_GUARD_GOTO(rc, dec_struct(&d, s, m->fields, 0, &h));
    *out = m;
    return 0;
cleanup:
    pkm__free(mem);
    return rc == PKM_ENOMEM ? rc : PKM_EINTERNAL; /* pass 1 accepted these bytes */
}

void pkm_msg_free(pkm_msg_t *m)
{
    pkm__free(m);
}

uint8_t pkm_msg_id(const pkm_msg_t *m)
{
    return m ? m->id : 0;
}

const pkm_schema_t *pkm_msg_schema(const pkm_msg_t *m)
{
    return m ? m->schema : NULL;
}

const pkm_value_t *pkm_msg_fields(const pkm_msg_t *m, size_t *n)
{
    if (n) *n = m ? m->n_fields : 0;
    return m ? m->fields : NULL;
}

const pkm_value_t *pkm_msg_field(const pkm_msg_t *m, size_t i)
{
    return m && i < m->n_fields ? &m->fields[i] : NULL;
}

const pkm_value_t *pkm_msg_get(const pkm_msg_t *m, const char *name)
{
    if (!m || !name) return NULL;
    for (size_t i = 0; i < m->n_fields; i++) {
        const char *fn = m->schema->fields[i].name;
        if (fn && strcmp(fn, name) == 0) return &m->fields[i];
    }
    return NULL;
}

/* ======================================================================== registry */

static const int64_t handshake_magic[] = {PKM_HANDSHAKE_MAGIC};
static const pkm_field_t handshake_fields[] = {
    {.name = "magic",
     .type = PKM_T_ENUM,
     .base = PKM_T_UINT,
     .enum_values = handshake_magic,
     .n_enum_values = 1},
};
static const pkm_schema_t handshake_schema = {"Handshake", handshake_fields, 1};

const pkm_schema_t *pkm_handshake_schema(void)
{
    return &handshake_schema;
}

struct pkm_registry {
    const pkm_schema_t *schemas[256];
};

pkm_registry_t *pkm_registry_new(void)
{
    pkm_registry_t *reg = pkm__calloc(1, sizeof *reg);
    if (reg) reg->schemas[PKM_HANDSHAKE_ID] = &handshake_schema;
    return reg;
}

void pkm_registry_free(pkm_registry_t *reg)
{
    pkm__free(reg);
}

int pkm_registry_new_from(const pkm_registry_entry_t *entries, size_t n, pkm_registry_t **out)
{
    if (!out) return PKM_EINVAL;
    *out = NULL;
    if (!entries && n) return PKM_EINVAL;
    pkm_registry_t *reg = pkm_registry_new();
    PKM_ENSURE(reg != NULL, PKM_ENOMEM);
    int rc;
    for (size_t i = 0; i < n; i++)
        PKM_GUARD_GOTO(rc, pkm_registry_register(reg, entries[i].id, entries[i].schema));
    *out = reg;
    return 0;
cleanup:
    pkm_registry_free(reg);
    return rc;
}

int pkm_registry_register(pkm_registry_t *reg, uint8_t id, const pkm_schema_t *s)
{
    if (!reg || !s || id == PKM_HANDSHAKE_ID) return PKM_EINVAL;
    if (reg->schemas[id]) return PKM_ESTATE;
    PKM_GUARD(pkm_schema_validate(s));
    reg->schemas[id] = s;
    return 0;
}

/* No schema for id: PKM_EUNKNOWNID, with the id for pkm_schema_last_error(). */
static int unknown_id(uint8_t id)
{
    pkm__serr_reset();
    return pkm__serr_top(PKM_EUNKNOWNID, id, NULL);
}

const pkm_schema_t *pkm_registry_lookup(const pkm_registry_t *reg, uint8_t id)
{
    return reg ? reg->schemas[id] : NULL;
}

int pkm_registry_verify(const pkm_registry_t *reg, const pkm_packet_t *pkt)
{
    if (!reg || !pkt) return PKM_EINVAL;
    const pkm_schema_t *s = reg->schemas[pkt->id];
    if (!s) return unknown_id(pkt->id);
    return pkm_schema_verify(s, pkt);
}

int pkm_registry_decode(const pkm_registry_t *reg, const pkm_packet_t *pkt, pkm_msg_t **out)
{
    if (out) *out = NULL;
    if (!reg || !pkt) return PKM_EINVAL;
    const pkm_schema_t *s = reg->schemas[pkt->id];
    if (!s) return unknown_id(pkt->id);
    return pkm_schema_decode(s, pkt, out);
}

int pkm_registry_encode(const pkm_registry_t *reg, uint8_t id, const pkm_value_t *fields, size_t n,
                        uint8_t *out, size_t cap, size_t *len)
{
    if (!reg) return PKM_EINVAL;
    const pkm_schema_t *s = reg->schemas[id];
    if (!s) return unknown_id(id);
    return pkm__serr_top(pkm_schema_encode_packet(s, id, fields, n, out, cap, len), id, s);
}

int pkm_registry_encode_alloc(const pkm_registry_t *reg, uint8_t id, const pkm_value_t *fields,
                              size_t n, uint8_t **out, size_t *len)
{
    if (!out || !len) return PKM_EINVAL;
    *out = NULL;
    if (!reg) return PKM_EINVAL;
    const pkm_schema_t *s = reg->schemas[id];
    if (!s) return unknown_id(id);
    size_t size;
    PKM_GUARD(pkm__serr_top(pkm_schema_size(s, fields, n, &size), id, s));
    if (size > INT32_MAX) return PKM_ETOOLONG;
    size_t total = PKM_HEADER_SIZE + size;
    uint8_t *buf = pkm__malloc(total);
    PKM_ENSURE(buf != NULL, PKM_ENOMEM);
    int rc;
    PKM_GUARD_GOTO(rc, pkm_schema_encode_packet(s, id, fields, n, buf, total, len));
    *out = buf;
    return 0;
cleanup:
    pkm__free(buf);
    return rc;
}

int pkm_registry_encode_content(const pkm_registry_t *reg, uint8_t id, const pkm_value_t *fields,
                                size_t n, uint8_t *out, size_t cap, size_t *len, uint32_t *hash)
{
    if (!reg || !len || !hash) return PKM_EINVAL;
    const pkm_schema_t *s = reg->schemas[id];
    if (!s) return unknown_id(id);
    uint32_t content_hash = 0;
    PKM_GUARD(pkm__serr_top(pkm_schema_encode(s, fields, n, out, cap, len, &content_hash), id, s));
    *hash = pkm_packet_hash(id, content_hash);
    return 0;
}

int pkm_registry_encode_content_alloc(const pkm_registry_t *reg, uint8_t id,
                                      const pkm_value_t *fields, size_t n, uint8_t **out,
                                      size_t *len, uint32_t *hash)
{
    if (!out || !len || !hash) return PKM_EINVAL;
    *out = NULL;
    if (!reg) return PKM_EINVAL;
    const pkm_schema_t *s = reg->schemas[id];
    if (!s) return unknown_id(id);
    uint32_t content_hash = 0;
    PKM_GUARD(pkm__serr_top(pkm_schema_encode_alloc(s, fields, n, out, len, &content_hash), id, s));
    *hash = pkm_packet_hash(id, content_hash);
    return 0;
}

int pkm_registry_verify_hook(void *ctx, const pkm_packet_t *pkt)
{
    return pkm_registry_verify((const pkm_registry_t *)ctx, pkt);
}
