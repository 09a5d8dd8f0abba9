/* SPDX-License-Identifier: MIT */
/* Tests of the built-in Complete Definition packets (cmpl.h): the registry's shape against the
 * spec, lookups by id / name / field / symbol, a round trip of every packet with its Hash checked,
 * enums and bitflags refusing undeclared values and reserved bits, and the exact bytes and Hash of
 * packets worked out independently here by the APL rules (WIRE-PROFILE section 1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"
#include "pkmcom/cmpl.h"

/* ---- what the spec says, restated here so that the table is checked against it ---- */

static const struct {
    uint8_t id;
    const char *name;
    pkm_cmpl_dir_t dir;
    size_t n_fields; /* (size_t)-1: no schema */
} spec_packets[] = {
    {0x00, "Connect Request", PKM_CMPL_SERVERBOUND, 3},
    {0x01, "Connect Success", PKM_CMPL_CLIENTBOUND, 2},
    {0x02, "Connect Failure", PKM_CMPL_CLIENTBOUND, 3},
    {0x03, "Challenge Identity", PKM_CMPL_CLIENTBOUND, 1},
    {0x04, "Challenge Response", PKM_CMPL_SERVERBOUND, 2},
    {0x05, "Re-establish Secret", PKM_CMPL_CLIENTBOUND, 1},
    {0x06, "Keep Alive (Clientbound)", PKM_CMPL_CLIENTBOUND, 5},
    {0x07, "Keep Alive (Serverbound)", PKM_CMPL_SERVERBOUND, 5},
    {0x10, "IRC Channel List", PKM_CMPL_CLIENTBOUND, (size_t)-1},
};
#define N_SPEC (sizeof spec_packets / sizeof spec_packets[0])

static void registry_matches_spec(void **state)
{
    (void)state;
    const pkm_cmpl_registry_t *r = pkm_cmpl_registry();
    assert_non_null(r);
    assert_ptr_equal(pkm_cmpl_registry(), r);
    assert_string_equal(r->spec, "pkmcom.cmpl");
    assert_int_equal(r->n_packets, N_SPEC);
    for (size_t i = 0; i < N_SPEC; i++) {
        const pkm_cmpl_packet_t *p = &r->packets[i];
        assert_int_equal(p->id, spec_packets[i].id);
        assert_string_equal(p->name, spec_packets[i].name);
        assert_int_equal(p->dir, spec_packets[i].dir);
        assert_non_null(p->anchor);
        assert_true(strncmp(p->anchor, "pkmcom.cmpl.", 12) == 0);
        if (i) assert_true(p->id > r->packets[i - 1].id); /* ascending, unique */
        if (spec_packets[i].n_fields == (size_t)-1) {
            assert_null(p->schema);
            assert_int_equal(p->n_symtabs, 0);
            continue;
        }
        assert_non_null(p->schema);
        assert_string_equal(p->schema->name, p->name);
        assert_int_equal(p->schema->n_fields, spec_packets[i].n_fields);
        assert_int_equal(pkm_schema_validate(p->schema), 0);
        /* field names: all present, unique after normalisation */
        for (size_t a = 0; a < p->schema->n_fields; a++) {
            assert_non_null(p->schema->fields[a].name);
            for (size_t b = a + 1; b < p->schema->n_fields; b++)
                assert_false(
                    pkm_cmpl_name_eq(p->schema->fields[a].name, p->schema->fields[b].name));
        }
        /* symbol tables: on ENUM / BITFLAG fields, with values the codec accepts */
        for (size_t t = 0; t < p->n_symtabs; t++) {
            const pkm_cmpl_symtab_t *st = &p->symtabs[t];
            assert_true(st->field < p->schema->n_fields);
            const pkm_field_t *f = &p->schema->fields[st->field];
            assert_true(f->type == PKM_T_ENUM || f->type == PKM_T_BITFLAG);
            for (size_t k = 0; k < st->n_symbols; k++) {
                const pkm_cmpl_symbol_t *s = &st->symbols[k];
                assert_non_null(s->name);
                if (f->type == PKM_T_ENUM) {
                    bool declared = false;
                    for (size_t e = 0; e < f->n_enum_values; e++)
                        declared |= (uint64_t)f->enum_values[e] == s->value;
                    assert_true(declared);
                } else {
                    assert_true(s->value && (s->value & (s->value - 1)) == 0); /* one bit */
                    assert_int_equal(s->value & f->reserved_mask, 0);
                }
                for (size_t k2 = k + 1; k2 < st->n_symbols; k2++) {
                    assert_false(pkm_cmpl_name_eq(s->name, st->symbols[k2].name));
                    assert_true(s->value != st->symbols[k2].value);
                }
            }
        }
    }
    /* packet names unique after normalisation */
    for (size_t a = 0; a < N_SPEC; a++)
        for (size_t b = a + 1; b < N_SPEC; b++)
            assert_false(pkm_cmpl_name_eq(r->packets[a].name, r->packets[b].name));
    assert_string_equal(pkm_cmpl_dir_name(PKM_CMPL_SERVERBOUND), "serverbound");
    assert_string_equal(pkm_cmpl_dir_name(PKM_CMPL_CLIENTBOUND), "clientbound");
    assert_string_equal(pkm_cmpl_dir_name(PKM_CMPL_BOTH), "both");
    assert_string_equal(pkm_cmpl_dir_name((pkm_cmpl_dir_t)0), "?");
    assert_int_equal(PKM_CMPL_BOTH, PKM_CMPL_SERVERBOUND | PKM_CMPL_CLIENTBOUND);
}

