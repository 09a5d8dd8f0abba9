/* SPDX-License-Identifier: MIT */
/* What the engine shares beyond its public header (not installed): the one validator of an
 * engine configuration, used by the conn API and the server for the engine config they embed;
 * and test-only hooks: a key log for test vectors, a way to put crafted plaintext on an engine's
 * encrypted send chain. */
#ifndef PKM_ENGINE_INTERNAL_H
#define PKM_ENGINE_INTERNAL_H

#include "pkmcom/engine.h"

/* 0 when pkm_engine_new() would accept cfg (in its role), else PKM_EINVAL: the checks its
 * documentation lists. Takes nothing (a client_key stays the caller's). */
int pkm__engine_config_check(const pkm_engine_config_t *cfg);

/* Called once per derivation (first handshake and each re-establishment) with K_cs (client to
 * server), K_sc (server to client) and IV, just before they are wiped. For test vectors only: a
 * key log defeats the encryption. Implemented on the public config.keylog_fn (which it replaces
 * for this engine). */
typedef void (*pkm__keylog_fn)(void *ctx, const uint8_t k_cs[32], const uint8_t k_sc[32],
                               const uint8_t iv[16]);
void pkm__engine_set_keylog(pkm_engine_t *e, pkm__keylog_fn fn, void *ctx);

/* Encrypts n bytes of caller-made plaintext (n a positive multiple of 16) on the engine's send
 * chain and queues them, exactly as given: no header, no padding, no checks. The engine must be
 * established (PKM_ESTATE otherwise). For crafting malformed packets in tests. */
int pkm__engine_queue_raw(pkm_engine_t *e, const uint8_t *plain, size_t n);

/* Puts a fresh engine (state handshake, nothing received) straight into the established state
 * with both chains started from (key, iv), skipping the handshake: the same key both ways (unlike
 * a real handshake), so that two engines started alike talk to each other. For fuzzing the packet
 * layer without RSA work per input. PKM_ESTATE if the engine is not fresh. */
int pkm__engine_test_start(pkm_engine_t *e, const uint8_t key[32], const uint8_t iv[16]);

/* The fingerprint of the key the peer presented, also when the trust checks refused it (a
 * public value, for error sentences); NULL before a key was parsed. Valid until
 * pkm_engine_free(). */
const char *pkm__engine_offered_fingerprint(const pkm_engine_t *e);
/* The pinned fingerprint (config.pin_fingerprint), or NULL. */
const char *pkm__engine_pin(const pkm_engine_t *e);

/* How many RSA operations (public-key encryptions, private-key decryptions, ephemeral key
 * generations) the engines of this process have performed so far. Tests compare it before and
 * after feeding a refused key, to show that no RSA work was spent on it. */
unsigned long pkm__engine_rsa_ops(void);

#endif
