/* SPDX-License-Identifier: MIT */
/* What the libuv server's two files share (not installed): server.c (listener, loop, timers,
 * lifetime) and server_conn.c (one connection's life, an explicit state machine), and the
 * test-only hooks into the server. */
#ifndef PKM_SERVER_INTERNAL_H
#define PKM_SERVER_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>
#include "pkmcom/server.h"
#include "limits_internal.h"
#include "proxy_internal.h"

/* What happened to one connection's RSA job. */
enum pkm__job_event {
    PKM__JOB_QUEUED = 1, /* submitted to the thread pool (loop thread) */
    PKM__JOB_RUN,        /* about to run (a pool thread) */
    PKM__JOB_CANCELLED,  /* never run: its connection closed while it was queued (loop thread) */
    PKM__JOB_ORPHANED,   /* ran, and was freed because its connection had closed (loop thread) */
};
typedef void (*pkm__job_hook_fn)(void *ctx, int event);

/* Sets the hook, called with each event (from the thread named above: make it thread-safe).
 * Before pkm_server_run() only. For tests. */
void pkm__server_set_job_hook(pkm_server_t *srv, pkm__job_hook_fn fn, void *ctx);

/* Connections accepted per loop turn at most (server.c on_connection). */
#define PKM__ACCEPT_BATCH 32

/* Which deadline list a connection is on: handshake (ordered by start), active or trimmed (both
 * ordered by the last read; every trimmed connection read less recently than every active one,
 * since a connection is trimmed from the active list's head and leaves the trimmed list when it
 * reads). Appending `now` keeps every list sorted, so each deadline check looks at heads only. */
enum tlist_id { TL_NONE = 0, TL_HS, TL_ACTIVE, TL_TRIMMED, TL_PROXY, TL_COUNT };
/* TL_PROXY: connections not admitted yet (waiting for their PROXY header, or after a LOCAL
 * header for their first byte), ordered by acceptance; deadline srv->proxy_timeout. */

typedef struct tlist {
    pkm_server_conn_t *head, *tail;
} tlist_t;

/* A connection's life, one state at a time:
 *   PROXY -> HANDSHAKE                          (from a trusted proxy: its PROXY header read)
 *   HANDSHAKE -> ESTABLISHED <-> REKEYING      (the engine's handshakes)
 *   any of those -> CLOSING                    (do_close: on_close called, the handle closing)
 *   CLOSING -> CLOSED                          (the handle is closed)
 * and a CLOSED connection is freed once no write request refers to it and it is off the dirty
 * list. An RSA job in flight never holds a connection back: closing detaches it (see jobreq). */
enum conn_state { CS_PROXY, CS_HANDSHAKE, CS_ESTABLISHED, CS_REKEYING, CS_CLOSING, CS_CLOSED };
/* A connection is "admitted" (c->admitted: counted in the stats and the limits, given an id and
 * callbacks) at once, or with the PROXY protocol when its header is complete; after a LOCAL or
 * UNKNOWN header, when its first byte arrives (a health check never is). One that closes before
 * that closes silently (no on_close). */

struct jobreq;  /* server_conn.c: a connection's RSA job on the thread pool */
struct proxyrd; /* server_conn.c: a PROXY header being read */
typedef struct pkm__loop pkm__loop;

