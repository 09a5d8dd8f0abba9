/* SPDX-License-Identifier: MIT */
/* Tests of the admission and limits bookkeeping (src/limits.c): handshake caps under a burst,
 * round-robin service of queued handshakes, bans, the partial-packet budget, the log limiter,
 * the bounded source table and allocation failure. Time is passed in: no clock, no sleep. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"
#include "limits_internal.h"

static pkm__source_key v4(const char *addr)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, addr, &sa.sin_addr), 1);
    pkm__source_key k;
    pkm__source_key_of((const struct sockaddr *)&sa, &k);
    return k;
}

static pkm__source_key v6(const char *addr)
{
    struct sockaddr_in6 sa;
    memset(&sa, 0, sizeof sa);
    sa.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, addr, &sa.sin6_addr), 1);
    pkm__source_key k;
    pkm__source_key_of((const struct sockaddr *)&sa, &k);
    return k;
}

static pkm__source_key nth(unsigned i)
{
    char a[32];
    snprintf(a, sizeof a, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    return v4(a);
}

static pkm__limits *mk(const pkm__limits_config *c)
{
    pkm__limits *lim = NULL;
    assert_int_equal(pkm__limits_new(c, &lim), 0);
    assert_non_null(lim);
    return lim;
}

/* A burst from one source: its connection cap, in-flight cap and queue cap all hold, and
 * another source's handshake is still admitted at once. */
static void caps_hold_under_burst(void **state)
{
    (void)state;
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.max_handshakes = 8;
    c.max_handshakes_per_source = 2;
    c.max_queued = 16;
    c.max_queued_per_source = 4;
    c.max_conns_per_source = 10;
    pkm__limits *lim = mk(&c);
    pkm__source_key a = v4("127.0.0.2"), b = v4("127.0.0.1");
    int opened = 0, refused_conns = 0;
    for (int i = 0; i < 100; i++) {
        pkm__refusal why = PKM__REFUSE_NONE;
        int r = pkm__limits_conn_open(lim, &a, 1000, &why);
        if (r == 0) {
            opened++;
        } else {
            assert_int_equal(r, PKM_EAGAIN);
            assert_int_equal(why, PKM__REFUSE_SOURCE_CONNS);
            refused_conns++;
        }
    }
    assert_int_equal(opened, 10);
    assert_int_equal(refused_conns, 90);
    int now = 0, queued = 0, refused = 0;
    static int users[10];
    for (int i = 0; i < 10; i++) {
        uint64_t t = 0;
        pkm__refusal why = PKM__REFUSE_NONE;
        pkm__admit d = pkm__limits_hs_begin(lim, &a, &users[i], 1000, &t, &why);
        if (d == PKM__ADMIT_NOW) now++;
        if (d == PKM__ADMIT_QUEUED) queued++;
        if (d == PKM__ADMIT_REFUSE) {
            assert_int_equal(why, PKM__REFUSE_SOURCE_QUEUE);
            refused++;
        }
    }
    assert_int_equal(now, 2);
    assert_int_equal(queued, 4);
    assert_int_equal(refused, 4);
    /* The other source: admitted at once despite the flood's queue. */
    assert_int_equal(pkm__limits_conn_open(lim, &b, 1000, NULL), 0);
    int ub;
    assert_int_equal(pkm__limits_hs_begin(lim, &b, &ub, 1000, NULL, NULL), PKM__ADMIT_NOW);
    uint32_t cn, fl, q;
    pkm__limits_source_get(lim, &a, &cn, &fl, &q);
    assert_int_equal(cn, 10);
    assert_int_equal(fl, 2);
    assert_int_equal(q, 4);
    pkm__limits_stats st;
    pkm__limits_stats_get(lim, &st);
    assert_int_equal(st.in_flight, 3);
    assert_int_equal(st.queued, 4);
    assert_int_equal(st.conns, 11);
    assert_int_equal(st.sources, 2);

    /* The global cap: 5 more sources take the 5 slots left; the next one waits, not refused. */
    for (unsigned i = 0; i < 6; i++) {
        pkm__source_key k = nth(i);
        assert_int_equal(pkm__limits_conn_open(lim, &k, 1000, NULL), 0);
        assert_int_equal(pkm__limits_hs_begin(lim, &k, NULL, 1000, NULL, NULL),
                         i < 5 ? PKM__ADMIT_NOW : PKM__ADMIT_QUEUED);
    }
    pkm__limits_stats_get(lim, &st);
    assert_int_equal(st.in_flight, 8);
    assert_int_equal(st.queued, 5);
    /* No slot: nothing is handed out. */
    void *u = NULL;
    assert_int_equal(pkm__limits_hs_next(lim, 1000, &u), 0);
    /* Ending what was never admitted is a caller's bug, reported. */
    pkm__source_key z = v4("192.0.2.1");
    assert_int_equal(pkm__limits_hs_end(lim, &z, 1000), PKM_ESTATE);
    assert_int_equal(pkm__limits_conn_close(lim, &z, 1000), PKM_ESTATE);
    pkm__limits_free(lim);
}

