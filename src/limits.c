/* SPDX-License-Identifier: MIT */
/* Admission and limits bookkeeping (src/limits_internal.h): the per-source table, handshake
 * admission with per-source FIFOs served round-robin, bans, the log limiter, and the
 * partial-packet budget. */
#include <string.h>
#include <openssl/rand.h>
#include "internal.h"
#include "limits_internal.h"

#define NIL UINT32_MAX

enum { LRU_NONE = 0, LRU_PLAIN = 1, LRU_MARKED = 2 };

typedef struct src_ent {
    pkm__source_key key;
    uint8_t in_use;
    uint8_t lru; /* LRU_*: which idle list holds it (LRU_NONE while live) */
    uint8_t logged;
    uint64_t hash;
    uint32_t conns, active, queued;
    uint32_t fails, suppressed;
    uint32_t q_head, q_tail;     /* its FIFO of waiting handshakes (qnode indexes) */
    uint32_t rr_prev, rr_next;   /* ring of sources with waiting handshakes */
    uint32_t lru_prev, lru_next; /* idle list; lru_next also links the free list */
    uint64_t fail_start, banned_until, last_log;
    uint64_t tokens, tokens_at; /* connection rate: the bucket in 1/1000 connections, and when */
} src_ent;

typedef struct qnode {
    void *user;
    uint32_t src; /* NIL when free */
    uint32_t prev, next;
    uint32_t gen;
} qnode;

struct pkm__limits {
    pkm__limits_config cfg;
    src_ent *src;
    uint32_t cap, count, free_head;
    uint32_t *idx; /* open addressing, linear probing: slab indexes or NIL */
    uint32_t idx_mask;
    uint64_t seed0, seed1;
    uint32_t lru_head[3], lru_tail[3];
    uint32_t rr_cur; /* the source served next, NIL when none waits */
    qnode *q;
    uint32_t q_free;
    uint32_t in_flight, queued, conns;
    uint64_t evicted;
    uint8_t shared_logged;
    uint64_t shared_last;
    uint32_t shared_suppressed;
};

void pkm__limits_config_init(pkm__limits_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_handshakes = PKM__LIMITS_MAX_HANDSHAKES;
    cfg->max_handshakes_per_source = PKM__LIMITS_MAX_HANDSHAKES_PER_SOURCE;
    cfg->max_queued = PKM__LIMITS_MAX_QUEUED;
    cfg->max_queued_per_source = PKM__LIMITS_MAX_QUEUED_PER_SOURCE;
    cfg->max_conns_per_source = PKM__LIMITS_MAX_CONNS_PER_SOURCE;
    cfg->secret_fails = PKM__LIMITS_SECRET_FAILS;
    cfg->secret_window_ms = PKM__LIMITS_SECRET_WINDOW_MS;
    cfg->secret_ban_ms = PKM__LIMITS_SECRET_BAN_MS;
    cfg->log_interval_ms = PKM__LIMITS_LOG_INTERVAL_MS;
    cfg->max_sources = PKM__LIMITS_MAX_SOURCES;
}

const char *pkm__refusal_str(pkm__refusal r)
{
    switch (r) {
    case PKM__REFUSE_NONE: return "not refused";
    case PKM__REFUSE_BANNED: return "the source failed the secret too often and is banned";
    case PKM__REFUSE_SOURCE_CONNS: return "the source has too many connections open";
    case PKM__REFUSE_SOURCE_QUEUE: return "the source has too many handshakes waiting";
    case PKM__REFUSE_QUEUE_FULL: return "too many handshakes are waiting";
    case PKM__REFUSE_TABLE_FULL: return "too many sources are connected";
    case PKM__REFUSE_NOMEM: return "out of memory";
    case PKM__REFUSE_SOURCE_RATE: return "the source opens connections too fast";
    }
    return "unknown refusal";
}

