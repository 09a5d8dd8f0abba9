/* SPDX-License-Identifier: MIT */
/* Tests of the engine's re-establishment of the secret (WIRE-PROFILE section 5) and of deferred
 * crypto (RSA jobs: PKM_WANT_JOB, pkm_engine_job_take / _run / _done), including a client key from
 * a key pool. */
#include <stdlib.h>
#include <string.h>
#include "support.h"
#include "engine_internal.h"

#define TRIGGER 0x05 /* the Complete Definition's "Re-establish Secret" */

typedef struct {
    uint8_t key[32], k_sc[32], iv[16]; /* key: K_cs */
    int n;
} keylog_t;

static void keylog_cb(void *ctx, const uint8_t k_cs[32], const uint8_t k_sc[32],
                      const uint8_t iv[16])
{
    keylog_t *k = ctx;
    memcpy(k->key, k_cs, 32);
    memcpy(k->k_sc, k_sc, 32);
    memcpy(k->iv, iv, 16);
    k->n++;
}

static size_t move_all(pkm_engine_t *from, pkm_engine_t *to)
{
    size_t len = 0;
    const uint8_t *p = pkm_engine_send_buf(from, &len);
    if (!len) return 0;
    (void)pkm_engine_feed(to, p, len);
    assert_int_equal(pkm_engine_send_ack(from, len), 0);
    return len;
}

static void pump(pkm_engine_t *c, pkm_engine_t *s, size_t chunk)
{
    t_pump p;
    t_pump_init(&p, c, s, chunk);
    t_pump_run(&p);
}

static void roundtrip(pkm_engine_t *from, pkm_engine_t *to, pkm_engine_t *c, pkm_engine_t *s,
                      uint8_t id, size_t size, size_t chunk)
{
    uint8_t *content = malloc(size ? size : 1);
    assert_non_null(content);
    for (size_t i = 0; i < size; i++)
        content[i] = (uint8_t)(i * 13 + id);
    assert_int_equal(pkm_engine_queue_packet(from, id, (uint32_t)size, content, size), 0);
    pump(c, s, chunk);
    pkm_packet_t pkt;
    assert_int_equal(pkm_engine_next_packet(to, &pkt), 1);
    assert_int_equal(pkt.id, id);
    assert_int_equal(pkt.hash, (uint32_t)size);
    assert_int_equal(pkt.size, size);
    if (size) assert_memory_equal(pkt.content, content, size);
    assert_int_equal(pkm_engine_next_packet(to, &pkt), 0);
    free(content);
}

static void traffic(pkm_engine_t *c, pkm_engine_t *s, size_t chunk)
{
    static const size_t sizes[] = {0, 7, 16, 1000, 70000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        if (sizes[i] > 1000 && chunk && chunk < 100 && t_under_valgrind()) continue;
        roundtrip(c, s, c, s, (uint8_t)(0x10 + i), sizes[i], chunk);
        roundtrip(s, c, c, s, (uint8_t)(0x20 + i), sizes[i], chunk);
    }
}

/* Server: queue the trigger, then rekey at once. */
static void server_trigger(pkm_engine_t *s, const char *secret)
{
    uint8_t reason = secret ? 1 : 0;
    assert_int_equal(
        pkm_engine_queue_packet(s, TRIGGER, pkm_packet_hash(TRIGGER, reason), &reason, 1), 0);
    assert_int_equal(pkm_engine_rekey(s, (const uint8_t *)secret, secret ? strlen(secret) : 0), 0);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_REKEYING);
}

/* Client: take the trigger (the only packet expected), then rekey. */
static void client_take_trigger(pkm_engine_t *c, const char *secret)
{
    pkm_packet_t pkt;
    assert_int_equal(pkm_engine_next_packet(c, &pkt), 1);
    assert_int_equal(pkt.id, TRIGGER);
    assert_int_equal(pkt.size, 1);
    assert_int_equal(pkt.content[0], secret ? 1 : 0);
    assert_int_equal(pkm_engine_rekey(c, (const uint8_t *)secret, secret ? strlen(secret) : 0), 0);
}

