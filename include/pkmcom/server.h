/* SPDX-License-Identifier: MIT */
/* The event-driven PkmCom/TCP server: one libuv loop (or several, config.loops) for every
 * connection, the handshake's RSA private-key work on libuv's thread pool, timeouts, bounded
 * send queues and a connection cap; posts, timers and the thread rules for a game loop. */
#ifndef PKMCOM_SERVER_H
#define PKMCOM_SERVER_H

#include "pkmcom/common.h"
#include "pkmcom/engine.h"
#include "pkmcom/keys.h"
#include "pkmcom/packet.h"
#include "pkmcom/schema.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Model. pkm_server_new() binds and listens (so the port is known, and clients may connect,
 * before pkm_server_run()); pkm_server_run() runs the loop on the calling thread until
 * pkm_server_stop(). Each accepted connection gets its own sans-IO engine (engine.h) with
 * defer_crypto set, which stays on the loop thread. The expensive part of a handshake (the
 * first, or a re-establishment), the two RSA private-key decryptions of the client's KeyShare,
 * is the engine's job (pkm_engine_job_take): it runs on libuv's thread pool (uv_queue_work; its
 * size is libuv's, UV_THREADPOOL_SIZE, default 4), so a handshake never stalls other
 * connections; the client key's parsing and the two RSA public-key encryptions of the server's
 * KeyShare (about 0.15 ms together) are done on the loop. Meanwhile the loop goes on reading
 * from that connection into its engine. A connection that closes while its job is still queued
 * has the job cancelled (never run); a job already running is freed when it ends. Established
 * traffic (AES) is processed on the loop.
 *
 * Writes: everything queued for a connection during one loop turn goes out in one write, just
 * before the loop next waits for events (uv_try_write; what the socket does not take is copied
 * into a buffer of its own and written with uv_write). A connection whose unsent bytes would
 * exceed engine.max_send_buffer (a client that does not read) is dropped: closed with PKM_EQUEUE.
 *
 * Memory: a connection that has read nothing for `trim_after_ms` gives its engine's buffers back
 * (pkm_engine_trim); an idle established connection then costs about 5.3 KiB of heap (measured
 * by tests/test_server_scale.c over 10,000 connections).
 *
 * Process-wide effects of pkm_server_new(): the soft RLIMIT_NOFILE is raised to the hard limit
 * (config.raise_fd_limit), and SIGPIPE is set to SIG_IGN if it was SIG_DFL (a write to a socket
 * the client closed must fail with EPIPE rather than kill the process).
 *
 * Threads. The server runs config.loops event loops (default 1), each on its own thread: loop 0
 * on the thread that calls pkm_server_run() (the "main loop": it accepts, runs
 * pkm_server_post()'s functions and pkm_server_timer_start()'s timers), loops 1..N-1 on threads
 * pkm_server_run() starts. Each connection lives on ONE loop (pkm_server_conn_loop()) for its
 * whole life; call it a "loop thread" below. The rules, for every N:
 * - on_connect, on_packet and on_close of a connection run on ITS loop's thread, one at a time
 *   for that connection; callbacks of connections on different loops run at the same time (with
 *   N > 1: make what they share thread-safe). With N = 1 every callback runs on one thread.
 * - on_log runs on whichever loop's thread logs (with N > 1, possibly at the same time on
 *   several: make it thread-safe), or in pkm_server_new() / pkm_server_free() on the caller's.
 * - Inside any callback, a posted function or a timer: every function of this header may be
 *   called. The per-connection calls (pkm_server_conn_*, pkm_server_send on a connection of
 *   another loop aside) act on connections of the calling loop only.
 * - From any thread, at any time between pkm_server_new() and pkm_server_free():
 *   pkm_server_stop(), pkm_server_post(), pkm_server_stats(), pkm_server_loops(),
 *   pkm_server_port(), pkm_server_user(), pkm_server_broadcast() and _broadcast_msg() (from a
 *   thread that is none of the server's loops: handed to every loop), and pkm_server_send() /
 *   _send_msg() on a connection you know is open, i.e. its on_close has not returned: make sure
 *   with your own lock, as in "remove it from your table in on_close, under the lock you hold
 *   while sending". From another thread the packet is handed to the connection's loop, which
 *   queues it (or drops it, if the connection closed meanwhile); such a send returns 0, or an
 *   argument error, PKM_ETOOBIG or PKM_ENOMEM, never the connection's state.
 * - Everything else (pkm_server_conn_close, _rekey, _set_data, foreach, timers) only on the
 *   connection's own loop thread (timers: loop 0), or before pkm_server_run() / after it
 *   returned.
 * - on_close may send to other connections: yes (they are open, or the send is refused with
 *   PKM_ECLOSED), to connections of its own loop directly and to those of other loops through
 *   their loops, as above; it may not send to the connection that is closing (refused).
 * A game's tick thread therefore either posts a function (runs on loop 0, where it may do
 * anything) or broadcasts / sends directly. Different servers are independent.
 *
 * Lifetimes: a pkm_server_conn_t is valid from its acceptance until on_close returns (the
 * callbacks are the place to use it; do not keep the pointer beyond on_close). Every connection
 * admitted gets exactly one on_close, whether or not its handshake completed.
 */

