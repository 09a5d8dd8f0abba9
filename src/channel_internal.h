/* SPDX-License-Identifier: MIT */
/* The AES-256-CBC channel of PkmCom/TCP (WIRE-PROFILE section 4) and the direction-key derivation
 * of handshake step 4, shared by engine.c. Not installed. */
#ifndef PKM_CHANNEL_INTERNAL_H
#define PKM_CHANNEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>
#include "pkmcom/packet.h"

#define PKM__KEY_SIZE   32  /* AES-256 key = SHA-256 output */
#define PKM__IV_SIZE    16  /* AES block */
#define PKM__M_SIZE     256 /* the 2048-bit random message M */
#define PKM__BLOCK_SIZE 16

/* One AES-256-CBC context per direction, kept for the life of a key so that each packet
 * continues its direction's chain (the IV of a packet is the previous packet's last ciphertext
 * block). Padding is done by the engine (PKCS#7 on whole packets), so OpenSSL's is disabled. */
typedef struct pkm__channel {
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
} pkm__channel_t;

/* Allocates both contexts (no key yet). PKM_ENOMEM. */
int pkm__channel_init(pkm__channel_t *ch);

/* Frees both contexts; OpenSSL wipes the expanded keys and chain state. */
void pkm__channel_free(pkm__channel_t *ch);

/* (Re)starts both chains from iv: the send chain under send_key, the receive chain under
 * recv_key (a client sends under K_cs and receives under K_sc, a server the other way round).
 * PKM_ECRYPTO on failure. */
int pkm__channel_start(pkm__channel_t *ch, const uint8_t send_key[PKM__KEY_SIZE],
                       const uint8_t recv_key[PKM__KEY_SIZE], const uint8_t iv[PKM__IV_SIZE]);

/* Encrypts / decrypts n bytes (a multiple of 16) in place, continuing the chain. */
int pkm__channel_encrypt(pkm__channel_t *ch, uint8_t *p, size_t n);
/* The same, continuing the same chain, from `in` into `out` (n a multiple of 16; the two must
 * not overlap): lets a large packet's content be encrypted where it lies, without a copy. */
int pkm__channel_encrypt_from(pkm__channel_t *ch, uint8_t *out, const uint8_t *in, size_t n);
int pkm__channel_decrypt(pkm__channel_t *ch, uint8_t *p, size_t n);

/* The direction labels of wire profile 2, appended after M || S: 'C' and 'S'. */
#define PKM__LABEL_CS 0x43
#define PKM__LABEL_SC 0x53

/* K_cs = SHA-256(M || S || 0x43) (client to server) and K_sc = SHA-256(M || S || 0x53) (server
 * to client); S may be empty. PKM_ECRYPTO on failure (both outputs wiped then). */
int pkm__derive_keys(const uint8_t m[PKM__M_SIZE], const uint8_t *s, size_t slen,
                     uint8_t k_cs[PKM__KEY_SIZE], uint8_t k_sc[PKM__KEY_SIZE]);

/* Bytes a packet of `size` content bytes takes on the wire: header + content + 1..16 bytes of
 * PKCS#7 padding, ((9 + size) / 16 + 1) * 16. */
static inline size_t pkm__padded_size(size_t size)
{
    return ((PKM_HEADER_SIZE + size) / PKM__BLOCK_SIZE + 1) * PKM__BLOCK_SIZE;
}

#endif
