/* SPDX-License-Identifier: MIT */
/* The sans-IO PkmCom/TCP engine: the handshake state machine and the AES-256-CBC packet channel
 * (WIRE-PROFILE sections 3-5). It owns no socket: the caller moves bytes in and out. */
#ifndef PKMCOM_ENGINE_H
#define PKMCOM_ENGINE_H

#include "pkmcom/common.h"
#include "pkmcom/keylog.h"
#include "pkmcom/keys.h"
#include "pkmcom/packet.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Model (BearSSL's br_ssl_engine): the engine is a state machine over two byte streams.
 *
 *   network -> pkm_engine_recv_buf() / pkm_engine_recv_ack()  (or pkm_engine_feed())
 *   network <- pkm_engine_send_buf() / pkm_engine_send_ack()
 *   app     -> pkm_engine_queue_packet()      app <- pkm_engine_next_packet()
 *   app     -> pkm_engine_seal_packet() -> the caller's own buffer -> network   (optional)
 *
 * Handshake messages are processed as their bytes are acknowledged (recv_ack / feed), so the
 * caller's loop asks pkm_engine_wants() what to do next: write out what send_buf holds, read what
 * the socket has into recv_buf and ack it, take packets with next_packet, run RSA work.
 * Once established, received ciphertext is decrypted only when next_packet asks for a packet
 * (lazily), so the byte where a re-establishment switches the stream back to clear text is
 * never decrypted by mistake.
 *
 * Any failure closes the engine: pkm_engine_state() becomes PKM_STATE_CLOSED, pkm_engine_error()
 * says why, the unsent bytes are dropped (no message is ever sent because of a failure) and the
 * caller closes the connection. Calls on a closed engine return its error (or PKM_ECLOSED).
 *
 * Threads: an engine is used by one thread at a time, and never leaves it: with defer_crypto, its
 * RSA private-key work is handed out as a job (pkm_engine_job_take) that holds copies of its
 * inputs and runs on any thread (pkm_job_run) while the engine goes on; the engine takes the
 * result back on its own thread (pkm_engine_job_done). Different engines are independent.
 */

/* One piece of RSA work an engine handed out (see "RSA work as jobs" below). Opaque. */
typedef struct pkm_job pkm_job_t;

typedef struct pkm_engine pkm_engine_t;

enum pkm_role {
    PKM_ROLE_CLIENT = 1,
    PKM_ROLE_SERVER = 2,
};

enum pkm_engine_state {
    PKM_STATE_HANDSHAKE = 1,   /* the first handshake is running */
    PKM_STATE_ESTABLISHED = 2, /* packets flow both ways */
    PKM_STATE_REKEYING = 3,    /* the secret is being re-established (WIRE-PROFILE section 5) */
    PKM_STATE_CLOSED = 4,      /* failed or ended: see pkm_engine_error() */
};

/* Default bound on the bytes waiting to be sent (pkm_engine_config_t.max_send_buffer). */
#define PKM_DEFAULT_MAX_SEND_BUFFER (4u << 20)

/* Length of the optional secret S for alternative handshaking, at most. */
#define PKM_MAX_SECRET 4096

/* The handshake messages an observer sees (pkm_engine_config_t.observe). */
enum pkm_hs_msg {
    PKM_HS_SERVER_KEY = 1, /* ServerKey: Int n, then n bytes of DER SubjectPublicKeyInfo */
    PKM_HS_CLIENT_KEY = 2, /* ClientKey: the same, the client's ephemeral key */
    PKM_HS_KEYSHARE = 3,   /* KeyShare: two RSA ciphertexts and the IV (528 bytes) */
    PKM_HS_CONFIRM = 4,    /* the encrypted 0xFF packet (one 16-byte block, as on the wire) */
    PKM_HS_REKEY = 5,      /* a re-establishment begins (pkm_engine_rekey was called); no bytes */
    PKM_HS_ESTABLISHED = 6 /* the handshake or re-establishment is complete; no bytes */
};

/* One handshake message passing through the engine, as the observer sees it. Every pointer is
 * BORROWED for the call only. The bytes are exactly the message's bytes on the wire, which any
 * capture shows too: public keys, RSA ciphertexts, the IV in the clear, the 0xFF ciphertext;
 * never M, a key, the secret S or any plaintext secret. */