struct pkm_server_conn {
    uv_tcp_t tcp; /* tcp.data = this */
    pkm_server_t *srv;
    pkm__loop *loop; /* the loop it lives on for its whole life (set once, read by any thread) */
    pkm_engine_t *eng;
    void *data;
    uint64_t id;
    uint64_t since;                   /* handshake start, or the last read (ms, uv_now) */
    pkm_server_conn_t *prev, *next;   /* loop->all */
    pkm_server_conn_t *tprev, *tnext; /* deadline list */
    pkm_server_conn_t *dnext;         /* loop->dirty */
    pkm_server_conn_t *gnext;         /* hs_release's list of connections admitted on this loop */
    struct jobreq *job;               /* its RSA job on the thread pool, or NULL */
    struct proxyrd *prx;              /* in CS_PROXY: the header so far (else NULL) */
    size_t wq_bytes;                  /* bytes in uv_write requests not yet completed */
    unsigned writes;                  /* uv_write requests not yet completed */
    /* Messages of other threads that refer to it (a send, an admission): it is not freed while
     * any is in flight. Taken by a thread that knows it is open (before its on_close returned). */
    atomic_uint refs;
    uint8_t state;      /* enum conn_state */
    uint8_t tlist;      /* enum tlist_id */
    uint8_t family;     /* peer address */
    uint8_t hs_granted; /* under srv->lim_mu: another loop admitted its handshake */
    uint16_t peer_port;
    uint8_t peer_addr[16];
    pkm__source_key src;           /* the peer's source (limits_internal.h) */
    uint64_t hs_ticket;            /* while hs_queued: pkm__limits_hs_begin's ticket */
    pkm__partial partial;          /* its partial packet in loop->budget */
    unsigned ever_established : 1; /* the first handshake completed (stats, foreach, getters) */
    unsigned reading : 1;          /* uv_read_start is in force */
    unsigned dirty : 1;            /* on loop->dirty */
    unsigned peer_eof : 1;         /* the client closed its side of an established connection */
    unsigned in_pump : 1;          /* pump() is running (callbacks re-enter it) */
    unsigned counted : 1;          /* pkm__limits_conn_open counted it */
    unsigned hs_queued : 1;        /* its handshake waits for admission (no RSA work yet) */
    unsigned hs_slot : 1;          /* it holds an admission slot no job owns yet */
    unsigned admitted : 1;         /* see above */
    unsigned proxy_check : 1;      /* PROXY on, peer untrusted: its first bytes are checked */
};

typedef struct stats_atomic {
    _Atomic uint64_t conns_open, conns_established, accepted, rejected, handshakes_ok,
        handshakes_failed, timeouts, dropped_queue, packets_in, packets_out, bytes_in, bytes_out,
        refused, partial_closed, partial_bytes, proxy_checks, proxy_refused;
} stats_atomic_t;

/* A packet on its way to other loops (a send, or one broadcast shared by every loop it goes
 * to); the last loop done with it frees it. */
typedef struct pkm__shared_pkt {
    atomic_uint refs;
    uint8_t id;
    uint32_t hash;
    size_t size;
    uint8_t content[];
} pkm__shared_pkt;

/* What one thread asks of a loop (its inbox: a mutex-guarded FIFO and the loop's uv_async). */
enum pkm__msg_kind {
    PKM__MSG_POST = 1, /* pkm_server_post: fn(srv, ud) (loop 0 only) */
    PKM__MSG_SEND,     /* pkt to conn (holds a ref on conn) */
    PKM__MSG_BCAST,    /* pkt to every established connection of the loop but `except` */
    PKM__MSG_GRANT,    /* conn's waiting handshake was admitted by another loop (a ref) */
    PKM__MSG_ACCEPT,   /* fd: a connection loop 0 accepted for this loop */
    PKM__MSG_STOP,     /* loop 0 stopped: this loop stops too */
};

typedef struct pkm__msg {
    struct pkm__msg *next;
    uint8_t kind;
    int fd;
    void (*fn)(pkm_server_t *srv, void *ud);
    void *ud;
    pkm_server_conn_t *conn;
    uint64_t except_id; /* BCAST: the id of the connection left out (0: none) */
    pkm__shared_pkt *pkt;
} pkm__msg;

/* A timer of pkm_server_timer_start() (loop 0). Freed by pkm_server_timer_stop() or
 * pkm_server_free(), once its handle is closed. */
struct pkm_server_timer {
    uv_timer_t t; /* t.data = this */
    pkm__loop *loop;
    void (*fn)(pkm_server_t *srv, void *ud);
    void *ud;
    struct pkm_server_timer *prev, *next; /* loop->timers */
    uint8_t closing, closed;              /* uv_close called / its callback ran */
    uint8_t released;                     /* pkm_server_timer_stop called: free once closed */
};