typedef struct pkm_server pkm_server_t;
typedef struct pkm_server_conn pkm_server_conn_t;
typedef struct pkm_server_timer pkm_server_timer_t;
struct uv_loop_s; /* libuv's uv_loop_t (<uv.h>), for pkm_server_loop() */

/* Log levels for on_log. */
enum pkm_log_level {
    PKM_LOG_ERROR = 1,
    PKM_LOG_WARN = 2,
    PKM_LOG_INFO = 3,
    PKM_LOG_DEBUG = 4,
};

/* Defaults of pkm_server_config_init(). */
#define PKM_SERVER_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000
#define PKM_SERVER_DEFAULT_MAX_SEND_BUFFER      (4u << 20)
#define PKM_SERVER_DEFAULT_TRIM_AFTER_MS        1000
#define PKM_SERVER_DEFAULT_BACKLOG              511
#define PKM_SERVER_DEFAULT_MAX_HANDSHAKES       16
#define PKM_SERVER_DEFAULT_MAX_QUEUED           65536
#define PKM_SERVER_DEFAULT_SECRET_WINDOW_MS     60000
#define PKM_SERVER_DEFAULT_SECRET_BAN_MS        300000
#define PKM_SERVER_DEFAULT_PARTIAL_DEADLINE_MS  30000
#define PKM_SERVER_DEFAULT_PARTIAL_BUDGET       (64u * 1024u * 1024u)
#define PKM_SERVER_DEFAULT_LOG_INTERVAL_MS      60000
/* Most event loops one server runs (pkm_server_config_t.loops). */
#define PKM_SERVER_MAX_LOOPS 256
/* The longest a connection from a trusted proxy (config.proxy_trusted) may take to send its
 * PROXY header, counted from its acceptance (the handshake timeout, when shorter, applies
 * instead). */
#define PKM_SERVER_PROXY_TIMEOUT_MS 3000

/* Room for pkm_server_new()'s sentence (config.errbuf). */
#define PKM_SERVER_ERRMSG_SIZE 256

/* Room for pkm_server_conn_peer(): "[" + IPv6 text + "]:" + port + NUL. */
#define PKM_SERVER_PEER_SIZE 64

/* Configuration, read by pkm_server_new(); the struct may be reused or freed afterwards, except
 * for what it borrows (see each field). Always start from pkm_server_config_init(). */