static void rekey_run(const char *first, const char *second, size_t chunk)
{
    t_opts o = {.secret = first};
    pkm_engine_t *c = t_client(&t_shared_keys, &o), *s = t_server(&t_shared_keys, &o);
    keylog_t kc = {0}, ks = {0};
    pkm__engine_set_keylog(c, keylog_cb, &kc);
    pkm__engine_set_keylog(s, keylog_cb, &ks);
    t_handshake(c, s, chunk);
    uint8_t k1[32];
    memcpy(k1, kc.key, 32);
    traffic(c, s, chunk);

    server_trigger(s, second);
    /* The trigger's ciphertext, then the server's KeyShare in the clear. */
    size_t len = 0;
    pkm_engine_send_buf(s, &len);
    assert_int_equal(len, 16 + 528);
    pump(c, s, chunk);
    /* The client has not looked at the bytes yet: still established. */
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_REKEYING);
    client_take_trigger(c, second);
    pump(c, s, chunk);
    assert_int_equal(pkm_engine_error(c), 0);
    assert_int_equal(pkm_engine_error(s), 0);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    assert_int_equal(kc.n, 2);
    assert_int_equal(ks.n, 2);
    assert_memory_equal(kc.key, ks.key, 32);
    assert_memory_equal(kc.k_sc, ks.k_sc, 32);
    assert_memory_not_equal(kc.key, kc.k_sc, 32);
    assert_memory_equal(kc.iv, ks.iv, 16);
    assert_memory_not_equal(kc.key, k1, 32);
    traffic(c, s, chunk);

    /* And once more, with no secret. */
    server_trigger(s, NULL);
    pump(c, s, chunk);
    client_take_trigger(c, NULL);
    pump(c, s, chunk);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    assert_int_equal(kc.n, 3);
    traffic(c, s, chunk);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

static void rekey_plain(void **state)
{
    (void)state;
    rekey_run(NULL, NULL, 0);
}

static void rekey_new_secret(void **state)
{
    (void)state;
    rekey_run(NULL, "new password", 0);
    rekey_run("old password", "new password", 0);
}

static void rekey_fragmented(void **state)
{
    (void)state;
    rekey_run(NULL, "pw", 1);
    rekey_run("x", NULL, 5);
}

static void rekey_wrong_secret(void **state)
{
    (void)state;
    pkm_engine_t *c = t_client(&t_shared_keys, NULL), *s = t_server(&t_shared_keys, NULL);
    t_handshake(c, s, 0);
    server_trigger(s, "right");
    pump(c, s, 0);
    client_take_trigger(c, "wrong");
    pump(c, s, 0);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_CLOSED);
    assert_int_equal(pkm_engine_error(s), PKM_EHANDSHAKE);
    assert_string_equal(pkm_engine_fail_step(s), "confirmation (0xFF)");
    assert_int_equal(pkm_engine_state(c), PKM_STATE_CLOSED);
    assert_int_equal(pkm_engine_error(c), PKM_EHANDSHAKE);
    assert_string_equal(pkm_engine_fail_step(c), "confirmation (0xFF)");
    pkm_engine_free(c);
    pkm_engine_free(s);
}

/* Packets queued during a re-establishment wait, then go out under the new key, after the 0xFF
 * packets, in order. The client takes the trigger before the server's KeyShare has arrived. */