/* One event loop of the server and everything only its thread touches. */
struct pkm__loop {
    pkm_server_t *srv;
    unsigned idx;  /* 0: the main loop (listener, posts, timers of server.h) */
    uv_loop_t own; /* the loop, unless the caller gave one */
    uv_loop_t *uv;
    uv_thread_t thread; /* idx > 0: the thread pkm_server_run started for it */
    uv_tcp_t listener;  /* loop 0 only */
    uv_timer_t timer;
    uv_prepare_t prepare;
    uv_async_t async;
    int loop_inited, handles_inited;
    int handles_closed;        /* its handles are closed (or closing) */
    int stop_entered;          /* stop_loop ran */
    int stopping;              /* no more accepting, sending, flushing */
    struct pkm__msg *stop_msg; /* idx > 0: loop 0's PKM__MSG_STOP, allocated in advance */
    /* reject()'s handle when none can be allocated; spare_busy while it closes; accept_stalled:
     * a connection waits in the listener for it (see reject). Loop 0. */
    uv_tcp_t spare;
    int spare_busy, accept_stalled;
    /* Loop 0: accepts in this loop turn (reset by on_prepare); past PKM__ACCEPT_BATCH the
     * connection waits in the listener (accept_deferred) and on_prepare takes it (see
     * on_connection). */
    unsigned accepts_this_turn;
    int accept_deferred;
    uint64_t rejected_unlogged, last_reject_log;
    struct pkm_server_timer *timers; /* loop 0: the application's timers */
    pkm_server_conn_t *all;          /* every connection of this loop not yet freed */
    pkm_server_conn_t *dirty;
    tlist_t tl[TL_COUNT];
    pkm__budget budget; /* partial packets: config.partial_budget / loops each */
    stats_atomic_t st;  /* written by this loop's thread only; summed by pkm_server_stats */
    /* The inbox; in_closed: the loop stopped (its async handle is closing), messages then wait
     * for pkm_server_free. */
    uv_mutex_t in_mu;
    pkm__msg *in_head, *in_tail;
    int in_closed;
};

struct pkm_server {
    pkm__loop *loops;
    unsigned nloops;
    atomic_int stop_requested;
    atomic_int running;
    int ran;
    uint16_t port;

    pkm_engine_config_t ec; /* every connection's engine config; ec.secret is `secret` below */
    uint8_t *secret;        /* the server's copy of the secret, wiped by pkm_server_free */
    size_t max_conns;
    uint64_t hs_timeout, idle_timeout, trim_after; /* ms, checked non-negative */
    pkm__job_hook_fn job_hook;                     /* test-only (server_internal.h) */
    void *job_hook_ctx;
    void (*on_connect)(void *user, pkm_server_conn_t *conn);
    void (*on_packet)(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt);
    void (*on_close)(void *user, pkm_server_conn_t *conn, int err, const char *fail_step);
    void (*on_log)(void *user, int level, const char *msg);
    void *user;

    atomic_uint_fast64_t next_id; /* connection ids */
    atomic_size_t open;           /* connections admitted (or being admitted) and not closing */
    unsigned next_loop;           /* loop 0's round robin among equally loaded loops */
    /* Admission, per-source caps, failed-secret ban, log limiter: shared by the loops, under
     * lim_mu (the accept and handshake paths, never the packet path). */
    uv_mutex_t lim_mu;
    pkm__limits *lim;
    int secret_limit;                          /* the failed-secret limit is on */
    _Atomic uint64_t hs_in_flight, hs_waiting; /* the limits' counts, for pkm_server_stats */
    uint64_t lim_clock;     /* under lim_mu: the latest time given to the limits (lim_now_locked) */
    int proxy_on;           /* config.proxy_trusted was set */
    pkm__cidr_list proxy;   /* the trusted proxies (read-only once made) */
    uint64_t proxy_timeout; /* ms a connection in TL_PROXY may wait */
};