static void lookup_by_id(void **state)
{
    (void)state;
    const pkm_cmpl_registry_t *r = pkm_cmpl_registry();
    size_t found = 0;
    for (unsigned id = 0; id < 256; id++) {
        const pkm_cmpl_packet_t *p = pkm_cmpl_by_id((uint8_t)id);
        bool want = id <= 0x07 || id == 0x10;
        assert_int_equal(p != NULL, want);
        if (!p) continue;
        found++;
        assert_int_equal(p->id, id);
        assert_true(p >= r->packets && p < r->packets + r->n_packets);
        if (p->schema) assert_ptr_equal(pkm_cmpl_by_schema(p->schema), p);
    }
    assert_int_equal(found, r->n_packets);
    assert_null(pkm_cmpl_by_schema(NULL));
    assert_null(pkm_cmpl_by_schema(pkm_handshake_schema()));
}

static void lookup_by_name(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int id; /* -1: none */
    } cases[] = {
        {"Connect Request", 0x00},
        {"connect-request", 0x00},
        {"CONNECTREQUEST", 0x00},
        {"connect_success", 0x01},
        {"Connect Failure", 0x02},
        {"challenge identity", 0x03},
        {"ChallengeResponse", 0x04},
        {"Re-establish Secret", 0x05},
        {"reestablish-secret", 0x05},
        {"Keep Alive (Clientbound)", 0x06},
        {"keep-alive-clientbound", 0x06},
        {"KeepAliveServerbound", 0x07},
        {"keep_alive_serverbound", 0x07},
        {"irc-channel-list", 0x10},
        {"keep-alive", -1}, /* two of them: no prefix match */
        {"Connect", -1},
        {"Connect Requests", -1},
        {"Connection Failed", -1}, /* the text's other name for 0x02: the heading is the name */
        {"", -1},
        {"--", -1},
        {"Handshake", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const pkm_cmpl_packet_t *p = pkm_cmpl_by_name(cases[i].name);
        if (cases[i].id < 0) {
            assert_null(p);
        } else {
            assert_non_null(p);
            assert_int_equal(p->id, cases[i].id);
        }
    }
    assert_null(pkm_cmpl_by_name(NULL));
    assert_true(pkm_cmpl_name_eq("Num. Args", "num_args"));
    assert_true(pkm_cmpl_name_eq("a-b", "AB"));
    assert_false(pkm_cmpl_name_eq("ab", "abc"));
    assert_false(pkm_cmpl_name_eq("abc", "ab"));
    assert_false(pkm_cmpl_name_eq("a1", "a2"));
    assert_false(pkm_cmpl_name_eq(NULL, "a"));
    assert_false(pkm_cmpl_name_eq("a", NULL));
    /* non-ASCII bytes are ignored, like punctuation (no locale) */
    assert_true(pkm_cmpl_name_eq("Tr\xC3\xA9"
                                 "de",
                                 "trde"));
}

