/* SPDX-License-Identifier: MIT */
/* The Complete Definition's packets (spec/CompleteDefinition.md) as static const schemas and
 * descriptors, and the name / id lookups of cmpl.h. No allocation, no state. */
#include <stddef.h>
#include "pkmcom/cmpl.h"
#include "internal.h"

/* Readings taken where the spec's text leaves a choice (also listed in docs/CODEC.md, section 7):
 *
 * 1. Names: packets are named by their section headings ("Connect Failure", although the text
 *    also says "Connection Failed"; the two Keep Alives by their headings' "(Clientbound)" and
 *    "(Serverbound)"), fields by their table entries verbatim, misspellings included
 *    ("Client Packets Recieved"), so that the names match the spec's text.
 * 2. Field order is the table order, which is the wire order: 0x07's fields come in a different
 *    order from 0x06's (Encoding Time second), and the schema keeps it.
 * 3. Available Actions (0x01) is an Unsigned Int Bitflag whose reserved bits are 4-7 (0xF0): a
 *    set reserved bit is a protocol error (WIRE-PROFILE section 1). Bits 8-31 are "unused", not
 *    reserved, and the APL says any bit not reserved may be set, so they are accepted. Bit 0x08
 *    (Game Share) is declared: it is only meaningful on LAN, but the codec does not know where
 *    it runs.
 * 4. Re-establish reason (0x05) is a Byte Enum with the declared values 0..8 (0 normal,
 *    1 password, 2-8 side secrets); 9..255 are undeclared and refused. Whether a client
 *    supports a reason is the application's business, not the codec's.
 * 5. Last Packet Id (0x06, 0x07) is a "Byte Enum" whose values are packet ids. The id space is
 *    open (the spec itself refers to 0x12 IRC Group Info, which it does not define, and the last
 *    packet before a Keep Alive may be an 0xFF packet after a re-establishment), so every Byte
 *    value 0..255 is declared: the field is an Enum for what it means, not to refuse ids this
 *    table does not know. "0 if no packets were received" collides with id 0x00; a reader tells
 *    the two apart by the packet count field being 0.
 * 6. Last Packet Hash / Hashcode (0x06, 0x07) is an Int: the packet Hash's 32-bit pattern read
 *    as two's complement (i64 in -2^31..2^31-1; (int32_t)hash to encode, (uint32_t) to compare).
 * 7. Connect Failure's Args is an Array of Json whose length is the preceding Num. Args Byte
 *    (so at most 255 arguments; the encoder insists that Num. Args equals the array's n).
 * 8. PkmVersion "should be 1.0": not a precondition of the type, so the codec accepts any valid
 *    Version; the server decides what it supports ([pkmcom.cmpl.posthandshake.connect.ver]).
 *    Likewise the Base64 of 0x03/0x04 and the NIL UUID meaning "not logged in" are left to the
 *    application: the types are String and UUID.
 * 9. 0x07 has no "Serverbound" line under its heading; its heading and text ("sent by the
 *    client") make it serverbound.
 * 10. 0x10 IRC Channel List: the text stops before its table, so only its id, name and
 *    direction (Clientbound) are known. It has no schema rather than a guessed one: an empty
 *    schema would refuse every real channel list as PKM_ESIZE.
 */

/* ---- element types ---- */

static const pkm_field_t json_elem = {.type = PKM_T_JSON};

/* ---- 0x00 Connect Request ---- */

static const pkm_field_t connect_request_f[] = {
    {.name = "PkmVersion", .type = PKM_T_VERSION},
    {.name = "TrainerInfo", .type = PKM_T_JSON},
    {.name = "SentryAccount", .type = PKM_T_UUID},
};
static const pkm_schema_t connect_request = {"Connect Request", connect_request_f, 3};

/* ---- 0x01 Connect Success ---- */

static const pkm_field_t connect_success_f[] = {
    {.name = "Server Info", .type = PKM_T_JSON},
    {.name = "Available Actions",
     .type = PKM_T_BITFLAG,
     .base = PKM_T_UINT,
     .reserved_mask = PKM_CMPL_ACT_RESERVED},
};
static const pkm_schema_t connect_success = {"Connect Success", connect_success_f, 2};

