/* SPDX-License-Identifier: MIT */
/* Internal helpers shared by the library's modules: allocation through the hook, and the
 * guard macros every fallible call goes through (s2n-tls style). Not installed. */
#ifndef PKM_INTERNAL_H
#define PKM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "pkmcom/common.h"

#ifdef PKM_BUILDING_SERVER
/* libpkmcom-server allocates through the core's one allocator hook, by its API: the core's .so
 * exports no pkm__ helper (docs/ARCHITECTURE.md, "Two libraries"). */
#define pkm__malloc  pkm_malloc
#define pkm__calloc  pkm_calloc
#define pkm__realloc pkm_realloc
#define pkm__free    pkm_free
#else
void *pkm__malloc(size_t n);
void *pkm__calloc(size_t count, size_t size);
void *pkm__realloc(void *p, size_t n);
void pkm__free(void *p);
#endif
/* Wipes n bytes (OPENSSL_cleanse: never optimised away), for the files that must not include
 * OpenSSL's headers (wipe.c; stateless, so libpkmcom-server links its own copy). */
void pkm__wipe(void *p, size_t n);

/* Propagate a negative result. */
#define PKM_GUARD(expr)                                                                            \
    do {                                                                                           \
        int pkm__rc = (expr);                                                                      \
        if (pkm__rc < 0) return pkm__rc;                                                           \
    } while (0)

/* Fail with `err` unless `cond` holds. */
#define PKM_ENSURE(cond, err)                                                                      \
    do {                                                                                           \
        if (!(cond)) return (err);                                                                 \
    } while (0)

#endif
