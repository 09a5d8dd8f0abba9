/* SPDX-License-Identifier: MIT */
/* The engine's own state, shared by its two files (not installed): engine.c (the handshake, its
 * RSA work and jobs, configuration, lifetime, re-establishment) and engine_stream.c (the receive
 * and send buffers, the packet layer of the channel, what the engine wants, trimming). */
#ifndef PKM_ENGINE_STATE_H
#define PKM_ENGINE_STATE_H

#include <stddef.h>
#include <stdint.h>
#include "pkmcom/engine.h"
#include "buf.h"
#include "channel_internal.h"
#include "engine_internal.h"

#define RSA_CT        256                         /* an RSA-2048 ciphertext */
#define KEYSHARE_SIZE (2 * RSA_CT + PKM__IV_SIZE) /* 528 */

/* Where a job stands for its engine. */
enum job_state {
    JS_NONE,   /* no job */
    JS_WANTED, /* PKM_WANT_JOB: waits for pkm_engine_job_take() */
    JS_OUT,    /* taken: the engine waits for pkm_engine_job_done() */
};

/* Where the handshake stands. A client goes SERVERKEY -> OWNKEY -> KEYSHARE -> KEYSHARE_WORK ->
 * CONFIRM -> DONE; a server CLIENTKEY -> KEYSHARE -> KEYSHARE_WORK -> CONFIRM -> DONE; a
 * re-establishment re-enters at KEYSHARE on both sides. */
enum hs_step {
    HS_SERVERKEY,     /* client: waiting for ServerKey */
    HS_CLIENTKEY,     /* server: waiting for ClientKey */
    HS_OWNKEY,        /* client: needs its ephemeral key before sending ClientKey + KeyShare */
    HS_KEYSHARE,      /* waiting for the peer's 528-byte KeyShare */
    HS_KEYSHARE_WORK, /* the peer's KeyShare is in share_in: decrypt it and derive */
    HS_CONFIRM,       /* waiting for the encrypted 0xFF (server: the client's; client: answer) */
    HS_DONE,
};

struct pkm_engine {
    int client; /* 1 client, 0 server */
    int state;  /* enum pkm_engine_state */
    int err;
    const char *fail_step;
    enum hs_step hs;
    int defer;                /* config.defer_crypto: RSA work as jobs */
    enum job_state job_state; /* JS_NONE, or a job wanted / taken */
    const pkm_job_t *job_out; /* the job taken (identity only: never dereferenced) */
    int eof;                  /* the peer closed its side */

    const pkm_key_t *server_key; /* server: borrowed long-term key pair */
    pkm_key_t *own_key;          /* client: owned ephemeral key pair */
    pkm_keypool_t *keypool;      /* client: borrowed */
    pkm_key_t *peer_key;         /* owned, once accepted */
    char peer_fp[PKM_FINGERPRINT_SIZE];
    char pin[PKM_FINGERPRINT_SIZE];
    int has_pin;
    /* The trust decisions on the peer's key, in order: the pin's check (ctx: pin), then
     * config.check_peer. The one place where a peer key is accepted or refused. */
    struct {
        int (*fn)(void *ctx, const uint8_t *der, size_t der_len, const char *fingerprint);
        void *ctx;
    } trust[2];
    int ntrust;
    void (*observe)(void *ctx, const pkm_hs_event_t *ev); /* config.observe */
    void *observe_ctx;

    uint8_t *secret; /* S for the next derivation; wiped right after it */
    size_t secret_len;
    uint8_t m_own[PKM__M_SIZE];      /* own M until derivation, then wiped */
    uint8_t iv_own[PKM__IV_SIZE];    /* own IV until derivation, then wiped */
    uint8_t share_in[KEYSHARE_SIZE]; /* the peer's KeyShare until derivation, then wiped */
    pkm__channel_t ch;

    size_t max_packet;
    size_t max_send;
    int (*verify)(void *ctx, const pkm_packet_t *pkt);
    void *verify_ctx;
    int (*random)(void *ctx, uint8_t *out, size_t n);
    void *random_ctx;
    void (*keylog_fn)(void *ctx, const pkm_keylog_entry_t *entry); /* config.keylog_fn */
    void *keylog_ctx;
    char *keylog_path;          /* PKMCOM_KEYLOGFILE at pkm_engine_new(), or NULL */
    pkm__keylog_fn test_keylog; /* pkm__engine_set_keylog() */
    void *test_keylog_ctx;

    /* Receive buffer: [rpos, rend) holds bytes not yet consumed; rgiven is the room last
     * offered by recv_buf. Once established, a packet whose first block is decrypted (in place)
     * but whose rest has not arrived is described by pk_head / pk / pk_total. */
    uint8_t *rbuf;
    size_t rcap, rpos, rend, rgiven;
    /* Bytes from rpos already decrypted in place, whole blocks: a server decrypts every whole block
     * buffered in one EVP call (its peer sends nothing but packets under this key until the
     * server's own re-establishment, which refuses held bytes); a client, whose stream turns to
     * cleartext right after a trigger packet, decrypts no further than the packet it takes. */
    size_t rdec;
    int pk_head;
    pkm_packet_t pk;
    size_t pk_total;

    /* Send buffer: [sstart, senc) is ready to go out (clear handshake messages or ciphertext);
     * [senc, slen) holds padded plaintext packets queued during a re-establishment, encrypted
     * under the new key once it is confirmed. */
    uint8_t *sbuf;
    size_t scap, sstart, senc, slen;
};

/* The received bytes not yet consumed, as a reader: every parse of them goes through it, and a
 * step that completes consumes what it read (e->rpos += in.pos). */
static inline pkm_reader pkm__engine_received(const pkm_engine_t *e)
{
    pkm_reader r;
    pkm__reader_init(&r, e->rbuf ? e->rbuf + e->rpos : NULL, e->rend - e->rpos);
    return r;
}

/* ---- engine.c, for engine_stream.c ---- */

/* Closes the engine with err: no message is sent (unsent bytes are dropped), the handshake
 * material is wiped. Returns the error that closed it (the first one). */
int pkm__engine_fail(pkm_engine_t *e, int err);
/* Runs the handshake as far as the buffered bytes allow (nothing once established: packets are
 * taken lazily). Returns 0 or the error that closed the engine. */
int pkm__engine_process(pkm_engine_t *e);

/* ---- engine_stream.c, for engine.c ---- */

/* Wipes n bytes at p and frees them (NULL allowed). */
void pkm__engine_wipe_free(void *p, size_t n);
/* Makes room for n more bytes at the send buffer's end. PKM_ENOMEM. */
int pkm__engine_send_reserve(pkm_engine_t *e, size_t n);
/* Inserts n ready-to-send bytes at senc (before any held plaintext) and returns where to write
 * them, or NULL when out of memory. */
uint8_t *pkm__engine_send_insert(pkm_engine_t *e, size_t n);

#endif