/* ---- the table ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t key_hash(const pkm__limits *lim, const pkm__source_key *k)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | k->b[i];
    return mix64(mix64(v ^ lim->seed0) ^ ((uint64_t)k->family + lim->seed1));
}

static int key_eq(const pkm__source_key *a, const pkm__source_key *b)
{
    return a->family == b->family && memcmp(a->b, b->b, sizeof a->b) == 0;
}

static uint32_t find(const pkm__limits *lim, const pkm__source_key *k)
{
    if (lim->count == 0) return NIL;
    uint32_t i = (uint32_t)key_hash(lim, k) & lim->idx_mask;
    while (lim->idx[i] != NIL) {
        if (key_eq(&lim->src[lim->idx[i]].key, k)) return lim->idx[i];
        i = (i + 1) & lim->idx_mask;
    }
    return NIL;
}

static void idx_insert(pkm__limits *lim, uint32_t s)
{
    uint32_t i = (uint32_t)lim->src[s].hash & lim->idx_mask;
    while (lim->idx[i] != NIL)
        i = (i + 1) & lim->idx_mask;
    lim->idx[i] = s;
}

/* Backward-shift deletion: no tombstones, so probes stay short. */
static void idx_delete(pkm__limits *lim, uint32_t s)
{
    uint32_t m = lim->idx_mask;
    uint32_t i = (uint32_t)lim->src[s].hash & m;
    while (lim->idx[i] != s)
        i = (i + 1) & m;
    lim->idx[i] = NIL;
    for (uint32_t j = (i + 1) & m; lim->idx[j] != NIL; j = (j + 1) & m) {
        uint32_t home = (uint32_t)lim->src[lim->idx[j]].hash & m;
        /* The entry at j may move to the hole at i unless its home lies cyclically in (i, j]. */
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            lim->idx[i] = lim->idx[j];
            lim->idx[j] = NIL;
            i = j;
        }
    }
}

static uint32_t idx_size_for(uint32_t cap)
{
    uint32_t n = 8;
    while (n < 2 * (uint64_t)cap)
        n *= 2;
    return n;
}

/* Doubles the slab (up to max_sources) and rebuilds the index. 0 or PKM_ENOMEM (unchanged). */
static int grow(pkm__limits *lim)
{
    uint32_t ncap = lim->cap ? lim->cap * 2 : 64;
    if (ncap > lim->cfg.max_sources || ncap < lim->cap) ncap = lim->cfg.max_sources;
    if (ncap <= lim->cap) return PKM_ENOMEM;
    uint32_t nidx = idx_size_for(ncap);
    uint32_t *idx = pkm__malloc((size_t)nidx * sizeof *idx);
    if (!idx) return PKM_ENOMEM;
    src_ent *s = pkm__realloc(lim->src, (size_t)ncap * sizeof *s);
    if (!s) {
        pkm__free(idx);
        return PKM_ENOMEM;
    }
    lim->src = s;
    for (uint32_t i = ncap; i-- > lim->cap;) {
        memset(&s[i], 0, sizeof s[i]);
        s[i].lru_next = lim->free_head;
        lim->free_head = i;
    }
    lim->cap = ncap;
    pkm__free(lim->idx);
    lim->idx = idx;
    lim->idx_mask = nidx - 1;
    for (uint32_t i = 0; i < nidx; i++)
        idx[i] = NIL;
    for (uint32_t i = 0; i < lim->cap; i++)
        if (s[i].in_use) idx_insert(lim, i);
    return 0;
}

static void lru_unlink(pkm__limits *lim, uint32_t i)
{
    src_ent *e = &lim->src[i];
    if (e->lru == LRU_NONE) return;
    if (e->lru_prev != NIL)
        lim->src[e->lru_prev].lru_next = e->lru_next;
    else
        lim->lru_head[e->lru] = e->lru_next;
    if (e->lru_next != NIL)
        lim->src[e->lru_next].lru_prev = e->lru_prev;
    else
        lim->lru_tail[e->lru] = e->lru_prev;
    e->lru = LRU_NONE;
    e->lru_prev = e->lru_next = NIL;
}

