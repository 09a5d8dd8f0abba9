/* SPDX-License-Identifier: MIT */
/* libFuzzer target: what a capture reader meets: the key-log parser, the stream decoder
 * (pkm_streamdec) over arbitrary bytes in both directions and any segmentation, and
 * pkm_describe_cmpl over arbitrary packets. */
#include <stdlib.h>
#include <string.h>
#include "pkmcom/describe.h"
#include "pkmcom/keylog.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Two fixed entries, so that inputs can carry their IVs (the fuzzer finds them by comparison). */
static const char fixed_log[] = "PKMCOM_KEYS_V2 11111111111111111111111111111111 "
                                "2222222222222222222222222222222222222222222222222222222222222222 "
                                "3333333333333333333333333333333333333333333333333333333333333333 "
                                "44444444444444444444444444444444\n"
                                "PKMCOM_KEYS_V2 55555555555555555555555555555555 "
                                "6666666666666666666666666666666666666666666666666666666666666666 "
                                "7777777777777777777777777777777777777777777777777777777777777777 "
                                "88888888888888888888888888888888\n";

static void run(const pkm_keylog_t *kl, int dir, const uint8_t *p, size_t n, size_t step)
{
    pkm_streamdec_t *d = NULL;
    if (pkm_streamdec_new(kl, dir, 4096, &d) < 0) return;
    size_t pos = 0, avail = 0;
    while (pos < n) {
        avail = step ? (avail + step > n - pos ? n - pos : avail + step) : n - pos;
        size_t need = 0, len = pkm_streamdec_next_len(d, p + pos, avail, &need);
        if (len == 0) {
            FUZZ_CHECK(need > avail);
            if (avail == n - pos) break;
            continue;
        }
        if (len > avail) {
            if (avail == n - pos) break;
            continue;
        }
        uint8_t *plain = malloc(len);
        if (!plain) break;
        pkm_unit_t u;
        FUZZ_CHECK(pkm_streamdec_take(d, p + pos, len, plain, &u) == 0);
        FUZZ_CHECK(u.len == len);
        if (u.kind == PKM_UNIT_RECORD && u.err == 0) {
            FUZZ_CHECK(PKM_HEADER_SIZE + u.pkt.size + u.pad_len == len);
            FUZZ_CHECK(u.pad_len >= 1 && u.pad_len <= 16);
            (void)pkm_describe_cmpl(&u.pkt, NULL, NULL, NULL);
        }
        free(plain);
        pos += len;
        avail -= len;
    }
    pkm_streamdec_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pkm_keylog_t *kl = NULL, *own = NULL;
    if (pkm_keylog_parse(fixed_log, sizeof fixed_log - 1, &kl, NULL) < 0) abort();
    size_t bad = 0;
    if (pkm_keylog_parse((const char *)data, size, &own, &bad) == 0) pkm_keylog_free(own);
    size_t step = size ? data[0] % 64 : 0;
    run(kl, PKM_DIR_C2S, data, size, step);
    run(kl, PKM_DIR_S2C, data, size, step);
    if (size >= 1) {
        pkm_packet_t pkt = {.id = data[0],
                            .hash = size >= 5 ? (uint32_t)data[1] << 24 | data[4] : 0,
                            .content = data + 1,
                            .size = size - 1};
        (void)pkm_describe_cmpl(&pkt, NULL, NULL, NULL);
    }
    pkm_keylog_free(kl);
    return 0;
}