typedef struct pkm_hs_event {
    int msg;              /* enum pkm_hs_msg */
    int sent;             /* 1: the engine queued it to be sent (in pkm_engine_send_buf() next);
                             0: it was received from the peer (and is about to be processed) */
    int rekey;            /* 1 during a re-establishment, 0 in the first handshake */
    const uint8_t *bytes; /* the message's bytes (NULL for PKM_HS_REKEY / PKM_HS_ESTABLISHED) */
    size_t len;           /* their number (0 for those two) */
} pkm_hs_event_t;

/* Configuration, read by pkm_engine_new(); the struct itself may be reused or freed afterwards
 * (except for what it borrows, see each field). Always start from pkm_engine_config_init(). */
typedef struct pkm_engine_config {
    int role; /* PKM_ROLE_CLIENT or PKM_ROLE_SERVER */

    /* Server only, required: the server's long-term RSA-2048 key pair. BORROWED: it must outlive
     * the engine; one key may serve any number of engines at once (it is never modified; a job
     * holds a reference of its own, pkm_key_ref, so it may outlive both). */
    const pkm_key_t *server_key;

    /* Client only, optional: the ephemeral key pair to use. OWNERSHIP PASSES to the engine when
     * pkm_engine_new() is called, whether it succeeds or not (also when the config is rejected,
     * e.g. for a server): the engine frees (and so wipes) it.
     * Do not use or free it afterwards. NULL: the engine takes a key from `keypool`, or generates
     * one (~100 ms; a job when defer_crypto is set). The client keeps the key until
     * pkm_engine_free(), since a re-establishment reuses it. */
    pkm_key_t *client_key;

    /* Client only, optional: pool to take the ephemeral key from when client_key is NULL.
     * BORROWED: it must outlive the engine and every job taken from it (the key-generation job
     * takes the key from the pool). */
    pkm_keypool_t *keypool;

    /* Optional secret S for alternative handshaking: K_cs = SHA-256(M || S || 0x43) and
     * K_sc = SHA-256(M || S || 0x53) instead of the same without S (wire profile 2). Both sides
     * must be configured with the same S (a password's UTF-8 bytes). Copied by
     * pkm_engine_new(); the copy is wiped as soon as the first handshake has derived the keys (a
     * re-establishment is given its own secret). NULL/0 = no secret. At most PKM_MAX_SECRET
     * bytes. S is not a PAKE: a client that uses one should also pin the server, or the server
     * it talks to can guess S offline from the client's 0xFF (docs/PROTOCOL.md section 8). */
    const uint8_t *secret;
    size_t secret_len;

    /* Client only, optional: the expected server fingerprint "SHA256:..." (pkm_key_fingerprint).
     * Copied. When set, a ServerKey with another fingerprint fails with PKM_EPIN, and an
     * established engine has authenticated the server: its 0xFF answer is under K_sc, which only
     * the holder of the pinned private key can derive (wire profile 2). A party showing the
     * pinned public key without its private half (an echoing impostor) fails the handshake with
     * PKM_ENOPROOF at "confirmation (0xFF)", as does a wrong secret or a wire-profile-1 server
     * that answers. Without a pin the engine knows only that the server holds the key it showed
     * (pkm_engine_peer_fingerprint). See docs/PROTOCOL.md section 8 for what is not proven. */
    const char *pin_fingerprint;

    /* Optional trust decision on the peer's key (client and server), e.g. known_hosts: called
     * once per engine, when the peer's ServerKey / ClientKey has been parsed and accepted by the
     * checks every key passes (WIRE-PROFILE section 3 step 2) and after the pin (a pin that does
     * not match refuses first, and the hook is then not called). It is called BEFORE any RSA
     * work or byte is spent on that key: nothing has been encrypted to it, a client has not
     * generated its own key or sent anything. `der`/`der_len` are the key's DER
     * SubjectPublicKeyInfo and `fingerprint` its "SHA256:..." text (pkm_key_fingerprint), both
     * BORROWED for the call only. Returns 0 to accept, or a negative PKM_E* to refuse (PKM_EPIN
     * is the natural one): the engine then closes with that error at the ServerKey / ClientKey
     * step (a positive return counts as PKM_EPIN). Called on the engine's thread, from
     * pkm_engine_recv_ack() / pkm_engine_feed(); it must not call functions of this engine.
     * ctx is borrowed. Pinning is itself one such check, run by the engine before this one. */
    int (*check_peer)(void *ctx, const uint8_t *der, size_t der_len, const char *fingerprint);
    void *check_peer_ctx;

    /* Optional observer of the handshake (first handshake and re-establishments): called for
     * each handshake message the engine queues or receives, and when a re-establishment begins
     * and a handshake completes (pkm_hs_event_t above: borrowed, public bytes only). For tools
     * that show the handshake (pkmcom demo) and for logs; it cannot change anything. Called on the
     * engine's thread from the call that processes the message (pkm_engine_new for a server's
     * ServerKey, recv_ack / feed, rekey, job_done); it must not call functions of this engine.
     * ctx is borrowed. */
    void (*observe)(void *ctx, const pkm_hs_event_t *ev);
    void *observe_ctx;

    /* Largest packet Size accepted from the peer (default PKM_DEFAULT_MAX_SIZE, 1 MiB; at most
     * INT32_MAX). A larger one closes the engine with PKM_ETOOBIG. */
    size_t max_packet_size;

    /* Bound on the bytes queued and not yet acknowledged by pkm_engine_send_ack() (default
     * PKM_DEFAULT_MAX_SEND_BUFFER). pkm_engine_queue_packet() beyond it returns PKM_EQUEUE.
     * Handshake messages are not counted against it. */
    size_t max_send_buffer;

    /* Nonzero: the expensive RSA private-key work (decrypting the peer's KeyShare; a client's key
     * generation when it has no key) is not done inside recv_ack/feed/rekey; the engine instead
     * sets PKM_WANT_JOB and hands the work out as a job (pkm_engine_job_take), for the caller to
     * run anywhere, e.g. on a worker thread. Zero (default): the work is done inline. */
    int defer_crypto;

    /* Optional check of each received application packet (never the handshake's 0xFF), e.g. a
     * two-line wrapper calling pkm_registry_verify(ctx, pkt) (schema.h) with the registry as ctx
     * (call through a wrapper: casting a function pointer to another type is undefined).
     * Returns 0 to accept, a negative PKM_E* to reject (PKM_EUNKNOWNID, PKM_EHASH, ...): the
     * engine then closes with that error (a positive return counts as PKM_EPROTO). Called from
     * pkm_engine_next_packet() with the packet about to be returned. ctx is borrowed. */
    int (*verify)(void *ctx, const pkm_packet_t *pkt);
    void *verify_ctx;

    /* Optional randomness for the handshake's M (256 bytes) and IV (16 bytes) only, for
     * deterministic test vectors; each KeyShare asks for M, then for IV. Returns 0 on success,
     * nonzero on failure (the engine closes with PKM_ERANDOM). NULL (default): OpenSSL's
     * RAND_bytes. The RSA PKCS#1 v1.5 padding and the implicit-rejection substitute always use
     * OpenSSL's generator. Called on the engine's thread only (never from a job). ctx is borrowed.
     */
    int (*random)(void *ctx, uint8_t *out, size_t n);
    void *random_ctx;

    /* Optional key log (pkmcom/keylog.h, docs/PROTOCOL.md "Key log"): called once per completed
     * derivation (the first handshake and each re-establishment, on both roles) with the client's
     * KeyShare IV, K_cs, K_sc and the combined IV, as soon as they are derived. THE ENTRY HOLDS THE
     * SESSION'S SECRETS: whoever gets it and a capture reads and forges the traffic. It is
     * BORROWED for the call only (the engine wipes it afterwards): copy what you keep, and wipe
     * your copy. Called on the engine's own thread (with defer_crypto, from
     * pkm_engine_job_done(), never from a job's thread). ctx is borrowed. Independently of this,
     * when the environment variable PKMCOM_KEYLOGFILE names a file at pkm_engine_new() (and the
     * program is not set-id), the engine appends the entry's line to that file (created 0600). */
    void (*keylog_fn)(void *ctx, const pkm_keylog_entry_t *entry);
    void *keylog_ctx;
} pkm_engine_config_t;

