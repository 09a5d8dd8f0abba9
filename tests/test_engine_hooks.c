/* SPDX-License-Identifier: MIT */
/* Tests of the engine's trust hook (check_peer: called once with the peer key's DER and
 * fingerprint, before any RSA work; a refusal closes the engine) and observer hook (every
 * handshake message, with the very bytes that crossed the wire, also in a re-establishment). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"
#include "engine_internal.h"
#include "keys_internal.h"

/* ---- check_peer ---- */

typedef struct {
    int calls;
    int ret; /* what the hook returns */
    uint8_t der[PKM_MAX_KEY_DER];
    size_t der_len;
    char fp[PKM_FINGERPRINT_SIZE];
    unsigned long rsa_ops; /* the process's RSA operations when the hook ran */
} trust_t;

static int record_peer(void *ctx, const uint8_t *der, size_t der_len, const char *fingerprint)
{
    trust_t *t = ctx;
    t->calls++;
    assert_true(der_len <= sizeof t->der);
    memcpy(t->der, der, der_len);
    t->der_len = der_len;
    snprintf(t->fp, sizeof t->fp, "%s", fingerprint);
    t->rsa_ops = pkm__engine_rsa_ops();
    return t->ret;
}

static pkm_engine_t *client_with(trust_t *t, const char *pin, int generate)
{
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, PKM_ROLE_CLIENT);
    if (!generate) cfg.client_key = t_client_key(&t_shared_keys);
    cfg.pin_fingerprint = pin;
    if (t) {
        cfg.check_peer = record_peer;
        cfg.check_peer_ctx = t;
    }
    pkm_engine_t *e = NULL;
    assert_int_equal(pkm_engine_new(&cfg, &e), 0);
    return e;
}

static pkm_engine_t *server_with(trust_t *t)
{
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, PKM_ROLE_SERVER);
    cfg.server_key = t_shared_keys.server_key;
    if (t) {
        cfg.check_peer = record_peer;
        cfg.check_peer_ctx = t;
    }
    pkm_engine_t *e = NULL;
    assert_int_equal(pkm_engine_new(&cfg, &e), 0);
    return e;
}

/* Moves what `from` has to send into `to`; returns the byte count. */
static size_t move_all(pkm_engine_t *from, pkm_engine_t *to)
{
    size_t len = 0;
    const uint8_t *p = pkm_engine_send_buf(from, &len);
    if (!len) return 0;
    uint8_t *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, p, len);
    assert_int_equal(pkm_engine_send_ack(from, len), 0);
    (void)pkm_engine_feed(to, copy, len);
    free(copy);
    return len;
}

