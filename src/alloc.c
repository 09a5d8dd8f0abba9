/* SPDX-License-Identifier: MIT */
/* The library's allocator hook: every allocation libpkmcom makes goes through pkm__malloc and
 * friends, so that tests can count allocations and make any one of them fail. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static pkm_malloc_fn g_malloc = malloc;
static pkm_realloc_fn g_realloc = realloc;
static pkm_free_fn g_free = free;

int pkm_set_allocator(pkm_malloc_fn m, pkm_realloc_fn r, pkm_free_fn f)
{
    if (!m && !r && !f) {
        g_malloc = malloc;
        g_realloc = realloc;
        g_free = free;
        return 0;
    }
    if (!m || !r || !f) return PKM_EINVAL;
    g_malloc = m;
    g_realloc = r;
    g_free = f;
    return 0;
}

void *pkm__malloc(size_t n)
{
    return g_malloc(n ? n : 1);
}

void *pkm__calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size) return NULL;
    size_t n = count * size;
    void *p = g_malloc(n ? n : 1);
    if (p) memset(p, 0, n);
    return p;
}

void *pkm__realloc(void *p, size_t n)
{
    return g_realloc(p, n ? n : 1);
}

void pkm__free(void *p)
{
    if (p) g_free(p);
}

void *pkm_malloc(size_t size)
{
    return pkm__malloc(size);
}

void *pkm_calloc(size_t count, size_t size)
{
    return pkm__calloc(count, size);
}

void *pkm_realloc(void *ptr, size_t size)
{
    return pkm__realloc(ptr, size);
}

void pkm_free(void *ptr)
{
    pkm__free(ptr);
}

const char *pkm_version(void)
{
    return PKM_VERSION_STRING;
}