/* Fills *cfg with the defaults for `role` (everything else NULL/0). */
PKM_API void pkm_engine_config_init(pkm_engine_config_t *cfg, int role);

/* 0 when pkm_engine_new() would accept *cfg, else PKM_EINVAL (also for NULL): the one validator,
 * for the layers that embed an engine config (pkm_connect(), the server) and check it before they
 * start. Takes nothing (a client_key stays the caller's). */
PKM_API int pkm_engine_config_check(const pkm_engine_config_t *cfg);

/* The same validator, saying what to fix: 0, or PKM_EINVAL with a NUL-terminated sentence in
 * errbuf (truncated to errbuf_size; NULL/0 for none; "" on success) naming the field, the
 * expected form and what was given, e.g. "pin_fingerprint: expected \"SHA256:\" and 43 base64
 * characters (...), got \"abc\"" or "secret_len: at most 4096 bytes (PKM_MAX_SECRET), got
 * 5000". pkm_connect(), pkm_listen(), pkm_conn_from_fd() and pkm_server_new() report its
 * sentence (prefixed "engine.") through their errbuf, before any socket is made. */
PKM_API int pkm_engine_config_validate(const pkm_engine_config_t *cfg, char *errbuf,
                                       size_t errbuf_size);

/* Makes an engine. A server queues its ServerKey at once (read it from pkm_engine_send_buf()).
 * PKM_EINVAL for an inconsistent config (no server_key for a server, a server_key or client_key
 * without a private half, a client_key given to a server, a malformed pin, a max_packet_size of 0
 * or above INT32_MAX, a secret longer than PKM_MAX_SECRET). *out is the caller's: pkm_engine_free.
 */
