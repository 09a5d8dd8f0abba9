/* SPDX-License-Identifier: MIT */
/* The out-of-line parts of the bounds-checked reader and writer (src/buf.h): byte runs and
 * reservations. The fixed-width reads and writes are inline in the header. */
#include "buf.h"

int pkm__read_bytes(pkm_reader *r, uint8_t *out, size_t n)
{
    if (r->len - r->pos < n) return PKM_ETRUNC;
    if (n) memcpy(out, r->p + r->pos, n);
    r->pos += n;
    return 0;
}

int pkm__read_ptr(pkm_reader *r, const uint8_t **out, size_t n)
{
    if (r->len - r->pos < n) return PKM_ETRUNC;
    *out = r->p + r->pos;
    r->pos += n;
    return 0;
}

int pkm__write_bytes(pkm_writer *w, const uint8_t *src, size_t n)
{
    if (w->cap - w->pos < n) return PKM_ENOSPC;
    if (w->p && n) memcpy(w->p + w->pos, src, n);
    w->pos += n;
    return 0;
}

int pkm__write_reserve(pkm_writer *w, size_t n, size_t *at)
{
    if (w->cap - w->pos < n) return PKM_ENOSPC;
    *at = w->pos;
    if (w->p) memset(w->p + w->pos, 0, n);
    w->pos += n;
    return 0;
}