static void lookup_fields_and_symbols(void **state)
{
    (void)state;
    const pkm_cmpl_packet_t *fail = pkm_cmpl_by_id(PKM_CMPL_CONNECT_FAILURE);
    size_t i = 99;
    const pkm_field_t *f = pkm_cmpl_field(fail->schema, "num_args", &i);
    assert_non_null(f);
    assert_int_equal(i, PKM_CMPL_CONNFAIL_NUM_ARGS);
    assert_ptr_equal(f, &fail->schema->fields[i]);
    assert_int_equal(f->type, PKM_T_BYTE);
    assert_ptr_equal(pkm_cmpl_field(fail->schema, "ARGS", &i), &fail->schema->fields[2]);
    assert_int_equal(i, PKM_CMPL_CONNFAIL_ARGS);
    assert_ptr_equal(pkm_cmpl_field(fail->schema, "reason", NULL), &fail->schema->fields[0]);
    i = 99;
    assert_null(pkm_cmpl_field(fail->schema, "Arg", &i));
    assert_int_equal(i, 99); /* untouched when not found */
    assert_null(pkm_cmpl_field(NULL, "Args", &i));
    assert_null(pkm_cmpl_field(fail->schema, NULL, &i));
    /* works on any schema */
    assert_ptr_equal(pkm_cmpl_field(pkm_handshake_schema(), "MAGIC", &i),
                     &pkm_handshake_schema()->fields[0]);
    /* the index constants agree with the names */
    const pkm_cmpl_packet_t *kacb = pkm_cmpl_by_id(PKM_CMPL_KEEP_ALIVE_CLIENTBOUND);
    const pkm_cmpl_packet_t *kasb = pkm_cmpl_by_id(PKM_CMPL_KEEP_ALIVE_SERVERBOUND);
    assert_non_null(pkm_cmpl_field(kacb->schema, "encoding-time", &i));
    assert_int_equal(i, PKM_CMPL_KACB_ENCODING_TIME);
    assert_non_null(pkm_cmpl_field(kasb->schema, "EncodingTime", &i));
    assert_int_equal(i, PKM_CMPL_KASB_ENCODING_TIME);
    assert_non_null(pkm_cmpl_field(kasb->schema, "Last Packet Hashcode", &i));
    assert_int_equal(i, PKM_CMPL_KASB_LAST_HASH);
    assert_non_null(pkm_cmpl_field(kacb->schema, "client packets recieved", &i));
    assert_int_equal(i, PKM_CMPL_KACB_PACKETS_RECEIVED);

    /* symbols */
    const pkm_cmpl_packet_t *ok = pkm_cmpl_by_id(PKM_CMPL_CONNECT_SUCCESS);
    const pkm_cmpl_packet_t *re = pkm_cmpl_by_id(PKM_CMPL_REESTABLISH_SECRET);
    size_t n = 99;
    const pkm_cmpl_symbol_t *acts = pkm_cmpl_symbols(ok, PKM_CMPL_CONNOK_ACTIONS, &n);
    assert_non_null(acts);
    assert_int_equal(n, 4);
    assert_null(pkm_cmpl_symbols(ok, PKM_CMPL_CONNOK_SERVER_INFO, &n));
    assert_int_equal(n, 0);
    assert_null(pkm_cmpl_symbols(NULL, 0, &n));
    assert_int_equal(pkm_cmpl_symbol_by_name(ok, 1, "game-share")->value, PKM_CMPL_ACT_GAME_SHARE);
    assert_int_equal(pkm_cmpl_symbol_by_name(ok, 1, "irc")->value, PKM_CMPL_ACT_IRC);
    assert_int_equal(pkm_cmpl_symbol_by_name(ok, 1, "Trade")->value, PKM_CMPL_ACT_TRADE);
    assert_int_equal(pkm_cmpl_symbol_by_name(ok, 1, "BATTLE")->value, PKM_CMPL_ACT_BATTLE);
    assert_null(pkm_cmpl_symbol_by_name(ok, 1, "Chat"));
    assert_null(pkm_cmpl_symbol_by_name(ok, 0, "Trade"));
    assert_null(pkm_cmpl_symbol_by_name(ok, 1, NULL));
    assert_string_equal(pkm_cmpl_symbol_by_value(ok, 1, 0x04)->name, "IRC");
    assert_null(pkm_cmpl_symbol_by_value(ok, 1, 0x10));
    assert_null(pkm_cmpl_symbol_by_value(ok, 1, 0x03)); /* not a single bit */
    assert_int_equal(pkm_cmpl_symbol_by_name(re, 0, "password")->value, PKM_CMPL_REASON_PASSWORD);
    assert_int_equal(pkm_cmpl_symbol_by_name(re, 0, "Normal")->value, PKM_CMPL_REASON_NORMAL);
    assert_int_equal(pkm_cmpl_symbol_by_name(re, 0, "side-secret-8")->value,
                     PKM_CMPL_REASON_SIDE_SECRET_MAX);
    assert_string_equal(pkm_cmpl_symbol_by_value(re, 0, 2)->name, "Side Secret 2");
    assert_null(pkm_cmpl_symbol_by_value(re, 0, 9));
}

/* ---- round trips ---- */

static const char *const fail_args[] = {"{}", "{\"who\":\"Red\",\"n\":3}"};

/* Sample values for packet p, filled BY FIELD NAME (as a CLI does from NAME=VALUE pairs) in an
 * order unrelated to the schema's. Returns the count set; every field must be set exactly once. */
