/* SPDX-License-Identifier: MIT */
/* The blocking PkmCom/TCP API over sockets, for simple programs: connect, listen/accept, send and
 * receive packets, re-establish the secret. Built on the sans-IO engine (engine.h). */
#ifndef PKMCOM_CONN_H
#define PKMCOM_CONN_H

#include "pkmcom/common.h"
#include "pkmcom/engine.h"
#include "pkmcom/keys.h"
#include "pkmcom/packet.h"
#include "pkmcom/schema.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A pkm_conn_t is one established PkmCom/TCP connection over a socket it owns. Every call blocks
 * at most for the time it is given (timeout_ms, an int64_t as every duration in the library:
 * -1 = wait as long as it takes, 0 = do what can be done now without waiting, > 0 =
 * milliseconds). Internally the socket is non-blocking and
 * every wait is a poll() against a CLOCK_MONOTONIC deadline; EINTR is retried, short reads and
 * writes are handled, SIGPIPE is never raised (MSG_NOSIGNAL), TCP_NODELAY is set.
 *
 * Failures. Every function returns 0 (or 1, see pkm_conn_recv) on success and a negative PKM_E*
 * code on failure. A failure of the protocol or of the socket (anything but PKM_EAGAIN,
 * PKM_EQUEUE, PKM_EINVAL, PKM_ETOOBIG, PKM_ESTATE, PKM_ENOMEM as documented per call) CLOSES the
 * connection:
 * the socket is closed at once with no message (WIRE-PROFILE section 3/4), pkm_conn_fd() becomes
 * -1, every later call returns the same error, and pkm_conn_errmsg() gives a sentence saying what
 * failed. Only pkm_conn_close() remains to be called.
 *
 * PKM_ETIMEOUT always means "closed because of a timeout" (handshake, re-establishment, idle);
 * a call whose own timeout_ms runs out with the connection still usable returns PKM_EAGAIN.
 *
 * Threads: a connection or a listener is used by one thread at a time; different ones are
 * independent. No signal handler is installed and no global state is kept.
 */

typedef struct pkm_conn pkm_conn_t;
typedef struct pkm_listener pkm_listener_t;

/* Recommended size of the error sentence buffer (pkm_conn_config_t.errbuf). */
#define PKM_ERRMSG_SIZE 256

/* Default bounds (pkm_conn_config_init). */
#define PKM_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000
#define PKM_DEFAULT_CONNECT_TIMEOUT_MS   10000

/* Configuration of pkm_connect(), pkm_listen() and pkm_conn_from_fd(). The struct is read during
 * the call and may be reused or freed afterwards, except for what it borrows (see each field).
 * Always start from pkm_conn_config_init(). */
