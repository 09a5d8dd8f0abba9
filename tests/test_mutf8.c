/* SPDX-License-Identifier: MIT */
/* Tests of Modified UTF-8: the wire check (each fault with its own error), conversion both ways
 * with NUL and supplementary characters, unpaired surrogates, strict standard UTF-8 input. */
#include <string.h>
#include "support.h"
#include "pkmcom/apl.h"

/* UTF-8 (hex) -> Modified UTF-8 must give want (hex), and back. */
static void both_ways(const char *utf8_hex, const char *mutf8_hex)
{
    uint8_t u[64], m[64], out[64];
    int un = t_unhex(utf8_hex, u, sizeof u), mn = t_unhex(mutf8_hex, m, sizeof m);
    assert_true(un >= 0 && mn >= 0);
    size_t len = 999;
    assert_int_equal(pkm_utf8_mutf8_len((const char *)u, (size_t)un, &len), 0);
    assert_int_equal(len, (size_t)mn);
    assert_int_equal(pkm_utf8_to_mutf8((const char *)u, (size_t)un, out, sizeof out, &len), 0);
    assert_int_equal(len, (size_t)mn);
    assert_memory_equal(out, m, (size_t)mn);
    assert_int_equal(pkm_mutf8_check(m, (size_t)mn, &len), 0);
    assert_int_equal(len, (size_t)un);
    assert_int_equal(pkm_mutf8_to_utf8(m, (size_t)mn, (char *)out, sizeof out, &len), 0);
    assert_int_equal(len, (size_t)un);
    assert_memory_equal(out, u, (size_t)un);
}

static void conversions_by_hand(void **state)
{
    (void)state;
    both_ways("", "");
    both_ways("61 62 63", "61 62 63");
    /* NUL travels as C0 80 (Java writeUTF) */
    both_ways("00", "C0 80");
    both_ways("61 00 62 00", "61 C0 80 62 C0 80");
    /* U+00E9 e-acute: 2 bytes, the same in both */
    both_ways("C3 A9", "C3 A9");
    /* U+07FF, the last 2-byte character */
    both_ways("DF BF", "DF BF");
    /* U+20AC euro sign: 3 bytes, the same in both */
    both_ways("E2 82 AC", "E2 82 AC");
    /* U+FFFF, the last 3-byte character */
    both_ways("EF BF BF", "EF BF BF");
    /* U+1F600: 0x1F600-0x10000 = 0xF600; high = D800 + (F600>>10 = 3D) = D83D,
     * low = DC00 + (F600 & 3FF = 200) = DE00. D83D = 1101 100000 111101 -> ED A0 BD;
     * DE00 = 1101 111000 000000 -> ED B8 80. */
    both_ways("F0 9F 98 80", "ED A0 BD ED B8 80");
    /* U+10000 -> D800 DC00 -> ED A0 80 ED B0 80; U+10FFFF -> DBFF DFFF -> ED AF BF ED BF BF */
    both_ways("F0 90 80 80", "ED A0 80 ED B0 80");
    both_ways("F4 8F BF BF", "ED AF BF ED BF BF");
    both_ways("41 F0 9F 98 80 00 E2 82 AC", "41 ED A0 BD ED B8 80 C0 80 E2 82 AC");
}

static int check_hex(const char *hex)
{
    uint8_t m[32];
    int n = t_unhex(hex, m, sizeof m);
    assert_true(n >= 0);
    size_t len;
    int a = pkm_mutf8_check(m, (size_t)n, NULL);
    /* the measuring check and the conversion report the same */
    assert_int_equal(pkm_mutf8_check(m, (size_t)n, &len), a);
    char out[64];
    assert_int_equal(pkm_mutf8_to_utf8(m, (size_t)n, out, sizeof out, &len), a);
    return a;
}

static void wire_faults(void **state)
{
    (void)state;
    assert_int_equal(check_hex("00"), PKM_EMUTF8_NUL);
    assert_int_equal(check_hex("61 62 00 63"), PKM_EMUTF8_NUL);
    assert_int_equal(check_hex("F0"), PKM_EMUTF8_BYTE);
    assert_int_equal(check_hex("61 FF"), PKM_EMUTF8_BYTE);
    assert_int_equal(check_hex("F8 80 80 80 80"), PKM_EMUTF8_BYTE);
    assert_int_equal(check_hex("80"), PKM_EMUTF8_CONT);
    assert_int_equal(check_hex("61 BF"), PKM_EMUTF8_CONT);
    /* a third continuation after a complete 2-byte character is stray */
    assert_int_equal(check_hex("C3 A9 A9"), PKM_EMUTF8_CONT);
    assert_int_equal(check_hex("C3"), PKM_EMUTF8_TRUNC);
    assert_int_equal(check_hex("E2 82"), PKM_EMUTF8_TRUNC);
    assert_int_equal(check_hex("E2"), PKM_EMUTF8_TRUNC);
    /* a lead byte followed by something other than a continuation byte */
    assert_int_equal(check_hex("C3 41"), PKM_EMUTF8_TRUNC);
    assert_int_equal(check_hex("E2 82 41"), PKM_EMUTF8_TRUNC);
    /* the standard UTF-8 4-byte form of U+1F600 is not Modified UTF-8 */
    assert_int_equal(check_hex("F0 9F 98 80"), PKM_EMUTF8_BYTE);
    /* the fault is found after long runs of plain ASCII too (the 8-byte fast path) */
    assert_int_equal(check_hex("41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 00"),
                     PKM_EMUTF8_NUL);
    assert_int_equal(check_hex("41 41 41 41 41 41 41 00 41 41 41 41 41 41 41 41 41"),
                     PKM_EMUTF8_NUL);
    assert_int_equal(check_hex("41 41 41 41 41 41 41 41 41 41 41 41 41 41 C3"), PKM_EMUTF8_TRUNC);
}

