/* SPDX-License-Identifier: MIT */
/* Tests of the bounds-checked reader and writer (src/buf.h): big-endian values worked by hand,
 * short input and short room refused without moving, counting writers and reservations. */
#include <string.h>
#include "support.h"
#include "buf.h"

static void reader_reads_big_endian(void **state)
{
    (void)state;
    uint8_t in[15];
    assert_int_equal(t_unhex("AB 12 34 DE AD BE EF 01 02 03 04 05 06 07 08", in, 15), 15);
    pkm_reader r;
    pkm__reader_init(&r, in, sizeof in);
    uint8_t b;
    uint16_t s;
    uint32_t i;
    uint64_t l;
    assert_int_equal(pkm__read_u8(&r, &b), 0);
    assert_int_equal(b, 0xAB);
    assert_int_equal(pkm__read_u16(&r, &s), 0);
    assert_int_equal(s, 0x1234);
    assert_int_equal(pkm__read_u32(&r, &i), 0);
    assert_int_equal(i, 0xDEADBEEFu);
    assert_int_equal(pkm__read_u64(&r, &l), 0);
    assert_true(l == 0x0102030405060708ull);
    assert_int_equal(pkm__reader_left(&r), 0);
    assert_int_equal(pkm__read_u8(&r, &b), PKM_ETRUNC);
}

static void reader_short_input_leaves_position(void **state)
{
    (void)state;
    uint8_t in[7] = {1, 2, 3, 4, 5, 6, 7};
    for (size_t len = 0; len <= 7; len++) {
        pkm_reader r;
        pkm__reader_init(&r, in, len);
        uint16_t s;
        uint32_t i;
        uint64_t l;
        uint8_t buf[8];
        const uint8_t *p;
        assert_int_equal(pkm__read_u64(&r, &l), PKM_ETRUNC);
        assert_int_equal(pkm__read_u32(&r, &i), len >= 4 ? 0 : PKM_ETRUNC);
        size_t at = r.pos;
        assert_int_equal(pkm__read_u16(&r, &s), len - at >= 2 ? 0 : PKM_ETRUNC);
        at = r.pos;
        assert_int_equal(pkm__read_bytes(&r, buf, len - at + 1), PKM_ETRUNC);
        assert_int_equal(pkm__read_ptr(&r, &p, len - at + 1), PKM_ETRUNC);
        assert_int_equal(r.pos, at);
        assert_int_equal(pkm__read_ptr(&r, &p, len - at), 0);
        assert_ptr_equal(p, in + at);
        assert_int_equal(pkm__reader_left(&r), 0);
    }
    /* a NULL buffer reads as empty whatever the length says */
    pkm_reader r;
    pkm__reader_init(&r, NULL, 100);
    uint8_t b;
    assert_int_equal(pkm__read_u8(&r, &b), PKM_ETRUNC);
}

