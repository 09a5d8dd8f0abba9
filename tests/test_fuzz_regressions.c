/* Regression tests for what the libFuzzer targets in fuzz/ found: each test feeds the input that
 * crashed (or tripped a sanitizer), reduced to its essence, and asserts the clean error. */
#include <string.h>
#include "support.h"
#include "engine_internal.h"

static t_keys K;
static const uint8_t KEY[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t IV[16] = {0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
                               0xA8, 0xA9, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF};

static int setup(void **state)
{
    (void)state;
    t_keys_init(&K);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    t_keys_free(&K);
    return 0;
}

/* An established server engine that has not received a single byte. */
static pkm_engine_t *fresh_established(void)
{
    pkm_engine_t *s = t_server(&K, NULL);
    assert_int_equal(pkm__engine_test_start(s, KEY, IV), 0);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    return s;
}

/* fuzz_frame, input DC 5E (no stream bytes, then end of stream): pkm_engine_next_packet computed
 * rbuf + rpos while the receive buffer was still NULL (never allocated), which UBSan reports as
 * "applying zero offset to null pointer". Expected: 0 (nothing yet), then PKM_EEOF after EOF. */
static void next_packet_before_any_byte(void **state)
{
    (void)state;
    pkm_engine_t *s = fresh_established();
    pkm_packet_t pkt;
    assert_int_equal(pkm_engine_next_packet(s, &pkt), 0);
    assert_int_equal(pkm_engine_recv_eof(s), 0);
    assert_int_equal(pkm_engine_next_packet(s, &pkt), PKM_EEOF);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_CLOSED);
    assert_int_equal(pkm_engine_error(s), PKM_EEOF);
    pkm_engine_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(next_packet_before_any_byte),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