static void lru_append(pkm__limits *lim, uint32_t i, uint8_t list)
{
    src_ent *e = &lim->src[i];
    e->lru = list;
    e->lru_next = NIL;
    e->lru_prev = lim->lru_tail[list];
    if (e->lru_prev != NIL)
        lim->src[e->lru_prev].lru_next = i;
    else
        lim->lru_head[list] = i;
    lim->lru_tail[list] = i;
}

/* After any use of entry i: live entries leave the idle lists; idle ones go to the tail of
 * theirs (the most recently used end). */
static void settle(pkm__limits *lim, uint32_t i, uint64_t now)
{
    src_ent *e = &lim->src[i];
    lru_unlink(lim, i);
    if (e->conns || e->active || e->queued) return;
    lru_append(lim, i, (e->fails || e->banned_until > now) ? LRU_MARKED : LRU_PLAIN);
}

static void evict(pkm__limits *lim, uint32_t i)
{
    lru_unlink(lim, i);
    idx_delete(lim, i);
    lim->src[i].in_use = 0;
    lim->src[i].lru_next = lim->free_head;
    lim->free_head = i;
    lim->count--;
    lim->evicted++;
}

/* The entry of k, made when missing (growing the table, or evicting the longest idle entry
 * when it is at max_sources). NIL with *why set when none can be had. */
static uint32_t get_or_make(pkm__limits *lim, const pkm__source_key *k, uint64_t now,
                            pkm__refusal *why)
{
    uint32_t i = find(lim, k);
    if (i != NIL) return i;
    if (lim->count == lim->cap) {
        int grown = lim->cap < lim->cfg.max_sources && grow(lim) == 0;
        if (!grown) {
            uint32_t victim = lim->lru_head[LRU_PLAIN];
            if (victim == NIL) victim = lim->lru_head[LRU_MARKED];
            if (victim == NIL) {
                *why = lim->cap < lim->cfg.max_sources ? PKM__REFUSE_NOMEM : PKM__REFUSE_TABLE_FULL;
                return NIL;
            }
            evict(lim, victim);
        }
    }
    i = lim->free_head;
    src_ent *e = &lim->src[i];
    lim->free_head = e->lru_next;
    memset(e, 0, sizeof *e);
    e->key = *k;
    e->in_use = 1;
    e->hash = key_hash(lim, k);
    e->q_head = e->q_tail = NIL;
    e->rr_prev = e->rr_next = NIL;
    e->lru_prev = e->lru_next = NIL;
    lim->count++;
    idx_insert(lim, i);
    settle(lim, i, now);
    return i;
}

int pkm__limits_new(const pkm__limits_config *cfg, pkm__limits **out)
{
    PKM_ENSURE(out, PKM_EINVAL);
    *out = NULL;
    pkm__limits_config c;
    if (cfg)
        c = *cfg;
    else
        pkm__limits_config_init(&c);
    PKM_ENSURE(c.max_handshakes >= 1 && c.max_handshakes_per_source >= 1 && c.max_sources >= 1,
               PKM_EINVAL);
    PKM_ENSURE(c.max_queued < NIL, PKM_EINVAL);
    pkm__limits *lim = pkm__calloc(1, sizeof *lim);
    if (!lim) return PKM_ENOMEM;
    lim->cfg = c;
    lim->free_head = NIL;
    lim->rr_cur = NIL;
    lim->q_free = NIL;
    for (int l = 0; l < 3; l++)
        lim->lru_head[l] = lim->lru_tail[l] = NIL;
    uint64_t seed[2];
    if (RAND_bytes((unsigned char *)seed, sizeof seed) != 1) {
        /* Unpredictable seeds only make collisions harder to aim; the table works without. */
        seed[0] = (uint64_t)(uintptr_t)lim;
        seed[1] = (uint64_t)(uintptr_t)&seed;
    }
    lim->seed0 = seed[0];
    lim->seed1 = seed[1];
    if (c.max_queued) {
        lim->q = pkm__calloc(c.max_queued, sizeof *lim->q);
        if (!lim->q) {
            pkm__free(lim);
            return PKM_ENOMEM;
        }
        for (uint32_t i = c.max_queued; i-- > 0;) {
            lim->q[i].src = NIL;
            lim->q[i].gen = 1;
            lim->q[i].next = lim->q_free;
            lim->q_free = i;
        }
    }
    if (grow(lim) != 0) {
        pkm__free(lim->q);
        pkm__free(lim);
        return PKM_ENOMEM;
    }
    *out = lim;
    return 0;
}

