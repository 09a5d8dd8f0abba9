/* SPDX-License-Identifier: MIT */
/* Admission and limits for a server under attack (issue 13), as sans-IO bookkeeping: handshake
 * admission (in flight, queued, refused), per-source connection caps, the failed-secret ban, the
 * partial-packet memory budget and deadline, and a once-per-interval log limiter. Internal to the
 * library (the libuv server wires it in); not installed. No I/O, no clocks, no libuv: every call
 * that depends on time takes `now_ms`, milliseconds on any monotonic clock the caller chooses
 * (uv_now() does). Not thread-safe: one caller (the server's loop thread). */
#ifndef PKM_LIMITS_INTERNAL_H
#define PKM_LIMITS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "pkmcom/common.h"
#include "proxy_internal.h"

/* ==== Per-source limits and handshake admission =============================================
 *
 * A source is what pkm__source_key_of() makes of the peer's address (or of the PROXY header's
 * source): an IPv4 address or an IPv6 /64. The table keeps one entry per source it has seen,
 * at most max_sources of them (a hash table with a random per-table seed, grown by doubling up
 * to that cap: the only allocations after pkm__limits_new). An entry is *live* while its
 * source has an open connection, a handshake in flight or a queued one; live entries are never
 * evicted. When the table is full, a new source takes the place of the entry that has been idle
 * the longest, preferring entries with no failed secret and no ban (so that a flood of new
 * sources cannot wash out a ban before the idle entries without history are gone). When every
 * entry is live, a new source is refused (PKM__REFUSE_TABLE_FULL).
 *
 * Handshake admission. The scarce resource is the server's RSA work: two private-key operations
 * per handshake, which cost the server about 0.5 ms of a core and the client nothing. So a
 * handshake asks to start (pkm__limits_hs_begin) at the moment its private-key work would be
 * queued, i.e. once the client's KeyShare is complete, and ends (pkm__limits_hs_end) when that
 * work is done or cancelled; "in flight" means "RSA work queued or running". (A connection that
 * sends ClientKey and then nothing holds no slot, only a connection, bounded by the per-source
 * connection cap and the handshake timeout.) A handshake is:
 *  - ADMITTED at once when fewer than max_handshakes are in flight in all, fewer than
 *    max_handshakes_per_source from its source, and no earlier handshake of its source waits;
 *  - else QUEUED, with no RSA work submitted, when its source has fewer than
 *    max_queued_per_source waiting and fewer than max_queued wait in all;
 *  - else REFUSED (the caller closes the connection at once).
 * Queued handshakes wait in a FIFO per source; sources with waiting handshakes form a ring, and
 * each time a slot frees (pkm__limits_hs_end, then pkm__limits_hs_next until it returns 0) the
 * ring is served round-robin: the next source in turn that is under its own in-flight cap starts
 * its oldest waiting handshake. So a source flooding the server holds at most
 * max_handshakes_per_source slots, and another source's handshake waits for at most one
 * handshake of each other waiting source, never for the flood's whole queue: the length of the
 * flood's queue does not matter to anyone else (it only bounds the connections that wait, which
 * the per-source connection cap bounds anyway). A queued handshake whose connection closes or
 * times out is taken out with pkm__limits_hs_cancel: its RSA work is never submitted. The
 * queue's nodes are allocated once, max_queued of them (24 bytes each).
 *
 * The cost of a slot bounds a good client's wait: with the RSA work of max_handshakes handshakes
 * ahead of it on C cores, a newly admitted handshake waits about max_handshakes x 0.5 ms / C
 * (16 on 2 cores: about 4 ms). A server with more RSA threads can raise it.
 *
 * Wiring, for the server (every call on the loop thread, now_ms = uv_now()):
 *   accept:            key = pkm__source_key_of(proxy source or peer);
 *                      pkm__limits_conn_open() != 0 -> close at once (log via log_ok)
 *   KeyShare complete: pkm__limits_hs_begin(user = conn): NOW -> submit the RSA job;
 *                      QUEUED -> keep the ticket, submit nothing; REFUSE -> close
 *   RSA job done or cancelled before it ran: pkm__limits_hs_end(), then
 *                      while (pkm__limits_hs_next(&user)) submit user's RSA job
 *   close of a connection with a queued handshake: pkm__limits_hs_cancel(ticket)
 *   close:             pkm__limits_conn_close()
 *   step 5 fails with a secret configured: pkm__limits_secret_failed() (1: log the ban)
 *   any refusal:       if (pkm__limits_log_ok()) log one line, with the count left out
 *
 * The defaults below are for a server open to the internet (pkmcom serve). A library default
 * that keeps today's behaviour for many connections from one address (the tests and benchmarks
 * open thousands from 127.0.0.1) sets max_conns_per_source 0 and large queues. */