typedef struct pkm_server_config {
    /* Address to listen on: a numeric IPv4 or IPv6 address ("127.0.0.1", "::", "0.0.0.0"), or a
     * host name resolved with getaddrinfo (the first address that binds is used). NULL = every
     * interface, as for pkm_listen(): the IPv6 wildcard, dual-stack (IPv4 clients too, reported
     * as IPv4 addresses), when the system has IPv6, else 0.0.0.0. Copied. */
    const char *host;
    uint16_t port; /* 0 = an ephemeral port: read it with pkm_server_port() */
    int backlog;   /* listen(2) backlog; default PKM_SERVER_DEFAULT_BACKLOG */

    /* Every connection's engine configuration (engine.h), with its names, meanings and checks.
     * The server sets engine.role (server) and engine.defer_crypto (its RSA work runs as jobs on
     * the thread pool) itself. In particular:
     * - engine.server_key: required, the long-term RSA-2048 key pair. BORROWED: it must outlive
     *   the server.
     * - engine.secret: optional secret S (a password's UTF-8 bytes); every client must use the
     *   same. Copied (and wiped by pkm_server_free). NULL/0 = none.
     * - engine.max_packet_size: largest packet Size accepted from a client (default
     *   PKM_DEFAULT_MAX_SIZE, 1 MiB); a larger one closes the connection with PKM_ETOOBIG.
     * - engine.max_send_buffer: per connection, bound on the bytes queued and not yet written to
     *   the socket (engine output plus an unfinished write). A pkm_server_send() that would
     *   exceed it drops the connection (PKM_EQUEUE). Default here
     *   PKM_SERVER_DEFAULT_MAX_SEND_BUFFER (4 MiB), which holds the largest packet the default
     *   max_packet_size accepts; pkm_server_new() logs a warning when max_send_buffer is below
     *   pkm_engine_wire_size(max_packet_size) (such packets could not be echoed or relayed).
     * - engine.verify: optional check of each received packet; verify_ctx is borrowed and called
     *   only on the loop thread.
     * - client-only fields (client_key, keypool, pin_fingerprint) must stay NULL. */
    pkm_engine_config_t engine;

    /* Connection cap: at most max_conns connections (handshaking or established) at once.
     * Beyond it a new TCP connection is accepted and closed at once, without a byte (the client
     * sees the connection end rather than hang), counted in stats.rejected and logged at
     * PKM_LOG_WARN (at most once a second); it gets no callback. 0 = no cap. */
    size_t max_conns;

    /* The whole handshake must complete within this many ms of the connection's acceptance,
     * else the connection is closed with PKM_ETIMEOUT. Default 10000; 0 = no limit. */
    int64_t handshake_timeout_ms;

    /* An established connection that sends nothing for this many ms is closed with
     * PKM_ETIMEOUT. 0 (default) = never. */
    int64_t idle_timeout_ms;

    /* An established connection that has read nothing for this many ms releases its engine's
     * drained buffers (pkm_engine_trim). Default PKM_SERVER_DEFAULT_TRIM_AFTER_MS; 0 = at once,
     * after every loop turn in which its buffers drained (least memory, one allocation per
     * read). */
    int64_t trim_after_ms;

    /* ---- Limits against a peer that floods or pins memory (docs/ROBUSTNESS.md) ----
     * A source is the peer's address: an IPv4 address, or an IPv6 /64. The library's defaults
     * keep many connections from one address working (tests, benchmarks, a proxy in front);
     * `pkmcom serve` sets tighter ones. A refusal is logged at PKM_LOG_WARN at most once per
     * source and log_interval_ms, and counted in stats.refused.
     *
     * Handshake admission. A handshake is "in flight" from its complete KeyShare (when its RSA
     * private-key work would be queued) until that work ends or is cancelled. At most
     * max_handshakes in flight in all and max_handshakes_per_source per source (0: no cap;
     * defaults PKM_SERVER_DEFAULT_MAX_HANDSHAKES and 0). Past a cap the handshake WAITS with no
     * RSA work submitted; waiting handshakes are admitted round-robin across sources (FIFO
     * within one), so a flooding source delays another source's handshake by at most one
     * handshake per waiting source. At most max_queued wait in all and max_queued_per_source per
     * source (defaults PKM_SERVER_DEFAULT_MAX_QUEUED for both; 0: none wait); past those the
     * connection is closed at once (on_close with PKM_EAGAIN). A waiting or queued handshake
     * whose connection closes or times out never runs its RSA work. */
    uint32_t max_handshakes;
    uint32_t max_handshakes_per_source;
    uint32_t max_queued;
    uint32_t max_queued_per_source;

    /* At most this many connections open per source; past it a new connection is accepted and
     * closed at once without a byte and without callbacks (stats.refused). 0 (default): no
     * cap. */
    uint32_t max_conns_per_source;

    /* At most conn_rate_per_source new connections a second per source, with bursts of up to
     * conn_burst_per_source (0: twice the rate): a token bucket. Past it a new connection is
     * accepted and closed at once without a byte and without callbacks (stats.refused), before
     * any handshake work, so a source that opens connections and abandons them costs the server
     * an accept and a close each. (Admission bounds the RSA work in flight, not its rate: a
     * client that leaves right after its KeyShare frees its slot at once.) 0 (default): no
     * limit. */
    uint32_t conn_rate_per_source;
    uint32_t conn_burst_per_source;

    /* Failed-secret limit (with engine.secret set): a source whose handshakes fail the
     * confirmation step (a wrong secret) secret_fails times within secret_window_ms is refused
     * for secret_ban_ms: its new connections are closed at once, its waiting handshakes
     * refused. secret_fails 0 (default): off. Defaults of the durations
     * PKM_SERVER_DEFAULT_SECRET_WINDOW_MS and PKM_SERVER_DEFAULT_SECRET_BAN_MS. */
    uint32_t secret_fails;
    int64_t secret_window_ms;
    int64_t secret_ban_ms;

    /* Memory a peer can pin. A packet whose first bytes arrived must be complete within
     * partial_deadline_ms (default PKM_SERVER_DEFAULT_PARTIAL_DEADLINE_MS, 30 s; 0: no deadline),
     * else the connection is closed with PKM_ETIMEOUT. The receive buffers of all connections
     * holding a partial packet may total at most partial_budget bytes (default
     * PKM_SERVER_DEFAULT_PARTIAL_BUDGET, 64 MiB; 0: no budget): past it the connections holding
     * the most are closed first (PKM_ENOMEM), until the total fits. With loops > 1 each loop
     * has partial_budget / loops for its own connections. Both counted in
     * stats.partial_closed. */
    int64_t partial_deadline_ms;
    size_t partial_budget;

    /* Minimum interval between two log lines about refusals of one source. Default
     * PKM_SERVER_DEFAULT_LOG_INTERVAL_MS; 0: the default. */
    int64_t log_interval_ms;

    /* ---- The PROXY protocol (HAProxy's, versions 1 and 2; docs/DEPLOYMENT.md) ----
     * A comma-separated list of CIDR blocks, IPv4 or IPv6 ("127.0.0.1/32, 10.0.0.0/8, ::1";
     * an address without /bits is one host; spaces around entries allowed): the load balancers
     * trusted to say who their clients are. NULL (default): the PROXY protocol is off and
     * nothing below applies. Copied (parsed) by pkm_server_new(), which refuses a malformed list
     * (an empty string or entry, a bad address, bits beyond 32/128, host bits set as in
     * "10.0.0.1/8") with PKM_EINVAL and names the wrong entry (config.errbuf, or on_log without
     * one).
     *
     * Every connection from a trusted address must begin with a PROXY header: v1 (TCP4, TCP6,
     * UNKNOWN) or v2 (PROXY or LOCAL, any family; TLVs allowed, a CRC32C TLV is checked), at most
     * 2064 bytes, complete within PKM_SERVER_PROXY_TIMEOUT_MS of acceptance (or within
     * handshake_timeout_ms when that is shorter). Until it is complete the connection is not
     * admitted: no ServerKey is sent, no RSA work, no admission slot, no per-source count, no
     * callback, no log line; the server reads exactly the header's bytes, so whatever follows
     * is the PkmCom stream. Then:
     * - v1 TCP4/TCP6, v2 PROXY with AF_INET/AF_INET6: the connection's source is the client the
     *   header names: pkm_server_conn_peer(), the logs and every per-source limit (connection
     *   cap, admission, failed-secret ban) see that address, never the proxy's;
     * - v2 LOCAL, v1 UNKNOWN, v2 AF_UNSPEC/AF_UNIX, and a TCP4/TCP6 header naming this very
     *   connection's endpoints (HAProxy's v1 health checks): a health check, or the proxy's own
     *   connection: the socket's own peer address. The ServerKey goes out, but the connection
     *   is admitted only when its first byte arrives: one that closes, resets or stays silent
     *   until the deadline above gets no callback and no log line (stats.proxy_checks);
     * - a connection that closes, resets or times out before any header byte: the same (a plain
     *   TCP health check), and so does one reset before it could be accepted (from any
     *   address: its peer is unknown by then);
     * - a malformed header (or one cut short): closed at once without a byte, no callback;
     *   logged at most once per proxy address and log_interval_ms (stats.proxy_refused).
     * A connection from any other address is an ordinary client: if its first bytes are a PROXY
     * signature ("PROXY " or v2's 12 bytes), it is trying to forge its source: it is closed
     * (on_close with PKM_EAGAIN, as a refusal by the limits), and logged at most once per source
     * and log_interval_ms (stats.proxy_refused). Connections waiting for their header count
     * towards max_conns. */
    const char *proxy_trusted;

    /* Nonzero (default): pkm_server_new() raises this process's soft RLIMIT_NOFILE to the hard
     * limit, and warns (PKM_LOG_WARN) when even that is below what max_conns needs. */
    int raise_fd_limit;

    /* Event loops, each on its own thread: 1 (default) = one loop, on the thread that calls
     * pkm_server_run(); N = that one (loop 0) and N - 1 threads pkm_server_run() starts (and
     * joins before it returns); 0 = one per online CPU. At most PKM_SERVER_MAX_LOOPS (else
     * PKM_EINVAL). Each connection lives on one loop for its whole life: loop 0 accepts and
     * hands each new connection to the loop with the fewest open connections. See "Threads"
     * above for what this means for the callbacks. */
    unsigned loops;

    /* Callbacks, all optional, all given `user` (borrowed). Threads: see "Threads" above
     * (with loops > 1, a connection's callbacks run on its loop's thread, loops in parallel). */

    /* The handshake of `conn` completed: packets may be sent to it from now on. */
    void (*on_connect)(void *user, pkm_server_conn_t *conn);

    /* A packet arrived on `conn` (raw path: Id, Hash and content as received; the Hash is not
     * checked unless `verify` does). pkt and its content are valid only during the call: copy
     * what you keep. The callback may send (to this or any connection), close connections,
     * start a re-establishment on this one, or stop the server. Echo is
     * pkm_server_send(conn, pkt->id, pkt->hash, pkt->content, pkt->size). */
    void (*on_packet)(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt);

    /* `conn` is closing: called exactly once per admitted connection, established or not.
     * err: 0 when this side closed it (pkm_server_conn_close, pkm_server_stop); PKM_EEOF when
     * the client closed it cleanly; PKM_ETIMEOUT (handshake or idle timeout); PKM_EQUEUE (send
     * queue overflow); PKM_ECONNRESET / PKM_EIO (socket errors); or the engine's error.
     * fail_step is non-NULL exactly when a handshake (the first, or a re-establishment) failed:
     * the step it failed at, as pkm_engine_fail_step() names it ("ClientKey", "KeyShare",
     * "confirmation (0xFF)"), for logs (it never contains secrets). During a handshake, err
     * PKM_EEOF (or PKM_ECONNRESET) means the client closed the connection at that step (e.g. it
     * refused this server's key: "ClientKey"), PKM_EHANDSHAKE at "confirmation (0xFF)" that the
     * client's confirmation did not check (a wrong secret), PKM_ETIMEOUT that
     * handshake_timeout_ms ran out there; pkm_handshake_failure(PKM_ROLE_SERVER, err, fail_step,
     * ...) (engine.h) writes the sentence that says so. Use
     * pkm_server_conn_established() to tell whether on_connect was called. After this call the
     * connection receives no more callbacks, sends are refused, and the pointer must not be
     * used after the callback returns: free what set_data attached here. */
    void (*on_close)(void *user, pkm_server_conn_t *conn, int err, const char *fail_step);

    /* The server's own messages (fd limit, accept errors, rejections). NULL: PKM_LOG_WARN and
     * PKM_LOG_ERROR go to stderr. msg is valid during the call. Never carries secrets. */
    void (*on_log)(void *user, int level, const char *msg);

    void *user;

    /* Optional: where pkm_server_new() writes, when it fails, a NUL-terminated sentence naming
     * what to fix (truncated to errbuf_size; PKM_SERVER_ERRMSG_SIZE is ample), e.g. "cannot listen
     * on 127.0.0.1:7000: Address already in use" or "pkm_server_new: invalid argument:
     * engine.server_key: required for a server (...)". Set to "" on success, and left "" for
     * PKM_ENOMEM (pkm_strerror says it all). BORROWED for the call only. */
    char *errbuf;
    size_t errbuf_size;
} pkm_server_config_t;