PKM_API int pkm_engine_new(const pkm_engine_config_t *cfg, pkm_engine_t **out);

/* Frees the engine, wiping every secret it holds (M halves, the secret S, the cipher contexts,
 * the client's ephemeral private key, the buffers). NULL is allowed. */
PKM_API void pkm_engine_free(pkm_engine_t *e);

/* ---- bytes in ---- */

/* Where to put bytes read from the network: returns a pointer to *cap writable bytes. The buffer
 * grows only as bytes arrive (never to a size a packet header merely announces). *cap == 0
 * (pointer NULL) when the engine is closed, or when it already buffers as much as it will
 * (about one largest packet): take packets with pkm_engine_next_packet() first. The pointer is
 * valid until the next call on the engine. */
PKM_API uint8_t *pkm_engine_recv_buf(pkm_engine_t *e, size_t *cap);

/* Tells the engine that n bytes were written at pkm_engine_recv_buf() (n <= the cap it gave,
 * else PKM_EINVAL). Runs the handshake as far as the bytes allow. Returns 0, or the negative error
 * that closed the engine. */
PKM_API int pkm_engine_recv_ack(pkm_engine_t *e, size_t n);

/* Convenience: copies n bytes in (all of them, growing the buffer as needed) and acknowledges
 * them, as recv_buf + recv_ack would. Returns 0 or the error that closed the engine. */
PKM_API int pkm_engine_feed(pkm_engine_t *e, const uint8_t *p, size_t n);

/* Tells the engine that the peer closed the connection (read returned 0). During a handshake
 * this fails it (PKM_EHANDSHAKE). Once established, the packets already received can still be
 * taken; after them pkm_engine_next_packet() returns PKM_EEOF (or PKM_EPROTO if the stream ended
 * inside a packet). Returns 0 or the error that closed the engine. */
PKM_API int pkm_engine_recv_eof(pkm_engine_t *e);

/* ---- bytes out ---- */

/* The bytes waiting to be written to the network: returns a pointer to *len bytes (NULL and 0
 * when there are none, or the engine is closed). Valid until the next call on the engine. */
PKM_API const uint8_t *pkm_engine_send_buf(pkm_engine_t *e, size_t *len);

/* Tells the engine that the first n of those bytes were written. PKM_EINVAL if n exceeds what
 * send_buf reported. Returns 0. */
PKM_API int pkm_engine_send_ack(pkm_engine_t *e, size_t n);

/* ---- application packets ---- */

/* Queues one packet (raw path: the caller gives Id, Hash and content; nothing is checked against
 * a schema). The engine copies header, content and PKCS#7 padding into its send buffer and
 * encrypts them in place; `content` is not kept. Allowed once established (PKM_ESTATE during the
 * first handshake). While the secret is re-established (PKM_STATE_REKEYING) the packet waits,
 * unencrypted, and is encrypted under the new key and sent once established again.
 * Errors: PKM_EINVAL (id 0xFF is reserved for the handshake; content NULL with size > 0),
 * PKM_ETOOBIG (size above INT32_MAX, or a packet that alone exceeds max_send_buffer),
 * PKM_EQUEUE (max_send_buffer would be exceeded: write out bytes and retry), PKM_ECLOSED. */