static void rekey_held_packets(void **state)
{
    (void)state;
    pkm_engine_t *c = t_client(&t_shared_keys, NULL), *s = t_server(&t_shared_keys, NULL);
    t_handshake(c, s, 0);
    server_trigger(s, NULL);
    uint8_t data[40];
    memset(data, 0xAB, sizeof data);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pkm_engine_queue_packet(s, (uint8_t)(0x30 + i), 0, data, (size_t)i * 20),
                         0);
    /* Only the trigger and the clear KeyShare are ready to go; the three packets are held. */
    size_t len = 0;
    const uint8_t *w = pkm_engine_send_buf(s, &len);
    assert_int_equal(len, 16 + 528);
    assert_int_equal(pkm_engine_feed(c, w, 16), 0); /* the trigger alone */
    assert_int_equal(pkm_engine_send_ack(s, 16), 0);
    pkm_packet_t pkt;
    client_take_trigger(c, NULL);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_REKEYING);
    assert_int_equal(pkm_engine_next_packet(c, &pkt), 0);
    /* The client's KeyShare and nothing else. */
    pkm_engine_send_buf(c, &len);
    assert_int_equal(len, 528);
    assert_int_equal(pkm_engine_queue_packet(c, 0x40, 0, data, 40), 0);
    assert_int_equal(pkm_engine_queue_packet(c, 0x41, 0, data, 0), 0);
    pkm_engine_send_buf(c, &len);
    assert_int_equal(len, 528);
    assert_int_equal(pkm_engine_rekey(c, NULL, 0), PKM_ESTATE); /* already rekeying */
    pump(c, s, 0);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pkm_engine_next_packet(c, &pkt), 1);
        assert_int_equal(pkt.id, 0x30 + i);
        assert_int_equal(pkt.size, (size_t)i * 20);
    }
    assert_int_equal(pkm_engine_next_packet(c, &pkt), 0);
    assert_int_equal(pkm_engine_next_packet(s, &pkt), 1);
    assert_int_equal(pkt.id, 0x40);
    assert_memory_equal(pkt.content, data, 40);
    assert_int_equal(pkm_engine_next_packet(s, &pkt), 1);
    assert_int_equal(pkt.id, 0x41);
    assert_int_equal(pkm_engine_next_packet(s, &pkt), 0);
    traffic(c, s, 0);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

/* A client packet where the server expects the client's KeyShare: the handshake fails. */
static void rekey_stray_packet(void **state)
{
    (void)state;
    uint8_t data[600];
    memset(data, 1, sizeof data);
    /* Buffered whole, not taken, and exactly KeyShare-sized (510 bytes of content take
     * ((9 + 510) / 16 + 1) * 16 = 528): read as the KeyShare without a word (implicit
     * rejection), and the handshake fails at step 5. */
    pkm_engine_t *c = t_client(&t_shared_keys, NULL), *s = t_server(&t_shared_keys, NULL);
    t_handshake(c, s, 0);
    assert_int_equal(pkm_engine_queue_packet(c, 0x50, 0, data, 510), 0);
    assert_int_equal(move_all(c, s), 528);
    server_trigger(s, NULL);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_REKEYING); /* no early, distinct error */
    pump(c, s, 0);
    client_take_trigger(c, NULL);
    pump(c, s, 0);
    assert_int_equal(pkm_engine_error(s), PKM_EHANDSHAKE);
    assert_int_equal(pkm_engine_error(c), PKM_EHANDSHAKE);
    pkm_engine_free(c);
    pkm_engine_free(s);

    /* Half taken (its header decrypted, the rest not there): rekey fails at once. */
    c = t_client(&t_shared_keys, NULL);
    s = t_server(&t_shared_keys, NULL);
    t_handshake(c, s, 0);
    assert_int_equal(pkm_engine_queue_packet(c, 0x50, 0, data, sizeof data), 0);
    size_t len = 0;
    const uint8_t *w = pkm_engine_send_buf(c, &len);
    assert_int_equal(pkm_engine_feed(s, w, 100), 0);
    pkm_packet_t pkt;
    assert_int_equal(pkm_engine_next_packet(s, &pkt), 0);
    uint8_t reason = 0;
    assert_int_equal(pkm_engine_queue_packet(s, TRIGGER, 0, &reason, 1), 0);
    assert_int_equal(pkm_engine_rekey(s, NULL, 0), PKM_EHANDSHAKE);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_CLOSED);
    assert_string_equal(pkm_engine_fail_step(s), "KeyShare");
    assert_null(pkm_engine_send_buf(s, &len));
    assert_int_equal(pkm_engine_rekey(s, NULL, 0), PKM_ECLOSED);
    pkm_engine_free(c);
    pkm_engine_free(s);

    /* A packet taken, the next one whole behind it (decrypted with it, as a server decrypts
     * every whole block it holds): client bytes where the KeyShare belongs, so rekey fails at
     * once too. */
    c = t_client(&t_shared_keys, NULL);
    s = t_server(&t_shared_keys, NULL);
    t_handshake(c, s, 0);
    assert_int_equal(pkm_engine_queue_packet(c, 0x50, 0, data, 20), 0);
    assert_int_equal(pkm_engine_queue_packet(c, 0x51, 0, data, 20), 0);
    move_all(c, s);
    assert_int_equal(pkm_engine_next_packet(s, &pkt), 1);
    assert_int_equal(pkt.id, 0x50);
    assert_int_equal(pkm_engine_queue_packet(s, TRIGGER, 0, &reason, 1), 0);
    assert_int_equal(pkm_engine_rekey(s, NULL, 0), PKM_EHANDSHAKE);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_CLOSED);
    assert_string_equal(pkm_engine_fail_step(s), "KeyShare");
    pkm_engine_free(c);
    pkm_engine_free(s);
}