/* Counters, read with pkm_server_stats(). */
typedef struct pkm_server_stats {
    uint64_t conns_open;           /* connections open now (handshaking or established) */
    uint64_t conns_established;    /* of which established */
    uint64_t accepted;             /* connections admitted since start */
    uint64_t rejected;             /* connections refused by max_conns */
    uint64_t handshakes_ok;        /* first handshakes completed */
    uint64_t handshakes_failed;    /* handshakes (first or re-establishment) failed, timeouts too */
    uint64_t timeouts;             /* connections closed by the handshake or idle timeout */
    uint64_t dropped_queue;        /* connections dropped for send queue overflow */
    uint64_t refused;              /* connections or handshakes refused by the limits (per source
                                      caps, queue caps, failed-secret ban) */
    uint64_t partial_closed;       /* connections closed by the partial-packet deadline or budget */
    uint64_t handshakes_in_flight; /* now: admitted, RSA work queued or running */
    uint64_t handshakes_waiting;   /* now: waiting for admission, no RSA work submitted */
    uint64_t partial_bytes;        /* now: receive buffers holding partial packets, in all */
    uint64_t packets_in, packets_out; /* application packets received / queued */
    uint64_t bytes_in, bytes_out;     /* bytes read from / written to sockets */
    uint64_t proxy_checks;  /* with proxy_trusted: connections from a trusted proxy closed before
                               admission without a header error (health checks) */
    uint64_t proxy_refused; /* with proxy_trusted: malformed headers from a trusted proxy, and
                               PROXY signatures from untrusted addresses */
} pkm_server_stats_t;