static size_t sample_values(const pkm_cmpl_packet_t *p, pkm_value_t *v, pkm_value_t *items,
                            uint64_t variant)
{
    static const struct {
        uint8_t id;
        const char *field;
        int kind; /* 0 u64, 1 i64, 2 str, 3 version, 4 uuid, 5 time, 6 args, 7 str with NUL */
        uint64_t u;
        const char *s;
    } table[] = {
        {0x00, "sentry_account", 4, 0, NULL},
        {0x00, "pkm-version", 3, 0, NULL},
        {0x00, "TrainerInfo", 2, 0, "{\"name\":\"Red \xF0\x9F\x94\xA5\",\"hours\":42}"},
        {0x01, "available actions", 0, PKM_CMPL_ACT_TRADE | PKM_CMPL_ACT_IRC | 0x100, NULL},
        {0x01, "server info", 2, 0, "{\"brand\":\"libpkmcom\"}"},
        {0x02, "args", 6, 0, NULL},
        {0x02, "num args", 0, 2, NULL},
        {0x02, "reason", 2, 0, "{\"translate\":\"pkmcom.fail.full\"}"},
        {0x03, "authority-request", 2, 0, "QUJDRA=="},
        {0x04, "authorization", 2, 0, "c2lnbmF0dXJl"},
        {0x04, "session-key", 7, 0, NULL}, /* text holding a NUL */
        {0x05, "reason", 0, 1, NULL},
        {0x06, "encoding time", 5, 0, NULL},
        {0x06, "last packet hash", 1, (uint64_t)INT32_MIN, NULL},
        {0x06, "last packet id", 0, 0x04, NULL},
        {0x06, "client packets recieved", 0, 65535, NULL},
        {0x06, "keep alive id", 1, (uint64_t)INT64_MIN, NULL},
        {0x07, "last packet hashcode", 1, (uint64_t)INT32_MAX, NULL},
        {0x07, "server packets recieved", 0, 0, NULL},
        {0x07, "keep alive id", 1, (uint64_t)-1, NULL},
        {0x07, "last packet id", 0, 0x06, NULL},
        {0x07, "encoding time", 5, 0, NULL},
    };
    size_t set = 0;
    bool seen[8] = {false};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (table[i].id != p->id) continue;
        size_t k;
        assert_non_null(pkm_cmpl_field(p->schema, table[i].field, &k));
        assert_false(seen[k]);
        seen[k] = true;
        set++;
        switch (table[i].kind) {
        case 0: v[k] = PKM_V_U(table[i].u); break;
        case 1: v[k] = PKM_V_I((int64_t)table[i].u); break;
        case 2: v[k] = PKM_V_STRN(table[i].s, strlen(table[i].s)); break;
        case 7: v[k] = PKM_V_STR("a2V5\0with NUL"); break;
        case 3: v[k] = PKM_V_VERSION(1, (uint16_t)(variant & 0xFF)); break;
        case 4: v[k] = PKM_V_UUID(0x123e4567e89b42d3ull ^ variant, 0xa456426614174000ull); break;
        case 5: v[k] = PKM_V_TIME(1764580000 + (int64_t)variant, 999999999); break;
        case 6:
            items[0] = PKM_V_STRN(fail_args[0], strlen(fail_args[0]));
            items[1] = PKM_V_STRN(fail_args[1], strlen(fail_args[1]));
            v[k] = PKM_V_ARRAY(items, 2);
            break;
        }
    }
    return set;
}

static void assert_value_equal(const pkm_field_t *f, const pkm_value_t *a, const pkm_value_t *b)
{
    switch (f->type) {
    case PKM_T_BYTE:
    case PKM_T_USHORT:
    case PKM_T_UINT:
    case PKM_T_BITFLAG:
    case PKM_T_ENUM: assert_int_equal(a->u64, b->u64); break; /* all unsigned bases here */
    case PKM_T_INT:
    case PKM_T_LONG: assert_true(a->i64 == b->i64); break;
    case PKM_T_STRING:
    case PKM_T_JSON:
        assert_int_equal(a->str.len, b->str.len);
        assert_memory_equal(a->str.ptr, b->str.ptr, a->str.len);
        break;
    case PKM_T_VERSION:
        assert_int_equal(a->version.major, b->version.major);
        assert_int_equal(a->version.minor, b->version.minor);
        break;
    case PKM_T_UUID:
        assert_true(a->uuid.msb == b->uuid.msb);
        assert_true(a->uuid.lsb == b->uuid.lsb);
        break;
    case PKM_T_INSTANT:
        assert_true(a->time.seconds == b->time.seconds);
        assert_int_equal(a->time.nanos, b->time.nanos);
        break;
    case PKM_T_ARRAY:
        assert_int_equal(a->array.n, b->array.n);
        for (size_t i = 0; i < a->array.n; i++)
            assert_value_equal(f->elem, &a->array.items[i], &b->array.items[i]);
        break;
    default: fail_msg("type %d not expected in the Complete Definition", (int)f->type);
    }
}