/* An IPv6 /64 is one source: two addresses in it share the cap, one outside does not. */
static void ipv6_slash64_is_one_source(void **state)
{
    (void)state;
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.max_conns_per_source = 2;
    pkm__limits *lim = mk(&c);
    pkm__source_key x = v6("2001:db8:1:2::1"), y = v6("2001:db8:1:2:ffff::9"),
                    o = v6("2001:db8:1:3::1");
    pkm__refusal why;
    assert_int_equal(pkm__limits_conn_open(lim, &x, 0, &why), 0);
    assert_int_equal(pkm__limits_conn_open(lim, &y, 0, &why), 0);
    assert_int_equal(pkm__limits_conn_open(lim, &x, 0, &why), PKM_EAGAIN);
    assert_int_equal(why, PKM__REFUSE_SOURCE_CONNS);
    assert_int_equal(pkm__limits_conn_open(lim, &o, 0, &why), 0);
    assert_int_equal(pkm__limits_conn_close(lim, &y, 0), 0);
    assert_int_equal(pkm__limits_conn_open(lim, &x, 0, &why), 0);
    pkm__limits_free(lim);
}

typedef struct hs {
    char src;
    int n;
} hs;

/* One slot in all: queued handshakes of three sources are served in turn, FIFO within each; a
 * source that joins late waits for one handshake of each other source, not for a whole queue. */
static void queued_served_round_robin(void **state)
{
    (void)state;
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.max_handshakes = 1;
    c.max_handshakes_per_source = 1;
    c.max_queued_per_source = 8;
    pkm__limits *lim = mk(&c);
    pkm__source_key ka = v4("127.0.0.2"), kb = v4("127.0.0.1"), kc = v4("198.51.100.7");
    hs a[6] = {{'a', 0}, {'a', 1}, {'a', 2}, {'a', 3}, {'a', 4}, {'a', 5}};
    hs b[2] = {{'b', 0}, {'b', 1}};
    hs cc = {'c', 0};
    assert_int_equal(pkm__limits_hs_begin(lim, &ka, &a[0], 0, NULL, NULL), PKM__ADMIT_NOW);
    for (int i = 1; i < 6; i++)
        assert_int_equal(pkm__limits_hs_begin(lim, &ka, &a[i], 0, NULL, NULL), PKM__ADMIT_QUEUED);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pkm__limits_hs_begin(lim, &kb, &b[i], 1, NULL, NULL), PKM__ADMIT_QUEUED);
    assert_int_equal(pkm__limits_hs_begin(lim, &kc, &cc, 2, NULL, NULL), PKM__ADMIT_QUEUED);

    const char *want = "a1 b0 c0 a2 b1 a3 a4 a5 ";
    char got[64] = "";
    hs *cur = &a[0];
    for (int step = 0; step < 8; step++) {
        pkm__source_key *k = cur->src == 'a' ? &ka : cur->src == 'b' ? &kb : &kc;
        void *u = NULL;
        assert_int_equal(pkm__limits_hs_next(lim, 10, &u), 0); /* the slot is taken */
        assert_int_equal(pkm__limits_hs_end(lim, k, 10), 0);
        assert_int_equal(pkm__limits_hs_next(lim, 10, &u), 1);
        cur = u;
        char s[8];
        snprintf(s, sizeof s, "%c%d ", cur->src, cur->n);
        strcat(got, s);
    }
    assert_string_equal(got, want);
    assert_int_equal(pkm__limits_hs_end(lim, &ka, 20), 0);
    void *u = NULL;
    assert_int_equal(pkm__limits_hs_next(lim, 20, &u), 0);
    pkm__limits_stats st;
    pkm__limits_stats_get(lim, &st);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.queued, 0);
    pkm__limits_free(lim);
}

/* The flood scenario: one source holds every slot and has 200 handshakes waiting; a good
 * source's handshake, arriving after all of them, starts after at most one more of the flood's. */
static void good_source_not_behind_flood_queue(void **state)
{
    (void)state;
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.max_handshakes = 4;
    c.max_handshakes_per_source = 4;
    c.max_queued_per_source = 256;
    pkm__limits *lim = mk(&c);
    pkm__source_key flood = v4("127.0.0.2"), good = v4("127.0.0.1");
    static int fu[204];
    int gu;
    for (int i = 0; i < 204; i++)
        assert_int_equal(pkm__limits_hs_begin(lim, &flood, &fu[i], 0, NULL, NULL),
                         i < 4 ? PKM__ADMIT_NOW : PKM__ADMIT_QUEUED);
    assert_int_equal(pkm__limits_hs_begin(lim, &good, &gu, 1, NULL, NULL), PKM__ADMIT_QUEUED);
    int flood_before = 0, admitted_good = 0;
    for (int step = 0; step < 10 && !admitted_good; step++) {
        assert_int_equal(pkm__limits_hs_end(lim, &flood, 2), 0);
        void *u;
        while (pkm__limits_hs_next(lim, 2, &u)) {
            if (u == &gu)
                admitted_good = 1;
            else
                flood_before++;
        }
    }
    assert_true(admitted_good);
    assert_true(flood_before <= 1);
    pkm__limits_free(lim);
}

/* A free slot goes to the next waiting source that is under its own cap: a source at its cap
 * is passed over, not waited for. */