/* The defaults (pkm__limits_config_init). 0 in a cap field means "no limit" where said. */
#define PKM__LIMITS_MAX_HANDSHAKES            16
#define PKM__LIMITS_MAX_HANDSHAKES_PER_SOURCE 4
#define PKM__LIMITS_MAX_QUEUED                4096
#define PKM__LIMITS_MAX_QUEUED_PER_SOURCE     256
#define PKM__LIMITS_MAX_CONNS_PER_SOURCE      256
#define PKM__LIMITS_CONN_RATE_PER_SOURCE      0 /* off */
#define PKM__LIMITS_SECRET_FAILS              5
#define PKM__LIMITS_SECRET_WINDOW_MS          60000u
#define PKM__LIMITS_SECRET_BAN_MS             300000u
#define PKM__LIMITS_LOG_INTERVAL_MS           60000u
#define PKM__LIMITS_MAX_SOURCES               65536

typedef struct pkm__limits_config {
    uint32_t max_handshakes;            /* in flight in all; >= 1 */
    uint32_t max_handshakes_per_source; /* in flight per source; >= 1 */
    uint32_t max_queued;                /* waiting in all; 0: none (refuse past the caps) */
    uint32_t max_queued_per_source;     /* waiting per source; 0: none */
    uint32_t max_conns_per_source;      /* open connections per source; 0: no limit */
    /* New connections per source and second, a token bucket of conn_burst_per_source tokens
     * (0: twice the rate) refilled at conn_rate_per_source a second; a connection past it is
     * refused at accept (PKM__REFUSE_SOURCE_RATE), before any handshake byte: a source opening
     * connections faster than that costs the server an accept and a close each, no engine, no
     * RSA. Handshake admission bounds the RSA work in flight, not its rate: a client that
     * leaves right after its KeyShare frees its slot at once, so without a rate one source
     * could keep the loop thread busy with handshakes it abandons. 0: no limit. */
    uint32_t conn_rate_per_source;
    uint32_t conn_burst_per_source;
    /* Failed-secret limit: a source whose handshakes fail the secret secret_fails times within
     * secret_window_ms (a fixed window opened by the first failure) is refused for
     * secret_ban_ms. secret_fails 0: off. */
    uint32_t secret_fails;
    uint64_t secret_window_ms;
    uint64_t secret_ban_ms;
    uint64_t log_interval_ms; /* pkm__limits_log_ok: one line per source per interval */
    uint32_t max_sources;     /* entries in the table; >= 1 */
} pkm__limits_config;

/* Fills in the defaults above. */
void pkm__limits_config_init(pkm__limits_config *cfg);

/* Why a connection or handshake is refused. */
typedef enum pkm__refusal {
    PKM__REFUSE_NONE = 0,
    PKM__REFUSE_BANNED,       /* the source failed the secret too often and is banned */
    PKM__REFUSE_SOURCE_CONNS, /* the source has max_conns_per_source connections open */
    PKM__REFUSE_SOURCE_QUEUE, /* the source has max_queued_per_source handshakes waiting */
    PKM__REFUSE_QUEUE_FULL,   /* max_queued handshakes wait in all */
    PKM__REFUSE_TABLE_FULL,   /* max_sources sources are live: no entry for a new one */
    PKM__REFUSE_NOMEM,        /* the table could not grow (allocation failed) */
    PKM__REFUSE_SOURCE_RATE   /* the source opens connections faster than conn_rate_per_source */
} pkm__refusal;

/* A sentence for a refusal, for the log (static storage). */
const char *pkm__refusal_str(pkm__refusal r);

typedef enum pkm__admit {
    PKM__ADMIT_NOW = 0, /* start the handshake's RSA work now; pkm__limits_hs_end when it ends */
    PKM__ADMIT_QUEUED,  /* wait: pkm__limits_hs_next hands it out later, or hs_cancel */
    PKM__ADMIT_REFUSE   /* close the connection; *reason says why */
} pkm__admit;

