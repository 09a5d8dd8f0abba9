/* SPDX-License-Identifier: MIT */
/* The hashsum fold's individual implementations, exposed to tests and benchmarks so that each
 * can be checked against the plain loop and measured. Not installed. */
#ifndef PKM_HASHSUM_INTERNAL_H
#define PKM_HASHSUM_INTERNAL_H

#include "pkmcom/packet.h"

uint32_t pkm__pow31(uint64_t e);
/* The reference: h = h*31 + b for each byte. */
uint32_t pkm__hash_fold_plain(uint32_t h, const uint8_t *p, size_t n);
/* Portable C, eight bytes a step. */
uint32_t pkm__hash_fold_portable(uint32_t h, const uint8_t *p, size_t n);
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
/* AVX2, 32 lanes; call only where pkm__hash_have_avx2() is 1. */
uint32_t pkm__hash_fold_avx2(uint32_t h, const uint8_t *p, size_t n);
#endif
int pkm__hash_have_avx2(void);

#endif
