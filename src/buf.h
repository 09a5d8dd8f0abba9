/* SPDX-License-Identifier: MIT */
/* Bounds-checked reader and writer over caller memory (s2n "stuffer" style). Every parse and
 * every encode in the codec goes through these: nothing reads or writes past an end. Internal. */
#ifndef PKM_BUF_H
#define PKM_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "pkmcom/common.h"

/* Reads p[pos..len). pos never exceeds len. */
typedef struct pkm_reader {
    const uint8_t *p;
    size_t len, pos;
} pkm_reader;

/* Writes p[pos..cap). A writer with p == NULL only counts: writes succeed and advance pos, so one
 * encoder serves both "how many bytes?" and "write them". pos never exceeds cap. */
typedef struct pkm_writer {
    uint8_t *p;
    size_t cap, pos;
} pkm_writer;

static inline void pkm__reader_init(pkm_reader *r, const uint8_t *p, size_t len)
{
    r->p = p;
    r->len = p ? len : 0;
    r->pos = 0;
}

static inline size_t pkm__reader_left(const pkm_reader *r)
{
    return r->len - r->pos;
}

/* The unread bytes p[pos..len) in place, pkm__reader_left() of them (NULL when the reader has no
 * memory): for a scan that decides how many to take, which it then takes with a read below. */
static inline const uint8_t *pkm__reader_peek(const pkm_reader *r)
{
    return r->p ? r->p + r->pos : NULL;
}

static inline void pkm__writer_init(pkm_writer *w, uint8_t *p, size_t cap)
{
    w->p = p;
    w->cap = p ? cap : SIZE_MAX;
    w->pos = 0;
}

static inline size_t pkm__writer_left(const pkm_writer *w)
{
    return w->cap - w->pos;
}

/* The one big-endian 32-bit load and store: the reader and writer below use them, and so does
 * code that has already checked its bounds on a fixed-size block (a packet's first block). */
static inline uint32_t pkm__load_be32(const uint8_t *q)
{
    return (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
}

static inline void pkm__store_be32(uint8_t *q, uint32_t v)
{
    q[0] = (uint8_t)(v >> 24);
    q[1] = (uint8_t)(v >> 16);
    q[2] = (uint8_t)(v >> 8);
    q[3] = (uint8_t)v;
}

/* Big-endian reads. Each returns PKM_ETRUNC, leaving pos unchanged, when too few bytes remain. */
static inline int pkm__read_u8(pkm_reader *r, uint8_t *out)
{
    if (r->len - r->pos < 1) return PKM_ETRUNC;
    *out = r->p[r->pos++];
    return 0;
}

static inline int pkm__read_u16(pkm_reader *r, uint16_t *out)
{
    if (r->len - r->pos < 2) return PKM_ETRUNC;
    const uint8_t *q = r->p + r->pos;
    *out = (uint16_t)((unsigned)q[0] << 8 | q[1]);
    r->pos += 2;
    return 0;
}

static inline int pkm__read_u32(pkm_reader *r, uint32_t *out)
{
    if (r->len - r->pos < 4) return PKM_ETRUNC;
    *out = pkm__load_be32(r->p + r->pos);
    r->pos += 4;
    return 0;
}

static inline int pkm__read_u64(pkm_reader *r, uint64_t *out)
{
    if (r->len - r->pos < 8) return PKM_ETRUNC;
    const uint8_t *q = r->p + r->pos;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | q[i];
    *out = v;
    r->pos += 8;
    return 0;
}

/* Copies n bytes out. */
static inline int pkm__read_bytes(pkm_reader *r, uint8_t *out, size_t n)
{
    if (r->len - r->pos < n) return PKM_ETRUNC;
    if (n) memcpy(out, r->p + r->pos, n);
    r->pos += n;
    return 0;
}
/* Borrows n bytes in place: *out points into the reader's memory. */
static inline int pkm__read_ptr(pkm_reader *r, const uint8_t **out, size_t n)
{
    if (r->len - r->pos < n) return PKM_ETRUNC;
    *out = r->p + r->pos;
    r->pos += n;
    return 0;
}

/* Passes over n bytes. */
static inline int pkm__read_skip(pkm_reader *r, size_t n)
{
    if (r->len - r->pos < n) return PKM_ETRUNC;
    r->pos += n;
    return 0;
}
/* Takes the next n bytes as a reader of their own (*sub, positioned at their start): a
 * length-prefixed body is then parsed within its length. */
int pkm__read_sub(pkm_reader *r, pkm_reader *sub, size_t n);
/* Borrows the bytes before the next `stop` byte, or all that is left when there is none (it may
 * be none at all: *n == 0); the stop byte itself stays unread. Never fails. */
void pkm__read_until(pkm_reader *r, uint8_t stop, const uint8_t **out, size_t *n);

/* Big-endian writes. Each returns PKM_ENOSPC, leaving pos unchanged, when the room is short. */
static inline int pkm__write_u8(pkm_writer *w, uint8_t v)
{
    if (w->cap - w->pos < 1) return PKM_ENOSPC;
    if (w->p) w->p[w->pos] = v;
    w->pos += 1;
    return 0;
}

static inline int pkm__write_u16(pkm_writer *w, uint16_t v)
{
    if (w->cap - w->pos < 2) return PKM_ENOSPC;
    if (w->p) {
        w->p[w->pos] = (uint8_t)(v >> 8);
        w->p[w->pos + 1] = (uint8_t)v;
    }
    w->pos += 2;
    return 0;
}

static inline int pkm__write_u32(pkm_writer *w, uint32_t v)
{
    if (w->cap - w->pos < 4) return PKM_ENOSPC;
    if (w->p) pkm__store_be32(w->p + w->pos, v);
    w->pos += 4;
    return 0;
}

static inline int pkm__write_u64(pkm_writer *w, uint64_t v)
{
    if (w->cap - w->pos < 8) return PKM_ENOSPC;
    if (w->p) {
        uint8_t *q = w->p + w->pos;
        for (int i = 7; i >= 0; i--) {
            q[i] = (uint8_t)v;
            v >>= 8;
        }
    }
    w->pos += 8;
    return 0;
}

/* Copies n bytes in (src may be NULL when n is 0). */
static inline int pkm__write_bytes(pkm_writer *w, const uint8_t *src, size_t n)
{
    if (w->cap - w->pos < n) return PKM_ENOSPC;
    if (w->p && n) memcpy(w->p + w->pos, src, n);
    w->pos += n;
    return 0;
}

/* Reserves n bytes to be filled later (a length prefix written once the body is known):
 * *at receives their offset. pkm__writer_at() gives a pointer to them, or NULL when counting. */
int pkm__write_reserve(pkm_writer *w, size_t n, size_t *at);

static inline uint8_t *pkm__writer_at(pkm_writer *w, size_t at)
{
    return w->p ? w->p + at : NULL;
}

#endif