static void next_skips_source_at_its_cap(void **state)
{
    (void)state;
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.max_handshakes = 3;
    c.max_handshakes_per_source = 2;
    pkm__limits *lim = mk(&c);
    pkm__source_key ka = v4("127.0.0.2"), kb = v4("127.0.0.1");
    int ua[4], ub[2];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pkm__limits_hs_begin(lim, &ka, &ua[i], 0, NULL, NULL),
                         i < 2 ? PKM__ADMIT_NOW : PKM__ADMIT_QUEUED);
    assert_int_equal(pkm__limits_hs_begin(lim, &kb, &ub[0], 0, NULL, NULL), PKM__ADMIT_NOW);
    assert_int_equal(pkm__limits_hs_begin(lim, &kb, &ub[1], 0, NULL, NULL), PKM__ADMIT_QUEUED);
    /* B's handshake ends: A is first in the ring but at its cap (2), so B's waiting one goes. */
    assert_int_equal(pkm__limits_hs_end(lim, &kb, 1), 0);
    void *u = NULL;
    assert_int_equal(pkm__limits_hs_next(lim, 1, &u), 1);
    assert_ptr_equal(u, &ub[1]);
    assert_int_equal(pkm__limits_hs_next(lim, 1, &u), 0);
    /* An A handshake ends: A's oldest waiting one goes. */
    assert_int_equal(pkm__limits_hs_end(lim, &ka, 2), 0);
    assert_int_equal(pkm__limits_hs_next(lim, 2, &u), 1);
    assert_ptr_equal(u, &ua[2]);
    assert_int_equal(pkm__limits_hs_next(lim, 2, &u), 0);
    pkm__limits_free(lim);
}

/* A cancelled handshake is never handed out; stale and repeated tickets are refused. */
static void cancelled_never_admitted(void **state)
{
    (void)state;
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.max_handshakes = 1;
    c.max_handshakes_per_source = 1;
    pkm__limits *lim = mk(&c);
    pkm__source_key ka = v4("127.0.0.2");
    int u[4];
    uint64_t t[4] = {0};
    assert_int_equal(pkm__limits_hs_begin(lim, &ka, &u[0], 0, &t[0], NULL), PKM__ADMIT_NOW);
    for (int i = 1; i < 4; i++)
        assert_int_equal(pkm__limits_hs_begin(lim, &ka, &u[i], 0, &t[i], NULL), PKM__ADMIT_QUEUED);
    assert_int_equal(pkm__limits_hs_cancel(lim, t[1], 1), 0);
    assert_int_equal(pkm__limits_hs_cancel(lim, t[1], 1), PKM_ESTATE);
    assert_int_equal(pkm__limits_hs_cancel(lim, 0, 1), PKM_ESTATE);
    assert_int_equal(pkm__limits_hs_cancel(lim, UINT64_MAX, 1), PKM_ESTATE);
    void *got = NULL;
    assert_int_equal(pkm__limits_hs_end(lim, &ka, 2), 0);
    assert_int_equal(pkm__limits_hs_next(lim, 2, &got), 1);
    assert_ptr_equal(got, &u[2]);
    /* An admitted one's ticket is stale too. */
    assert_int_equal(pkm__limits_hs_cancel(lim, t[2], 2), PKM_ESTATE);
    /* The last waiting one cancelled: nothing is left to hand out, and its node is reused
     * without the old ticket reaching the new handshake. */
    assert_int_equal(pkm__limits_hs_cancel(lim, t[3], 3), 0);
    assert_int_equal(pkm__limits_hs_end(lim, &ka, 3), 0);
    assert_int_equal(pkm__limits_hs_next(lim, 3, &got), 0);
    pkm__limits_stats st;
    pkm__limits_stats_get(lim, &st);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.in_flight, 0);
    int v;
    uint64_t tv = 0;
    assert_int_equal(pkm__limits_hs_begin(lim, &ka, &u[0], 4, NULL, NULL), PKM__ADMIT_NOW);
    assert_int_equal(pkm__limits_hs_begin(lim, &ka, &v, 4, &tv, NULL), PKM__ADMIT_QUEUED);
    for (int i = 1; i < 4; i++)
        assert_int_equal(pkm__limits_hs_cancel(lim, t[i], 4), PKM_ESTATE);
    assert_int_equal(pkm__limits_hs_end(lim, &ka, 5), 0);
    assert_int_equal(pkm__limits_hs_next(lim, 5, &got), 1);
    assert_ptr_equal(got, &v);
    pkm__limits_free(lim);
}

/* With no queue, past the caps is refused at once, and the total queue cap holds. */
static void queue_caps(void **state)
{
    (void)state;
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.max_handshakes = 1;
    c.max_handshakes_per_source = 1;
    c.max_queued = 0;
    pkm__limits *lim = mk(&c);
    pkm__source_key ka = v4("127.0.0.2"), kb = v4("127.0.0.1");
    pkm__refusal why = PKM__REFUSE_NONE;
    assert_int_equal(pkm__limits_hs_begin(lim, &ka, NULL, 0, NULL, &why), PKM__ADMIT_NOW);
    assert_int_equal(pkm__limits_hs_begin(lim, &kb, NULL, 0, NULL, &why), PKM__ADMIT_REFUSE);
    assert_true(why == PKM__REFUSE_QUEUE_FULL || why == PKM__REFUSE_SOURCE_QUEUE);
    pkm__limits_free(lim);

    c.max_queued = 3;
    c.max_queued_per_source = 2;
    lim = mk(&c);
    assert_int_equal(pkm__limits_hs_begin(lim, &ka, NULL, 0, NULL, &why), PKM__ADMIT_NOW);
    for (unsigned i = 0; i < 5; i++) {
        pkm__source_key k = nth(i);
        pkm__admit d = pkm__limits_hs_begin(lim, &k, NULL, 0, NULL, &why);
        assert_int_equal(d, i < 3 ? PKM__ADMIT_QUEUED : PKM__ADMIT_REFUSE);
        if (i >= 3) assert_int_equal(why, PKM__REFUSE_QUEUE_FULL);
    }
    pkm__limits_free(lim);
}

