/* SPDX-License-Identifier: MIT */
/* Tests of pkm_describe_cmpl (describe.h): every Complete Definition packet with a schema,
 * encoded, then described field by field by name; a wrong Hash, an unknown id, bad content. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"
#include "pkmcom/describe.h"

typedef struct {
    char names[8][64];
    char texts[8][256];
    size_t n;
} seen_t;

static void cb(void *ctx, size_t index, const char *name, const char *text)
{
    seen_t *s = ctx;
    assert_int_equal(index, s->n);
    assert_true(s->n < 8);
    snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
    snprintf(s->texts[s->n], sizeof s->texts[0], "%s", text);
    s->n++;
}

/* Encodes values as packet id, describes it, returns the count of fields seen. */
static int describe(uint8_t id, const pkm_value_t *v, size_t n, int break_hash, seen_t *s)
{
    const pkm_cmpl_packet_t *p = pkm_cmpl_by_id(id);
    assert_non_null(p);
    uint8_t *buf = NULL;
    size_t len = 0;
    uint32_t ch = 0;
    assert_int_equal(pkm_schema_encode_alloc(p->schema, v, n, &buf, &len, &ch), 0);
    pkm_packet_t pkt = {.id = id,
                        .hash = pkm_packet_hash(id, ch) + (break_hash ? 1u : 0u),
                        .content = buf,
                        .size = len};
    memset(s, 0, sizeof *s);
    const pkm_cmpl_packet_t *got = NULL;
    int r = pkm_describe_cmpl(&pkt, cb, s, &got);
    assert_ptr_equal(got, p);
    pkm_bytes_free(buf);
    return r;
}

static void every_kind(void **state)
{
    (void)state;
    seen_t s;
    pkm_value_t req[] = {PKM_V_VERSION(1, 0), PKM_V_STR("{\"a\":\"b\\\\c\"}"),
                         PKM_V_UUID(0x0123456789abcdefULL, 0xfedcba9876543210ULL)};
    assert_int_equal(describe(PKM_CMPL_CONNECT_REQUEST, req, 3, 0, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.names[0], "PkmVersion");
    assert_string_equal(s.texts[0], "1.0");
    assert_string_equal(s.names[1], "TrainerInfo");
    assert_string_equal(s.texts[1], "\"{\\\"a\\\":\\\"b\\\\\\\\c\\\"}\"");
    assert_string_equal(s.texts[2], "01234567-89ab-cdef-fedc-ba9876543210");

    pkm_value_t ok[] = {PKM_V_STR("{}"), PKM_V_U(PKM_CMPL_ACT_BATTLE | PKM_CMPL_ACT_GAME_SHARE)};
    assert_int_equal(describe(PKM_CMPL_CONNECT_SUCCESS, ok, 2, 0, &s), 0);
    assert_string_equal(s.names[1], "Available Actions");
    assert_string_equal(s.texts[1], "0xa (Battle|Game Share)");
    pkm_value_t none[] = {PKM_V_STR("{}"), PKM_V_U(0x100)};
    assert_int_equal(describe(PKM_CMPL_CONNECT_SUCCESS, none, 2, 0, &s), 0);
    assert_string_equal(s.texts[1], "0x100");

    pkm_value_t args[] = {PKM_V_STR("{\"x\":1}"), PKM_V_STR("{}")};
    pkm_value_t fail[] = {PKM_V_STR("{\"r\":2}"), PKM_V_U(2), PKM_V_ARRAY(args, 2)};
    assert_int_equal(describe(PKM_CMPL_CONNECT_FAILURE, fail, 3, 0, &s), 0);
    assert_string_equal(s.texts[1], "2");
    assert_string_equal(s.texts[2], "[\"{\\\"x\\\":1}\", \"{}\"]");

    pkm_value_t reason[] = {PKM_V_U(0)};
    assert_int_equal(describe(PKM_CMPL_REESTABLISH_SECRET, reason, 1, 0, &s), 0);
    assert_string_equal(s.names[0], "Reason");
    assert_string_equal(s.texts[0], "0 (Normal)");

    pkm_value_t ka[] = {PKM_V_I(-5), PKM_V_U(3), PKM_V_U(7), PKM_V_I(-1),
                        PKM_V_TIME(-2, 999999999)};
    assert_int_equal(describe(PKM_CMPL_KEEP_ALIVE_CLIENTBOUND, ka, 5, 0, &s), 0);
    assert_int_equal(s.n, 5);
    assert_string_equal(s.texts[0], "-5");
    assert_string_equal(s.texts[3], "-1");
    assert_string_equal(s.texts[4], "-2.999999999s");
}

static void failures(void **state)
{
    (void)state;
    seen_t s;
    pkm_value_t reason[] = {PKM_V_U(1)};
    /* A Hash that does not check: reported, no field described. */
    assert_int_equal(describe(PKM_CMPL_REESTABLISH_SECRET, reason, 1, 1, &s), PKM_EHASH);
    assert_int_equal(s.n, 0);
    /* An id without a schema (0x10), an unknown id, the handshake's. */
    const pkm_cmpl_packet_t *p = (const pkm_cmpl_packet_t *)1;
    pkm_packet_t pkt = {.id = PKM_CMPL_IRC_CHANNEL_LIST, .hash = 0, .content = NULL, .size = 0};
    assert_int_equal(pkm_describe_cmpl(&pkt, cb, &s, &p), PKM_EUNKNOWNID);
    assert_non_null(p);
    pkt.id = 0x42;
    assert_int_equal(pkm_describe_cmpl(&pkt, cb, &s, &p), PKM_EUNKNOWNID);
    assert_null(p);
    /* Content too short for its schema. */
    uint8_t one = 0;
    pkt = (pkm_packet_t){.id = PKM_CMPL_CONNECT_SUCCESS, .hash = 0, .content = &one, .size = 1};
    int r = pkm_describe_cmpl(&pkt, cb, &s, NULL);
    assert_true(r < 0 && r != PKM_EHASH && r != PKM_EUNKNOWNID);
    /* An undeclared enum value (reason 9). */
    uint8_t nine = 9;
    pkt = (pkm_packet_t){.id = PKM_CMPL_REESTABLISH_SECRET,
                         .hash = pkm_packet_hash(5, 9),
                         .content = &nine,
                         .size = 1};
    assert_int_equal(pkm_describe_cmpl(&pkt, cb, &s, NULL), PKM_EENUM);
    assert_int_equal(pkm_describe_cmpl(NULL, cb, &s, NULL), PKM_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_kind),
        cmocka_unit_test(failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