static void check_peer_accepts(void **state)
{
    (void)state;
    trust_t tc = {0}, ts = {0};
    pkm_engine_t *c = client_with(&tc, NULL, 0), *s = server_with(&ts);
    t_handshake(c, s, 7);
    /* Each side was asked once, about exactly the other's key. */
    assert_int_equal(tc.calls, 1);
    assert_int_equal(ts.calls, 1);
    size_t sl = 0;
    const uint8_t *sder = pkm__key_der(t_shared_keys.server_key, &sl);
    assert_int_equal(tc.der_len, sl);
    assert_memory_equal(tc.der, sder, sl);
    assert_string_equal(tc.fp, t_shared_keys.server_fp);
    assert_string_equal(ts.fp, t_shared_keys.client_fp);
    assert_string_equal(pkm_engine_peer_fingerprint(c), tc.fp);
    /* A re-establishment does not ask again (the keys are the same). */
    assert_int_equal(pkm_engine_queue_packet(s, 9, pkm_packet_hash(9, 0), NULL, 0), 0);
    assert_int_equal(pkm_engine_rekey(s, NULL, 0), 0);
    move_all(s, c);
    pkm_packet_t pkt;
    assert_int_equal(pkm_engine_next_packet(c, &pkt), 1);
    assert_int_equal(pkm_engine_rekey(c, NULL, 0), 0);
    t_pump p;
    t_pump_init(&p, c, s, 0);
    t_pump_run(&p);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    assert_int_equal(tc.calls, 1);
    assert_int_equal(ts.calls, 1);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

/* A client hook refusing: the engine closes with the hook's error at ServerKey, having spent no
 * RSA operation (not even generating its own key) and sent nothing. */
static void check_peer_refuses_server(void **state)
{
    (void)state;
    static const int rets[] = {PKM_EPIN, PKM_EHANDSHAKE, 1 /* positive: PKM_EPIN */};
    for (size_t i = 0; i < sizeof rets / sizeof rets[0]; i++) {
        for (int gen = 0; gen < 2; gen++) {
            trust_t tc = {.ret = rets[i]};
            pkm_engine_t *c = client_with(&tc, NULL, gen), *s = server_with(NULL);
            unsigned long before = pkm__engine_rsa_ops();
            assert_true(move_all(s, c) > 0);
            assert_int_equal(tc.calls, 1);
            assert_int_equal(tc.rsa_ops, before);
            assert_int_equal(pkm__engine_rsa_ops(), before);
            int want = rets[i] < 0 ? rets[i] : PKM_EPIN;
            assert_int_equal(pkm_engine_state(c), PKM_STATE_CLOSED);
            assert_int_equal(pkm_engine_error(c), want);
            assert_string_equal(pkm_engine_fail_step(c), "ServerKey");
            assert_null(pkm_engine_peer_key(c));
            assert_null(pkm_engine_peer_fingerprint(c));
            /* The refused key's fingerprint stays known (public), for error sentences. */
            assert_string_equal(pkm__engine_offered_fingerprint(c), t_shared_keys.server_fp);
            size_t len = 1;
            assert_null(pkm_engine_send_buf(c, &len));
            assert_int_equal(len, 0);
            pkm_engine_free(c);
            pkm_engine_free(s);
        }
    }
}

/* A server hook refusing the ClientKey: no KeyShare is encrypted to it, nothing is sent. */
static void check_peer_refuses_client(void **state)
{
    (void)state;
    trust_t ts = {.ret = PKM_EPIN};
    pkm_engine_t *c = client_with(NULL, NULL, 0), *s = server_with(&ts);
    move_all(s, c);
    size_t len = 0;
    (void)pkm_engine_send_buf(s, &len);
    assert_int_equal(len, 0); /* the ServerKey has gone */
    unsigned long before = pkm__engine_rsa_ops();
    assert_true(move_all(c, s) > 0); /* ClientKey + KeyShare */
    assert_int_equal(ts.calls, 1);
    assert_int_equal(ts.rsa_ops, before);
    assert_int_equal(pkm__engine_rsa_ops(), before);
    assert_int_equal(pkm_engine_error(s), PKM_EPIN);
    assert_string_equal(pkm_engine_fail_step(s), "ClientKey");
    assert_string_equal(ts.fp, t_shared_keys.client_fp);
    assert_null(pkm_engine_send_buf(s, &len));
    assert_int_equal(len, 0);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

/* The pin is the first trust check: a key it refuses never reaches the hook; a key it accepts
 * does. */
static void pin_then_hook(void **state)
{
    (void)state;
    trust_t tc = {0};
    pkm_engine_t *c = client_with(&tc, t_shared_keys.client_fp, 0), *s = server_with(NULL);
    move_all(s, c);
    assert_int_equal(pkm_engine_error(c), PKM_EPIN);
    assert_int_equal(tc.calls, 0);
    assert_string_equal(pkm__engine_pin(c), t_shared_keys.client_fp);
    assert_string_equal(pkm__engine_offered_fingerprint(c), t_shared_keys.server_fp);
    pkm_engine_free(c);
    pkm_engine_free(s);

    tc = (trust_t){.ret = PKM_EKEY};
    c = client_with(&tc, t_shared_keys.server_fp, 0);
    s = server_with(NULL);
    move_all(s, c);
    assert_int_equal(tc.calls, 1);
    assert_int_equal(pkm_engine_error(c), PKM_EKEY); /* the pin passed; the hook refused */
    pkm_engine_free(c);
    pkm_engine_free(s);
}

/* ---- observe ---- */

#define MAX_EV 32

typedef struct {
    int n;
    pkm_hs_event_t ev[MAX_EV]; /* bytes point into log, at off[i] */
    size_t off[MAX_EV];
    uint8_t log[8192];
    size_t used;
} obs_t;

static void record_event(void *ctx, const pkm_hs_event_t *ev)
{
    obs_t *o = ctx;
    assert_true(o->n < MAX_EV);
    assert_true(o->used + ev->len <= sizeof o->log);
    assert_true((ev->bytes == NULL) == (ev->len == 0));
    o->ev[o->n] = *ev;
    o->off[o->n] = o->used;
    if (ev->len) memcpy(o->log + o->used, ev->bytes, ev->len);
    o->used += ev->len;
    o->n++;
}

static pkm_engine_t *observed(int role, obs_t *o)
{
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, role);
    if (role == PKM_ROLE_CLIENT)
        cfg.client_key = t_client_key(&t_shared_keys);
    else
        cfg.server_key = t_shared_keys.server_key;
    cfg.observe = record_event;
    cfg.observe_ctx = o;
    pkm_engine_t *e = NULL;
    assert_int_equal(pkm_engine_new(&cfg, &e), 0);
    return e;
}

/* The observer's events from index `from`, as (msg, sent) pairs, are `want` (n pairs). */
static void expect_events(const obs_t *o, int from, const int (*want)[2], int n, int rekey)
{
    assert_int_equal(o->n - from, n);
    for (int i = 0; i < n; i++) {
        const pkm_hs_event_t *ev = &o->ev[from + i];
        assert_int_equal(ev->msg, want[i][0]);
        assert_int_equal(ev->sent, want[i][1]);
        /* The REKEY event itself is seen in the re-establishment, ESTABLISHED at its end too. */
        assert_int_equal(ev->rekey, rekey);
        size_t want_len = ev->msg == PKM_HS_KEYSHARE ? 528 : ev->msg == PKM_HS_CONFIRM ? 16 : 0;
        if (ev->msg == PKM_HS_SERVER_KEY || ev->msg == PKM_HS_CLIENT_KEY) {
            /* Int n, then n bytes of DER */
            const uint8_t *b = o->log + o->off[from + i];
            size_t n_der = (size_t)b[0] << 24 | (size_t)b[1] << 16 | (size_t)b[2] << 8 | b[3];
            want_len = 4 + n_der;
        }
        assert_int_equal(ev->len, want_len);
    }
}

/* The concatenated bytes of the events from `from` with sent == dir. */
static size_t gather(const obs_t *o, int from, int sent, uint8_t *out)
{
    size_t n = 0;
    for (int i = from; i < o->n; i++)
        if (o->ev[i].len && o->ev[i].sent == sent) {
            memcpy(out + n, o->log + o->off[i], o->ev[i].len);
            n += o->ev[i].len;
        }
    return n;
}

static void observer_handshake_and_rekey(void **state)
{
    (void)state;
    static obs_t oc, os;
    memset(&oc, 0, sizeof oc);
    memset(&os, 0, sizeof os);
    pkm_engine_t *c = observed(PKM_ROLE_CLIENT, &oc), *s = observed(PKM_ROLE_SERVER, &os);
    /* The server's ServerKey is queued (and observed) by pkm_engine_new. */
    assert_int_equal(os.n, 1);
    t_pump p;
    t_pump_init(&p, c, s, 13);
    p.record = 1;
    t_pump_run(&p);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    static const int client_hs[][2] = {{PKM_HS_SERVER_KEY, 0}, {PKM_HS_CLIENT_KEY, 1},
                                       {PKM_HS_KEYSHARE, 1},   {PKM_HS_KEYSHARE, 0},
                                       {PKM_HS_CONFIRM, 1},    {PKM_HS_CONFIRM, 0},
                                       {PKM_HS_ESTABLISHED, 0}};
    static const int server_hs[][2] = {{PKM_HS_SERVER_KEY, 1}, {PKM_HS_CLIENT_KEY, 0},
                                       {PKM_HS_KEYSHARE, 1},   {PKM_HS_KEYSHARE, 0},
                                       {PKM_HS_CONFIRM, 0},    {PKM_HS_CONFIRM, 1},
                                       {PKM_HS_ESTABLISHED, 0}};
    expect_events(&oc, 0, client_hs, 7, 0);
    expect_events(&os, 0, server_hs, 7, 0);

    /* The bytes observed are the bytes that crossed: the whole handshake both ways. */
    static uint8_t buf[8192];
    size_t n = gather(&oc, 0, 1, buf);
    assert_int_equal(n, p.log_ab_len);
    assert_memory_equal(buf, p.log_ab, n);
    n = gather(&os, 0, 0, buf);
    assert_int_equal(n, p.log_ab_len);
    assert_memory_equal(buf, p.log_ab, n);
    n = gather(&os, 0, 1, buf);
    assert_int_equal(n, p.log_ba_len);
    assert_memory_equal(buf, p.log_ba, n);
    n = gather(&oc, 0, 0, buf);
    assert_int_equal(n, p.log_ba_len);
    assert_memory_equal(buf, p.log_ba, n);
    t_pump_done(&p);

    /* A re-establishment: REKEY, the two KeyShares, the confirmations, ESTABLISHED. */
    int c0 = oc.n, s0 = os.n;
    assert_int_equal(pkm_engine_queue_packet(s, 9, pkm_packet_hash(9, 0), NULL, 0), 0);
    assert_int_equal(pkm_engine_rekey(s, NULL, 0), 0);
    move_all(s, c);
    pkm_packet_t pkt;
    assert_int_equal(pkm_engine_next_packet(c, &pkt), 1);
    assert_int_equal(pkm_engine_rekey(c, NULL, 0), 0);
    t_pump_init(&p, c, s, 0);
    t_pump_run(&p);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    static const int client_rk[][2] = {{PKM_HS_REKEY, 0},    {PKM_HS_KEYSHARE, 1},
                                       {PKM_HS_KEYSHARE, 0}, {PKM_HS_CONFIRM, 1},
                                       {PKM_HS_CONFIRM, 0},  {PKM_HS_ESTABLISHED, 0}};
    static const int server_rk[][2] = {{PKM_HS_REKEY, 0},    {PKM_HS_KEYSHARE, 1},
                                       {PKM_HS_KEYSHARE, 0}, {PKM_HS_CONFIRM, 0},
                                       {PKM_HS_CONFIRM, 1},  {PKM_HS_ESTABLISHED, 0}};
    expect_events(&oc, c0, client_rk, 6, 1);
    expect_events(&os, s0, server_rk, 6, 1);
    /* What one side sent is what the other received. */
    static uint8_t buf2[8192];
    n = gather(&oc, c0, 1, buf);
    assert_int_equal(gather(&os, s0, 0, buf2), n);
    assert_memory_equal(buf, buf2, n);
    n = gather(&os, s0, 1, buf);
    assert_int_equal(gather(&oc, c0, 0, buf2), n);
    assert_memory_equal(buf, buf2, n);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(check_peer_accepts),           cmocka_unit_test(check_peer_refuses_server),
        cmocka_unit_test(check_peer_refuses_client),    cmocka_unit_test(pin_then_hook),
        cmocka_unit_test(observer_handshake_and_rekey),
    };
    return cmocka_run_group_tests(tests, t_keys_setup, t_keys_teardown);
}