/* The failed-secret limit: failures spread wider than the window do not ban; N within it do;
 * the ban refuses connections and handshakes of that source only, and expires. */
static void secret_limit_engages_and_expires(void **state)
{
    (void)state;
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.secret_fails = 3;
    c.secret_window_ms = 1000;
    c.secret_ban_ms = 5000;
    pkm__limits *lim = mk(&c);
    pkm__source_key bad = v4("203.0.113.9"), good = v4("203.0.113.10");
    assert_int_equal(pkm__limits_secret_failed(lim, &bad, 0), 0);
    assert_int_equal(pkm__limits_secret_failed(lim, &bad, 500), 0);
    /* The window opened at 0 has closed: this failure opens a new one. */
    assert_int_equal(pkm__limits_secret_failed(lim, &bad, 1000), 0);
    assert_int_equal(pkm__limits_banned(lim, &bad, 1000), 0);
    assert_int_equal(pkm__limits_conn_open(lim, &bad, 1000, NULL), 0);
    assert_int_equal(pkm__limits_secret_failed(lim, &bad, 1500), 0);
    assert_int_equal(pkm__limits_secret_failed(lim, &bad, 1999), 1); /* banned until 6999 */
    assert_int_equal(pkm__limits_banned(lim, &bad, 1999), 1);
    assert_int_equal(pkm__limits_banned(lim, &good, 1999), 0);
    pkm__refusal why = PKM__REFUSE_NONE;
    assert_int_equal(pkm__limits_conn_open(lim, &bad, 2000, &why), PKM_EAGAIN);
    assert_int_equal(why, PKM__REFUSE_BANNED);
    /* Its connection still open asks for a handshake: refused too. */
    assert_int_equal(pkm__limits_hs_begin(lim, &bad, NULL, 2000, NULL, &why), PKM__ADMIT_REFUSE);
    assert_int_equal(why, PKM__REFUSE_BANNED);
    assert_int_equal(pkm__limits_conn_open(lim, &good, 2000, &why), 0);
    assert_int_equal(pkm__limits_banned(lim, &bad, 6998), 1);
    assert_int_equal(pkm__limits_banned(lim, &bad, 6999), 0);
    assert_int_equal(pkm__limits_conn_open(lim, &bad, 6999, &why), 0);
    assert_int_equal(pkm__limits_hs_begin(lim, &bad, NULL, 6999, NULL, &why), PKM__ADMIT_NOW);
    /* The count started afresh: two more failures do not ban again. */
    assert_int_equal(pkm__limits_secret_failed(lim, &bad, 7000), 0);
    assert_int_equal(pkm__limits_secret_failed(lim, &bad, 7001), 0);
    assert_int_equal(pkm__limits_banned(lim, &bad, 7002), 0);
    pkm__limits_free(lim);

    /* secret_fails 0: off. */
    c.secret_fails = 0;
    lim = mk(&c);
    for (int i = 0; i < 100; i++)
        assert_int_equal(pkm__limits_secret_failed(lim, &bad, (uint64_t)i), 0);
    assert_int_equal(pkm__limits_banned(lim, &bad, 100), 0);
    pkm__limits_free(lim);
}

/* The log limiter: once per source per interval, with the count of what it left out. */
static void log_once_per_interval(void **state)
{
    (void)state;
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.log_interval_ms = 1000;
    pkm__limits *lim = mk(&c);
    pkm__source_key a = v4("127.0.0.2"), b = v4("127.0.0.1");
    uint32_t s = 99;
    int printed = 0;
    for (uint64_t t = 0; t < 1000; t += 10)
        printed += pkm__limits_log_ok(lim, &a, t, &s);
    assert_int_equal(printed, 1);
    assert_int_equal(s, 0);
    assert_int_equal(pkm__limits_log_ok(lim, &b, 500, &s), 1);
    assert_int_equal(pkm__limits_log_ok(lim, &b, 501, &s), 0);
    assert_int_equal(pkm__limits_log_ok(lim, &a, 1000, &s), 1);
    assert_int_equal(s, 99); /* 100 calls in the first interval, one printed */
    assert_int_equal(pkm__limits_log_ok(lim, &a, 1999, &s), 0);
    assert_int_equal(pkm__limits_log_ok(lim, &a, 2000, &s), 1);
    assert_int_equal(s, 1);
    /* Over 10 intervals of 100 calls each, 10 lines. */
    printed = 0;
    for (uint64_t t = 3000; t < 13000; t += 10)
        printed += pkm__limits_log_ok(lim, &a, t, NULL);
    assert_int_equal(printed, 10);
    pkm__limits_free(lim);
}

/* The table is bounded: at max_sources, a new source replaces the longest idle entry without
 * failed secrets first; live entries are never evicted; with every entry live a new source is
 * refused, and its log lines share one limiter. */
