/* SPDX-License-Identifier: MIT */
/* The APL hashsum fold over bytes (h = h*31 + b), made fast: the fold is a polynomial in 31, so
 * independent lanes can accumulate with precomputed powers of 31 and combine at the end. An
 * AVX2 path (chosen at run time) and a portable 8-byte-step path give results identical to the
 * plain loop, which stays as the reference (pkm__hash_fold_plain). */
#include "hashsum_internal.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define PKM_HAVE_AVX2_PATH 1
#include <immintrin.h>
#endif

/* 31^e modulo 2^32, by square and multiply. */
uint32_t pkm__pow31(uint64_t e)
{
    uint32_t result = 1, base = 31;
    while (e) {
        if (e & 1) result *= base;
        base *= base;
        e >>= 1;
    }
    return result;
}

uint32_t pkm__hash_fold_plain(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = h * 31u + p[i];
    return h;
}

/* Eight bytes a step: h*31^8 + sum p[j]*31^(7-j); the eight products are independent, so the
 * loop-carried chain is one multiply-add per 8 bytes instead of eight. */
uint32_t pkm__hash_fold_portable(uint32_t h, const uint8_t *p, size_t n)
{
    enum { P1 = 31u, P2 = 961u, P3 = 29791u, P4 = 923521u, P5 = 28629151u, P6 = 887503681u };
    const uint32_t p7 = 31u * (uint32_t)P6, p8 = 31u * p7;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const uint8_t *b = p + i;
        uint32_t s = b[0] * p7 + b[1] * (uint32_t)P6 + b[2] * (uint32_t)P5 + b[3] * (uint32_t)P4 +
                     b[4] * (uint32_t)P3 + b[5] * (uint32_t)P2 + b[6] * (uint32_t)P1 + b[7];
        h = h * p8 + s;
    }
    return pkm__hash_fold_plain(h, p + i, n - i);
}

#ifdef PKM_HAVE_AVX2_PATH
/* 32 lanes (four vectors of eight 32-bit lanes); each 32-byte block: acc = acc*31^32 + bytes.
 * After k blocks, lane j holds the fold of bytes j, j+32, ... in powers of 31^32; the region's
 * contribution is sum_j acc_j * 31^(31-j), and h moves by 31^(32k). */
__attribute__((target("avx2"))) uint32_t pkm__hash_fold_avx2(uint32_t h, const uint8_t *p, size_t n)
{
    size_t blocks = n / 32;
    if (blocks == 0) return pkm__hash_fold_plain(h, p, n);
    const __m256i mul = _mm256_set1_epi32((int)pkm__pow31(32));
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    const uint8_t *b = p;
    for (size_t k = 0; k < blocks; k++, b += 32) {
        __m256i x0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)b));
        __m256i x1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(b + 8)));
        __m256i x2 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(b + 16)));
        __m256i x3 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(b + 24)));
        a0 = _mm256_add_epi32(_mm256_mullo_epi32(a0, mul), x0);
        a1 = _mm256_add_epi32(_mm256_mullo_epi32(a1, mul), x1);
        a2 = _mm256_add_epi32(_mm256_mullo_epi32(a2, mul), x2);
        a3 = _mm256_add_epi32(_mm256_mullo_epi32(a3, mul), x3);
    }
    /* Weights 31^(31-j) for lane j = 0..31. */
    uint32_t w[32];
    w[31] = 1;
    for (int j = 30; j >= 0; j--)
        w[j] = w[j + 1] * 31u;
    __m256i s = _mm256_mullo_epi32(a0, _mm256_loadu_si256((const __m256i *)(const void *)w));
    s = _mm256_add_epi32(
        s, _mm256_mullo_epi32(a1, _mm256_loadu_si256((const __m256i *)(const void *)(w + 8))));
    s = _mm256_add_epi32(
        s, _mm256_mullo_epi32(a2, _mm256_loadu_si256((const __m256i *)(const void *)(w + 16))));
    s = _mm256_add_epi32(
        s, _mm256_mullo_epi32(a3, _mm256_loadu_si256((const __m256i *)(const void *)(w + 24))));
    uint32_t lanes[8];
    _mm256_storeu_si256((__m256i *)(void *)lanes, s);
    uint32_t sum = 0;
    for (int j = 0; j < 8; j++)
        sum += lanes[j];
    h = h * pkm__pow31((uint64_t)blocks * 32) + sum;
    return pkm__hash_fold_plain(h, b, n - blocks * 32);
}
#endif

uint32_t pkm_hash_fold(uint32_t h, const uint8_t *p, size_t n)
{
    if (n < 64) return pkm__hash_fold_portable(h, p, n);
#ifdef PKM_HAVE_AVX2_PATH
    if (__builtin_cpu_supports("avx2")) return pkm__hash_fold_avx2(h, p, n);
#endif
    return pkm__hash_fold_portable(h, p, n);
}

uint32_t pkm_hashsum_bytes(const uint8_t *p, size_t n)
{
    if (n == 0) return 0;
    return pkm_hash_fold(p[0], p + 1, n - 1);
}

int pkm__hash_have_avx2(void)
{
#ifdef PKM_HAVE_AVX2_PATH
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}