/* Converts received Modified UTF-8 and compares with the expected UTF-8. */
static void to_utf8(const char *mutf8_hex, const char *utf8_hex)
{
    uint8_t m[32], want[32];
    char out[32];
    int mn = t_unhex(mutf8_hex, m, sizeof m), un = t_unhex(utf8_hex, want, sizeof want);
    size_t len;
    assert_int_equal(pkm_mutf8_to_utf8(m, (size_t)mn, out, sizeof out, &len), 0);
    assert_int_equal(len, (size_t)un);
    assert_memory_equal(out, want, (size_t)un);
    assert_true(len <= (size_t)mn);
}

static void java_leniency_and_surrogates(void **state)
{
    (void)state;
    /* Java's readUTF accepts overlong forms: C1 81 is 'A', E0 80 80 is NUL */
    to_utf8("C1 81", "41");
    to_utf8("E0 80 80", "00");
    /* unpaired surrogates become U+FFFD (EF BF BD), documented in apl.h */
    to_utf8("ED A0 BD", "EF BF BD");
    to_utf8("ED B8 80", "EF BF BD");
    to_utf8("ED A0 BD 61", "EF BF BD 61");
    /* low then high: two unpaired surrogates */
    to_utf8("ED B8 80 ED A0 BD", "EF BF BD EF BF BD");
    /* two highs then a low: the first is unpaired, the second pairs (U+1F600) */
    to_utf8("ED A0 BD ED A0 BD ED B8 80", "EF BF BD F0 9F 98 80");
    /* a high surrogate before a fault: the fault is still reported */
    uint8_t m[4] = {0xED, 0xA0, 0xBD, 0x80};
    size_t len;
    assert_int_equal(pkm_mutf8_check(m, 4, &len), PKM_EMUTF8_CONT);
}

static int utf8_hex(const char *hex)
{
    uint8_t u[16], m[64];
    int n = t_unhex(hex, u, sizeof u);
    assert_true(n >= 0);
    size_t len;
    uint32_t h;
    int a = pkm_utf8_mutf8_len((const char *)u, (size_t)n, &len);
    assert_int_equal(pkm_utf8_to_mutf8((const char *)u, (size_t)n, m, sizeof m, &len), a);
    assert_int_equal(pkm_utf8_hash((const char *)u, (size_t)n, &h), a);
    return a;
}

static void invalid_utf8_rejected(void **state)
{
    (void)state;
    assert_int_equal(utf8_hex("C0 80"), PKM_EUTF8);             /* overlong NUL */
    assert_int_equal(utf8_hex("C1 81"), PKM_EUTF8);             /* overlong 'A' */
    assert_int_equal(utf8_hex("E0 80 80"), PKM_EUTF8);          /* overlong 3-byte */
    assert_int_equal(utf8_hex("E0 9F BF"), PKM_EUTF8);          /* overlong U+07FF */
    assert_int_equal(utf8_hex("F0 80 80 80"), PKM_EUTF8);       /* overlong 4-byte */
    assert_int_equal(utf8_hex("F0 8F BF BF"), PKM_EUTF8);       /* overlong U+FFFF */
    assert_int_equal(utf8_hex("ED A0 80"), PKM_EUTF8);          /* surrogate D800 */
    assert_int_equal(utf8_hex("ED BF BF"), PKM_EUTF8);          /* surrogate DFFF */
    assert_int_equal(utf8_hex("ED A0 BD ED B8 80"), PKM_EUTF8); /* CESU-8 pair */
    assert_int_equal(utf8_hex("F4 90 80 80"), PKM_EUTF8);       /* U+110000 */
    assert_int_equal(utf8_hex("F5 80 80 80"), PKM_EUTF8);
    assert_int_equal(utf8_hex("F8 88 80 80 80"), PKM_EUTF8);
    assert_int_equal(utf8_hex("FF"), PKM_EUTF8);
    assert_int_equal(utf8_hex("80"), PKM_EUTF8);
    assert_int_equal(utf8_hex("61 C3"), PKM_EUTF8);
    assert_int_equal(utf8_hex("E2 82"), PKM_EUTF8);
    assert_int_equal(utf8_hex("F0 9F 98"), PKM_EUTF8);
    assert_int_equal(utf8_hex("C3 41"), PKM_EUTF8);
    /* the edges that are valid */
    assert_int_equal(utf8_hex("ED 9F BF"), 0);    /* U+D7FF */
    assert_int_equal(utf8_hex("EE 80 80"), 0);    /* U+E000 */
    assert_int_equal(utf8_hex("E0 A0 80"), 0);    /* U+0800 */
    assert_int_equal(utf8_hex("C2 80"), 0);       /* U+0080 */
    assert_int_equal(utf8_hex("F4 8F BF BF"), 0); /* U+10FFFF */
}

