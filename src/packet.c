/* SPDX-License-Identifier: MIT */
/* The APL packet frame: the 9-byte header written and read (the hashsum fold is in hashsum.c). */
#include "pkmcom/packet.h"
#include "buf.h"
#include "internal.h"

int pkm_packet_header_write(uint8_t out[PKM_HEADER_SIZE], uint8_t id, uint32_t hash, size_t size)
{
    PKM_ENSURE(size <= INT32_MAX, PKM_EINVAL);
    pkm_writer w;
    pkm__writer_init(&w, out, PKM_HEADER_SIZE);
    PKM_GUARD(pkm__write_u8(&w, id));
    PKM_GUARD(pkm__write_u32(&w, hash));
    return pkm__write_u32(&w, (uint32_t)size);
}

int pkm_packet_header_read(const uint8_t in[PKM_HEADER_SIZE], size_t max_size, pkm_packet_t *pkt)
{
    pkm_reader r;
    uint32_t size;
    pkm__reader_init(&r, in, PKM_HEADER_SIZE);
    PKM_GUARD(pkm__read_u8(&r, &pkt->id));
    PKM_GUARD(pkm__read_u32(&r, &pkt->hash));
    PKM_GUARD(pkm__read_u32(&r, &size));
    pkt->content = NULL;
    pkt->size = size;
    PKM_ENSURE(size <= INT32_MAX, PKM_ENEGLEN);
    PKM_ENSURE(size <= max_size, PKM_ETOOBIG);
    return 0;
}