typedef struct pkm_conn_config {
    /* The engine's configuration (engine.h: keys, key pool, secret, pin, max_packet_size,
     * max_send_buffer, verify, random), with the same names, defaults, ownership and checks.
     * The call sets engine.role itself (pkm_connect: client; pkm_listen: server; pkm_conn_from_fd:
     * its `role`), and RSA work is always done inline (engine.defer_crypto is ignored).
     * Ownership and lifetimes as the engine's, per connection, with these additions:
     * - engine.server_key: BORROWED, it must outlive the listener and every connection made
     *   with it. Required for a server, NULL for a client.
     * - engine.client_key: OWNERSHIP PASSES when pkm_connect() or pkm_conn_from_fd() is called,
     *   whatever the result (freed, and so wiped, with the connection, or at once on failure;
     *   also when given to pkm_listen(), which frees it and fails with PKM_EINVAL). To reuse one
     *   key for several connections pass pkm_key_ref(key). NULL: a key is taken from
     *   engine.keypool (BORROWED: must outlive the call), or generated (~100 ms, counted in the
     *   handshake timeout).
     * - engine.secret: copied; pkm_listen() keeps a copy for every accepted connection, wiped by
     *   pkm_listener_close().
     * - engine.pin_fingerprint (client): another key fails the handshake with PKM_EPIN; a server
     *   that shows the pinned key but cannot prove it holds its private half (or whose secret
     *   differs) fails it with PKM_ENOPROOF. A connection made with a pin has authenticated the
     *   server (docs/PROTOCOL.md section 8).
     * - engine.check_peer (either role): a refusal fails the handshake with the hook's error,
     *   and the error sentence names the fingerprint the peer presented (and the pinned one when
     *   the pin refused), e.g. "...: the peer presented SHA256:..., the pin is SHA256:...".
     *   engine.observe sees the handshake (and re-establishments) of each connection.
     * - engine.verify_ctx, engine.random_ctx, engine.check_peer_ctx, engine.observe_ctx:
     *   BORROWED, must outlive the connections (for a listener: every connection it accepts);
     *   the hooks are called on the thread using the connection (for a listener, the one in
     *   pkm_accept). */
    pkm_engine_config_t engine;

    /* Bound on the whole handshake, from the first byte to the confirmation (default 10000 ms;
     * 0 = no bound). On expiry the handshake fails with PKM_ETIMEOUT. */
    int64_t handshake_timeout_ms;
    /* Bound on pkm_connect's TCP connection, all resolved addresses together (default 10000 ms;
     * 0 = only the operating system's own bound). Expiry: PKM_ECONNECT ("timed out"). */
    int64_t connect_timeout_ms;
    /* Idle bound (default 0 = none): when pkm_conn_recv() waits and no byte at all has arrived
     * from the peer for this long (counted from the last byte received, or from the end of the
     * handshake), the connection is closed with PKM_ETIMEOUT. */
    int64_t idle_timeout_ms;

    /* Optional: where pkm_connect(), pkm_conn_from_fd() and pkm_listen() write, on failure, a
     * NUL-terminated sentence saying what failed (truncated to errbuf_size; PKM_ERRMSG_SIZE is
     * ample), e.g. "connect to example.org:1234 failed: Connection refused". Set to "" on success.
     * BORROWED for the duration of the call only; pkm_listen() does not keep it (accept failures
     * are reported by pkm_listener_errmsg()). */
    char *errbuf;
    size_t errbuf_size;
} pkm_conn_config_t;

/* Fills *cfg with the defaults: engine as pkm_engine_config_init() makes it (role 0: set by the
 * call), handshake_timeout_ms and connect_timeout_ms; everything else NULL/0. */
PKM_API void pkm_conn_config_init(pkm_conn_config_t *cfg);

/* ---- making connections ---- */

/* Client: resolves host (getaddrinfo, IPv4 and IPv6; a name or a numeric address), connects to
 * each address in turn until one accepts (within connect_timeout_ms in all), runs the client
 * handshake (within handshake_timeout_ms) and returns an ESTABLISHED connection in *out, which is
 * the caller's (pkm_conn_close). port: 1..65535.
 * Errors (*out NULL; cfg->errbuf holds the sentence): PKM_EINVAL (NULL host/cfg/out, port out of
 * range, a negative timeout, an engine config pkm_engine_config_validate() refuses; checked
 * before anything is resolved or connected, the sentence naming the argument or field, what it
 * expects and what it got: "pkm_connect: invalid argument: port: expected 1..65535, got 99999",
 * "...: engine.pin_fingerprint: expected \"SHA256:\" and 43 base64 characters ..."), PKM_ERESOLVE,
 * PKM_ECONNECT (refused, unreachable, timed out), PKM_ETIMEOUT (handshake too slow), PKM_EHANDSHAKE
 * (wrong secret, or not the server you expected), PKM_EPIN, PKM_ECONNRESET, PKM_EIO, PKM_ENOMEM, or
 * any handshake error of the engine (PKM_EKEY, PKM_EKEYLEN, ...). Ownership of
 * cfg->engine.client_key passes in every case. */
PKM_API int pkm_connect(const char *host, int port, const pkm_conn_config_t *cfg, pkm_conn_t **out);

