/* SPDX-License-Identifier: MIT */
/* Text descriptions of packets for debugging tools (pkmcom dump, the Wireshark plugin): a
 * Complete Definition packet decoded field by field, each value as one line of text. */
#ifndef PKMCOM_DESCRIBE_H
#define PKMCOM_DESCRIBE_H

#include "pkmcom/cmpl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called once per top-level field, in schema order: `name` is the spec's field name, `text` the
 * value (NUL-terminated, borrowed for the call): integers in decimal, an Enum value or Bitflag
 * bits followed by their names in parentheses ("1 (Password)", "0x5 (Trade|IRC)"), text as a
 * JSON string literal, Version "1.0", UUID in 8-4-4-4-12 form, Instant/Duration as
 * "<seconds>.<nanos>s", a Byte Array in hex, other Arrays as "[a, b]", Structures as
 * "{name: value, ...}". */
typedef void (*pkm_describe_fn)(void *ctx, size_t index, const char *name, const char *text);

/* Decodes pkt with the Complete Definition's schema for its id and reports each field to fn
 * (which may be NULL to only check). *packet (may be NULL) receives the Complete Definition's
 * descriptor for the id, or NULL. Returns 0 when the content decodes and the Hash checks;
 * PKM_EUNKNOWNID when the Complete Definition has no schema for the id (0x10, an unknown id or
 * 0xFF): nothing is reported; otherwise the error pkm_schema_verify() gives (PKM_EHASH for a Hash
 * that does not check, PKM_ETRUNC, PKM_ESIZE, a precondition...): nothing is reported either;
 * PKM_ENOMEM. */
PKM_API int pkm_describe_cmpl(const pkm_packet_t *pkt, pkm_describe_fn fn, void *ctx,
                              const pkm_cmpl_packet_t **packet);

#ifdef __cplusplus
}
#endif
#endif