static void short_room_and_hash(void **state)
{
    (void)state;
    uint8_t m[8];
    char u[8];
    size_t len;
    /* "a\0" -> 61 C0 80 needs 3 bytes */
    assert_int_equal(pkm_utf8_to_mutf8("a", 2, m, 2, &len), PKM_ENOSPC);
    assert_int_equal(pkm_utf8_to_mutf8("a", 2, m, 3, &len), 0);
    assert_int_equal(len, 3);
    assert_int_equal(pkm_utf8_to_mutf8("a", 2, NULL, 0, &len), PKM_ENOSPC);
    assert_int_equal(pkm_utf8_to_mutf8("", 0, NULL, 0, &len), 0);
    assert_int_equal(len, 0);
    uint8_t e[3] = {0xE2, 0x82, 0xAC};
    assert_int_equal(pkm_mutf8_to_utf8(e, 3, u, 2, &len), PKM_ENOSPC);
    assert_int_equal(pkm_mutf8_to_utf8(e, 3, u, 3, &len), 0);
    /* hashes over the Modified UTF-8 bytes: "abc" = (97*31+98)*31+99 = 96354;
     * "\0" = C0 80 -> 192*31 + 128 = 6080; "" = 0 */
    uint32_t h;
    assert_int_equal(pkm_utf8_hash("abc", 3, &h), 0);
    assert_int_equal(h, 96354);
    assert_int_equal(pkm_utf8_hash("", 1, &h), 0);
    assert_int_equal(h, 6080);
    assert_int_equal(pkm_utf8_hash(NULL, 0, &h), 0);
    assert_int_equal(h, 0);
    /* U+1F600 -> ED A0 BD ED B8 80, hashsum 0x9D94B66B (python, at authoring time) */
    assert_int_equal(pkm_utf8_hash("\xF0\x9F\x98\x80", 4, &h), 0);
    assert_int_equal(h, 0x9D94B66Bu);
}

/* An encoder of code points written for the test, independent of the library's. */
static size_t t_utf8(uint32_t cp, uint8_t *o)
{
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 + cp / 64);
        o[1] = (uint8_t)(0x80 + cp % 64);
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 + cp / 4096);
        o[1] = (uint8_t)(0x80 + cp / 64 % 64);
        o[2] = (uint8_t)(0x80 + cp % 64);
        return 3;
    }
    o[0] = (uint8_t)(0xF0 + cp / 262144);
    o[1] = (uint8_t)(0x80 + cp / 4096 % 64);
    o[2] = (uint8_t)(0x80 + cp / 64 % 64);
    o[3] = (uint8_t)(0x80 + cp % 64);
    return 4;
}

static void random_round_trips(void **state)
{
    (void)state;
    t_rng rng;
    t_rng_seed(&rng, 42);
    for (int iter = 0; iter < 2000; iter++) {
        uint8_t u[256], m[512], back[512];
        size_t un = 0, nchars = t_rng_next(&rng) % 40;
        for (size_t c = 0; c < nchars; c++) {
            uint64_t r = t_rng_next(&rng);
            uint32_t cp;
            switch (r % 5) {
            case 0: cp = (uint32_t)(r >> 8) % 0x80; break; /* ASCII incl. NUL */
            case 1: cp = 0x80 + (uint32_t)(r >> 8) % 0x780; break;
            case 2: cp = 0x800 + (uint32_t)(r >> 8) % 0xF800; break;
            case 3: cp = 0x10000 + (uint32_t)(r >> 8) % 0x100000; break;
            default: cp = 0x20 + (uint32_t)(r >> 8) % 0x5F; break;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0x41;
            un += t_utf8(cp, u + un);
        }
        size_t mn, bn;
        assert_int_equal(pkm_utf8_to_mutf8((const char *)u, un, m, sizeof m, &mn), 0);
        /* no 00 byte and no F0-FF byte may appear in Modified UTF-8 */
        for (size_t i = 0; i < mn; i++)
            assert_true(m[i] != 0 && m[i] < 0xF0);
        assert_int_equal(pkm_mutf8_check(m, mn, &bn), 0);
        assert_int_equal(bn, un);
        assert_int_equal(pkm_mutf8_to_utf8(m, mn, (char *)back, sizeof back, &bn), 0);
        assert_int_equal(bn, un);
        assert_memory_equal(back, u, un);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conversions_by_hand),          cmocka_unit_test(wire_faults),
        cmocka_unit_test(java_leniency_and_surrogates), cmocka_unit_test(invalid_utf8_rejected),
        cmocka_unit_test(short_room_and_hash),          cmocka_unit_test(random_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
