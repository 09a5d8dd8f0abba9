/* SPDX-License-Identifier: MIT */
/* The detail of the last schema.h failure on this thread (src/schema_err.c): packet id, schema,
 * field path and byte offset, recorded as the failure unwinds. Not installed. */
#ifndef PKM_SCHEMA_ERR_H
#define PKM_SCHEMA_ERR_H

#include <stddef.h>
#include "pkmcom/schema.h"

#define PKM__SERR_NO_OFFSET ((size_t)-1)

/* Forgets the last failure: every public schema.h entry point calls it first. */
void pkm__serr_reset(void);
/* Field `name` (index i of its structure; NULL name: "#i") failed with err; the value began at
 * `offset` of the content. The innermost call records err and offset; each one out prefixes its
 * part of the path. Returns err. */
int pkm__serr_field(int err, const char *name, size_t i, size_t offset);
/* The same for element j of an array. */
int pkm__serr_elem(int err, size_t j, size_t offset);
/* A failure with no field of its own (trailing bytes, the Hash, a count): a parenthesised note
 * for the sentence. Returns err. */
__attribute__((format(printf, 3, 4))) int pkm__serr_note(int err, size_t offset, const char *fmt,
                                                         ...);
/* The entry point's failure: names the packet (id < 0: unknown) and its schema. Returns err. */
int pkm__serr_top(int err, int id, const pkm_schema_t *s);

#endif