void pkm__limits_free(pkm__limits *lim)
{
    if (!lim) return;
    pkm__free(lim->src);
    pkm__free(lim->idx);
    pkm__free(lim->q);
    pkm__free(lim);
}

/* ---- connections ---- */

static int banned_at(const src_ent *e, uint64_t now)
{
    return e->banned_until > now;
}

/* The connection rate's token bucket (1000 per connection): refilled for the time since the
 * last look, capped at the burst; a new entry (zeroed) starts full. 1: a token taken. */
static int take_token(const pkm__limits *lim, src_ent *e, uint64_t now_ms)
{
    uint64_t rate = lim->cfg.conn_rate_per_source;
    if (!rate) return 1;
    uint64_t burst = lim->cfg.conn_burst_per_source ? lim->cfg.conn_burst_per_source : 2 * rate;
    uint64_t full = burst * 1000;
    if (e->tokens_at == 0 || now_ms < e->tokens_at) { /* new entry, or a clock from before */
        e->tokens = full;
    } else {
        uint64_t dt = now_ms - e->tokens_at;
        e->tokens = dt >= full / rate ? full : e->tokens + dt * rate;
        if (e->tokens > full) e->tokens = full;
    }
    e->tokens_at = now_ms ? now_ms : 1;
    if (e->tokens < 1000) return 0;
    e->tokens -= 1000;
    return 1;
}

int pkm__limits_conn_open(pkm__limits *lim, const pkm__source_key *src, uint64_t now_ms,
                          pkm__refusal *reason)
{
    pkm__refusal why = PKM__REFUSE_NONE;
    uint32_t i = get_or_make(lim, src, now_ms, &why);
    if (i != NIL) {
        src_ent *e = &lim->src[i];
        if (banned_at(e, now_ms))
            why = PKM__REFUSE_BANNED;
        else if (lim->cfg.max_conns_per_source && e->conns >= lim->cfg.max_conns_per_source)
            why = PKM__REFUSE_SOURCE_CONNS;
        else if (!take_token(lim, e, now_ms))
            why = PKM__REFUSE_SOURCE_RATE;
        else {
            e->conns++;
            lim->conns++;
        }
        settle(lim, i, now_ms);
    }
    if (reason) *reason = why;
    return why == PKM__REFUSE_NONE ? 0 : PKM_EAGAIN;
}

int pkm__limits_conn_close(pkm__limits *lim, const pkm__source_key *src, uint64_t now_ms)
{
    uint32_t i = find(lim, src);
    PKM_ENSURE(i != NIL && lim->src[i].conns > 0, PKM_ESTATE);
    lim->src[i].conns--;
    lim->conns--;
    settle(lim, i, now_ms);
    return 0;
}

/* ---- handshake admission ---- */

static void ring_join(pkm__limits *lim, uint32_t i)
{
    src_ent *e = &lim->src[i];
    if (lim->rr_cur == NIL) {
        e->rr_prev = e->rr_next = i;
        lim->rr_cur = i;
        return;
    }
    /* Just before the one served next: the end of the current round. */
    uint32_t next = lim->rr_cur, prev = lim->src[next].rr_prev;
    e->rr_next = next;
    e->rr_prev = prev;
    lim->src[prev].rr_next = i;
    lim->src[next].rr_prev = i;
}

static void ring_leave(pkm__limits *lim, uint32_t i)
{
    src_ent *e = &lim->src[i];
    if (e->rr_next == i) {
        lim->rr_cur = NIL;
    } else {
        lim->src[e->rr_prev].rr_next = e->rr_next;
        lim->src[e->rr_next].rr_prev = e->rr_prev;
        if (lim->rr_cur == i) lim->rr_cur = e->rr_next;
    }
    e->rr_prev = e->rr_next = NIL;
}

