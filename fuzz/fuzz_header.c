/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the 9-byte packet header reader and the hashsum fold over arbitrary bytes
 * (the fold's fast paths must agree with the plain loop on every input). */
#include <stdlib.h>
#include "pkmcom/packet.h"
#include "hashsum_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= PKM_HEADER_SIZE) {
        pkm_packet_t p;
        int rc = pkm_packet_header_read(data, PKM_DEFAULT_MAX_SIZE, &p);
        if (rc == 0 && p.size > PKM_DEFAULT_MAX_SIZE) abort();
    }
    uint32_t h = size ? data[0] : 0;
    if (pkm_hash_fold(h, data, size) != pkm__hash_fold_plain(h, data, size)) abort();
    return 0;
}