/* Fills *cfg with the defaults: engine as pkm_engine_config_init(PKM_ROLE_SERVER) makes it but
 * max_send_buffer = PKM_SERVER_DEFAULT_MAX_SEND_BUFFER, the timeouts, backlog and
 * raise_fd_limit; everything else NULL/0. */
PKM_API void pkm_server_config_init(pkm_server_config_t *cfg);

/* Makes a server: creates its loop, binds and listens (the port is known on return), raises the
 * fd limit (raise_fd_limit). Errors: PKM_EINVAL (an engine config pkm_engine_new() refuses for
 * a server: no server_key or not private, max_packet_size 0 or above INT32_MAX,
 * max_send_buffer 0, secret too long, a client-only field set; a negative timeout or backlog;
 * a malformed proxy_trusted), PKM_ERESOLVE (host), PKM_EIO (bind or listen failed, e.g. address
 * in use), PKM_ENOMEM. Every error but PKM_ENOMEM comes with a sentence naming the field or the
 * address and the system's reason in config.errbuf (when given; without an errbuf, the listen
 * failure and a malformed proxy_trusted are logged through on_log instead, so that the sentence
 * is said once either way). *out is the caller's: pkm_server_free(). */
PKM_API int pkm_server_new(const pkm_server_config_t *cfg, pkm_server_t **out);

