/* SPDX-License-Identifier: MIT */
/* pkm_describe_cmpl (pkmcom/describe.h): a Complete Definition packet's decoded fields as text,
 * for debugging tools. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "pkmcom/describe.h"
#include "internal.h"

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf_t;

static void put(sbuf_t *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->cap - b->len <= n) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap - b->len <= n) {
            if (ncap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            ncap *= 2;
        }
        char *np = pkm__malloc(ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        if (b->len) memcpy(np, b->p, b->len);
        pkm__free(b->p);
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(sbuf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
putf(sbuf_t *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void put_text(sbuf_t *b, const pkm_str_t *s)
{
    put(b, "\"", 1);
    for (size_t i = 0; i < s->len; i++) {
        unsigned char c = (unsigned char)s->ptr[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            putf(b, "\\u%04x", c);
        } else {
            put(b, (const char *)&c, 1);
        }
    }
    put(b, "\"", 1);
}

static int is_signed(pkm_type_t t)
{
    return t == PKM_T_SBYTE || t == PKM_T_SHORT || t == PKM_T_INT || t == PKM_T_LONG;
}

static void put_value(sbuf_t *b, const pkm_field_t *f, const pkm_value_t *v,
                      const pkm_cmpl_packet_t *pk, size_t top_index, int top);

static void put_scalar_int(sbuf_t *b, pkm_type_t t, const pkm_value_t *v)
{
    if (is_signed(t))
        putf(b, "%" PRId64, v->i64);
    else
        putf(b, "%" PRIu64, v->u64);
}

static void put_value(sbuf_t *b, const pkm_field_t *f, const pkm_value_t *v,
                      const pkm_cmpl_packet_t *pk, size_t top_index, int top)
{
    switch (f->type) {
    case PKM_T_BYTE:
    case PKM_T_SBYTE:
    case PKM_T_SHORT:
    case PKM_T_USHORT:
    case PKM_T_INT:
    case PKM_T_UINT:
    case PKM_T_LONG: put_scalar_int(b, f->type, v); break;
    case PKM_T_FLOAT: putf(b, "%.9g", (double)v->f32); break;
    case PKM_T_DOUBLE: putf(b, "%.17g", v->f64); break;
    case PKM_T_BOOL: puts_(b, v->b ? "true" : "false"); break;
    case PKM_T_STRING:
    case PKM_T_JSON:
    case PKM_T_LSTRING:
    case PKM_T_LJSON: put_text(b, &v->str); break;
    case PKM_T_VERSION: putf(b, "%u.%u", v->version.major, v->version.minor); break;
    case PKM_T_UUID:
        putf(b, "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64,
             v->uuid.msb >> 32, (v->uuid.msb >> 16) & 0xffff, v->uuid.msb & 0xffff,
             v->uuid.lsb >> 48, v->uuid.lsb & (uint64_t)0xffffffffffff);
        break;
    case PKM_T_INSTANT:
    case PKM_T_DURATION:
        putf(b, "%" PRId64 ".%09" PRId32 "s", v->time.seconds, v->time.nanos);
        break;
    case PKM_T_ENUM: {
        put_scalar_int(b, f->base, v);
        const pkm_cmpl_symbol_t *s =
            top ? pkm_cmpl_symbol_by_value(pk, top_index,
                                           is_signed(f->base) ? (uint64_t)v->i64 : v->u64)
                : NULL;
        if (s) putf(b, " (%s)", s->name);
        break;
    }
    case PKM_T_BITFLAG: {
        if (f->base == PKM_T_UUID) {
            putf(b, "0x%016" PRIx64 "%016" PRIx64, v->uuid.msb, v->uuid.lsb);
            break;
        }
        putf(b, "0x%" PRIx64, v->u64);
        size_t n = 0;
        const pkm_cmpl_symbol_t *syms = top ? pkm_cmpl_symbols(pk, top_index, &n) : NULL;
        int first = 1;
        for (size_t i = 0; i < n; i++) {
            if (syms[i].value && (v->u64 & syms[i].value) == syms[i].value) {
                puts_(b, first ? " (" : "|");
                puts_(b, syms[i].name);
                first = 0;
            }
        }
        if (!first) puts_(b, ")");
        break;
    }
    case PKM_T_ARRAY:
        if (f->elem && f->elem->type == PKM_T_BYTE) {
            static const char d[] = "0123456789abcdef";
            for (size_t i = 0; i < v->bytes.len; i++) {
                char h[2] = {d[v->bytes.ptr[i] >> 4], d[v->bytes.ptr[i] & 15]};
                put(b, h, 2);
            }
            break;
        }
        puts_(b, "[");
        for (size_t i = 0; i < v->array.n; i++) {
            if (i) puts_(b, ", ");
            put_value(b, f->elem, &v->array.items[i], pk, 0, 0);
        }
        puts_(b, "]");
        break;
    case PKM_T_STRUCT:
        puts_(b, "{");
        for (size_t i = 0; f->sub && i < v->structure.n && i < f->sub->n_fields; i++) {
            const pkm_field_t *sf = &f->sub->fields[i];
            if (i) puts_(b, ", ");
            puts_(b, sf->name ? sf->name : "?");
            puts_(b, ": ");
            put_value(b, sf, &v->structure.fields[i], pk, 0, 0);
        }
        puts_(b, "}");
        break;
    }
}

int pkm_describe_cmpl(const pkm_packet_t *pkt, pkm_describe_fn fn, void *ctx,
                      const pkm_cmpl_packet_t **packet)
{
    if (packet) *packet = NULL;
    if (!pkt) return PKM_EINVAL;
    const pkm_cmpl_packet_t *pk = pkm_cmpl_by_id(pkt->id);
    if (packet) *packet = pk;
    if (!pk || !pk->schema) return PKM_EUNKNOWNID;
    pkm_msg_t *m = NULL;
    PKM_GUARD(pkm_schema_decode(pk->schema, pkt, &m));
    size_t n = 0;
    const pkm_value_t *vals = pkm_msg_fields(m, &n);
    int rc = 0;
    for (size_t i = 0; fn && i < n && i < pk->schema->n_fields; i++) {
        sbuf_t b = {0};
        const pkm_field_t *f = &pk->schema->fields[i];
        put_value(&b, f, &vals[i], pk, i, 1);
        if (!b.oom) fn(ctx, i, f->name ? f->name : "?", b.p ? b.p : "");
        pkm__free(b.p);
        PKM_ENSURE_GOTO(rc, !b.oom, PKM_ENOMEM);
    }
cleanup:
    pkm_msg_free(m);
    return rc;
}
