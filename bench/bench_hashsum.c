/* SPDX-License-Identifier: MIT */
/* Benchmark 6: the APL hashsum over large Strings/Byte Arrays, the library's fold against the
 * plain h*31+b loop, and against AES-256-CBC decryption (EVP) over the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include "bench_common.h"
#include "hashsum_internal.h"

#define LEN (1u << 20)

static volatile uint32_t sink;

static double rate(uint32_t (*fn)(uint32_t, const uint8_t *, size_t), const uint8_t *buf)
{
    double best = 0;
    for (int round = 0; round < 5; round++) {
        int reps = 0;
        double t0 = bench_now(), t;
        do {
            sink += fn(1, buf, LEN);
            reps++;
            t = bench_now();
        } while (t - t0 < 0.1);
        double r = (double)LEN * reps / (t - t0) / 1e6;
        if (r > best) best = r;
    }
    return best;
}

static double cbc_decrypt_rate(const uint8_t *buf, uint8_t *out)
{
    uint8_t key[32] = {1}, iv[16] = {2};
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx || !EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, iv)) abort();
    EVP_CIPHER_CTX_set_padding(ctx, 0);
    double best = 0;
    for (int round = 0; round < 5; round++) {
        int reps = 0, outl;
        double t0 = bench_now(), t;
        do {
            if (!EVP_DecryptUpdate(ctx, out, &outl, buf, LEN)) abort();
            reps++;
            t = bench_now();
        } while (t - t0 < 0.1);
        double r = (double)LEN * reps / (t - t0) / 1e6;
        if (r > best) best = r;
    }
    EVP_CIPHER_CTX_free(ctx);
    return best;
}

int main(void)
{
    uint8_t *buf = malloc(LEN), *out = malloc(LEN);
    if (!buf || !out) return 1;
    for (size_t i = 0; i < LEN; i++)
        buf[i] = (uint8_t)(i * 2654435761u >> 13);
    if (pkm_hash_fold(1, buf, LEN) != pkm__hash_fold_plain(1, buf, LEN)) {
        fprintf(stderr, "bench_hashsum: fast fold disagrees with the plain loop\n");
        return 1;
    }
    double plain = rate(pkm__hash_fold_plain, buf);
    double fast = rate(pkm_hash_fold, buf);
    double cbc = cbc_decrypt_rate(buf, out);
    struct bench_figure vs_plain = {
        "hashsum 1 MiB (library fold)", fast, "MB/s", "plain h*31+b loop", plain, 6, NULL};
    struct bench_figure vs_cbc = {"hashsum 1 MiB vs AES-256-CBC decrypt",
                                  fast,
                                  "MB/s",
                                  "EVP aes-256-cbc decrypt 1 MiB",
                                  cbc,
                                  6,
                                  NULL};
    bench_emit(&vs_plain);
    bench_emit(&vs_cbc);
    free(buf);
    free(out);
    return 0;
}
