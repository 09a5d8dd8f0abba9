/* SPDX-License-Identifier: MIT */
/* Internal interface between the APL type codec (apl.c, mutf8.c) and the schema walker
 * (schema.c): one value of a non-composite type read or written through buf.h. Not installed. */
#ifndef PKM_APL_INTERNAL_H
#define PKM_APL_INTERNAL_H

#include <stdbool.h>
#include "buf.h"
#include "pkmcom/schema.h"

/* Resumable conversion of CHECKED Modified UTF-8 m[*i..n) to UTF-8 at out[*pos..cap): converts
 * whole characters (a surrogate pair is one) while they fit. Returns 0 when *i reaches n,
 * PKM_ENOSPC when the next character does not fit (*i and *pos stay at a boundary), or the
 * PKM_EMUTF8_* error for bytes that are not Modified UTF-8. */
int pkm__mutf8_convert(const uint8_t *m, size_t n, size_t *i, char *out, size_t cap, size_t *pos);

/* Width in bytes of an integer type (BYTE..LONG), 0 for any other type. */
size_t pkm__int_width(pkm_type_t t);
bool pkm__int_signed(pkm_type_t t);

/* Encoded size of a fixed-size non-composite type or of a field of it (ENUM / BITFLAG use their
 * base); 0 for strings, ARRAY, STRUCT and unknown types. */
size_t pkm__type_fixed_size(pkm_type_t t);
size_t pkm__field_fixed_size(const pkm_field_t *f);

/* Writes one value of a non-composite field (every type but ARRAY and STRUCT), checking its
 * preconditions; *hash receives its hashcode (not computed for strings when w only counts).
 * PKM__W_NOJSON skips the Json syntax check (used when only measuring). */
#define PKM__W_NOJSON 1u
int pkm__apl_write(pkm_writer *w, const pkm_field_t *f, const pkm_value_t *v, unsigned flags,
                   uint32_t *hash);

/* Where decoded text goes: NUL-terminated UTF-8, appended at p[pos..cap). */
typedef struct pkm__text {
    char *p;
    size_t cap, pos;
} pkm__text;

/* Reads one value of a non-composite field. With text == NULL (verify): every precondition is
 * checked, including Modified UTF-8 and Json syntax; string values are not stored. With text set
 * (fill, after a successful verify): strings are converted into text and v->str points there;
 * Json syntax is not re-checked. hash may be NULL (not needed). */
int pkm__apl_read(pkm_reader *r, const pkm_field_t *f, pkm_value_t *v, pkm__text *text,
                  uint32_t *hash);

#endif