typedef struct pkm__limits pkm__limits;

/* A new table. cfg NULL: the defaults. Returns 0, PKM_EINVAL (a cap of 0 where >= 1 is
 * required) or PKM_ENOMEM; *out is the caller's, for pkm__limits_free. */
int pkm__limits_new(const pkm__limits_config *cfg, pkm__limits **out);
void pkm__limits_free(pkm__limits *lim);

/* A connection from `src` was accepted: counts it, unless the source is banned, at its
 * connection cap or past its connection rate, or has no entry and none can be made (a
 * connection refused by the ban or the connection cap takes no token from the rate's bucket). Returns 0 (counted: call
 * pkm__limits_conn_close when it closes), or PKM_EAGAIN with *reason set (not counted: close
 * it). reason may be NULL. */
int pkm__limits_conn_open(pkm__limits *lim, const pkm__source_key *src, uint64_t now_ms,
                          pkm__refusal *reason);
/* A counted connection closed (after pkm__limits_hs_end / hs_cancel for its handshake).
 * Returns 0, or PKM_ESTATE when the source has no counted connection (a caller's bug). */
int pkm__limits_conn_close(pkm__limits *lim, const pkm__source_key *src, uint64_t now_ms);

/* A counted connection from `src` asks to start its handshake's RSA work (its KeyShare is
 * complete). `user` identifies it (the server's connection record) and is what
 * pkm__limits_hs_next returns when it is queued. Returns the decision. ADMIT_QUEUED sets *ticket
 * (for hs_cancel); ADMIT_REFUSE sets *reason: BANNED (a ban that began while it was connected),
 * SOURCE_QUEUE, QUEUE_FULL, or NOMEM/TABLE_FULL (a source without an entry: only when no
 * connection was counted for it). ticket and reason may be NULL. */
pkm__admit pkm__limits_hs_begin(pkm__limits *lim, const pkm__source_key *src, void *user,
                                uint64_t now_ms, uint64_t *ticket, pkm__refusal *reason);
/* An admitted handshake's RSA work is done, or was cancelled before it ran: frees its slot.
 * Then call pkm__limits_hs_next until it returns 0. Returns 0, or PKM_ESTATE when the source
 * has no handshake in flight (a caller's bug). */
int pkm__limits_hs_end(pkm__limits *lim, const pkm__source_key *src, uint64_t now_ms);
/* Admits the next queued handshake if a slot is free for it (round-robin across waiting
 * sources, FIFO within one): returns 1 with *user set (the handshake is now in flight: start
 * its RSA work, pkm__limits_hs_end when it ends), or 0 when none can start now. */
int pkm__limits_hs_next(pkm__limits *lim, uint64_t now_ms, void **user);
/* Takes a queued handshake out (its connection closed or timed out before admission): its RSA
 * work never starts, and hs_next never returns it. Returns 0, or PKM_ESTATE for a ticket that
 * is not queued (already admitted, cancelled, or never issued). */
int pkm__limits_hs_cancel(pkm__limits *lim, uint64_t ticket, uint64_t now_ms);

/* A handshake of `src` failed the secret (step 5, with a secret configured). Returns 1 when this
 * failure started a ban (log it), 0 when it did not, PKM_ENOMEM/PKM_EAGAIN when the source has
 * no entry and none can be made (nothing recorded). */
int pkm__limits_secret_failed(pkm__limits *lim, const pkm__source_key *src, uint64_t now_ms);
/* 1 when `src` is banned at now_ms, else 0. */
int pkm__limits_banned(const pkm__limits *lim, const pkm__source_key *src, uint64_t now_ms);

/* The log limiter: 1 when a refusal of `src` may be logged now (the first one, or the first
 * after log_interval_ms since the last logged one), 0 when it is to be counted and left out.
 * On 1, *suppressed (may be NULL) receives how many were left out since the last logged one
 * ("... and N more since"). Sources without an entry (table full of live ones, or no memory)
 * share one limiter, so the log stays bounded even then. */
int pkm__limits_log_ok(pkm__limits *lim, const pkm__source_key *src, uint64_t now_ms,
                       uint32_t *suppressed);