static const pkm_cmpl_symbol_t actions_sym[] = {
    {PKM_CMPL_ACT_TRADE, "Trade"},
    {PKM_CMPL_ACT_BATTLE, "Battle"},
    {PKM_CMPL_ACT_IRC, "IRC"},
    {PKM_CMPL_ACT_GAME_SHARE, "Game Share"},
};
static const pkm_cmpl_symtab_t connect_success_sym[] = {
    {PKM_CMPL_CONNOK_ACTIONS, actions_sym, 4},
};

/* ---- 0x02 Connect Failure ---- */

static const pkm_field_t connect_failure_f[] = {
    {.name = "Reason", .type = PKM_T_JSON},
    {.name = "Num. Args", .type = PKM_T_BYTE},
    {.name = "Args",
     .type = PKM_T_ARRAY,
     .elem = &json_elem,
     .len_field = PKM_LEN_FIELD(PKM_CMPL_CONNFAIL_NUM_ARGS)},
};
static const pkm_schema_t connect_failure = {"Connect Failure", connect_failure_f, 3};

/* ---- 0x03 Challenge Identity ---- */

static const pkm_field_t challenge_identity_f[] = {
    {.name = "Authority Request", .type = PKM_T_STRING},
};
static const pkm_schema_t challenge_identity = {"Challenge Identity", challenge_identity_f, 1};

/* ---- 0x04 Challenge Response ---- */

static const pkm_field_t challenge_response_f[] = {
    {.name = "Session Key", .type = PKM_T_STRING},
    {.name = "Authorization", .type = PKM_T_STRING},
};
static const pkm_schema_t challenge_response = {"Challenge Response", challenge_response_f, 2};

/* ---- 0x05 Re-establish Secret ---- */

static const int64_t reasons[] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
static const pkm_field_t reestablish_f[] = {
    {.name = "Reason",
     .type = PKM_T_ENUM,
     .base = PKM_T_BYTE,
     .enum_values = reasons,
     .n_enum_values = sizeof reasons / sizeof reasons[0]},
};
static const pkm_schema_t reestablish = {"Re-establish Secret", reestablish_f, 1};

static const pkm_cmpl_symbol_t reason_sym[] = {
    {0, "Normal"},        {1, "Password"},      {2, "Side Secret 2"},
    {3, "Side Secret 3"}, {4, "Side Secret 4"}, {5, "Side Secret 5"},
    {6, "Side Secret 6"}, {7, "Side Secret 7"}, {8, "Side Secret 8"},
};
static const pkm_cmpl_symtab_t reestablish_sym[] = {
    {PKM_CMPL_REESTABLISH_REASON, reason_sym, sizeof reason_sym / sizeof reason_sym[0]},
};

/* ---- 0x06 / 0x07 Keep Alive ---- */

/* Every packet id (reading 5). */
#define ID4(b)  (b), (b) + 1, (b) + 2, (b) + 3
#define ID16(b) ID4(b), ID4((b) + 4), ID4((b) + 8), ID4((b) + 12)
#define ID64(b) ID16(b), ID16((b) + 16), ID16((b) + 32), ID16((b) + 48)
static const int64_t packet_ids[] = {ID64(0), ID64(64), ID64(128), ID64(192)};
#undef ID4
#undef ID16
#undef ID64
#define LAST_PACKET_ID(fname)                                                                      \
    {                                                                                              \
        .name = (fname), .type = PKM_T_ENUM, .base = PKM_T_BYTE, .enum_values = packet_ids,        \
        .n_enum_values = sizeof packet_ids / sizeof packet_ids[0]                                  \
    }

