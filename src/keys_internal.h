/* SPDX-License-Identifier: MIT */
/* What the engine needs from a pkm_key_t beyond the public API: the OpenSSL key and its
 * cached DER SubjectPublicKeyInfo. Not installed. */
#ifndef PKM_KEYS_INTERNAL_H
#define PKM_KEYS_INTERNAL_H

#include <openssl/evp.h>
#include "pkmcom/keys.h"

/* The key's EVP_PKEY, borrowed: valid as long as the key. */
EVP_PKEY *pkm__key_evp(const pkm_key_t *key);

/* The key's DER SubjectPublicKeyInfo, computed once when the key was made; borrowed. */
const uint8_t *pkm__key_der(const pkm_key_t *key, size_t *len);

#endif
