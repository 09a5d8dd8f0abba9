/* SPDX-License-Identifier: MIT */
/* The out-of-line parts of the bounds-checked reader and writer (src/buf.h): sub-readers, scans and
 * reservations. The fixed-width reads and writes, copies, borrows and skips are inline in the
 * header. */
#include "buf.h"
#include "internal.h"

int pkm__read_sub(pkm_reader *r, pkm_reader *sub, size_t n)
{
    const uint8_t *p;
    PKM_GUARD(pkm__read_ptr(r, &p, n));
    pkm__reader_init(sub, p, n);
    return 0;
}

void pkm__read_until(pkm_reader *r, uint8_t stop, const uint8_t **out, size_t *n)
{
    size_t left = r->len - r->pos;
    const uint8_t *p = r->p ? r->p + r->pos : NULL;
    const uint8_t *q = left ? memchr(p, stop, left) : NULL;
    *out = p;
    *n = q ? (size_t)(q - p) : left;
    r->pos += *n;
}

int pkm__write_reserve(pkm_writer *w, size_t n, size_t *at)
{
    if (w->cap - w->pos < n) return PKM_ENOSPC;
    *at = w->pos;
    if (w->p) memset(w->p + w->pos, 0, n);
    w->pos += n;
    return 0;
}