static const pkm_field_t keep_alive_cb_f[] = {
    {.name = "Keep Alive Id", .type = PKM_T_LONG},
    {.name = "Client Packets Recieved", .type = PKM_T_USHORT},
    LAST_PACKET_ID("Last Packet Id"),
    {.name = "Last Packet Hash", .type = PKM_T_INT},
    {.name = "Encoding Time", .type = PKM_T_INSTANT},
};
static const pkm_schema_t keep_alive_cb = {"Keep Alive (Clientbound)", keep_alive_cb_f, 5};

static const pkm_field_t keep_alive_sb_f[] = {
    {.name = "Keep Alive Id", .type = PKM_T_LONG},
    {.name = "Encoding Time", .type = PKM_T_INSTANT},
    {.name = "Server Packets Recieved", .type = PKM_T_USHORT},
    LAST_PACKET_ID("Last Packet Id"),
    {.name = "Last Packet Hashcode", .type = PKM_T_INT},
};
static const pkm_schema_t keep_alive_sb = {"Keep Alive (Serverbound)", keep_alive_sb_f, 5};
#undef LAST_PACKET_ID

/* ---- the registry ---- */

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const pkm_cmpl_packet_t packets[] = {
    {PKM_CMPL_CONNECT_REQUEST, "Connect Request", "pkmcom.cmpl.posthandshake.connect",
     PKM_CMPL_SERVERBOUND, &connect_request, NULL, 0},
    {PKM_CMPL_CONNECT_SUCCESS, "Connect Success", "pkmcom.cmpl.posthandshake.connsuccess",
     PKM_CMPL_CLIENTBOUND, &connect_success, connect_success_sym, N(connect_success_sym)},
    {PKM_CMPL_CONNECT_FAILURE, "Connect Failure", "pkmcom.cmpl.posthandshake.connfail",
     PKM_CMPL_CLIENTBOUND, &connect_failure, NULL, 0},
    {PKM_CMPL_CHALLENGE_IDENTITY, "Challenge Identity", "pkmcom.cmpl.posthandshake.challengereq",
     PKM_CMPL_CLIENTBOUND, &challenge_identity, NULL, 0},
    {PKM_CMPL_CHALLENGE_RESPONSE, "Challenge Response", "pkmcom.cmpl.posthandshake.challengerep",
     PKM_CMPL_SERVERBOUND, &challenge_response, NULL, 0},
    {PKM_CMPL_REESTABLISH_SECRET, "Re-establish Secret", "pkmcom.cmpl.posthandshake.rehandshake",
     PKM_CMPL_CLIENTBOUND, &reestablish, reestablish_sym, N(reestablish_sym)},
    /* The spec's anchor for 0x06 is "gener", not "general": kept as written. */
    {PKM_CMPL_KEEP_ALIVE_CLIENTBOUND, "Keep Alive (Clientbound)",
     "pkmcom.cmpl.gener.keepalive.client", PKM_CMPL_CLIENTBOUND, &keep_alive_cb, NULL, 0},
    {PKM_CMPL_KEEP_ALIVE_SERVERBOUND, "Keep Alive (Serverbound)",
     "pkmcom.cmpl.general.keepalive.server", PKM_CMPL_SERVERBOUND, &keep_alive_sb, NULL, 0},
    {PKM_CMPL_IRC_CHANNEL_LIST, "IRC Channel List", "pkmcom.cmpl.irc.channels",
     PKM_CMPL_CLIENTBOUND, NULL, NULL, 0},
};

static const pkm_cmpl_registry_t registry = {"pkmcom.cmpl", packets, N(packets)};

const pkm_cmpl_registry_t *pkm_cmpl_registry(void)
{
    return &registry;
}

const pkm_cmpl_packet_t *pkm_cmpl_by_id(uint8_t id)
{
    for (size_t i = 0; i < N(packets); i++)
        if (packets[i].id == id) return &packets[i];
    return NULL;
}

const pkm_cmpl_packet_t *pkm_cmpl_by_schema(const pkm_schema_t *s)
{
    if (!s) return NULL;
    for (size_t i = 0; i < N(packets); i++)
        if (packets[i].schema == s) return &packets[i];
    return NULL;
}