static void round_trip_every_packet(void **state)
{
    (void)state;
    pkm_registry_t *reg = pkm_registry_new();
    assert_non_null(reg);
    assert_int_equal(pkm_cmpl_register(reg), 0);
    const pkm_cmpl_registry_t *r = pkm_cmpl_registry();
    size_t tried = 0;
    for (size_t i = 0; i < r->n_packets; i++) {
        const pkm_cmpl_packet_t *p = &r->packets[i];
        if (!p->schema) {
            assert_null(pkm_registry_lookup(reg, p->id));
            continue;
        }
        assert_ptr_equal(pkm_registry_lookup(reg, p->id), p->schema);
        for (uint64_t variant = 0; variant < 3; variant++) {
            pkm_value_t v[8], items[2];
            memset(v, 0, sizeof v);
            assert_int_equal(sample_values(p, v, items, variant), p->schema->n_fields);
            uint8_t buf[512];
            size_t len;
            assert_int_equal(
                pkm_registry_encode(reg, p->id, v, p->schema->n_fields, buf, sizeof buf, &len), 0);
            /* the same bytes through the schema directly, and the content hash it reports */
            uint8_t content[512];
            size_t clen;
            uint32_t chash;
            assert_int_equal(pkm_schema_encode(p->schema, v, p->schema->n_fields, content,
                                               sizeof content, &clen, &chash),
                             0);
            assert_int_equal(len, PKM_HEADER_SIZE + clen);
            assert_memory_equal(buf + PKM_HEADER_SIZE, content, clen);

            pkm_packet_t pkt;
            assert_int_equal(pkm_packet_header_read(buf, PKM_DEFAULT_MAX_SIZE, &pkt), 0);
            pkt.content = buf + PKM_HEADER_SIZE;
            assert_int_equal(pkt.id, p->id);
            assert_int_equal(pkt.size, clen);
            assert_int_equal(pkt.hash, pkm_packet_hash(p->id, chash));
            assert_int_equal(pkm_registry_verify(reg, &pkt), 0);

            pkm_msg_t *m;
            assert_int_equal(pkm_registry_decode(reg, &pkt, &m), 0);
            assert_int_equal(pkm_msg_id(m), p->id);
            assert_ptr_equal(pkm_cmpl_by_schema(pkm_msg_schema(m)), p);
            size_t n;
            const pkm_value_t *got = pkm_msg_fields(m, &n);
            assert_int_equal(n, p->schema->n_fields);
            for (size_t k = 0; k < n; k++) {
                assert_value_equal(&p->schema->fields[k], &v[k], &got[k]);
                /* the spec's names, verbatim, reach the decoded message */
                assert_ptr_equal(pkm_msg_get(m, p->schema->fields[k].name), &got[k]);
            }
            pkm_msg_free(m);

            /* the Hash is checked: any flipped bit of it, or of the content, is refused */
            for (int bit = 0; bit < 32; bit += 7) {
                pkt.hash ^= 1u << bit;
                assert_int_equal(pkm_registry_verify(reg, &pkt), PKM_EHASH);
                pkt.hash ^= 1u << bit;
            }
            /* the same content under another id: its Hash (which covers the id) fails */
            pkt.id ^= 0x01;
            assert_int_equal(pkm_schema_verify(p->schema, &pkt), PKM_EHASH);
            pkt.id ^= 0x01;
            /* a flipped content bit: the Hash, or the content's own preconditions, refuse it */
            buf[PKM_HEADER_SIZE + clen - 1] ^= 0x01;
            assert_true(pkm_registry_verify(reg, &pkt) < 0);
            buf[PKM_HEADER_SIZE + clen - 1] ^= 0x01;
            assert_int_equal(pkm_registry_verify(reg, &pkt), 0);
            tried++;
        }
    }
    assert_int_equal(tried, 3 * 8);
    pkm_registry_free(reg);
}

static void register_all_or_nothing(void **state)
{
    (void)state;
    assert_int_equal(pkm_cmpl_register(NULL), PKM_EINVAL);
    pkm_registry_t *reg = pkm_registry_new();
    assert_non_null(reg);
    assert_int_equal(pkm_cmpl_register(reg), 0);
    assert_int_equal(pkm_cmpl_register(reg), PKM_ESTATE);
    pkm_registry_free(reg);

    /* an application's own schema on 0x03: nothing of the Complete Definition is registered */
    static const pkm_field_t own_f[] = {{.name = "x", .type = PKM_T_BYTE}};
    static const pkm_schema_t own = {"Own", own_f, 1};
    reg = pkm_registry_new();
    assert_non_null(reg);
    assert_int_equal(pkm_registry_register(reg, 0x03, &own), 0);
    assert_int_equal(pkm_cmpl_register(reg), PKM_ESTATE);
    for (unsigned id = 0; id < 0xFF; id++)
        assert_true(pkm_registry_lookup(reg, (uint8_t)id) == (id == 0x03 ? &own : NULL));
    /* 0x10 may hold an application's schema: it is not the Complete Definition's */
    pkm_registry_free(reg);
    reg = pkm_registry_new();
    assert_non_null(reg);
    assert_int_equal(pkm_registry_register(reg, 0x10, &own), 0);
    assert_int_equal(pkm_cmpl_register(reg), 0);
    assert_ptr_equal(pkm_registry_lookup(reg, 0x10), &own);

    /* without a schema for 0x10, a registry cannot verify it */
    pkm_registry_free(reg);
    reg = pkm_registry_new();
    assert_int_equal(pkm_cmpl_register(reg), 0);
    uint8_t c[1] = {0};
    pkm_packet_t pkt = {0x10, 0x10 * 31, c, 1};
    assert_int_equal(pkm_registry_verify(reg, &pkt), PKM_EUNKNOWNID);
    pkm_registry_free(reg);
}