PKM_API int pkm_engine_queue_packet(pkm_engine_t *e, uint8_t id, uint32_t hash,
                                    const uint8_t *content, size_t size);

/* The bytes a packet of `size` content bytes takes on the wire: the 9-byte header, the content and
 * 1..16 bytes of PKCS#7 padding, a multiple of 16. 0 when size exceeds INT32_MAX. */
PKM_API size_t pkm_engine_wire_size(size_t size);

/* Encrypts one packet into the caller's memory rather than the engine's send buffer: the very
 * bytes pkm_engine_queue_packet() would have queued, on the same chain. For callers that write
 * from buffers of their own, such as a writer thread sending one buffer while this thread seals
 * the next, without copying bytes out of the engine.
 * The caller must put these bytes on the wire in the order it sealed them, after everything
 * the engine queued before and before anything it queues after. Hence sealing is allowed only in
 * PKM_STATE_ESTABLISHED while pkm_engine_send_buf() is empty: otherwise PKM_ESTATE, nothing done
 * (during a re-establishment, use pkm_engine_queue_packet(), which holds packets back).
 * `out` receives pkm_engine_wire_size(size) bytes, stored in *out_len; `content` (not kept) and
 * `out` must not overlap. Returns 0, or: PKM_EINVAL (NULL e, out or out_len; id 0xFF; content
 * NULL with size > 0; content overlapping out), PKM_ETOOBIG (size above INT32_MAX), PKM_ENOSPC
 * (out_cap below the wire size), PKM_ESTATE, PKM_ECLOSED: nothing done, the engine unchanged. A
 * failure of the cipher (PKM_ECRYPTO) closes the engine and wipes what was written at out.
 * Unlike queue_packet, max_send_buffer does not apply: the engine holds none of these bytes.
 * A writer thread, in outline (bench/loopback.h's writer-thread mode does this with 3 buffers):
 *   this thread:   while a free buffer b exists: seal packets into b until it holds ~256 KiB,
 *                  hand b to the writer (mutex + condition variable), take the next free one;
 *   writer thread: send(2) each buffer handed over, in order, then give it back as free.
 * The engine itself is touched by this thread only; the writer only reads finished buffers. */
PKM_API int pkm_engine_seal_packet(pkm_engine_t *e, uint8_t id, uint32_t hash,
                                   const uint8_t *content, size_t size, uint8_t *out,
                                   size_t out_cap, size_t *out_len);

/* Takes the next received packet. Returns 1 with *out filled; out->content points into the
 * engine's receive buffer and stays valid until the next call of pkm_engine_recv_buf, _recv_ack,
 * _feed, _recv_eof, _next_packet, _rekey, _job_done or _free on this engine (copy what you keep).
 * Returns 0 when no complete packet is buffered yet (always during a handshake or a
 * re-establishment), or a negative error: the engine is now closed with it (PKM_ENEGLEN,
 * PKM_ETOOBIG, PKM_EPADDING, PKM_EPROTO for an 0xFF packet, the verify hook's error, PKM_EEOF
 * after pkm_engine_recv_eof). Only the packets asked for are decrypted.
 * A client that receives the packet triggering a re-establishment must call pkm_engine_rekey()
 * before calling this again: the bytes that follow the trigger are the server's new KeyShare. */
PKM_API int pkm_engine_next_packet(pkm_engine_t *e, pkm_packet_t *out);

/* ---- re-establishing the secret (WIRE-PROFILE section 5) ---- */

/* Runs the handshake again from step 3 with both sides' keys, and new M, IV (and secret).
 * `secret` (copied, wiped after derivation; NULL/0 = no secret) is S for this derivation only:
 * both sides must pass the same. The engine must be established (PKM_ESTATE otherwise).
 * Server: call right after queueing the trigger packet, with nothing queued in between: the
 * engine sends its new KeyShare in the clear, then reads the client's KeyShare (any bytes not yet
 * taken from the client are read as that KeyShare), then the encrypted 0xFF, and answers it.
 * Client: call after pkm_engine_next_packet() returned the trigger packet: the engine sends its
 * new KeyShare (nothing else before it), reads the server's KeyShare that follows the trigger,
 * sends the 0xFF packet and checks the answer. Queue nothing between taking the trigger and this
 * call: the engine cannot tell which packet is a trigger (that belongs to the concrete
 * protocol), so such a packet would leave before the KeyShare and the server would read it as
 * one, failing the re-establishment.
 * The state is PKM_STATE_REKEYING until PKM_STATE_ESTABLISHED again; packets queued meanwhile
 * wait (see pkm_engine_queue_packet). Returns 0 or the error that closed the engine. */