/* Unlinks node n from its source's FIFO and frees it (its tickets become stale). */
static void qnode_drop(pkm__limits *lim, uint32_t n)
{
    qnode *q = &lim->q[n];
    src_ent *e = &lim->src[q->src];
    if (q->prev != NIL)
        lim->q[q->prev].next = q->next;
    else
        e->q_head = q->next;
    if (q->next != NIL)
        lim->q[q->next].prev = q->prev;
    else
        e->q_tail = q->prev;
    uint32_t s = q->src;
    e->queued--;
    lim->queued--;
    if (e->queued == 0) ring_leave(lim, s);
    q->src = NIL;
    q->user = NULL;
    q->gen++;
    if (q->gen == 0) q->gen = 1;
    q->prev = NIL;
    q->next = lim->q_free;
    lim->q_free = n;
}

pkm__admit pkm__limits_hs_begin(pkm__limits *lim, const pkm__source_key *src, void *user,
                                uint64_t now_ms, uint64_t *ticket, pkm__refusal *reason)
{
    pkm__refusal why = PKM__REFUSE_NONE;
    pkm__admit res = PKM__ADMIT_REFUSE;
    uint32_t i = get_or_make(lim, src, now_ms, &why);
    if (i == NIL) goto out;
    src_ent *e = &lim->src[i];
    if (banned_at(e, now_ms)) {
        why = PKM__REFUSE_BANNED;
    } else if (lim->in_flight < lim->cfg.max_handshakes &&
               e->active < lim->cfg.max_handshakes_per_source && e->queued == 0) {
        e->active++;
        lim->in_flight++;
        res = PKM__ADMIT_NOW;
    } else if (e->queued >= lim->cfg.max_queued_per_source) {
        why = PKM__REFUSE_SOURCE_QUEUE;
    } else if (lim->queued >= lim->cfg.max_queued || lim->q_free == NIL) {
        why = PKM__REFUSE_QUEUE_FULL;
    } else {
        uint32_t n = lim->q_free;
        qnode *q = &lim->q[n];
        lim->q_free = q->next;
        q->user = user;
        q->src = i;
        q->next = NIL;
        q->prev = e->q_tail;
        if (e->q_tail != NIL)
            lim->q[e->q_tail].next = n;
        else
            e->q_head = n;
        e->q_tail = n;
        if (e->queued++ == 0) ring_join(lim, i);
        lim->queued++;
        if (ticket) *ticket = (uint64_t)q->gen << 32 | n;
        res = PKM__ADMIT_QUEUED;
    }
    settle(lim, i, now_ms);
out:
    if (reason) *reason = why;
    return res;
}

int pkm__limits_hs_end(pkm__limits *lim, const pkm__source_key *src, uint64_t now_ms)
{
    uint32_t i = find(lim, src);
    PKM_ENSURE(i != NIL && lim->src[i].active > 0, PKM_ESTATE);
    lim->src[i].active--;
    lim->in_flight--;
    settle(lim, i, now_ms);
    return 0;
}

int pkm__limits_hs_next(pkm__limits *lim, uint64_t now_ms, void **user)
{
    if (lim->in_flight >= lim->cfg.max_handshakes || lim->rr_cur == NIL) return 0;
    /* Sources at their own cap are passed over; there are at most
     * max_handshakes / max_handshakes_per_source of them, which bounds the walk. */
    uint32_t start = lim->rr_cur, i = start;
    do {
        src_ent *e = &lim->src[i];
        uint32_t next = e->rr_next;
        if (e->active < lim->cfg.max_handshakes_per_source) {
            uint32_t n = e->q_head;
            *user = lim->q[n].user;
            qnode_drop(lim, n); /* may take i out of the ring */
            e->active++;
            lim->in_flight++;
            lim->rr_cur = lim->rr_cur == NIL ? NIL : (e->rr_next != NIL ? e->rr_next : next);
            settle(lim, i, now_ms);
            return 1;
        }
        i = next;
    } while (i != start);
    return 0;
}