/* Server: binds a TCP socket to host:port (host: a numeric IPv4 or IPv6 address or a name; NULL
 * = every interface, IPv6 dual-stack when available, else IPv4; port 0 = an ephemeral port, see
 * pkm_listener_port) with SO_REUSEADDR, and listens. cfg->engine.server_key is required. The
 * listener keeps what it needs of cfg (engine.server_key and engine.verify_ctx stay BORROWED). *out
 * is the caller's (pkm_listener_close). Errors: PKM_EINVAL, PKM_ERESOLVE, PKM_EIO (bind/listen
 * failed: see cfg->errbuf), PKM_ENOMEM. */
PKM_API int pkm_listen(const char *host, int port, const pkm_conn_config_t *cfg,
                       pkm_listener_t **out);

/* The port the listener is bound to (useful after port 0); 0 for NULL, as pkm_server_port. */
PKM_API int pkm_listener_port(const pkm_listener_t *l);

/* The listening socket, for the caller's own poll() (readable = a client is waiting). Stays owned
 * by the listener. */
PKM_API int pkm_listener_fd(const pkm_listener_t *l);

/* Waits (without bound) for one TCP connection, accepts it and runs the server handshake within
 * handshake_timeout_ms. Returns 0 with an ESTABLISHED connection in *out (the caller's:
 * pkm_conn_close), or the error of the handshake (PKM_EHANDSHAKE, PKM_ETIMEOUT, PKM_ECONNRESET,
 * ...; *out NULL; pkm_listener_errmsg says what failed and with whom). After a failed handshake
 * the listener stays usable: call pkm_accept again for the next client. PKM_EIO if accept() itself
 * fails (e.g. out of file descriptors). */
PKM_API int pkm_accept(pkm_listener_t *l, pkm_conn_t **out);

/* The sentence describing the last failed pkm_accept() on this listener ("" if none). Valid until
 * the next pkm_accept or pkm_listener_close. */
PKM_API const char *pkm_listener_errmsg(const pkm_listener_t *l);

/* Closes the listening socket and frees the listener, wiping its copy of the secret. Connections
 * already accepted are independent and stay open. NULL is allowed. */
PKM_API void pkm_listener_close(pkm_listener_t *l);

/* Runs the handshake as `role` (PKM_ROLE_CLIENT or PKM_ROLE_SERVER; cfg->engine.server_key required
 * for a server) over fd, an already connected stream socket (TCP, or a socketpair for tests).
 * OWNERSHIP of fd PASSES to the library at the call, whatever the result: on success the
 * connection owns it (it is made non-blocking and closed by pkm_conn_close); on failure it has
 * been closed. Do not read, write or close fd yourself afterwards. Errors as pkm_connect (except
 * resolving and connecting; cfg->errbuf holds the sentence). */
PKM_API int pkm_conn_from_fd(int fd, int role, const pkm_conn_config_t *cfg, pkm_conn_t **out);

/* ---- using a connection ---- */

/* Sends one packet (raw path: id, hash and content as given; id 0xFF is reserved) and waits until
 * all the bytes waiting to go out have been written to the socket. `content` is copied at once
 * (it may be NULL when size is 0). Returns 0 when everything is written; PKM_EAGAIN when the
 * timeout ran out first: the packet IS queued and its remaining bytes go out during the next
 * pkm_conn_send, pkm_conn_flush or pkm_conn_recv; PKM_EQUEUE when the send buffer stayed too full
 * to take the packet before the timeout ran out (the packet is NOT queued; the connection stays
 * usable); PKM_EINVAL, PKM_ETOOBIG (bad argument: id 0xFF, content NULL with size > 0, a packet
 * larger than max_send_buffer; nothing queued, connection still usable), PKM_ENOMEM (nothing
 * queued, connection still usable); or an error that closed the connection. While waiting it also
 * reads what the peer sends (buffered for pkm_conn_recv). */
