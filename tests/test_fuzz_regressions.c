/* SPDX-License-Identifier: MIT */
/* Regression tests for what the libFuzzer targets in fuzz/ found: each test feeds the input that
 * crashed (or tripped a sanitizer), reduced to its essence, and asserts the clean error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"
#include "engine_internal.h"

static const uint8_t KEY[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t IV[16] = {0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
                               0xA8, 0xA9, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF};

/* An established server engine that has not received a single byte. */
static pkm_engine_t *fresh_established(void)
{
    pkm_engine_t *s = t_server(&t_shared_keys, NULL);
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

/* tests/data/server_key.pub.der (294 bytes: ... 02 82 01 01 00 <256-byte modulus> 02 03 01 00 01)
 * with the modulus made even: its last byte, at offset 294 - 5 - 1 = 288, has its low bit
 * cleared. Still canonical DER, 2048 bits, e = 65537. */
static size_t even_modulus_der(uint8_t der[512])
{
    char path[1024];
    const char *src = getenv("PKM_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/tests/data/server_key.pub.der", src ? src : ".");
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(der, 1, 512, f);
    fclose(f);
    assert_int_equal(n, 294);
    assert_int_equal(der[288] & 1, 1); /* an RSA modulus is odd */
    assert_memory_equal(der + 289, "\x02\x03\x01\x00\x01", 5);
    der[288] &= 0xFE;
    return n;
}

/* fuzz_engine_server, input 01 01 00 00 01 26 <a ClientKey whose modulus is even> ...: the key
 * passed pkm_key_from_der, then the server's KeyShare encryption under it failed inside OpenSSL
 * (Montgomery arithmetic needs an odd modulus) and the engine closed with PKM_ECRYPTO, an error
 * documented as "not caused by the peer". Expected: the key is refused as PKM_EKEY. */
static void even_modulus_key_refused(void **state)
{
    (void)state;
    uint8_t der[512];
    size_t n = even_modulus_der(der);
    pkm_key_t *k = NULL;
    assert_int_equal(pkm_key_from_der(der, n, &k), PKM_EKEY);
    assert_null(k);

    pkm_engine_t *s = t_server(&t_shared_keys, NULL);
    uint8_t msg[4 + 512] = {0, 0, 0x01, 0x26};
    memcpy(msg + 4, der, n);
    assert_int_equal(pkm_engine_feed(s, msg, 4 + n), PKM_EKEY);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_CLOSED);
    assert_string_equal(pkm_engine_fail_step(s), "ClientKey");
    pkm_engine_free(s);

    /* The same as a ServerKey, to a client. */
    pkm_engine_t *c = t_client(&t_shared_keys, NULL);
    assert_int_equal(pkm_engine_feed(c, msg, 4 + n), PKM_EKEY);
    assert_string_equal(pkm_engine_fail_step(c), "ServerKey");
    pkm_engine_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(next_packet_before_any_byte),
        cmocka_unit_test(even_modulus_key_refused),
    };
    return cmocka_run_group_tests(tests, t_keys_setup, t_keys_teardown);
}