const char *pkm_cmpl_dir_name(pkm_cmpl_dir_t dir)
{
    switch (dir) {
    case PKM_CMPL_SERVERBOUND: return "serverbound";
    case PKM_CMPL_CLIENTBOUND: return "clientbound";
    case PKM_CMPL_BOTH: return "both";
    default: return "?";
    }
}

/* ---- names ---- */

/* Folds an ASCII letter to lower case; 0 for a character the normalisation ignores. Locale-free
 * on purpose (no <ctype.h>): a name means the same in every locale. */
static unsigned char fold(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return (unsigned char)(c - 'A' + 'a');
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return c;
    return 0;
}

bool pkm_cmpl_name_eq(const char *a, const char *b)
{
    if (!a || !b) return false;
    const unsigned char *p = (const unsigned char *)a, *q = (const unsigned char *)b;
    for (;;) {
        while (*p && !fold(*p))
            p++;
        while (*q && !fold(*q))
            q++;
        if (!*p || !*q) return !*p && !*q;
        if (fold(*p) != fold(*q)) return false;
        p++;
        q++;
    }
}

const pkm_cmpl_packet_t *pkm_cmpl_by_name(const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < N(packets); i++)
        if (pkm_cmpl_name_eq(packets[i].name, name)) return &packets[i];
    return NULL;
}

const pkm_field_t *pkm_cmpl_field(const pkm_schema_t *s, const char *name, size_t *index)
{
    if (!s || !name || !s->fields) return NULL;
    for (size_t i = 0; i < s->n_fields; i++) {
        if (s->fields[i].name && pkm_cmpl_name_eq(s->fields[i].name, name)) {
            if (index) *index = i;
            return &s->fields[i];
        }
    }
    return NULL;
}

/* ---- symbols ---- */

const pkm_cmpl_symbol_t *pkm_cmpl_symbols(const pkm_cmpl_packet_t *p, size_t field, size_t *n)
{
    if (n) *n = 0;
    if (!p) return NULL;
    for (size_t i = 0; i < p->n_symtabs; i++) {
        if (p->symtabs[i].field == field) {
            if (n) *n = p->symtabs[i].n_symbols;
            return p->symtabs[i].symbols;
        }
    }
    return NULL;
}

const pkm_cmpl_symbol_t *pkm_cmpl_symbol_by_name(const pkm_cmpl_packet_t *p, size_t field,
                                                 const char *name)
{
    size_t n;
    const pkm_cmpl_symbol_t *sym = pkm_cmpl_symbols(p, field, &n);
    if (!name) return NULL;
    for (size_t i = 0; i < n; i++)
        if (pkm_cmpl_name_eq(sym[i].name, name)) return &sym[i];
    return NULL;
}

const pkm_cmpl_symbol_t *pkm_cmpl_symbol_by_value(const pkm_cmpl_packet_t *p, size_t field,
                                                  uint64_t value)
{
    size_t n;
    const pkm_cmpl_symbol_t *sym = pkm_cmpl_symbols(p, field, &n);
    for (size_t i = 0; i < n; i++)
        if (sym[i].value == value) return &sym[i];
    return NULL;
}

/* ---- into a codec registry ---- */

int pkm_cmpl_register(pkm_registry_t *reg)
{
    PKM_ENSURE(reg != NULL, PKM_EINVAL);
    /* All or nothing: check every id first (pkm_registry_register itself only fails on an id in
     * use, a malformed schema or NULL, and the tables here are validated by the tests). */
    for (size_t i = 0; i < N(packets); i++)
        if (packets[i].schema && pkm_registry_lookup(reg, packets[i].id)) return PKM_ESTATE;
    for (size_t i = 0; i < N(packets); i++) {
        if (!packets[i].schema) continue;
        PKM_GUARD(pkm_schema_validate(packets[i].schema));
    }
    for (size_t i = 0; i < N(packets); i++) {
        if (!packets[i].schema) continue;
        /* Not failing: every failure was checked above. */
        PKM_GUARD(pkm_registry_register(reg, packets[i].id, packets[i].schema));
    }
    return 0;
}