static void table_bounded_and_evicts_oldest_idle(void **state)
{
    (void)state;
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.max_sources = 4;
    c.secret_fails = 2;
    c.log_interval_ms = 1000;
    pkm__limits *lim = mk(&c);
    pkm__source_key k[8];
    for (unsigned i = 0; i < 8; i++)
        k[i] = nth(i);
    /* 0 fails a secret once (no ban yet, but history); 1..3 come and go, in that order. */
    assert_int_equal(pkm__limits_secret_failed(lim, &k[0], 0), 0);
    for (unsigned i = 1; i < 4; i++) {
        assert_int_equal(pkm__limits_conn_open(lim, &k[i], i, NULL), 0);
        assert_int_equal(pkm__limits_conn_close(lim, &k[i], 10 + i), 0);
    }
    pkm__limits_stats st;
    pkm__limits_stats_get(lim, &st);
    assert_int_equal(st.sources, 4);
    /* 4 arrives and stays: 1 (idle longest, no history) goes, 0 stays despite being older. */
    assert_int_equal(pkm__limits_conn_open(lim, &k[4], 20, NULL), 0);
    pkm__limits_stats_get(lim, &st);
    assert_int_equal(st.sources, 4);
    assert_int_equal(st.evicted, 1);
    /* 0's failure is remembered: one more bans it. */
    assert_int_equal(pkm__limits_secret_failed(lim, &k[0], 21), 1);
    assert_int_equal(pkm__limits_conn_open(lim, &k[5], 22, NULL), 0); /* evicts 2 */
    assert_int_equal(pkm__limits_conn_open(lim, &k[6], 23, NULL), 0); /* evicts 3 */
    assert_int_equal(pkm__limits_banned(lim, &k[0], 24), 1);
    /* Only 0 is idle now (banned): the next new source takes its place. */
    assert_int_equal(pkm__limits_conn_open(lim, &k[7], 25, NULL), 0);
    assert_int_equal(pkm__limits_banned(lim, &k[0], 26), 0);
    pkm__limits_stats_get(lim, &st);
    assert_int_equal(st.sources, 4);
    assert_int_equal(st.evicted, 4);
    /* All four live: a new source is refused, and the live ones keep their counts. */
    pkm__refusal why = PKM__REFUSE_NONE;
    assert_int_equal(pkm__limits_conn_open(lim, &k[1], 30, &why), PKM_EAGAIN);
    assert_int_equal(why, PKM__REFUSE_TABLE_FULL);
    assert_int_equal(pkm__limits_hs_begin(lim, &k[2], NULL, 30, NULL, &why), PKM__ADMIT_REFUSE);
    assert_int_equal(why, PKM__REFUSE_TABLE_FULL);
    assert_int_equal(pkm__limits_secret_failed(lim, &k[2], 30), PKM_EAGAIN);
    for (unsigned i = 4; i < 8; i++) {
        uint32_t cn;
        pkm__limits_source_get(lim, &k[i], &cn, NULL, NULL);
        assert_int_equal(cn, 1);
    }
    /* Untracked sources share one log limiter. */
    assert_int_equal(pkm__limits_log_ok(lim, &k[1], 30, NULL), 1);
    assert_int_equal(pkm__limits_log_ok(lim, &k[2], 31, NULL), 0);
    assert_int_equal(pkm__limits_log_ok(lim, &k[3], 1030, NULL), 1);
    /* One leaves: a new source fits again. */
    assert_int_equal(pkm__limits_conn_close(lim, &k[5], 40), 0);
    assert_int_equal(pkm__limits_conn_open(lim, &k[1], 41, NULL), 0);
    pkm__limits_free(lim);
}

/* Many sources coming and going through a small table: the counts stay consistent with a model
 * kept here, and the table never holds more than its cap. */
static void churn_matches_model(void **state)
{
    (void)state;
    enum { NSRC = 300, CAP = 64 };
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.max_sources = CAP;
    c.max_conns_per_source = 3;
    pkm__limits *lim = mk(&c);
    static uint32_t model[NSRC];
    uint32_t live_sources = 0, conns = 0;
    srand(1234);
    for (int step = 0; step < 20000; step++) {
        unsigned s = (unsigned)rand() % NSRC;
        pkm__source_key k = nth(s);
        if (rand() % 2 && model[s] > 0) {
            assert_int_equal(pkm__limits_conn_close(lim, &k, (uint64_t)step), 0);
            if (--model[s] == 0) live_sources--;
            conns--;
        } else {
            pkm__refusal why = PKM__REFUSE_NONE;
            int r = pkm__limits_conn_open(lim, &k, (uint64_t)step, &why);
            if (model[s] >= 3) {
                assert_int_equal(why, PKM__REFUSE_SOURCE_CONNS);
            } else if (model[s] == 0 && live_sources == CAP) {
                assert_int_equal(why, PKM__REFUSE_TABLE_FULL);
            } else {
                assert_int_equal(r, 0);
                if (model[s]++ == 0) live_sources++;
                conns++;
            }
        }
        pkm__limits_stats st;
        pkm__limits_stats_get(lim, &st);
        assert_true(st.sources <= CAP);
        assert_true(st.sources >= live_sources);
        assert_int_equal(st.conns, conns);
    }
    for (unsigned s = 0; s < NSRC; s++) {
        pkm__source_key k = nth(s);
        uint32_t cn;
        pkm__limits_source_get(lim, &k, &cn, NULL, NULL);
        assert_int_equal(cn, model[s]);
    }
    pkm__limits_free(lim);
}

