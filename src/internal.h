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

/* The library's one error idiom (docs/ARCHITECTURE.md, "Errors"):
 * - a fallible call is PKM_GUARD(call): its negative result is returned as it is;
 * - a condition is PKM_ENSURE(cond, PKM_E...): the error is returned unless it holds;
 * - a function that owns something to release or wipe on every path keeps its result in `rc`
 *   and has one exit, the label `cleanup`, reached by PKM_GUARD_GOTO / PKM_ENSURE_GOTO;
 * - an object that closes on error (an engine) is closed in one place: its steps use the macros
 *   above, and the public entry that ran them hands a negative result to the object's fail();
 * - OpenSSL's 1/0 results are folded into an `ok` and turned into a code once, after the frees.
 * Internal 3-valued steps (1 done, 0 more bytes needed, negative error) pass both "wait" and an
 * error on with `if (r <= 0) return r;`. */

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

/* The same for a function with a `cleanup` label: the result goes to rc, then to cleanup. */
#define PKM_GUARD_GOTO(rc, expr)                                                                   \
    do {                                                                                           \
        if (((rc) = (expr)) < 0) goto cleanup;                                                     \
    } while (0)

#define PKM_ENSURE_GOTO(rc, cond, err)                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            (rc) = (err);                                                                          \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

#endif
