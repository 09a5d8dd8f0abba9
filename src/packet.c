/* The APL packet frame: the 9-byte header written and read (the hashsum fold is in hashsum.c). */
#include "pkmcom/packet.h"

int pkm_packet_header_write(uint8_t out[PKM_HEADER_SIZE], uint8_t id, uint32_t hash, size_t size)
{
    if (size > INT32_MAX) return PKM_EINVAL;
    out[0] = id;
    out[1] = (uint8_t)(hash >> 24);
    out[2] = (uint8_t)(hash >> 16);
    out[3] = (uint8_t)(hash >> 8);
    out[4] = (uint8_t)hash;
    out[5] = (uint8_t)(size >> 24);
    out[6] = (uint8_t)(size >> 16);
    out[7] = (uint8_t)(size >> 8);
    out[8] = (uint8_t)size;
    return 0;
}

int pkm_packet_header_read(const uint8_t in[PKM_HEADER_SIZE], size_t max_size, pkm_packet_t *pkt)
{
    uint32_t size = (uint32_t)in[5] << 24 | (uint32_t)in[6] << 16 | (uint32_t)in[7] << 8 | in[8];
    pkt->id = in[0];
    pkt->hash = (uint32_t)in[1] << 24 | (uint32_t)in[2] << 16 | (uint32_t)in[3] << 8 | in[4];
    pkt->content = NULL;
    pkt->size = size;
    if (size > INT32_MAX) return PKM_ENEGLEN;
    if (size > max_size) return PKM_ETOOBIG;
    return 0;
}