/* Runs the loop on the calling thread until pkm_server_stop(): then stops accepting, closes every
 * connection (on_close with err 0 for each; their queued jobs are cancelled), waits for the jobs
 * already running on the thread pool, and
 * returns 0. PKM_ESTATE if called twice or concurrently. If stop was requested before run, run
 * returns at once after closing. */
PKM_API int pkm_server_run(pkm_server_t *srv);

/* Asks the server to stop. Safe from any thread and from a signal handler (it only sets a flag
 * and calls uv_async_send, which is async-signal-safe), any number of times, between
 * pkm_server_new() and pkm_server_free(). Returns at once; pkm_server_run() returns soon after. */
PKM_API void pkm_server_stop(pkm_server_t *srv);

/* Runs fn(srv, ud) on the server's loop thread (loop 0, the thread running pkm_server_run()),
 * soon, in the order the posts were made (two posts from one thread run in that order; posts
 * from different threads in the order they took the queue). Safe from ANY thread, including
 * threads that run no server loop and the loop thread itself (fn then runs on a later loop turn,
 * never inside this call), between pkm_server_new() and pkm_server_free(); not from a signal
 * handler (it allocates and locks). Inside fn every server function may be called as in any
 * callback (pkm_server_broadcast, pkm_server_send to a connection fn knows is still open,
 * pkm_server_foreach, pkm_server_stop, pkm_server_post...).
 * Returns 0: fn will be called exactly once: on the loop before it stops, or, when the server
 * stops (or is freed without having run) first, during that stop or pkm_server_free() (while
 * the connections are still open, before their on_close), so ud can always be freed by fn.
 * PKM_ECLOSED: pkm_server_stop() was called already (or the server is stopping): fn is never
 * called and ud stays the caller's. PKM_ENOMEM: nothing queued, ud the caller's.
 * PKM_EINVAL: srv or fn NULL. ud is never touched by the server, only handed to fn. */
PKM_API int pkm_server_post(pkm_server_t *srv, void (*fn)(pkm_server_t *srv, void *ud), void *ud);

/* Frees the server: closes whatever is still open (calling on_close), the listener and the loop.
 * Not while pkm_server_run() is running. NULL is allowed. */
PKM_API void pkm_server_free(pkm_server_t *srv);

/* The port the server listens on (the ephemeral one when config.port was 0). */
PKM_API uint16_t pkm_server_port(const pkm_server_t *srv);

/* The config's `user`. */
PKM_API void *pkm_server_user(const pkm_server_t *srv);