PKM_API int pkm_engine_rekey(pkm_engine_t *e, const uint8_t *secret, size_t secret_len);

/* ---- what the engine wants ---- */

/* Bits of pkm_engine_wants(), as BearSSL's br_ssl_engine_current_state(): */
#define PKM_WANT_SEND   0x01u /* bytes wait in pkm_engine_send_buf(): write them, send_ack */
#define PKM_WANT_RECV   0x02u /* the engine takes bytes: pkm_engine_recv_buf() has room */
#define PKM_WANT_PACKET 0x04u /* call pkm_engine_next_packet(): see below */
#define PKM_WANT_JOB    0x08u /* RSA work waits (defer_crypto): pkm_engine_job_take() */
#define PKM_WANT_CLOSED 0x10u /* the engine is closed (alone: no other bit is set) */

/* What the engine needs next, a combination of the PKM_WANT_* bits; 0 when it waits for nothing
 * the caller could do (e.g. while its job is out, after the peer closed).
 * PKM_WANT_PACKET: established, and either the end of the stream was reported (next_packet
 * then closes the engine with PKM_EEOF or PKM_EPROTO), or at least one block of a packet is
 * buffered. A packet's length is known only once its first block is decrypted, which
 * next_packet does lazily (never wants()): so next_packet may return 0 when the bit was set,
 * after which the bit stays clear until the rest of the packet has arrived. A driver is a loop:
 *   w = pkm_engine_wants(e): CLOSED: close the socket, done; JOB: take the job, run it (here or
 *   elsewhere) and give it back with pkm_engine_job_done;
 *   SEND: write send_buf, send_ack; PACKET: next_packet; RECV: read into recv_buf, recv_ack
 *   (0 bytes read: pkm_engine_recv_eof); wait for the socket when nothing moved.
 * A pure function of the engine's state: no side effect. NULL counts as closed. */
PKM_API unsigned pkm_engine_wants(const pkm_engine_t *e);

/* ---- RSA work as jobs (config.defer_crypto) ---- */

/* An engine configured with defer_crypto hands each piece of RSA private-key work out as a job:
 * a client's key generation (or its take from the key pool) and the decryption of the peer's
 * KeyShare (two RSA private-key operations). At most one job at a time. While a job is wanted or
 * out, the engine processes no more received bytes (more may still be put in with recv_buf /
 * recv_ack / feed / recv_eof) and everything else works as usual.
 * Life of a job:  take (engine's thread) -> run (any thread) -> done (engine's thread)
 *                                                            -> or pkm_job_free (anywhere).
 * A job holds copies of what it needs (a reference to the private key, the ciphertexts) and no
 * pointer to its engine, so it may be run or freed after the engine was freed. */

/* Takes the job the engine wants (PKM_WANT_JOB). *out is the caller's: give it back with
 * pkm_engine_job_done(), or drop it with pkm_job_free() (e.g. when the connection went away).
 * Returns 0, PKM_ESTATE (no job wanted; *out NULL), or the error that closed the engine
 * (PKM_ENOMEM: the job could not be allocated). */
PKM_API int pkm_engine_job_take(pkm_engine_t *e, pkm_job_t **out);

/* Does the job's work. Pure: touches nothing but the job (and, for a key-generation job, the
 * borrowed key pool), so it may run on any thread while the engine is in use elsewhere; one
 * thread at a time per job. Returns 0 or the error the engine will close with at done (also
 * stored in the job); running a job twice does nothing more. Ends with OPENSSL_thread_stop(), so
 * a pool thread that is never joined keeps no OpenSSL state between jobs. */
PKM_API int pkm_job_run(pkm_job_t *job);

/* Gives the job back to the engine that handed it out, on the engine's thread, and frees the job
 * (in every case). A job not run yet is run first, here. The engine then goes on with the
 * handshake as far as the buffered bytes allow. Returns 0, PKM_EINVAL (NULL, or not the job this
 * engine waits for: the engine is unchanged), or the error that closed the engine (the job's, or
 * the engine's own if it was closed meanwhile). */
