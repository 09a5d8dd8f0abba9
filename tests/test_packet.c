/* SPDX-License-Identifier: MIT */
/* Tests of the packet frame and the bytes hashsum: the 0xFF handshake packet worked by hand,
 * header bounds, and the fold's identities. */
#include <string.h>
#include "support.h"
#include <stdlib.h>
#include "pkmcom/packet.h"
#include "hashsum_internal.h"

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

static void pow31_by_hand(void **state)
{
    (void)state;
    assert_int_equal(pkm__pow31(0), 1);
    assert_int_equal(pkm__pow31(1), 31);
    assert_int_equal(pkm__pow31(2), 961);
    /* 31^7 = 27512614111 = 6 * 2^32 + 1742810335 */
    assert_int_equal(pkm__pow31(7), 1742810335u);
    uint32_t x = 1;
    for (int i = 0; i < 1000; i++)
        x *= 31u;
    assert_int_equal(pkm__pow31(1000), x);
}

/* Every fast path must equal the plain loop, for every length around the block sizes (8, 32, the
 * 64-byte dispatch threshold) and for random starting values and contents. */
static void fold_paths_agree(void **state)
{
    (void)state;
    t_rng r;
    t_rng_seed(&r, 42);
    size_t cap = 70000;
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    t_rng_bytes(&r, buf, cap);
    for (size_t n = 0; n < 300; n++) {
        uint32_t h = (uint32_t)t_rng_next(&r);
        size_t off = t_rng_next(&r) % 7; /* unaligned starts */
        uint32_t want = pkm__hash_fold_plain(h, buf + off, n);
        assert_int_equal(pkm__hash_fold_portable(h, buf + off, n), want);
        assert_int_equal(pkm_hash_fold(h, buf + off, n), want);
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
        if (pkm__hash_have_avx2()) assert_int_equal(pkm__hash_fold_avx2(h, buf + off, n), want);
#endif
    }
    for (int i = 0; i < 20; i++) {
        size_t n = (size_t)(t_rng_next(&r) % (cap - 8));
        uint32_t want = pkm__hash_fold_plain(7, buf + 3, n);
        assert_int_equal(pkm_hash_fold(7, buf + 3, n), want);
        assert_int_equal(pkm_hashsum_bytes(buf, n),
                         n ? pkm__hash_fold_plain(buf[0], buf + 1, n - 1) : 0);
    }
    /* all-0xFF input stresses the carries of every lane */
    memset(buf, 0xFF, cap);
    assert_int_equal(pkm_hash_fold(0xFFFFFFFFu, buf, cap),
                     pkm__hash_fold_plain(0xFFFFFFFFu, buf, cap));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handshake_packet_bytes), cmocka_unit_test(header_size_bounds),
        cmocka_unit_test(hashsum_bytes_by_hand),  cmocka_unit_test(pow31_by_hand),
        cmocka_unit_test(fold_paths_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