/* A timer on loop 0: fn(srv, ud) runs on loop 0's thread delay_ms after this call, then every
 * repeat_ms (0: once), until pkm_server_timer_stop() or the server stops. Inside fn every
 * server function may be called as in any callback. Call it on loop 0's thread (a callback of
 * a connection of loop 0, a posted function, another timer), or before pkm_server_run(); from
 * another thread, post a function that starts it. Returns 0 with *out, PKM_EINVAL (srv, fn or
 * out NULL, a negative duration), PKM_ESTATE (called on another thread while the server runs),
 * PKM_ECLOSED (the server is stopping), PKM_ENOMEM. The timer is the server's: it keeps going
 * until pkm_server_timer_stop(*out) (which frees it; allowed inside its own fn, also after a
 * one-shot fired) or until the server stops (fn is not called any more; the memory is released
 * by pkm_server_timer_stop() or at the latest by pkm_server_free(), after which *out must not
 * be used). ud is handed to fn, never touched. */
PKM_API int pkm_server_timer_start(pkm_server_t *srv, int64_t delay_ms, int64_t repeat_ms,
                                   void (*fn)(pkm_server_t *srv, void *ud), void *ud,
                                   pkm_server_timer_t **out);

/* Stops and frees a timer of pkm_server_timer_start() (NULL, or a second call: no-op). On loop
 * 0's thread, or after pkm_server_run() returned, before pkm_server_free(). */
PKM_API void pkm_server_timer_stop(pkm_server_timer_t *timer);

/* Loop 0's libuv loop, to drive other work on the server's main thread (a uv_timer_t, a
 * uv_poll_t on stdin, a uv_async_t...): callbacks of handles initialised on it run on loop 0's
 * thread, where every server function may be called. Rules: initialise handles on it on that
 * thread or before pkm_server_run(); a handle that is active (and not uv_unref'ed) keeps
 * pkm_server_run() from returning after pkm_server_stop(): close your handles when you stop the
 * server (or uv_unref them); pkm_server_free() closes (uv_close, with no callback) any handle of
 * yours still open on it, so their memory must stay valid until it returns. Do not run,
 * stop or close the loop yourself. The server runs on its own loops (there is no mode that runs
 * it on a loop of the caller's): this is how a program shares the server's. */
PKM_API struct uv_loop_s *pkm_server_loop(pkm_server_t *srv);

/* How many event loops the server runs (config.loops, 0 resolved to the number of CPUs). */
PKM_API unsigned pkm_server_loops(const pkm_server_t *srv);

/* A snapshot of the counters. Safe from any thread (each counter is read atomically; the set is
 * not one instant). */
PKM_API void pkm_server_stats(const pkm_server_t *srv, pkm_server_stats_t *out);

/* Calls fn(ctx, conn) for every established connection (on_connect done, on_close not yet) OF
 * THE CALLING LOOP: with one loop that is every connection; with several, only the connections
 * living on the loop whose thread calls (from a thread that is none of the server's loops: no
 * call, 0; with one loop, before pkm_server_run() or after it returned, that loop's; to reach
 * every connection use pkm_server_broadcast). fn may send and close connections (a closed one is
 * skipped from then on). Returns the number of calls. */
PKM_API size_t pkm_server_foreach(pkm_server_t *srv, void (*fn)(void *ctx, pkm_server_conn_t *c),
                                  void *ctx);

/* Sends one packet to every established connection except `except` (NULL: to all), on every
 * loop, as pkm_server_send() would (a connection that overflows is dropped). For relays. From a
 * loop thread: queued at once on that loop's connections; one shared copy goes to each other
 * loop, which queues it there on its next turn (packets from one loop to another keep their
 * order). From any other thread: handed to every loop so. Returns the number of connections it
 * was queued for on the calling loop plus, for the other loops, the number of their established
 * connections at the time of the call (what the packet is handed to). */
PKM_API size_t pkm_server_broadcast(pkm_server_t *srv, const pkm_server_conn_t *except, uint8_t id,
                                    uint32_t hash, const uint8_t *content, size_t size);

/* ---- per connection (on the connection's loop thread, but sends: see "Threads") ---- */

/* Queues one packet (raw path: engine.h's pkm_engine_queue_packet) on an established
 * connection; `content` is copied (encrypted into the connection's send buffer) before the call
 * returns. It is written before the loop next waits. Errors: PKM_EINVAL (id 0xFF, content NULL
 * with size > 0), PKM_ESTATE (handshake not completed yet), PKM_ECLOSED (closing or closed),
 * PKM_ETOOBIG (one packet larger than engine.max_send_buffer allows); PKM_EQUEUE: the bytes not yet
 * written would exceed engine.max_send_buffer, and the connection has been DROPPED (on_close with
 * PKM_EQUEUE has run by the time this returns). During a re-establishment the packet waits and
 * goes out under the new key. */
