/* SPDX-License-Identifier: MIT */
/* The relay across instances over Redis pub/sub (issue 14), for `pkmcom serve --relay --redis`:
 * publishes local packets on a channel and hands other instances' packets to a callback. */
#ifndef PKMCOM_RELAY_REDIS_H
#define PKMCOM_RELAY_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/*
 * Model. A relay_redis_t keeps two hiredis connections to one Redis server on the caller's libuv
 * loop: one SUBSCRIBEd to the channel, one that PUBLISHes (a subscribed Redis connection can do
 * nothing else). Every process makes a random 64-bit instance id (OpenSSL RAND_bytes) at
 * relay_redis_new(); each published message carries it, and messages that carry this relay's own
 * id are skipped, so an instance never hears itself. The connection id lets the receiving side
 * (several loops of one instance, later) tell the sender apart as well.
 *
 * Redis going away (or refusing the relay's password) does not stop the caller: both connections
 * are retried with exponential backoff (RELAY_REDIS_BACKOFF_MIN_MS doubling up to
 * RELAY_REDIS_BACKOFF_MAX_MS), and relay_redis_publish() drops (and counts) what it is given while
 * the relay is not connected (either connection down: stats.connected 0). The log says so once when
 * Redis is lost (or first found unreachable), once when Redis refuses the password (or wants one),
 * and once when both connections are back, never per packet or per attempt. Messages published by
 * others while this relay was away are not received (Redis pub/sub keeps nothing).
 *
 * Threads: everything runs on the loop's thread; every function must be called there, except
 * relay_redis_post(), which any thread may call (e.g. a pkm_server loop that is not the relay's):
 * it queues the packet, and the relay's loop publishes it.
 *
 * Use from `pkmcom serve --relay --redis URL` (not wired yet; issue 14): serve runs the relay on
 * a libuv loop of its own in a thread of its own (pkm_server does not share its loops); on_packet
 * relays locally as today and calls relay_redis_post(r, pkm_server_conn_id(conn), ...); on_message
 * (on the relay's thread) hands the packet to every connection of this instance through the
 * library's cross-loop delivery, which must be callable from a thread that runs no server loop.
 *
 * Wire format of one message (the Redis message payload; all integers big-endian, like PkmCom):
 *
 *   offset  size  field
 *        0     4  magic "PKR" and format version 1: 0x50 0x4B 0x52 0x01
 *        4     8  instance id of the publishing process
 *       12     8  connection id, the sender's number for the connection the packet came from
 *       20     1  packet Id
 *       21     4  packet Hash (as received from the client: the relay does not check it)
 *       25     4  content length n (at most RELAY_REDIS_MAX_CONTENT)
 *       29     n  content
 *
 * A message of another length than 29 + n, another magic or version, or n above the maximum is
 * not delivered: it is counted in stats.bad_messages (and logged once, for the first).
 */

#define RELAY_REDIS_MAGIC           "PKR\x01"
#define RELAY_REDIS_HEADER_SIZE     29
#define RELAY_REDIS_MAX_CONTENT     0x7FFFFFFFu /* a packet Size is a signed 32-bit Int */
#define RELAY_REDIS_DEFAULT_PORT    6379
#define RELAY_REDIS_DEFAULT_CHANNEL "pkmcom"
#define RELAY_REDIS_CHANNEL_MAX     128
#define RELAY_REDIS_HOST_MAX        256
#define RELAY_REDIS_USER_MAX        256  /* an ACL user name, decoded */
#define RELAY_REDIS_PASSWORD_MAX    1024 /* a password, decoded */
#define RELAY_REDIS_BACKOFF_MIN_MS  100
#define RELAY_REDIS_BACKOFF_MAX_MS  5000
/* A connection attempt that is not up (connected, and the subscription confirmed) within this
 * long is dropped and retried: a host that drops packets, or a server that accepts and says
 * nothing. */
#define RELAY_REDIS_CONNECT_TIMEOUT_MS 5000
/* Packets relay_redis_post() holds for the loop at most; beyond, it drops. */
#define RELAY_REDIS_POST_QUEUE_MAX 65536

/* Log levels: the same numbers as pkm_server's (pkmcom/server.h: 1 error, 2 warn, 3 info). */
#define RELAY_REDIS_LOG_WARN 2
#define RELAY_REDIS_LOG_INFO 3

typedef struct relay_redis relay_redis_t;

/* A packet another instance published. content (len bytes) is valid during the call only.
 * instance is the publisher's instance id, conn_id its connection id. */
typedef void (*relay_redis_message_fn)(void *ctx, uint64_t instance, uint64_t conn_id, uint8_t id,
                                       uint32_t hash, const uint8_t *content, size_t len);

/* Log lines of the relay (loss and recovery of Redis, a bad message). msg is valid during the
 * call and never holds packet content. */
typedef void (*relay_redis_log_fn)(void *ctx, int level, const char *msg);

/* A parsed redis://[[USER]:PASSWORD@]HOST[:PORT][/CHANNEL]. It holds the password: wipe it with
 * relay_redis_url_wipe() when done. */
typedef struct relay_redis_url {
    char user[RELAY_REDIS_USER_MAX + 1];         /* "": none (AUTH password, the default user) */
    char password[RELAY_REDIS_PASSWORD_MAX + 1]; /* "": none (no AUTH) */
    char host[RELAY_REDIS_HOST_MAX];             /* without the brackets of an IPv6 address */
    int port;                                    /* 1..65535; RELAY_REDIS_DEFAULT_PORT if absent */
    char channel[RELAY_REDIS_CHANNEL_MAX + 1];   /* RELAY_REDIS_DEFAULT_CHANNEL if absent */
} relay_redis_url_t;

/* Parses url: "redis://", then optionally the userinfo "USER:PASSWORD@", ":PASSWORD@" (the
 * default user: AUTH PASSWORD) or "USER@" (the password given apart, relay_redis_new()), then
 * HOST (a name, an IPv4 address, or an IPv6 address in brackets), then optionally ":PORT"
 * (decimal, 1..65535) and "/CHANNEL" (1 to RELAY_REDIS_CHANNEL_MAX of A-Z a-z 0-9 . _ - :).
 * USER and PASSWORD are percent-decoded (%40 for '@', %3A for ':' in a user, %2F for '/', %25
 * for '%'); raw, they may hold A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * + , ; = (and ':' in the
 * password); decoded, anything but a NUL byte. No query or fragment; rediss:// (TLS) and unix
 * sockets are not supported. Returns 0, or -1 with a one-line reason in err (NUL-terminated, cut
 * to errcap), which never holds the password (the URL is shown as relay_redis_redact_url() makes
 * it). *out is wiped on failure. */
int relay_redis_parse_url(const char *url, relay_redis_url_t *out, char *err, size_t errcap);

/* Wipes a parsed URL (its password above all). */
void relay_redis_url_wipe(relay_redis_url_t *u);

/* url for a log line or an error: the userinfo's password part (between the first ':' and the
 * last '@' after "://") replaced by "***", or the whole userinfo when it has no ':'. out is
 * NUL-terminated, cut to cap. */
void relay_redis_redact_url(const char *url, char *out, size_t cap);

/* Encodes one message (format above) into buf (cap bytes; RELAY_REDIS_HEADER_SIZE + len are
 * needed). Returns the message's length, or 0 if cap is too small or len above the maximum. */
size_t relay_redis_encode(uint8_t *buf, size_t cap, uint64_t instance, uint64_t conn_id, uint8_t id,
                          uint32_t hash, const uint8_t *content, size_t len);

/* Decodes one message; *content points into msg. Returns 0, or -1 if it is malformed. */
int relay_redis_decode(const uint8_t *msg, size_t n, uint64_t *instance, uint64_t *conn_id,
                       uint8_t *id, uint32_t *hash, const uint8_t **content, size_t *len);

/* Makes a relay on loop for url and starts connecting (it returns at once; the connections come
 * up as the loop runs). password (NULL or "": none) is the Redis password given apart from the
 * URL (pkmcom serve --redis-password-file): with a password in the URL too, or a URL that names
 * a user and no password anywhere, relay_redis_new() fails. With a password, each connection
 * sends AUTH [USER] PASSWORD first, at every (re)connection, before SUBSCRIBE or PUBLISH; a
 * refused AUTH (WRONGPASS, ERR), or a Redis that wants a password the relay has not (NOAUTH), is
 * logged once with Redis's reason and retried with backoff like a lost connection. The relay
 * keeps its own copy of the password (wiped by relay_redis_free()) and never logs it.
 * on_message (required) gets every packet of other instances, with ctx.
 * Log lines go to stderr as "pkmcom: relay: ..." until relay_redis_set_log(). Returns the
 * relay, or NULL with a new string in *err (the caller free()s it): a bad URL, no memory, no
 * randomness. The host name is resolved at every connection attempt (blocking getaddrinfo in
 * hiredis: give an address, or a name /etc/hosts answers, where that matters). */
relay_redis_t *relay_redis_new(uv_loop_t *loop, const char *url, const char *password,
                               relay_redis_message_fn on_message, void *ctx, char **err);

/* Sends log lines to fn (with the ctx of relay_redis_new) from now on; NULL: stderr again. */
void relay_redis_set_log(relay_redis_t *r, relay_redis_log_fn fn);

/* The deadline of each connection attempt (0: the default, RELAY_REDIS_CONNECT_TIMEOUT_MS); an
 * attempt under way gets it too, counted from now. */
void relay_redis_set_connect_timeout(relay_redis_t *r, uint64_t ms);

/* Publishes one packet received from a local client on connection conn_id (content copied before
 * the call returns). Returns 0 when it was handed to Redis (Redis may still lose it if the
 * connection breaks before it is written), 1 when it was dropped because the relay is not
 * connected (stats.connected 0; counted in stats.dropped; nothing is logged per packet), -1 for len
 * above RELAY_REDIS_MAX_CONTENT or out of memory (counted in stats.dropped too). */
int relay_redis_publish(relay_redis_t *r, uint64_t conn_id, uint8_t id, uint32_t hash,
                        const uint8_t *content, size_t len);

/* The same as relay_redis_publish(), from any thread: the packet (copied) waits in a queue of
 * at most RELAY_REDIS_POST_QUEUE_MAX packets until the relay's loop publishes it (or drops it,
 * as relay_redis_publish() would). Returns 0 when queued, 1 when the queue is full, -1 for len
 * above RELAY_REDIS_MAX_CONTENT or out of memory (both counted in stats.dropped). Not
 * concurrently with or after relay_redis_free(): stop the threads that post first. */
int relay_redis_post(relay_redis_t *r, uint64_t conn_id, uint8_t id, uint32_t hash,
                     const uint8_t *content, size_t len);

/* On the relay's loop: publishes (or drops, counted) every packet relay_redis_post() has queued,
 * at once instead of on the loop's next turn. Call it before taking the last counters of a relay
 * that is stopping, so that a packet posted just before the stop is counted. */
void relay_redis_drain(relay_redis_t *r);

/* Counters and state. */
typedef struct relay_redis_stats {
    int connected;         /* 1 when both connections are up and the channel is subscribed */
    uint64_t published;    /* messages handed to Redis */
    uint64_t dropped;      /* publishes dropped (Redis down, too large, no memory) */
    uint64_t received;     /* messages of other instances delivered to on_message */
    uint64_t skipped_own;  /* messages of this instance, not delivered */
    uint64_t bad_messages; /* malformed messages, not delivered */
    uint64_t losses;       /* times Redis was lost (or found unreachable at start) */
    uint64_t recoveries;   /* times both connections came back after a loss */
    uint64_t attempts;     /* connection attempts (the first included) */
    uint64_t auth_refused; /* connections Redis refused: AUTH answered with an error, or NOAUTH */
} relay_redis_stats_t;

void relay_redis_get_stats(const relay_redis_t *r, relay_redis_stats_t *out);

/* This relay's instance id. */
uint64_t relay_redis_instance_id(const relay_redis_t *r);

/* Disconnects and frees the relay; on_message and the log are not called again. Handles on the
 * loop finish closing as the loop runs on (run it until uv_run returns before uv_loop_close).
 * Not from within on_message. NULL is allowed. */
void relay_redis_free(relay_redis_t *r);

#endif