PKM_API int pkm_conn_send(pkm_conn_t *c, uint8_t id, uint32_t hash, const void *content,
                          size_t size, int64_t timeout_ms);

/* Writes out the bytes still waiting to go (after a PKM_EAGAIN from pkm_conn_send). Returns 0
 * when none are left, PKM_EAGAIN if the timeout ran out first, or an error that closed the
 * connection. */
PKM_API int pkm_conn_flush(pkm_conn_t *c, int64_t timeout_ms);

/* Receives one packet. Returns 1 with *out filled: out->content points into the connection's
 * buffer and stays valid until the next call on this connection (copy what you keep). Returns
 * PKM_EAGAIN when no complete packet arrived within timeout_ms (with timeout_ms 0: none is
 * buffered or readable right now); the connection stays usable. Otherwise an error that closed
 * the connection: PKM_EEOF (the peer closed between packets: the normal end), PKM_ETIMEOUT (idle
 * timeout), PKM_ECONNRESET, PKM_EPADDING, PKM_ETOOBIG, PKM_EPROTO, the verify hook's error, ...
 * Bytes waiting to be sent are written while waiting. */
PKM_API int pkm_conn_recv(pkm_conn_t *c, pkm_packet_t *out, int64_t timeout_ms);

/* Re-establishes the secret (WIRE-PROFILE section 5) and runs the whole exchange to completion:
 * returns 0 once established again under K', IV'. `secret` (copied, wiped once used; NULL/0 =
 * none) must be the same on both sides. Which packet triggers it is the concrete protocol's:
 * - server: call right after pkm_conn_send() of the trigger packet, with no other send between;
 * - client: call right after pkm_conn_recv() returned the trigger packet (the packet's content is
 *   no longer valid afterwards), before any other recv.
 * Errors close the connection: PKM_EHANDSHAKE (e.g. different secrets), PKM_ETIMEOUT (not done
 * within timeout_ms; -1 = no bound), ...; these do not close it: PKM_ESTATE (not established),
 * PKM_EINVAL (secret longer than PKM_MAX_SECRET, or NULL with a length), PKM_ENOMEM. */
PKM_API int pkm_conn_rekey(pkm_conn_t *c, const uint8_t *secret, size_t secret_len,
                           int64_t timeout_ms);

/* The socket, for the caller's own poll(); -1 once the connection is closed. Owned by the
 * connection: do not close it. Bytes may already be buffered inside the connection, so a
 * readable-looking-idle socket does not mean pkm_conn_recv(c, &p, 0) has nothing. */
PKM_API int pkm_conn_fd(const pkm_conn_t *c);

/* The peer key's fingerprint "SHA256:..." (the server's, seen from a client; the client's
 * ephemeral key's, seen from a server). Valid until pkm_conn_close. */
PKM_API const char *pkm_conn_peer_fingerprint(const pkm_conn_t *c);

/* The peer's address, "192.0.2.1:1234" or "[2001:db8::1]:1234" ("" when unknown, e.g. a
 * socketpair; an IPv4 peer of a dual-stack listener is written as IPv4). Valid until
 * pkm_conn_close. */
PKM_API const char *pkm_conn_peer_addr(const pkm_conn_t *c);

/* The error that closed the connection, 0 while it is open. */
PKM_API int pkm_conn_error(const pkm_conn_t *c);

/* A sentence describing why the connection closed ("" while it is open). Valid until the next
 * call on the connection. */
PKM_API const char *pkm_conn_errmsg(const pkm_conn_t *c);

/* ---- typed packets (schema.h) ---- */

/* Encodes the values of packet `id` with the schema `reg` has for it and sends it as
 * pkm_conn_send() does, Hash included (pkm_registry_encode_content): one call for a typed
 * packet. Returns what pkm_conn_send() returns, or an encoding error before anything is queued
 * (PKM_EUNKNOWNID, PKM_ERANGE, PKM_EARRLEN, ...: the connection stays usable). reg is borrowed
 * for the call. */
