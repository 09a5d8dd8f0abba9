/* Helpers shared by the test programs: cmocka includes, hex conversion, deterministic PRNG. */
#ifndef PKM_TEST_SUPPORT_H
#define PKM_TEST_SUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

/* Parses hex (spaces allowed) into out; returns the byte count, or -1 on bad input/overflow. */
int t_unhex(const char *hex, uint8_t *out, size_t cap);

/* A deterministic xorshift64* PRNG so that random round trips are reproducible. */
typedef struct {
    uint64_t s;
} t_rng;
void t_rng_seed(t_rng *r, uint64_t seed);
uint64_t t_rng_next(t_rng *r);
void t_rng_bytes(t_rng *r, uint8_t *out, size_t n);

#endif