/* ---- enums and bitflags ---- */

/* Verifies a hand-made content for id with a Hash that checks by the APL rules (content_hash
 * computed by the caller), so that only the precondition can fail. */
static int verify_raw(uint8_t id, const uint8_t *c, size_t n, uint32_t content_hash)
{
    pkm_packet_t pkt = {id, (uint32_t)id * 31u + content_hash, c, n};
    return pkm_schema_verify(pkm_cmpl_by_id(id)->schema, &pkt);
}

/* hashsum of bytes, each as an unsigned Byte */
static uint32_t t_hashsum_bytes(const uint8_t *p, size_t n)
{
    uint32_t h = 0;
    for (size_t i = 0; i < n; i++)
        h = h * 31u + p[i];
    return h;
}

static void reestablish_reason_enum(void **state)
{
    (void)state;
    const pkm_schema_t *s = pkm_cmpl_by_id(PKM_CMPL_REESTABLISH_SECRET)->schema;
    uint8_t out[32];
    size_t len;
    for (unsigned r = 0; r < 256; r++) {
        pkm_value_t v = PKM_V_U(r);
        int want = r <= 8 ? 0 : PKM_EENUM;
        assert_int_equal(pkm_schema_encode_packet(s, 0x05, &v, 1, out, sizeof out, &len), want);
        if (!want) {
            assert_int_equal(len, 10);
            assert_int_equal(out[9], r);
        }
        uint8_t c[1] = {(uint8_t)r};
        /* content hashcode: the Byte's value */
        assert_int_equal(verify_raw(0x05, c, 1, r), want);
    }
    pkm_value_t v = PKM_V_U(256);
    assert_int_equal(pkm_schema_encode_packet(s, 0x05, &v, 1, out, sizeof out, &len),
                     PKM_ERANGE); /* not a Byte */
}

static void available_actions_bitflag(void **state)
{
    (void)state;
    const pkm_schema_t *s = pkm_cmpl_by_id(PKM_CMPL_CONNECT_SUCCESS)->schema;
    static const char info[] = "{}";
    uint8_t out[64];
    size_t len;
    for (unsigned bit = 0; bit < 32; bit++) {
        uint64_t mask = (uint64_t)1 << bit;
        pkm_value_t v[2] = {PKM_V_STR(info), PKM_V_U(mask)};
        /* bits 4-7 reserved; 0-3 defined; 8-31 unused, which the APL lets be set */
        int want = (bit >= 4 && bit <= 7) ? PKM_EBITFLAG : 0;
        assert_int_equal(pkm_schema_encode_packet(s, 0x01, v, 2, out, sizeof out, &len), want);
        /* the received form: 00 02 '{' '}' then the Unsigned Int */
        uint8_t c[8] = {0x00,
                        0x02,
                        '{',
                        '}',
                        (uint8_t)(mask >> 24),
                        (uint8_t)(mask >> 16),
                        (uint8_t)(mask >> 8),
                        (uint8_t)mask};
        uint32_t ch = t_hashsum_bytes(c + 2, 2) * 31u + (uint32_t)mask;
        assert_int_equal(verify_raw(0x01, c, 8, ch), want);
    }
    pkm_value_t v[2] = {PKM_V_STR(info), PKM_V_U(0x0F)};
    assert_int_equal(pkm_schema_encode_packet(s, 0x01, v, 2, out, sizeof out, &len), 0);
    v[1] = PKM_V_U(0xFFFFFF0F);
    assert_int_equal(pkm_schema_encode_packet(s, 0x01, v, 2, out, sizeof out, &len), 0);
    v[1] = PKM_V_U(0xFFFFFFFF);
    assert_int_equal(pkm_schema_encode_packet(s, 0x01, v, 2, out, sizeof out, &len), PKM_EBITFLAG);
    v[1] = PKM_V_U(0x100000000ull); /* beyond an Unsigned Int */
    assert_true(pkm_schema_encode_packet(s, 0x01, v, 2, out, sizeof out, &len) < 0);
}

