/* SPDX-License-Identifier: MIT */
/* Engine test fixtures: keys generated once per program, engines built from small option sets. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "support.h"

void t_keys_init(t_keys *k)
{
    memset(k, 0, sizeof *k);
    assert_int_equal(pkm_key_generate(&k->server_key), 0);
    pkm_key_t *c = NULL;
    assert_int_equal(pkm_key_generate(&c), 0);
    strcpy(k->client_pem, "/tmp/pkm_test_client_XXXXXX");
    int fd = mkstemp(k->client_pem);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(pkm_key_save_pem(c, k->client_pem), 0);
    assert_int_equal(pkm_key_fingerprint(k->server_key, k->server_fp), 0);
    assert_int_equal(pkm_key_fingerprint(c, k->client_fp), 0);
    pkm_key_free(c);
}

void t_keys_free(t_keys *k)
{
    pkm_key_free(k->server_key);
    if (k->client_pem[0]) unlink(k->client_pem);
    memset(k, 0, sizeof *k);
}

t_keys t_shared_keys;

int t_keys_setup(void **state)
{
    (void)state;
    t_keys_init(&t_shared_keys);
    return 0;
}

int t_keys_teardown(void **state)
{
    (void)state;
    t_keys_free(&t_shared_keys);
    return 0;
}

pkm_key_t *t_client_key(const t_keys *k)
{
    pkm_key_t *c = NULL;
    assert_int_equal(pkm_key_load_pem(k->client_pem, &c), 0);
    return c;
}

int t_under_valgrind(void)
{
    const char *v = getenv("PKM_VALGRIND");
    return v && strcmp(v, "1") == 0;
}

unsigned t_server_loops(void)
{
    const char *v = getenv("PKM_TEST_LOOPS");
    long n = v ? strtol(v, NULL, 10) : 1;
    return n >= 1 && n <= 64 ? (unsigned)n : 1;
}

int t_det_random(void *ctx, uint8_t *out, size_t n)
{
    t_rng_bytes(ctx, out, n);
    return 0;
}

static void apply(pkm_engine_config_t *cfg, const t_opts *o)
{
    if (!o) return;
    if (o->secret) {
        cfg->secret = (const uint8_t *)o->secret;
        cfg->secret_len = strlen(o->secret);
    }
    cfg->defer_crypto = o->defer;
    if (o->max_packet) cfg->max_packet_size = o->max_packet;
    if (o->max_send) cfg->max_send_buffer = o->max_send;
    if (o->rng) {
        cfg->random = t_det_random;
        cfg->random_ctx = o->rng;
    }
    cfg->verify = o->verify;
}

pkm_engine_t *t_client(const t_keys *k, const t_opts *o)
{
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, PKM_ROLE_CLIENT);
    apply(&cfg, o);
    if (!o || !o->generate_key) cfg.client_key = t_client_key(k);
    if (o) cfg.pin_fingerprint = o->pin;
    pkm_engine_t *e = NULL;
    assert_int_equal(pkm_engine_new(&cfg, &e), 0);
    return e;
}

pkm_engine_t *t_server(const t_keys *k, const t_opts *o)
{
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, PKM_ROLE_SERVER);
    apply(&cfg, o);
    cfg.server_key = k->server_key;
    pkm_engine_t *e = NULL;
    assert_int_equal(pkm_engine_new(&cfg, &e), 0);
    return e;
}

void t_handshake(pkm_engine_t *c, pkm_engine_t *s, size_t chunk)
{
    t_pump p;
    t_pump_init(&p, c, s, chunk);
    t_pump_run(&p);
    assert_int_equal(pkm_engine_error(c), 0);
    assert_int_equal(pkm_engine_error(s), 0);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
}