int pkm__limits_hs_cancel(pkm__limits *lim, uint64_t ticket, uint64_t now_ms)
{
    uint32_t n = (uint32_t)ticket, gen = (uint32_t)(ticket >> 32);
    PKM_ENSURE(n < lim->cfg.max_queued && lim->q[n].src != NIL && lim->q[n].gen == gen, PKM_ESTATE);
    uint32_t s = lim->q[n].src;
    qnode_drop(lim, n);
    settle(lim, s, now_ms);
    return 0;
}

/* ---- failed secrets, bans, the log limiter ---- */

int pkm__limits_secret_failed(pkm__limits *lim, const pkm__source_key *src, uint64_t now_ms)
{
    if (lim->cfg.secret_fails == 0) return 0;
    pkm__refusal why = PKM__REFUSE_NONE;
    uint32_t i = get_or_make(lim, src, now_ms, &why);
    if (i == NIL) return why == PKM__REFUSE_NOMEM ? PKM_ENOMEM : PKM_EAGAIN;
    src_ent *e = &lim->src[i];
    int started = 0;
    if (e->fails == 0 || now_ms - e->fail_start >= lim->cfg.secret_window_ms) {
        e->fails = 0;
        e->fail_start = now_ms;
    }
    if (++e->fails >= lim->cfg.secret_fails) {
        e->fails = 0;
        e->banned_until = now_ms + lim->cfg.secret_ban_ms;
        started = 1;
    }
    settle(lim, i, now_ms);
    return started;
}

int pkm__limits_banned(const pkm__limits *lim, const pkm__source_key *src, uint64_t now_ms)
{
    uint32_t i = find(lim, src);
    return i != NIL && banned_at(&lim->src[i], now_ms);
}

static int log_gate(uint8_t *logged, uint64_t *last, uint32_t *count, uint64_t interval,
                    uint64_t now, uint32_t *suppressed)
{
    if (!*logged || now - *last >= interval) {
        if (suppressed) *suppressed = *count;
        *count = 0;
        *last = now;
        *logged = 1;
        return 1;
    }
    if (*count < UINT32_MAX) (*count)++;
    return 0;
}

int pkm__limits_log_ok(pkm__limits *lim, const pkm__source_key *src, uint64_t now_ms,
                       uint32_t *suppressed)
{
    pkm__refusal why;
    uint32_t i = get_or_make(lim, src, now_ms, &why);
    if (i == NIL)
        return log_gate(&lim->shared_logged, &lim->shared_last, &lim->shared_suppressed,
                        lim->cfg.log_interval_ms, now_ms, suppressed);
    src_ent *e = &lim->src[i];
    int r = log_gate(&e->logged, &e->last_log, &e->suppressed, lim->cfg.log_interval_ms, now_ms,
                     suppressed);
    settle(lim, i, now_ms);
    return r;
}

void pkm__limits_stats_get(const pkm__limits *lim, pkm__limits_stats *st)
{
    st->sources = lim->count;
    st->in_flight = lim->in_flight;
    st->queued = lim->queued;
    st->conns = lim->conns;
    st->evicted = lim->evicted;
}

void pkm__limits_source_get(const pkm__limits *lim, const pkm__source_key *src, uint32_t *conns,
                            uint32_t *in_flight, uint32_t *queued)
{
    uint32_t i = find(lim, src);
    const src_ent *e = i == NIL ? NULL : &lim->src[i];
    if (conns) *conns = e ? e->conns : 0;
    if (in_flight) *in_flight = e ? e->active : 0;
    if (queued) *queued = e ? e->queued : 0;
}

/* ---- the partial-packet budget ---- */

void pkm__budget_init(pkm__budget *b, size_t limit, uint64_t deadline_ms)
{
    memset(b, 0, sizeof *b);
    b->limit = limit;
    b->deadline_ms = deadline_ms;
}