static void last_packet_id_takes_any_id(void **state)
{
    (void)state;
    const pkm_cmpl_packet_t *p = pkm_cmpl_by_id(PKM_CMPL_KEEP_ALIVE_SERVERBOUND);
    const pkm_schema_t *s = p->schema;
    assert_int_equal(s->fields[PKM_CMPL_KASB_LAST_ID].type, PKM_T_ENUM);
    uint8_t out[64];
    size_t len;
    for (unsigned id = 0; id < 256; id++) {
        pkm_value_t v[5] = {PKM_V_I(1), PKM_V_TIME(0, 0), PKM_V_U(1), PKM_V_U(id), PKM_V_I(-1)};
        assert_int_equal(pkm_schema_encode_packet(s, 0x07, v, 5, out, sizeof out, &len), 0);
        pkm_packet_t pkt;
        assert_int_equal(pkm_packet_header_read(out, PKM_DEFAULT_MAX_SIZE, &pkt), 0);
        pkt.content = out + PKM_HEADER_SIZE;
        assert_int_equal(pkm_schema_verify(s, &pkt), 0);
    }
    pkm_value_t v[5] = {PKM_V_I(1), PKM_V_TIME(0, 0), PKM_V_U(1), PKM_V_U(256), PKM_V_I(-1)};
    assert_int_equal(pkm_schema_encode_packet(s, 0x07, v, 5, out, sizeof out, &len),
                     PKM_ERANGE); /* not a Byte */
    /* Int fields refuse an unsigned Hash given as is: it must be the 32-bit pattern as an Int */
    v[3] = PKM_V_U(0);
    v[4] = PKM_V_I(0xFFFFFFFFll);
    assert_int_equal(pkm_schema_encode_packet(s, 0x07, v, 5, out, sizeof out, &len), PKM_ERANGE);
    v[4] = PKM_V_I((int32_t)0xFFFFFFFFu);
    assert_int_equal(pkm_schema_encode_packet(s, 0x07, v, 5, out, sizeof out, &len), 0);
}

static void connect_failure_arg_count(void **state)
{
    (void)state;
    const pkm_schema_t *s = pkm_cmpl_by_id(PKM_CMPL_CONNECT_FAILURE)->schema;
    pkm_value_t items[2] = {PKM_V_STR("{}"), PKM_V_STR("{}")};
    pkm_value_t v[3] = {PKM_V_STR("{}"), PKM_V_U(1), PKM_V_ARRAY(items, 2)};
    uint8_t out[64];
    size_t len;
    assert_int_equal(pkm_schema_encode_packet(s, 0x02, v, 3, out, sizeof out, &len), PKM_EARRLEN);
    v[1] = PKM_V_U(0);
    v[2] = PKM_V_ARRAY(NULL, 0);
    assert_int_equal(pkm_schema_encode_packet(s, 0x02, v, 3, out, sizeof out, &len), 0);
    /* an argument that is not a Json object is refused */
    items[1] = PKM_V_STR("[1]");
    v[1] = PKM_V_U(2);
    v[2] = PKM_V_ARRAY(items, 2);
    assert_int_equal(pkm_schema_encode_packet(s, 0x02, v, 3, out, sizeof out, &len),
                     PKM_EJSON_NOTOBJ);
    /* received: Num. Args says 2 but only one argument follows */
    uint8_t c[] = {0x00, 0x02, '{', '}', 0x02, 0x00, 0x02, '{', '}'};
    uint32_t h2 = t_hashsum_bytes((const uint8_t *)"{}", 2);
    assert_int_equal(verify_raw(0x02, c, sizeof c, (h2 * 31u + 2) * 31u + h2), PKM_ETRUNC);
}

/* ---- exact bytes and Hash, worked out here from the APL rules ---- */

static uint32_t t_hash_long(uint64_t v)
{
    return (uint32_t)(v >> 32) ^ (uint32_t)(v & 0xFFFFFFFFu);
}

static size_t t_put(uint8_t *p, uint64_t v, int nbytes)
{
    for (int i = 0; i < nbytes; i++)
        p[i] = (uint8_t)(v >> (8 * (nbytes - 1 - i)));
    return (size_t)nbytes;
}

static size_t t_put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    t_put(p, n, 2);
    memcpy(p + 2, s, n);
    return 2 + n;
}

/* Encodes with the library, then checks the header and content against want / want_hash. */
static void check_encoding(uint8_t id, const pkm_value_t *v, const uint8_t *want, size_t want_len,
                           uint32_t want_hash)
{
    const pkm_schema_t *s = pkm_cmpl_by_id(id)->schema;
    uint8_t out[256];
    size_t len;
    assert_int_equal(pkm_schema_encode_packet(s, id, v, s->n_fields, out, sizeof out, &len), 0);
    assert_int_equal(len, PKM_HEADER_SIZE + want_len);
    uint8_t hdr[PKM_HEADER_SIZE];
    hdr[0] = id;
    t_put(hdr + 1, want_hash, 4);
    t_put(hdr + 5, want_len, 4);
    assert_memory_equal(out, hdr, PKM_HEADER_SIZE);
    assert_memory_equal(out + PKM_HEADER_SIZE, want, want_len);
    pkm_packet_t pkt = {id, want_hash, want, want_len};
    assert_int_equal(pkm_schema_verify(s, &pkt), 0);
}