/* ---- the partial-packet budget ---- */

static void budget_closes_largest_first(void **state)
{
    (void)state;
    pkm__budget b;
    pkm__budget_init(&b, 600, 1000);
    pkm__partial p[4];
    for (int i = 0; i < 4; i++)
        pkm__partial_init(&p[i], &p[i]);
    assert_null(pkm__budget_over(&b));
    assert_int_equal(pkm__budget_set(&b, &p[0], 100, 0), 0);
    assert_int_equal(pkm__budget_set(&b, &p[1], 400, 5), 0);
    assert_int_equal(pkm__budget_set(&b, &p[2], 100, 8), 0);
    assert_null(pkm__budget_over(&b)); /* 600: at the budget, not over */
    assert_int_equal(pkm__budget_set(&b, &p[2], 300, 9), 0);
    assert_int_equal(pkm__budget_set(&b, &p[3], 50, 10), 0);
    assert_int_equal(b.total, 850);
    /* Over: the one holding the most (400), then none. */
    assert_ptr_equal(pkm__budget_over(&b), &p[1]);
    pkm__budget_remove(&b, &p[1]);
    assert_int_equal(b.total, 450);
    assert_null(pkm__budget_over(&b));
    /* p[0] grows past the others: it is named next. */
    assert_int_equal(pkm__budget_set(&b, &p[0], 700, 11), 0);
    assert_ptr_equal(pkm__budget_over(&b), &p[0]);
    /* Its packet completes: under budget again. */
    assert_int_equal(pkm__budget_set(&b, &p[0], 0, 12), 0);
    assert_int_equal(b.total, 350);
    assert_null(pkm__budget_over(&b));
    pkm__budget_remove(&b, &p[0]); /* not counted: nothing happens */
    assert_int_equal(b.total, 350);
    assert_int_equal(b.count, 2);
    pkm__budget_free(&b);
}

static void budget_deadline_oldest_first(void **state)
{
    (void)state;
    pkm__budget b;
    pkm__budget_init(&b, 0, 1000);
    pkm__partial p[3];
    for (int i = 0; i < 3; i++)
        pkm__partial_init(&p[i], NULL);
    assert_int_equal(pkm__budget_next_deadline(&b), UINT64_MAX);
    assert_int_equal(pkm__budget_set(&b, &p[0], 10, 100), 0);
    assert_int_equal(pkm__budget_set(&b, &p[1], 10, 200), 0);
    assert_int_equal(pkm__budget_set(&b, &p[2], 10, 300), 0);
    /* More bytes for a packet under way do not restart its clock. */
    assert_int_equal(pkm__budget_set(&b, &p[0], 5000, 900), 0);
    assert_null(pkm__budget_over(&b)); /* no budget set */
    assert_int_equal(pkm__budget_next_deadline(&b), 1100);
    assert_null(pkm__budget_expired(&b, 1099));
    assert_ptr_equal(pkm__budget_expired(&b, 1100), &p[0]);
    pkm__budget_remove(&b, &p[0]);
    assert_null(pkm__budget_expired(&b, 1100));
    assert_int_equal(pkm__budget_next_deadline(&b), 1200);
    /* p[1]'s packet completes and a new one starts: its clock starts again, so p[2] is next. */
    assert_int_equal(pkm__budget_set(&b, &p[1], 0, 1150), 0);
    assert_int_equal(pkm__budget_set(&b, &p[1], 7, 1160), 0);
    assert_int_equal(pkm__budget_next_deadline(&b), 1300);
    assert_ptr_equal(pkm__budget_expired(&b, 1400), &p[2]);
    pkm__budget_remove(&b, &p[2]);
    assert_null(pkm__budget_expired(&b, 2159));
    assert_ptr_equal(pkm__budget_expired(&b, 2160), &p[1]);
    pkm__budget_free(&b);
    /* deadline 0: none. */
    pkm__budget_init(&b, 0, 0);
    assert_int_equal(pkm__budget_set(&b, &p[0], 10, 0), 0);
    assert_null(pkm__budget_expired(&b, UINT64_MAX));
    assert_int_equal(pkm__budget_next_deadline(&b), UINT64_MAX);
    pkm__budget_free(&b);
}

/* Random updates against a brute-force model: total, count, the largest, the oldest. */
static void budget_matches_model(void **state)
{
    (void)state;
    enum { N = 200 };
    static pkm__partial p[N];
    static size_t held[N];
    static uint64_t start[N];
    pkm__budget b;
    pkm__budget_init(&b, 1, 50);
    for (int i = 0; i < N; i++)
        pkm__partial_init(&p[i], NULL);
    memset(held, 0, sizeof held);
    srand(99);
    for (uint64_t now = 0; now < 20000; now++) {
        int i = rand() % N;
        size_t h = rand() % 3 == 0 ? 0 : (size_t)(rand() % 100000);
        if (rand() % 7 == 0) {
            pkm__budget_remove(&b, &p[i]);
            h = 0;
        } else {
            assert_int_equal(pkm__budget_set(&b, &p[i], h, now), 0);
        }
        if (h && !held[i]) start[i] = now;
        held[i] = h;
        size_t total = 0, count = 0, max = 0;
        uint64_t oldest = UINT64_MAX;
        for (int j = 0; j < N; j++) {
            if (!held[j]) continue;
            total += held[j];
            count++;
            if (held[j] > max) max = held[j];
            if (start[j] < oldest) oldest = start[j];
        }
        assert_int_equal(b.total, total);
        assert_int_equal(b.count, count);
        pkm__partial *top = pkm__budget_over(&b);
        if (total > 1) {
            assert_non_null(top);
            assert_int_equal(top->held, max);
        }
        assert_int_equal(pkm__budget_next_deadline(&b), count ? oldest + 50 : UINT64_MAX);
    }
    pkm__budget_free(&b);
}