/* The loop whose callback the calling thread is in (NULL: none of any server's). */
pkm__loop *pkm__current_loop(void);
/* Sets it (every libuv callback of the server does, first). */
void pkm__enter_loop(pkm__loop *L);

/* Counters have one writer (their loop's thread), so a relaxed load + store is enough; readers on
 * other threads see each counter atomically. */
static inline void st_add(_Atomic uint64_t *x, uint64_t n)
{
    atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void st_sub(_Atomic uint64_t *x, uint64_t n)
{
    atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) - n,
                          memory_order_relaxed);
}

/* The time for the limits, with lim_mu held: loop `now`, never earlier than what another loop
 * gave them (each loop caches its own uv_now; the limits' windows want one clock that never
 * goes back). */
static inline uint64_t lim_now_locked(pkm_server_t *srv, uint64_t now)
{
    if (now < srv->lim_clock) now = srv->lim_clock;
    srv->lim_clock = now;
    return now;
}

/* Publishes the limits' current counts in the stats; with lim_mu held. */
static inline void st_limits_locked(pkm_server_t *srv)
{
    pkm__limits_stats ls;
    pkm__limits_stats_get(srv->lim, &ls);
    atomic_store_explicit(&srv->hs_in_flight, ls.in_flight, memory_order_relaxed);
    atomic_store_explicit(&srv->hs_waiting, ls.queued, memory_order_relaxed);
}

/* Publishes loop L's partial-packet total. */
static inline void st_budget(pkm__loop *L)
{
    atomic_store_explicit(&L->st.partial_bytes, L->budget.total, memory_order_relaxed);
}

/* ---- server.c, for server_conn.c ---- */

/* Logs through on_log (stderr for warnings and errors without one). */
__attribute__((format(printf, 3, 4))) void pkm__slog(pkm_server_t *srv, int level, const char *fmt,
                                                     ...);
/* Moves c to the tail of deadline list `id`, with `since` = now; re-arms the timer. */
void pkm__tl_append(pkm__loop *L, pkm_server_conn_t *c, enum tlist_id id);
/* Takes c off its deadline list (none: no-op). */
void pkm__tl_remove(pkm__loop *L, pkm_server_conn_t *c);
/* Re-arms L's timer for the earliest deadline (lists and partial packets). */
void pkm__arm_timer(pkm__loop *L);
/* Queues m in L's inbox and wakes L (once L stopped, m waits for pkm_server_free). */
void pkm__loop_send(pkm__loop *L, pkm__msg *m);
/* Logs a refusal of `src` by the limits, at most once per source and log interval. */
void pkm__log_refusal(pkm_server_t *srv, pkm__loop *L, const pkm__source_key *src, pkm__refusal why,
                      const char *what);

/* ---- server_conn.c, for server.c ---- */

/* Accepts the connection waiting in loop 0's listener (fd < 0), or takes over the accepted socket
 * fd that loop 0 handed to loop L, and starts its life on L (the ServerKey goes out before the
 * loop next waits). The caller counted it in srv->open: released here when it is not admitted.
 * Returns 0 (also when the connection could not be admitted and was closed at once, logged), or
 * PKM_ENOMEM when not even its struct could be allocated: the caller must then still take the
 * connection from the listener (reject), or close fd, and release srv->open. */
int pkm__sconn_accept(pkm__loop *L, int fd);
/* L's inbox messages about connections: PKM__MSG_SEND, _BCAST, _GRANT (each freed here). */
void pkm__sconn_msg(pkm__loop *L, pkm__msg *m);
/* Before the loop waits: writes out what c has to send, ends the stream of a client that closed
 * its side once everything owed is written, frees c when it is closed and released. */
void pkm__sconn_prepare(pkm_server_conn_t *c);
/* Closes c with err (0: by this side; PKM_ETIMEOUT: a deadline passed), cancelling its queued
 * job; on_close is called. No-op once closing. */
void pkm__sconn_close(pkm_server_conn_t *c, int err);

#endif