PKM_API int pkm_server_send(pkm_server_conn_t *conn, uint8_t id, uint32_t hash,
                            const uint8_t *content, size_t size);

/* Typed packets in one call (schema.h): encodes the values of packet `id` with the schema `reg`
 * has for it, Hash included (pkm_registry_encode_content), and queues it as pkm_server_send()
 * does. Returns what pkm_server_send() returns, or an encoding error before anything is queued
 * (PKM_EUNKNOWNID, PKM_ERANGE, ...; the connection is untouched). reg is borrowed for the call.
 * Loop thread only. To check received packets against the same registry, set
 * engine.verify = pkm_registry_verify_hook, engine.verify_ctx = reg. */
PKM_API int pkm_server_send_msg(pkm_server_conn_t *conn, const pkm_registry_t *reg, uint8_t id,
                                const pkm_value_t *fields, size_t n);

/* Encodes once, then pkm_server_broadcast(): to every established connection but `except`
 * (NULL: all). Returns 0 with *queued (may be NULL) the number of connections it was queued
 * for, or the encoding error (nothing sent). Loop thread only. */
PKM_API int pkm_server_broadcast_msg(pkm_server_t *srv, const pkm_server_conn_t *except,
                                     const pkm_registry_t *reg, uint8_t id,
                                     const pkm_value_t *fields, size_t n, size_t *queued);

/* Closes the connection: on_close (err 0) runs before this returns; bytes not yet written are
 * dropped. No-op on a connection already closing. */
PKM_API void pkm_server_conn_close(pkm_server_conn_t *conn);

/* Server-initiated re-establishment of the secret (WIRE-PROFILE section 5): call right after
 * pkm_server_send() of the packet that triggers it, with nothing sent to this connection in
 * between. `secret` (copied; NULL/0 = none) is S for the new derivation. Packets sent meanwhile
 * wait for the new key. A failure later closes the connection (on_close with fail_step set).
 * Returns 0, PKM_ESTATE (not established), PKM_ECLOSED, PKM_EINVAL, or the engine's error (the
 * connection is then closed). */
PKM_API int pkm_server_conn_rekey(pkm_server_conn_t *conn, const uint8_t *secret,
                                  size_t secret_len);

/* An opaque pointer for the application, NULL at first. The server never touches it. */
PKM_API void pkm_server_conn_set_data(pkm_server_conn_t *conn, void *data);
PKM_API void *pkm_server_conn_get_data(const pkm_server_conn_t *conn);

/* The client's key fingerprint "SHA256:..." once its ClientKey was accepted, else NULL. Valid
 * until on_close returns. (An ephemeral key: it names the connection, not a user.) */
PKM_API const char *pkm_server_conn_fingerprint(const pkm_server_conn_t *conn);

/* A number for logs: 1, 2, 3... in order of admission (with proxy_trusted: once its PROXY
 * header is read; health checks get none), never reused by one server. */
PKM_API uint64_t pkm_server_conn_id(const pkm_server_conn_t *conn);

/* Writes the client's address, "1.2.3.4:5678" or "[::1]:5678", NUL-terminated, into buf
 * (PKM_SERVER_PEER_SIZE is always enough; an IPv4 client of a dual-stack listener is written as
 * IPv4). With proxy_trusted, a connection through a trusted proxy has the address and port its
 * PROXY header names (LOCAL: the proxy's own). Returns its length, PKM_ENOSPC, or PKM_EINVAL. */
PKM_API int pkm_server_conn_peer(const pkm_server_conn_t *conn, char *buf, size_t cap);

/* 1 once on_connect was called for it (and stays 1 through on_close), else 0. */
PKM_API int pkm_server_conn_established(const pkm_server_conn_t *conn);

/* The server the connection belongs to. */
PKM_API pkm_server_t *pkm_server_conn_server(const pkm_server_conn_t *conn);

/* The index (0 .. pkm_server_loops() - 1) of the event loop the connection lives on; it never
 * changes. Safe from any thread while the pointer is valid. */
PKM_API unsigned pkm_server_conn_loop(const pkm_server_conn_t *conn);

#ifdef __cplusplus
}
#endif
#endif
