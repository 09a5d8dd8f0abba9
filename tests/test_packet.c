/* Tests of the packet frame and the bytes hashsum: the 0xFF handshake packet worked by hand,
 * header bounds, and the fold's identities. */
#include <string.h>
#include "support.h"
#include "pkmcom/packet.h"

static void handshake_packet_bytes(void **state)
{
    (void)state;
    /* Content: one Unsigned Int 0x504B4D00, hashcode = the value. Hash = 0xFF*31 + 0x504B4D00
     * = 7905 + 1347112192 = 1347120097 = 0x504B6BE1. */
    uint8_t content[4] = {0x50, 0x4B, 0x4D, 0x00};
    uint32_t h = pkm_packet_hash(0xFF, 0x504B4D00u);
    assert_int_equal(h, 0x504B6BE1u);
    uint8_t out[13];
    assert_int_equal(pkm_packet_header_write(out, 0xFF, h, 4), 0);
    memcpy(out + 9, content, 4);
    uint8_t want[13];
    assert_int_equal(t_unhex("FF 50 4B 6B E1 00 00 00 04 50 4B 4D 00", want, sizeof want), 13);
    assert_memory_equal(out, want, 13);
    pkm_packet_t p;
    assert_int_equal(pkm_packet_header_read(out, PKM_DEFAULT_MAX_SIZE, &p), 0);
    assert_int_equal(p.id, 0xFF);
    assert_int_equal(p.hash, PKM_HANDSHAKE_HASH);
    assert_int_equal(p.size, 4);
}

static void header_size_bounds(void **state)
{
    (void)state;
    uint8_t h[9];
    pkm_packet_t p;
    assert_int_equal(t_unhex("01 00000000 80000000", h, 9), 9);
    assert_int_equal(pkm_packet_header_read(h, PKM_DEFAULT_MAX_SIZE, &p), PKM_ENEGLEN);
    assert_int_equal(t_unhex("01 00000000 FFFFFFFF", h, 9), 9);
    assert_int_equal(pkm_packet_header_read(h, PKM_DEFAULT_MAX_SIZE, &p), PKM_ENEGLEN);
    assert_int_equal(t_unhex("01 00000000 00100001", h, 9), 9);
    assert_int_equal(pkm_packet_header_read(h, PKM_DEFAULT_MAX_SIZE, &p), PKM_ETOOBIG);
    assert_int_equal(t_unhex("01 00000000 00100000", h, 9), 9);
    assert_int_equal(pkm_packet_header_read(h, PKM_DEFAULT_MAX_SIZE, &p), 0);
    assert_int_equal(t_unhex("01 00000000 7FFFFFFF", h, 9), 9);
    assert_int_equal(pkm_packet_header_read(h, INT32_MAX, &p), 0);
    assert_int_equal(p.size, INT32_MAX);
    assert_int_equal(pkm_packet_header_write(h, 1, 0, (size_t)INT32_MAX + 1), PKM_EINVAL);
}

static void hashsum_bytes_by_hand(void **state)
{
    (void)state;
    assert_int_equal(pkm_hashsum_bytes(NULL, 0), 0);
    uint8_t one[1] = {0xFE};
    assert_int_equal(pkm_hashsum_bytes(one, 1), 0xFE); /* Byte is unsigned: 254, not -2 */
    uint8_t abc[3] = {'a', 'b', 'c'};
    /* (97*31 + 98)*31 + 99 = 96354, Java's "abc".hashCode() */
    assert_int_equal(pkm_hashsum_bytes(abc, 3), 96354);
    assert_int_equal(pkm_hash_fold(97, abc + 1, 2), 96354);
    /* wraps modulo 2^32 */
    uint8_t ff[8];
    memset(ff, 0xFF, sizeof ff);
    uint32_t h = 0xFF;
    for (int i = 1; i < 8; i++)
        h = h * 31u + 0xFF;
    assert_int_equal(pkm_hashsum_bytes(ff, 8), h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handshake_packet_bytes),
        cmocka_unit_test(header_size_bounds),
        cmocka_unit_test(hashsum_bytes_by_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