static void keep_alive_serverbound_by_hand(void **state)
{
    (void)state;
    const uint64_t ka = 0x0123456789ABCDEFull;
    const int64_t secs = 1764580000;
    const int32_t nanos = 123456789;
    const uint16_t count = 0xBEEF;
    const uint8_t last_id = 0x06;
    const int32_t last_hash = -2;
    pkm_value_t v[5];
    v[PKM_CMPL_KASB_ID] = PKM_V_I((int64_t)ka);
    v[PKM_CMPL_KASB_ENCODING_TIME] = PKM_V_TIME(secs, nanos);
    v[PKM_CMPL_KASB_PACKETS_RECEIVED] = PKM_V_U(count);
    v[PKM_CMPL_KASB_LAST_ID] = PKM_V_U(last_id);
    v[PKM_CMPL_KASB_LAST_HASH] = PKM_V_I(last_hash);

    uint8_t want[64];
    size_t n = 0;
    n += t_put(want + n, ka, 8);
    n += t_put(want + n, (uint64_t)secs, 8);
    n += t_put(want + n, (uint32_t)nanos, 4);
    n += t_put(want + n, count, 2);
    n += t_put(want + n, last_id, 1);
    n += t_put(want + n, (uint32_t)last_hash, 4);
    assert_int_equal(n, 27);

    /* Long: high ^ low = 0x01234567 ^ 0x89ABCDEF = 0x88888888 */
    uint32_t h = t_hash_long(ka);
    assert_int_equal(h, 0x88888888u);
    uint32_t instant = t_hash_long((uint64_t)secs) * 31u + (uint32_t)nanos;
    h = h * 31u + instant;
    h = h * 31u + count;               /* Unsigned Short: zero-extended */
    h = h * 31u + last_id;             /* Byte Enum: the Byte */
    h = h * 31u + (uint32_t)last_hash; /* Int: the 32-bit pattern */
    check_encoding(0x07, v, want, n, 0x07u * 31u + h);
}

static void connect_failure_by_hand(void **state)
{
    (void)state;
    static const char reason[] = "{\"text\":\"Server full\"}";
    pkm_value_t items[2] = {PKM_V_STRN(fail_args[0], strlen(fail_args[0])),
                            PKM_V_STRN(fail_args[1], strlen(fail_args[1]))};
    pkm_value_t v[3] = {PKM_V_STR(reason), PKM_V_U(2), PKM_V_ARRAY(items, 2)};

    uint8_t want[128];
    size_t n = 0;
    n += t_put_str(want + n, reason);
    n += t_put(want + n, 2, 1);
    n += t_put_str(want + n, fail_args[0]);
    n += t_put_str(want + n, fail_args[1]);

    uint32_t hr = t_hashsum_bytes((const uint8_t *)reason, strlen(reason));
    uint32_t a0 = t_hashsum_bytes((const uint8_t *)fail_args[0], strlen(fail_args[0]));
    uint32_t a1 = t_hashsum_bytes((const uint8_t *)fail_args[1], strlen(fail_args[1]));
    uint32_t args = a0 * 31u + a1; /* the Array: hashsum of its elements */
    uint32_t h = (hr * 31u + 2u) * 31u + args;
    check_encoding(0x02, v, want, n, 0x02u * 31u + h);
}

static void connect_request_by_hand(void **state)
{
    (void)state;
    static const char info[] = "{\"name\":\"Red\"}";
    const uint64_t msb = 0x123e4567e89b42d3ull, lsb = 0xa456426614174000ull;
    pkm_value_t v[3] = {PKM_V_VERSION(1, 0), PKM_V_STR(info), PKM_V_UUID(msb, lsb)};
    uint8_t want[64];
    size_t n = 0;
    n += t_put(want + n, 0x0000, 2); /* (major-1)<<8 | minor */
    n += t_put_str(want + n, info);
    n += t_put(want + n, msb, 8);
    n += t_put(want + n, lsb, 8);
    uint32_t ver = 1u * 31u + 0u;
    uint32_t uuid = t_hash_long(msb) * 31u + t_hash_long(lsb);
    uint32_t h = (ver * 31u + t_hashsum_bytes((const uint8_t *)info, strlen(info))) * 31u + uuid;
    check_encoding(0x00, v, want, n, 0x00u * 31u + h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(registry_matches_spec),
        cmocka_unit_test(lookup_by_id),
        cmocka_unit_test(lookup_by_name),
        cmocka_unit_test(lookup_fields_and_symbols),
        cmocka_unit_test(round_trip_every_packet),
        cmocka_unit_test(register_all_or_nothing),
        cmocka_unit_test(reestablish_reason_enum),
        cmocka_unit_test(available_actions_bitflag),
        cmocka_unit_test(last_packet_id_takes_any_id),
        cmocka_unit_test(connect_failure_arg_count),
        cmocka_unit_test(keep_alive_serverbound_by_hand),
        cmocka_unit_test(connect_failure_by_hand),
        cmocka_unit_test(connect_request_by_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