/* ---- allocation failure ---- */

static long a_live, a_calls, a_fail_from = -1;

static void *a_malloc(size_t n)
{
    if (a_fail_from >= 0 && a_calls++ >= a_fail_from) return NULL;
    void *p = malloc(n);
    if (p) a_live++;
    return p;
}

static void *a_realloc(void *p, size_t n)
{
    if (a_fail_from >= 0 && a_calls++ >= a_fail_from) return NULL;
    void *q = realloc(p, n);
    if (q && !p) a_live++;
    return q;
}

static void a_free(void *p)
{
    if (p) a_live--;
    free(p);
}

static void a_fail(long from)
{
    a_calls = 0;
    a_fail_from = from;
}

static void allocation_failure(void **state)
{
    (void)state;
    assert_int_equal(pkm_set_allocator(a_malloc, a_realloc, a_free), 0);
    a_live = 0;
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.max_sources = 1000;
    /* pkm__limits_new: each of its allocations in turn fails, nothing leaks. */
    int made = 0;
    for (long k = 0; k < 10 && !made; k++) {
        a_fail(k);
        pkm__limits *lim = NULL;
        int r = pkm__limits_new(&c, &lim);
        if (r == 0) {
            made = 1;
            assert_true(k >= 3);
            pkm__limits_free(lim);
        } else {
            assert_int_equal(r, PKM_ENOMEM);
            assert_null(lim);
        }
        assert_int_equal(a_live, 0);
    }
    assert_true(made);
    /* The table's growth fails: the new source is refused (NOMEM), everything else holds, and
     * once memory returns the source is admitted. */
    a_fail(-1);
    pkm__limits *lim = mk(&c);
    unsigned n = 0;
    for (;; n++) {
        long before = a_calls;
        a_fail(0); /* any allocation now fails */
        pkm__source_key k = nth(n);
        pkm__refusal why = PKM__REFUSE_NONE;
        int r = pkm__limits_conn_open(lim, &k, n, &why);
        a_fail(-1);
        a_calls = before;
        if (r != 0) {
            assert_int_equal(why, PKM__REFUSE_NOMEM);
            break;
        }
        assert_true(n < 1000);
    }
    assert_true(n >= 1); /* the first entries fit the initial table */
    pkm__limits_stats st;
    pkm__limits_stats_get(lim, &st);
    assert_int_equal(st.sources, n);
    assert_int_equal(st.conns, n);
    a_fail(0);
    pkm__source_key k = nth(n);
    assert_int_equal(pkm__limits_secret_failed(lim, &k, 0), PKM_ENOMEM);
    assert_int_equal(pkm__limits_log_ok(lim, &k, 0, NULL), 1); /* the shared limiter */
    /* Known sources need no allocation. */
    pkm__source_key k0 = nth(0);
    assert_int_equal(pkm__limits_conn_open(lim, &k0, 1, NULL), 0);
    assert_int_equal(pkm__limits_hs_begin(lim, &k0, NULL, 1, NULL, NULL), PKM__ADMIT_NOW);
    assert_int_equal(pkm__limits_hs_end(lim, &k0, 1), 0);
    a_fail(-1);
    assert_int_equal(pkm__limits_conn_open(lim, &k, 2, NULL), 0);
    pkm__limits_free(lim);

    /* The budget's heap cannot grow: the new partial is not counted, nothing changes. */
    pkm__budget b;
    pkm__budget_init(&b, 100, 1000);
    pkm__partial p, q;
    pkm__partial_init(&p, NULL);
    pkm__partial_init(&q, NULL);
    a_fail(0);
    assert_int_equal(pkm__budget_set(&b, &p, 500, 0), PKM_ENOMEM);
    assert_int_equal(b.total, 0);
    assert_int_equal(b.count, 0);
    assert_null(pkm__budget_over(&b));
    assert_null(pkm__budget_expired(&b, 5000));
    a_fail(-1);
    assert_int_equal(pkm__budget_set(&b, &p, 500, 0), 0);
    a_fail(0);
    assert_int_equal(pkm__budget_set(&b, &p, 600, 1), 0); /* counted already: no allocation */
    assert_int_equal(pkm__budget_set(&b, &q, 1, 1), 0);   /* room in the heap already */
    a_fail(-1);
    assert_ptr_equal(pkm__budget_over(&b), &p);
    pkm__budget_free(&b);
    assert_int_equal(a_live, 0);
    assert_int_equal(pkm_set_allocator(NULL, NULL, NULL), 0);
}