/* skip, sub-readers and read_until stay within their bounds, and a refused read moves nothing. */
static void reader_skip_sub_until(void **state)
{
    (void)state;
    const uint8_t in[] = {0x00, 0x03, 'a', 'b', 'c', ' ', 'd', 'e'};
    pkm_reader r, sub;
    pkm__reader_init(&r, in, sizeof in);
    assert_ptr_equal(pkm__reader_peek(&r), in);
    assert_int_equal(pkm__read_skip(&r, sizeof in + 1), PKM_ETRUNC);
    assert_int_equal(r.pos, 0);
    uint16_t n = 0;
    assert_int_equal(pkm__read_u16(&r, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(pkm__read_sub(&r, &sub, sizeof in), PKM_ETRUNC);
    assert_int_equal(r.pos, 2);
    assert_int_equal(pkm__read_sub(&r, &sub, n), 0);
    assert_int_equal(r.pos, 5);
    assert_int_equal(pkm__reader_left(&sub), 3);
    uint32_t four;
    assert_int_equal(pkm__read_u32(&sub, &four), PKM_ETRUNC); /* the sub-reader's end, not r's */
    assert_int_equal(pkm__read_skip(&sub, 1), 0);
    const uint8_t *tok;
    size_t len;
    pkm__read_until(&sub, 'c', &tok, &len);
    assert_int_equal(len, 1);
    assert_memory_equal(tok, "b", 1);
    pkm__read_until(&sub, 'c', &tok, &len); /* the stop byte stays unread */
    assert_int_equal(len, 0);
    pkm__read_until(&r, 'x', &tok, &len); /* none: the rest */
    assert_int_equal(len, 3);
    assert_memory_equal(tok, " de", 3);
    assert_int_equal(pkm__reader_left(&r), 0);
    pkm_reader empty;
    pkm__reader_init(&empty, NULL, 5);
    pkm__read_until(&empty, ' ', &tok, &len);
    assert_int_equal(len, 0);
    assert_null(pkm__reader_peek(&empty));
    assert_int_equal(pkm__read_skip(&empty, 1), PKM_ETRUNC);
}

static void writer_writes_big_endian(void **state)
{
    (void)state;
    uint8_t out[15], want[15];
    pkm_writer w;
    pkm__writer_init(&w, out, sizeof out);
    assert_int_equal(pkm__write_u8(&w, 0xAB), 0);
    assert_int_equal(pkm__write_u16(&w, 0x1234), 0);
    assert_int_equal(pkm__write_u32(&w, 0xDEADBEEFu), 0);
    assert_int_equal(pkm__write_u64(&w, 0x0102030405060708ull), 0);
    assert_int_equal(t_unhex("AB 12 34 DE AD BE EF 01 02 03 04 05 06 07 08", want, 15), 15);
    assert_memory_equal(out, want, 15);
    assert_int_equal(pkm__write_u8(&w, 0), PKM_ENOSPC);
    assert_int_equal(w.pos, 15);
}

static void writer_short_room_writes_nothing(void **state)
{
    (void)state;
    for (size_t cap = 0; cap < 8; cap++) {
        uint8_t out[9];
        memset(out, 0xEE, sizeof out);
        pkm_writer w;
        pkm__writer_init(&w, out, cap);
        assert_int_equal(pkm__write_u64(&w, ~0ull), PKM_ENOSPC);
        assert_int_equal(pkm__write_u32(&w, ~0u), cap >= 4 ? 0 : PKM_ENOSPC);
        size_t at = w.pos;
        uint8_t src[9] = {0};
        assert_int_equal(pkm__write_bytes(&w, src, cap - at + 1), PKM_ENOSPC);
        size_t r;
        assert_int_equal(pkm__write_reserve(&w, cap - at + 1, &r), PKM_ENOSPC);
        assert_int_equal(w.pos, at);
        /* nothing past cap was touched */
        for (size_t i = cap; i < sizeof out; i++)
            assert_int_equal(out[i], 0xEE);
    }
}

static void counting_writer_and_reservation(void **state)
{
    (void)state;
    pkm_writer c;
    pkm__writer_init(&c, NULL, 0);
    size_t at;
    assert_int_equal(pkm__write_reserve(&c, 2, &at), 0);
    assert_null(pkm__writer_at(&c, at));
    assert_int_equal(pkm__write_bytes(&c, (const uint8_t *)"abc", 3), 0);
    assert_int_equal(pkm__write_u64(&c, 1), 0);
    assert_int_equal(c.pos, 13);

    /* a length prefix reserved, then filled once the body is known */
    uint8_t out[5];
    pkm_writer w;
    pkm__writer_init(&w, out, sizeof out);
    assert_int_equal(pkm__write_reserve(&w, 2, &at), 0);
    assert_int_equal(pkm__write_bytes(&w, (const uint8_t *)"abc", 3), 0);
    uint8_t *p = pkm__writer_at(&w, at);
    p[0] = 0;
    p[1] = 3;
    uint8_t want[5] = {0x00, 0x03, 0x61, 0x62, 0x63};
    assert_memory_equal(out, want, 5);
    assert_int_equal(pkm__write_bytes(&w, NULL, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reader_reads_big_endian),
        cmocka_unit_test(reader_short_input_leaves_position),
        cmocka_unit_test(reader_skip_sub_until),
        cmocka_unit_test(writer_writes_big_endian),
        cmocka_unit_test(writer_short_room_writes_nothing),
        cmocka_unit_test(counting_writer_and_reservation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