static void rekey_eof(void **state)
{
    (void)state;
    pkm_engine_t *c = t_client(&t_shared_keys, NULL), *s = t_server(&t_shared_keys, NULL);
    t_handshake(c, s, 0);
    server_trigger(s, NULL);
    assert_int_equal(pkm_engine_recv_eof(s), PKM_EHANDSHAKE);
    assert_string_equal(pkm_engine_fail_step(s), "KeyShare");
    pkm_engine_free(c);
    pkm_engine_free(s);
}

/* ---- deferred crypto ---- */

static void deferred_handshake(void **state)
{
    (void)state;
    t_opts o = {.defer = 1, .generate_key = 1};
    pkm_engine_t *c = t_client(&t_shared_keys, &o), *s = t_server(&t_shared_keys, &o);
    size_t len = 0;
    assert_int_equal(pkm_engine_wants(c) & PKM_WANT_JOB, 0);
    assert_true(move_all(s, c) > 0); /* ServerKey */
    /* The client has no key: generating one is deferred work. */
    assert_int_equal(pkm_engine_wants(c) & PKM_WANT_JOB, PKM_WANT_JOB);
    assert_null(pkm_engine_send_buf(c, &len));
    assert_int_equal(t_run_job(c), 0);
    assert_int_equal(pkm_engine_wants(c) & PKM_WANT_JOB, 0);
    assert_int_equal(move_all(c, s), 298 + 528); /* ClientKey + KeyShare */
    /* The server answered ClientKey with its KeyShare (public-key work only) and waits to
     * decrypt the client's. */
    assert_int_equal(pkm_engine_wants(s) & PKM_WANT_JOB, PKM_WANT_JOB);
    assert_int_equal(move_all(s, c), 528);
    assert_int_equal(pkm_engine_wants(c) & PKM_WANT_JOB, PKM_WANT_JOB);
    assert_null(pkm_engine_send_buf(c, &len));
    assert_int_equal(t_run_job(c), 0);
    /* The client's 0xFF reaches the server before the server did its work: it is buffered. */
    assert_int_equal(move_all(c, s), 16);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_HANDSHAKE);
    assert_int_equal(pkm_engine_wants(s) & PKM_WANT_JOB, PKM_WANT_JOB);
    assert_int_equal(t_run_job(s), 0);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_wants(s) & PKM_WANT_JOB, 0);
    assert_int_equal(move_all(s, c), 16);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_string_equal(pkm_engine_peer_fingerprint(c), t_shared_keys.server_fp);
    assert_int_equal(t_run_job(c), PKM_ESTATE); /* nothing to do */
    traffic(c, s, 0);

    /* Re-establishment with deferred decryption, driven by the pump. */
    server_trigger(s, "pw");
    pump(c, s, 0);
    client_take_trigger(c, "pw");
    assert_int_equal(pkm_engine_wants(c) & PKM_WANT_JOB, PKM_WANT_JOB);
    pump(c, s, 3);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    traffic(c, s, 0);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