static void bad_config(void **state)
{
    (void)state;
    pkm__limits_config c;
    pkm__limits *lim = (pkm__limits *)&c;
    assert_int_equal(pkm__limits_new(NULL, NULL), PKM_EINVAL);
    pkm__limits_config_init(&c);
    c.max_handshakes = 0;
    assert_int_equal(pkm__limits_new(&c, &lim), PKM_EINVAL);
    assert_null(lim);
    pkm__limits_config_init(&c);
    c.max_sources = 0;
    assert_int_equal(pkm__limits_new(&c, &lim), PKM_EINVAL);
    assert_int_equal(pkm__limits_new(NULL, &lim), 0); /* the defaults */
    pkm__limits_free(lim);
    assert_string_equal(pkm__refusal_str(PKM__REFUSE_BANNED),
                        "the source failed the secret too often and is banned");
}

/* The connection rate per source is a token bucket: a burst of conn_burst_per_source, then one
 * connection per 1/rate s; the bucket never holds more than the burst; a refusal by another
 * limit takes no token; another source has its own bucket; rate 0 is no limit. */
static void connection_rate_token_bucket(void **state)
{
    (void)state;
    pkm__limits_config c;
    pkm__limits_config_init(&c);
    c.max_conns_per_source = 5;
    c.conn_rate_per_source = 10; /* one every 100 ms */
    c.conn_burst_per_source = 3;
    pkm__limits *lim = mk(&c);
    pkm__source_key a = v4("127.0.0.2"), b = v4("127.0.0.1");
    pkm__refusal why = PKM__REFUSE_NONE;
    uint64_t t = 1000;
    for (int i = 0; i < 3; i++)
        assert_int_equal(pkm__limits_conn_open(lim, &a, t, &why), 0);
    assert_int_equal(pkm__limits_conn_open(lim, &a, t, &why), PKM_EAGAIN);
    assert_int_equal(why, PKM__REFUSE_SOURCE_RATE);
    assert_int_equal(pkm__limits_conn_open(lim, &b, t, &why), 0); /* its own bucket */
    for (int i = 0; i < 3; i++)
        assert_int_equal(pkm__limits_conn_close(lim, &a, t), 0);
    assert_int_equal(pkm__limits_conn_open(lim, &a, t + 99, &why), PKM_EAGAIN);
    assert_int_equal(why, PKM__REFUSE_SOURCE_RATE);
    assert_int_equal(pkm__limits_conn_open(lim, &a, t + 100, &why), 0); /* one refilled */
    assert_int_equal(pkm__limits_conn_open(lim, &a, t + 150, &why), PKM_EAGAIN);
    assert_int_equal(pkm__limits_conn_open(lim, &a, t + 200, &why), 0);
    /* A long pause refills to the burst, not beyond. */
    t += 60000;
    for (int i = 0; i < 3; i++)
        assert_int_equal(pkm__limits_conn_open(lim, &a, t, &why), 0);
    /* 5 open now: the connection cap refuses first and takes no token. */
    assert_int_equal(pkm__limits_conn_open(lim, &a, t + 100, &why), PKM_EAGAIN);
    assert_int_equal(why, PKM__REFUSE_SOURCE_CONNS);
    assert_int_equal(pkm__limits_conn_close(lim, &a, t + 100), 0);
    assert_int_equal(pkm__limits_conn_open(lim, &a, t + 100, &why), 0); /* the token was kept */
    assert_int_equal(pkm__limits_conn_close(lim, &a, t + 100), 0);
    assert_int_equal(pkm__limits_conn_open(lim, &a, t + 100, &why), PKM_EAGAIN);
    assert_int_equal(why, PKM__REFUSE_SOURCE_RATE);
    pkm__limits_free(lim);

    /* Burst 0: twice the rate. Rate 0: no limit. */
    c.conn_burst_per_source = 0;
    c.max_conns_per_source = 0;
    lim = mk(&c);
    for (int i = 0; i < 20; i++)
        assert_int_equal(pkm__limits_conn_open(lim, &a, 5000, &why), 0);
    assert_int_equal(pkm__limits_conn_open(lim, &a, 5000, &why), PKM_EAGAIN);
    pkm__limits_free(lim);
    c.conn_rate_per_source = 0;
    lim = mk(&c);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(pkm__limits_conn_open(lim, &a, 5000, &why), 0);
    pkm__limits_free(lim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(caps_hold_under_burst),
        cmocka_unit_test(connection_rate_token_bucket),
        cmocka_unit_test(ipv6_slash64_is_one_source),
        cmocka_unit_test(queued_served_round_robin),
        cmocka_unit_test(good_source_not_behind_flood_queue),
        cmocka_unit_test(next_skips_source_at_its_cap),
        cmocka_unit_test(cancelled_never_admitted),
        cmocka_unit_test(queue_caps),
        cmocka_unit_test(secret_limit_engages_and_expires),
        cmocka_unit_test(log_once_per_interval),
        cmocka_unit_test(table_bounded_and_evicts_oldest_idle),
        cmocka_unit_test(churn_matches_model),
        cmocka_unit_test(budget_closes_largest_first),
        cmocka_unit_test(budget_deadline_oldest_first),
        cmocka_unit_test(budget_matches_model),
        cmocka_unit_test(allocation_failure),
        cmocka_unit_test(bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