/* What the table holds, for tests and the server's statistics. */
typedef struct pkm__limits_stats {
    uint32_t sources;   /* entries in the table */
    uint32_t in_flight; /* handshakes admitted and not ended */
    uint32_t queued;    /* handshakes waiting */
    uint32_t conns;     /* counted connections */
    uint64_t evicted;   /* entries evicted so far */
} pkm__limits_stats;
void pkm__limits_stats_get(const pkm__limits *lim, pkm__limits_stats *st);
/* The counts of one source (all zero when it has no entry). */
void pkm__limits_source_get(const pkm__limits *lim, const pkm__source_key *src, uint32_t *conns,
                            uint32_t *in_flight, uint32_t *queued);

/* ==== Partial-packet budget ===================================================================
 *
 * Memory a peer can pin: the bytes of a packet it has started and not finished. Each connection
 * embeds one pkm__partial (zeroed, or pkm__partial_init) and reports, after each read, how many
 * bytes its partial packet holds (0 when no packet is under way). The budget keeps the total,
 * a max-heap by bytes held (to name the connection holding the most) and a list in order of
 * start (to name the oldest started packet, whose deadline passes first). The heap's array grows
 * on demand through the allocator hook (the only allocation); nothing else allocates.
 * The server, after updating a connection:
 *   while ((p = pkm__budget_over(b))) close p->user (which calls pkm__budget_remove);
 * and on a timer at pkm__budget_next_deadline():
 *   while ((p = pkm__budget_expired(b, now))) close p->user. */

#define PKM__BUDGET_DEADLINE_MS 30000u                /* a started packet completes within 30 s */
#define PKM__BUDGET_BYTES       (64u * 1024u * 1024u) /* all partial packets together: 64 MiB */

typedef struct pkm__partial {
    void *user;          /* the caller's (its connection) */
    size_t held;         /* bytes held by the partial packet; 0: none */
    uint64_t started_ms; /* when held went from 0 to non-zero */
    /* internal */
    size_t heap_pos; /* index + 1 in the heap; 0: not in it */
    struct pkm__partial *prev, *next;
} pkm__partial;

typedef struct pkm__budget {
    size_t limit;         /* bytes; 0: no budget */
    uint64_t deadline_ms; /* 0: no deadline */
    size_t total;
    size_t count; /* partials with held > 0 */
    /* internal */
    pkm__partial **heap;
    size_t heap_cap;
    pkm__partial *oldest, *newest;
} pkm__budget;

static inline void pkm__partial_init(pkm__partial *p, void *user)
{
    p->user = user;
    p->held = 0;
    p->started_ms = 0;
    p->heap_pos = 0;
    p->prev = p->next = NULL;
}

/* limit 0: no budget; deadline_ms 0: no deadline. Allocates nothing. */
void pkm__budget_init(pkm__budget *b, size_t limit, uint64_t deadline_ms);
/* Makes room for n partials at once (so that the first ones allocate nothing later).
 * Returns 0 or PKM_ENOMEM (nothing changed). */
int pkm__budget_reserve(pkm__budget *b, size_t n);
/* Frees the heap; partials still in it are dropped (their fields left as they are). */
void pkm__budget_free(pkm__budget *b);
/* p's partial packet now holds `held` bytes (0: finished, or none started). The deadline clock
 * starts when held goes from 0 to non-zero and stops at 0. Returns 0, or PKM_ENOMEM when the
 * heap could not grow (only when p was not counted yet; nothing changed: the caller should
 * close the connection, which then holds nothing). */
int pkm__budget_set(pkm__budget *b, pkm__partial *p, size_t held, uint64_t now_ms);
/* p's connection is closing: same as setting 0 (never fails). */
void pkm__budget_remove(pkm__budget *b, pkm__partial *p);
/* When the total exceeds the limit: the partial holding the most bytes (ties: any of them);
 * else NULL. It stays counted until removed. */
pkm__partial *pkm__budget_over(const pkm__budget *b);
/* The oldest-started partial whose packet has been under way for deadline_ms or more at now_ms,
 * or NULL. */
pkm__partial *pkm__budget_expired(const pkm__budget *b, uint64_t now_ms);
/* When the next deadline passes (ms on the caller's clock), or UINT64_MAX when none runs. */
uint64_t pkm__budget_next_deadline(const pkm__budget *b);

#endif
