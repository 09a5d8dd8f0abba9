/* SPDX-License-Identifier: MIT */
/* The APL packet frame: Id (Byte) | Hash (Unsigned Int) | Size (Int) | Content, big-endian, and
 * the hashsum primitive over bytes. The contract between the codec (schema.h) and the engine. */
#ifndef PKMCOM_PACKET_H
#define PKMCOM_PACKET_H

#include "pkmcom/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PKM_HEADER_SIZE 9
/* The default maximum packet Size an endpoint accepts (1 MiB); configurable up to INT32_MAX. */
#define PKM_DEFAULT_MAX_SIZE (1u << 20)

/* The built-in handshake packet: Id 0xFF, one Unsigned Int Enum field 0x504B4D00. */
#define PKM_HANDSHAKE_ID    0xFF
#define PKM_HANDSHAKE_MAGIC 0x504B4D00u
#define PKM_HANDSHAKE_HASH  0x504B6BE1u /* 0xFF * 31 + 0x504B4D00 */

/* A packet as it travels: the content is borrowed, never owned, by this struct. */
typedef struct pkm_packet {
    uint8_t id;
    uint32_t hash;
    const uint8_t *content; /* `size` bytes; may be NULL when size is 0 */
    size_t size;
} pkm_packet_t;

/* hashsum() of n Bytes (unsigned): 0 for n = 0, otherwise the left fold h = h*31 + b starting
 * from the first byte. The APL hashcode of a String, Json or Byte Array's payload. */
PKM_API uint32_t pkm_hashsum_bytes(const uint8_t *p, size_t n);

/* Continue a fold: returns h*31^n + the fold of p's n bytes, as if they followed values whose
 * running hashsum is h (h*31 + b for each byte b). pkm_hashsum_bytes(p, n) equals
 * pkm_hash_fold(p[0], p + 1, n - 1) for n >= 1. */
PKM_API uint32_t pkm_hash_fold(uint32_t h, const uint8_t *p, size_t n);

/* A packet's Hash from its id and its content's hashcode: hashcode(Id) * 31 + hashcode(Content). */
static inline uint32_t pkm_packet_hash(uint8_t id, uint32_t content_hash)
{
    return (uint32_t)id * 31u + content_hash;
}

/* Writes the 9-byte header. Returns PKM_EINVAL if size > INT32_MAX. */
PKM_API int pkm_packet_header_write(uint8_t out[PKM_HEADER_SIZE], uint8_t id, uint32_t hash,
                                    size_t size);

/* Reads a 9-byte header into *pkt (content NULL, size set). Returns PKM_ENEGLEN for a negative
 * Size and PKM_ETOOBIG for a Size above max_size. */
PKM_API int pkm_packet_header_read(const uint8_t in[PKM_HEADER_SIZE], size_t max_size,
                                   pkm_packet_t *pkt);

#ifdef __cplusplus
}
#endif
#endif