void pkm__budget_free(pkm__budget *b)
{
    pkm__free(b->heap);
    b->heap = NULL;
    b->heap_cap = 0;
    b->count = 0;
    b->total = 0;
    b->oldest = b->newest = NULL;
}

static void heap_put(pkm__budget *b, size_t pos, pkm__partial *p)
{
    b->heap[pos] = p;
    p->heap_pos = pos + 1;
}

static void sift_up(pkm__budget *b, size_t pos)
{
    pkm__partial *p = b->heap[pos];
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (b->heap[parent]->held >= p->held) break;
        heap_put(b, pos, b->heap[parent]);
        pos = parent;
    }
    heap_put(b, pos, p);
}

static void sift_down(pkm__budget *b, size_t pos)
{
    pkm__partial *p = b->heap[pos];
    for (;;) {
        size_t c = 2 * pos + 1;
        if (c >= b->count) break;
        if (c + 1 < b->count && b->heap[c + 1]->held > b->heap[c]->held) c++;
        if (b->heap[c]->held <= p->held) break;
        heap_put(b, pos, b->heap[c]);
        pos = c;
    }
    heap_put(b, pos, p);
}

int pkm__budget_reserve(pkm__budget *b, size_t n)
{
    if (n <= b->heap_cap) return 0;
    if (n > SIZE_MAX / sizeof *b->heap) return PKM_ENOMEM;
    pkm__partial **h = pkm__realloc(b->heap, n * sizeof *h);
    if (!h) return PKM_ENOMEM;
    b->heap = h;
    b->heap_cap = n;
    return 0;
}

int pkm__budget_set(pkm__budget *b, pkm__partial *p, size_t held, uint64_t now_ms)
{
    if (held == 0) {
        pkm__budget_remove(b, p);
        return 0;
    }
    if (p->heap_pos == 0) {
        if (b->count == b->heap_cap && pkm__budget_reserve(b, b->heap_cap ? b->heap_cap * 2 : 64))
            return PKM_ENOMEM;
        p->held = held;
        p->started_ms = now_ms;
        b->total += held;
        heap_put(b, b->count++, p);
        sift_up(b, b->count - 1);
        p->next = NULL;
        p->prev = b->newest;
        if (b->newest)
            b->newest->next = p;
        else
            b->oldest = p;
        b->newest = p;
        return 0;
    }
    size_t old = p->held;
    b->total = b->total - old + held;
    p->held = held;
    if (held > old)
        sift_up(b, p->heap_pos - 1);
    else
        sift_down(b, p->heap_pos - 1);
    return 0;
}

void pkm__budget_remove(pkm__budget *b, pkm__partial *p)
{
    if (p->heap_pos == 0) return;
    size_t pos = p->heap_pos - 1;
    b->total -= p->held;
    b->count--;
    if (pos != b->count) {
        pkm__partial *last = b->heap[b->count];
        size_t was = last->held;
        heap_put(b, pos, last);
        if (was > p->held)
            sift_up(b, pos);
        else
            sift_down(b, pos);
    }
    if (p->prev)
        p->prev->next = p->next;
    else
        b->oldest = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        b->newest = p->prev;
    p->prev = p->next = NULL;
    p->heap_pos = 0;
    p->held = 0;
}

pkm__partial *pkm__budget_over(const pkm__budget *b)
{
    return b->limit && b->total > b->limit && b->count ? b->heap[0] : NULL;
}

pkm__partial *pkm__budget_expired(const pkm__budget *b, uint64_t now_ms)
{
    const pkm__partial *p = b->oldest;
    if (!b->deadline_ms || !p || now_ms < p->started_ms) return NULL;
    return now_ms - p->started_ms >= b->deadline_ms ? b->oldest : NULL;
}

uint64_t pkm__budget_next_deadline(const pkm__budget *b)
{
    if (!b->deadline_ms || !b->oldest) return UINT64_MAX;
    uint64_t t = b->oldest->started_ms + b->deadline_ms;
    return t < b->oldest->started_ms ? UINT64_MAX : t;
}
