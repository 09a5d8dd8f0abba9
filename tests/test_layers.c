/* SPDX-License-Identifier: MIT
 * The API the server library stands on instead of the core's internals: allocation through the
 * one allocator hook (pkm_malloc and friends) and the one engine-config validator
 * (pkm_engine_config_check); and the server's own allocations going through that hook. */
#include <stdlib.h>
#include <string.h>
#include "pkmcom/server.h"
#include "support.h"

/* A counting allocator around malloc. */
static int n_malloc, n_realloc, n_free;
static void *count_malloc(size_t n)
{
    n_malloc++;
    return malloc(n);
}
static void *count_realloc(void *p, size_t n)
{
    n_realloc++;
    return realloc(p, n);
}
static void count_free(void *p)
{
    n_free++;
    free(p);
}
static void hook(void)
{
    n_malloc = n_realloc = n_free = 0;
    assert_int_equal(pkm_set_allocator(count_malloc, count_realloc, count_free), 0);
}
static void unhook(void)
{
    assert_int_equal(pkm_set_allocator(NULL, NULL, NULL), 0);
}

static void alloc_functions_go_through_the_hook(void **state)
{
    (void)state;
    hook();
    uint8_t *p = pkm_malloc(10);
    assert_non_null(p);
    assert_int_equal(n_malloc, 1);
    memset(p, 0xab, 10);
    p = pkm_realloc(p, 4000);
    assert_non_null(p);
    assert_int_equal(n_realloc, 1);
    for (int i = 0; i < 10; i++)
        assert_int_equal(p[i], 0xab); /* realloc keeps the contents */
    pkm_free(p);
    assert_int_equal(n_free, 1);

    uint8_t *z = pkm_calloc(7, 9);
    assert_non_null(z);
    assert_int_equal(n_malloc, 2);
    for (int i = 0; i < 63; i++)
        assert_int_equal(z[i], 0);
    pkm_free(z);
    assert_int_equal(n_free, 2);

    /* Overflow is refused without calling the hook; size 0 is a real block; free(NULL) is no call.
     */
    assert_null(pkm_calloc(SIZE_MAX / 2, 3));
    assert_int_equal(n_malloc, 2);
    void *e = pkm_malloc(0);
    assert_non_null(e);
    pkm_free(e);
    pkm_free(NULL);
    assert_int_equal(n_free, 3);
    unhook();
}

static void engine_config_check_is_the_validator(void **state)
{
    (void)state;
    pkm_engine_config_t c;
    assert_int_equal(pkm_engine_config_check(NULL), PKM_EINVAL);
    pkm_engine_config_init(&c, PKM_ROLE_CLIENT);
    assert_int_equal(pkm_engine_config_check(&c), 0);
    c.max_packet_size = 0;
    assert_int_equal(pkm_engine_config_check(&c), PKM_EINVAL);
    pkm_engine_config_init(&c, PKM_ROLE_SERVER); /* a server needs its key pair */
    assert_int_equal(pkm_engine_config_check(&c), PKM_EINVAL);
    c.server_key = t_shared_keys.server_key;
    assert_int_equal(pkm_engine_config_check(&c), 0);
    c.pin_fingerprint = t_shared_keys.server_fp; /* a pin is the client's */
    assert_int_equal(pkm_engine_config_check(&c), PKM_EINVAL);
    c.pin_fingerprint = NULL;
    c.role = 7;
    assert_int_equal(pkm_engine_config_check(&c), PKM_EINVAL);
}

static void server_allocates_through_the_hook(void **state)
{
    (void)state;
    pkm_server_config_t sc;
    pkm_server_config_init(&sc);
    sc.host = "127.0.0.1";
    sc.port = 0;
    sc.engine.server_key = t_shared_keys.server_key;
    hook();
    pkm_server_t *srv = NULL;
    assert_int_equal(pkm_server_new(&sc, &srv), 0);
    assert_true(n_malloc > 0); /* the server library's allocations reach the core's hook */
    pkm_server_free(srv);
    assert_true(n_free > 0);
    unhook();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(alloc_functions_go_through_the_hook),
        cmocka_unit_test(engine_config_check_is_the_validator),
        cmocka_unit_test(server_allocates_through_the_hook),
    };
    return cmocka_run_group_tests(tests, t_keys_setup, t_keys_teardown);
}