PKM_API int pkm_engine_job_done(pkm_engine_t *e, pkm_job_t *job);

/* Frees a job without giving it back, run or not, wiping what it holds (the decrypted M, a key
 * made and not taken) and dropping its key reference. Its engine, if still alive, then waits for
 * that job forever: free or close it. Any thread. NULL is allowed. */
PKM_API void pkm_job_free(pkm_job_t *job);

/* ---- memory ---- */

/* Releases the receive buffer if it holds no unconsumed byte, and the send buffer if it holds no
 * unsent byte (each wiped first), so that a quiet connection costs only the engine itself (about
 * 5.6 KiB once established: the struct, the peer's public key, the two cipher contexts); they are
 * allocated again when bytes next arrive or are queued. A partly received packet or unsent bytes
 * keep their buffer. Meant for a server's idle sweep (connections quiet for a while), not after
 * every packet: the next bytes then cost an allocation. Invalidates pointers from recv_buf /
 * send_buf / next_packet. A job out is unaffected (it holds copies). NULL is allowed. */
PKM_API void pkm_engine_trim(pkm_engine_t *e);

/* The memory a peer pins with a packet it has started and not finished: once established (or
 * re-establishing), the receive buffer's capacity while it holds bytes of an incomplete packet
 * (call after taking every complete packet), else 0. For the server's partial-packet budget. */
PKM_API size_t pkm_engine_partial_held(const pkm_engine_t *e);

/* ---- status ---- */

/* PKM_STATE_HANDSHAKE, _ESTABLISHED, _REKEYING or _CLOSED. */
PKM_API int pkm_engine_state(const pkm_engine_t *e);

/* The error that closed the engine (0 while it is not closed). */
PKM_API int pkm_engine_error(const pkm_engine_t *e);

/* The handshake step that failed, for logs: "ServerKey", "ClientKey", "KeyShare" or
 * "confirmation (0xFF)"; NULL if the engine did not fail during a handshake. Static storage. */
PKM_API const char *pkm_engine_fail_step(const pkm_engine_t *e);

/* A sentence saying what a failed handshake means, seen from `role` (PKM_ROLE_CLIENT or
 * PKM_ROLE_SERVER): which side closed, at which step (its number in docs/PROTOCOL.md), what this
 * side was waiting for, and the usual causes. err names what happened: PKM_EEOF (the peer closed
 * the connection; an engine reports that as PKM_EHANDSHAKE), PKM_ECONNRESET (it reset it),
 * PKM_ETIMEOUT (this side's bound ran out; the sentence says where it was waiting), or, for a
 * server at "confirmation (0xFF)", PKM_EHANDSHAKE (the client's confirmation did not check: a
 * wrong secret). fail_step is pkm_engine_fail_step()'s (or the server's on_close argument). E.g.
 * (server, PKM_EEOF, "ClientKey"): "the client closed the connection during handshake step 2
 * (ClientKey), before the client's ClientKey: it may have refused this server's key (...)".
 * Writes it NUL-terminated into buf (cut to n; 256 bytes are ample) and returns its length; 0
 * and "" for any other case (NULL step, another error: pkm_strerror says it). */
PKM_API size_t pkm_handshake_failure(int role, int err, const char *fail_step, char *buf, size_t n);

/* Closes the engine locally with `err` (a negative PKM_E*, e.g. PKM_ETIMEOUT when the caller's
 * handshake timer fires; anything else is recorded as PKM_ECLOSED), dropping unsent bytes. No-op
 * if already closed. */
PKM_API void pkm_engine_close(pkm_engine_t *e, int err);

/* The peer's public key once its ServerKey/ClientKey was accepted, else NULL. BORROWED: valid
 * until pkm_engine_free(). */
PKM_API const pkm_key_t *pkm_engine_peer_key(const pkm_engine_t *e);

/* The peer key's fingerprint "SHA256:..." (NUL-terminated), else NULL. Valid until
 * pkm_engine_free(). */
PKM_API const char *pkm_engine_peer_fingerprint(const pkm_engine_t *e);

/* 1 for a client engine, 0 for a server engine. */
PKM_API int pkm_engine_is_client(const pkm_engine_t *e);

#ifdef __cplusplus
}
#endif
#endif