PKM_API int pkm_conn_send_msg(pkm_conn_t *c, const pkm_registry_t *reg, uint8_t id,
                              const pkm_value_t *fields, size_t n, int64_t timeout_ms);

/* Receives one packet as pkm_conn_recv() does and decodes it with `reg` (pkm_registry_decode).
 * Returns 1 with *out a new message (the caller's: pkm_msg_free(); it borrows the schema, not
 * the connection's buffer), PKM_EAGAIN as pkm_conn_recv, an error that closed the connection,
 * or the decoding error of a packet that does not match its schema (PKM_EUNKNOWNID, PKM_EHASH,
 * ...: that packet is dropped and the connection stays usable; to close the connection on such a
 * packet instead, set engine.verify = pkm_registry_verify_hook, engine.verify_ctx = reg).
 * *out is NULL whenever the result is not 1. */
PKM_API int pkm_conn_recv_msg(pkm_conn_t *c, const pkm_registry_t *reg, pkm_msg_t **out,
                              int64_t timeout_ms);

/* ---- waiting on the connection together with other descriptors ----
 * A program that also reads stdin or another socket has two ways:
 * - its own poll(): first drain with `while (pkm_conn_pending(c)) pkm_conn_recv(c, &p, 0)` (until
 *   it returns PKM_EAGAIN or an error), then poll pkm_conn_fd(c) for pkm_conn_poll_events(c)
 *   together with its own descriptors, and call pkm_conn_recv(c, &p, 0) when the socket is
 *   ready (pkm_conn_flush(c, 0) if POLLOUT was wanted);
 * - or pkm_conn_wait() with one extra descriptor, which does all that. */

/* 1 when pkm_conn_recv(c, &p, 0) must be called before waiting on the socket: received bytes are
 * buffered inside the connection (a whole packet, or the start of one: recv then returns
 * PKM_EAGAIN and this becomes 0 until more arrives), the peer's end of stream was seen, or the
 * connection closed (recv returns its error). 0 otherwise, and for NULL. */
PKM_API int pkm_conn_pending(const pkm_conn_t *c);

/* The poll() events to wait for on pkm_conn_fd(c): POLLIN while the connection takes bytes
 * from the socket, POLLOUT while bytes wait to be written (a pkm_conn_send that returned
 * PKM_EAGAIN). 0 once closed. */
PKM_API int pkm_conn_poll_events(const pkm_conn_t *c);

/* Results of pkm_conn_wait(), bits that may be combined. */
#define PKM_CONN_READY 1 /* call pkm_conn_recv(c, &p, 0): a packet, or the connection's error */
#define PKM_CONN_EXTRA 2 /* extra_fd has events: *extra_revents says which */

/* Waits until the connection has something for pkm_conn_recv() or extra_fd (-1: none) has one
 * of extra_events (POLLIN, ...; POLLHUP/POLLERR are always reported), at most timeout_ms (as
 * everywhere: -1 = no bound, 0 = no wait). Bytes waiting to be sent are written meanwhile, and
 * arriving bytes read. Returns a positive combination of PKM_CONN_READY and PKM_CONN_EXTRA
 * (*extra_revents, which may be NULL, receives extra_fd's revents; 0 otherwise), PKM_EAGAIN when
 * the timeout ran out with nothing ready, or PKM_EINVAL. A failure of the connection while
 * waiting (including the idle bound) is reported as PKM_CONN_READY: pkm_conn_recv() returns the
 * error and pkm_conn_errmsg() the sentence. */
PKM_API int pkm_conn_wait(pkm_conn_t *c, int extra_fd, int extra_events, int *extra_revents,
                          int64_t timeout_ms);

/* Closes the socket (no message is sent; bytes not yet written are dropped: flush first) and
 * frees the connection, wiping every secret (the engine's keys, buffers and chains). NULL is
 * allowed. */
PKM_API void pkm_conn_close(pkm_conn_t *c);

#ifdef __cplusplus
}
#endif
#endif