/* A deferred client whose peer closes while work is pending. */
static void deferred_eof(void **state)
{
    (void)state;
    t_opts o = {.defer = 1};
    pkm_engine_t *c = t_client(&t_shared_keys, &o), *s = t_server(&t_shared_keys, &o);
    move_all(s, c);
    move_all(c, s);
    assert_int_equal(pkm_engine_wants(s) & PKM_WANT_JOB, PKM_WANT_JOB);
    assert_int_equal(pkm_engine_recv_eof(s), 0); /* noted; work first */
    assert_int_equal(t_run_job(s), PKM_EHANDSHAKE);
    assert_string_equal(pkm_engine_fail_step(s), "confirmation (0xFF)");
    assert_int_equal(pkm_engine_wants(s) & PKM_WANT_JOB, 0);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

/* The job API's edges: one job at a time, given back only to its engine, freed in every case. */
static void job_api(void **state)
{
    (void)state;
    t_opts o = {.defer = 1, .generate_key = 1};
    pkm_engine_t *c = t_client(&t_shared_keys, &o), *s = t_server(&t_shared_keys, &o);
    pkm_job_t *job = NULL, *other = NULL;
    assert_int_equal(pkm_engine_job_take(c, &job), PKM_ESTATE); /* nothing wanted yet */
    assert_null(job);
    assert_true(move_all(s, c) > 0);
    assert_int_equal(pkm_engine_job_take(c, &job), 0); /* key generation */
    assert_non_null(job);
    assert_int_equal(pkm_engine_job_take(c, &other), PKM_ESTATE); /* one at a time */
    assert_int_equal(pkm_engine_wants(c) & PKM_WANT_JOB, 0);
    assert_int_equal(pkm_job_run(job), 0);
    assert_int_equal(pkm_job_run(job), 0);                     /* twice: nothing more */
    assert_int_equal(pkm_engine_job_done(s, job), PKM_EINVAL); /* not s's job: freed */
    assert_int_equal(pkm_engine_state(s), PKM_STATE_HANDSHAKE);
    assert_int_equal(pkm_engine_job_done(c, NULL), PKM_EINVAL);
    assert_int_equal(pkm_job_run(NULL), PKM_EINVAL);
    pkm_job_free(NULL);
    /* c still waits for its job: a closed engine frees a job given back and says why. */
    assert_int_equal(pkm_engine_state(c), PKM_STATE_HANDSHAKE);
    assert_null(pkm_engine_send_buf(c, &(size_t){0}));
    pkm_engine_free(c);
    c = t_client(&t_shared_keys, &o);
    pkm_engine_free(s);
    s = t_server(&t_shared_keys, &o);
    assert_true(move_all(s, c) > 0);
    assert_int_equal(pkm_engine_job_take(c, &job), 0);
    pkm_engine_close(c, PKM_ETIMEOUT);
    assert_int_equal(pkm_engine_job_done(c, job), PKM_ETIMEOUT); /* never run, freed */
    /* A job given back unrun is run by job_done itself. */
    pkm_engine_free(c);
    c = t_client(&t_shared_keys, &o);
    pkm_engine_free(s);
    s = t_server(&t_shared_keys, &o);
    assert_true(move_all(s, c) > 0);
    assert_int_equal(pkm_engine_job_take(c, &job), 0);
    assert_int_equal(pkm_engine_job_done(c, job), 0);
    assert_true(move_all(c, s) > 0); /* ClientKey + KeyShare, made with the key it generated */
    t_handshake(c, s, 0);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

static void keypool_client(void **state)
{
    (void)state;
    pkm_keypool_t *pool = NULL;
    assert_int_equal(pkm_keypool_new(1, &pool), 0);
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, PKM_ROLE_CLIENT);
    cfg.keypool = pool;
    pkm_engine_t *c = NULL, *s = t_server(&t_shared_keys, NULL);
    assert_int_equal(pkm_engine_new(&cfg, &c), 0);
    t_handshake(c, s, 0);
    assert_string_equal(pkm_engine_peer_fingerprint(c), t_shared_keys.server_fp);
    /* The server saw a key that is not the fixture's client key. */
    assert_string_not_equal(pkm_engine_peer_fingerprint(s), t_shared_keys.client_fp);
    traffic(c, s, 0);
    pkm_engine_free(c);
    pkm_engine_free(s);
    pkm_keypool_free(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rekey_plain),        cmocka_unit_test(rekey_new_secret),
        cmocka_unit_test(rekey_fragmented),   cmocka_unit_test(rekey_wrong_secret),
        cmocka_unit_test(rekey_held_packets), cmocka_unit_test(rekey_stray_packet),
        cmocka_unit_test(rekey_eof),          cmocka_unit_test(deferred_handshake),
        cmocka_unit_test(deferred_eof),       cmocka_unit_test(job_api),
        cmocka_unit_test(keypool_client),
    };
    return cmocka_run_group_tests(tests, t_keys_setup, t_keys_teardown);
}
