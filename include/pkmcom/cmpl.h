/* SPDX-License-Identifier: MIT */
/* The PokemonSMS Complete Definition's packets (spec/CompleteDefinition.md, [pkmcom.cmpl]) built
 * in: their schemas, names, directions and the names of their enum values and bitflag bits, as a
 * static registry, with lookups by id and by name for tools that build packets from NAME=VALUE. */
#ifndef PKMCOM_CMPL_H
#define PKMCOM_CMPL_H

#include <stdbool.h>
#include "pkmcom/schema.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Ownership and lifetime: everything this header hands out (the registry, packet descriptors,
 * schemas, symbol tables, names) is static const storage inside the library. It is never freed,
 * lives as long as the program, needs no initialisation and may be read by any number of
 * threads at once. Nothing here allocates. The schemas may be given to pkm_registry_register()
 * (or all at once to pkm_cmpl_register()) and to pkm_schema_*() directly.
 *
 * Names: packet names are the spec's headings ("Connect Request", "Keep Alive (Clientbound)"),
 * field names are the spec's table entries verbatim, spelling included ("Num. Args",
 * "Client Packets Recieved"), so pkm_msg_get() with the spec's name works on a decoded message.
 * The lookups below compare names after one normalisation (pkm_cmpl_name_eq): ASCII letters
 * compared case-insensitively, every character that is not an ASCII letter or digit ignored.
 * So "keep-alive-clientbound", "KeepAliveClientbound" and "Keep Alive (Clientbound)" name the
 * same packet, "num_args" and "NumArgs" the field "Num. Args", "game-share" the bit
 * "Game Share". A name is never matched by a prefix ("keep-alive" alone names nothing: there
 * are two Keep Alive packets). */

/* Who sends a packet. PKM_CMPL_BOTH is PKM_CMPL_SERVERBOUND | PKM_CMPL_CLIENTBOUND. */
typedef enum pkm_cmpl_dir {
    PKM_CMPL_SERVERBOUND = 1, /* client -> server */
    PKM_CMPL_CLIENTBOUND = 2, /* server -> client */
    PKM_CMPL_BOTH = 3,        /* either side may send it */
} pkm_cmpl_dir_t;

/* A named value of an ENUM field, or a named bit (value = its mask) of a BITFLAG field. */
typedef struct pkm_cmpl_symbol {
    uint64_t value;
    const char *name;
} pkm_cmpl_symbol_t;

/* The symbols of one field of a packet's schema. */
typedef struct pkm_cmpl_symtab {
    size_t field; /* index into the schema's fields */
    const pkm_cmpl_symbol_t *symbols;
    size_t n_symbols;
} pkm_cmpl_symtab_t;

/* One packet of the Complete Definition. */
typedef struct pkm_cmpl_packet {
    uint8_t id;
    const char *name;   /* the spec's heading, e.g. "Re-establish Secret"; == schema->name */
    const char *anchor; /* the spec's section anchor, e.g. "pkmcom.cmpl.posthandshake.connect" */
    pkm_cmpl_dir_t dir;
    /* The content's schema, or NULL where the spec does not define the payload (0x10 IRC
     * Channel List: the text ends before its table). Such a packet is known by id, name and
     * direction, but its content cannot be verified, so pkm_cmpl_register() leaves its id
     * unregistered (a registry then answers PKM_EUNKNOWNID for it). */
    const pkm_schema_t *schema;
    const pkm_cmpl_symtab_t *symtabs; /* names for its ENUM / BITFLAG fields (may be none) */
    size_t n_symtabs;
} pkm_cmpl_packet_t;

/* The whole definition: packets in ascending id order. */
typedef struct pkm_cmpl_registry {
    const char *spec; /* "pkmcom.cmpl" */
    const pkm_cmpl_packet_t *packets;
    size_t n_packets;
} pkm_cmpl_registry_t;

/* The Complete Definition's registry (static storage, never NULL). */
PKM_API const pkm_cmpl_registry_t *pkm_cmpl_registry(void);

/* The packet with this id, or NULL if the Complete Definition has none. */
PKM_API const pkm_cmpl_packet_t *pkm_cmpl_by_id(uint8_t id);

/* The packet with this name (normalised as above), or NULL (also for NULL). */
PKM_API const pkm_cmpl_packet_t *pkm_cmpl_by_name(const char *name);

/* The packet whose schema is s (e.g. pkm_msg_schema() of a decoded message), or NULL. */
PKM_API const pkm_cmpl_packet_t *pkm_cmpl_by_schema(const pkm_schema_t *s);

/* The direction's name: "serverbound", "clientbound", "both" ("?" for anything else). */
PKM_API const char *pkm_cmpl_dir_name(pkm_cmpl_dir_t dir);

/* true if a and b are the same name after the normalisation above (false if either is NULL).
 * Exposed so that tools match names exactly as the lookups do. */
PKM_API bool pkm_cmpl_name_eq(const char *a, const char *b);

/* The top-level field of ANY schema whose name matches (normalised), or NULL (no such field,
 * or NULL arguments). *index (may be NULL) receives its index: the position of its value in the
 * values given to pkm_schema_encode() and in pkm_msg_fields() / pkm_msg_field(). (schema.h's
 * pkm_msg_get() compares names exactly and needs a decoded message; this needs only the
 * schema.) If several fields match, the first one. */
PKM_API const pkm_field_t *pkm_cmpl_field(const pkm_schema_t *s, const char *name, size_t *index);

/* The symbols of field `field` of packet p (*n receives their count), or NULL with *n = 0 if
 * that field has none. */
PKM_API const pkm_cmpl_symbol_t *pkm_cmpl_symbols(const pkm_cmpl_packet_t *p, size_t field,
                                                  size_t *n);

/* The symbol of field `field` of packet p with this name (normalised), or NULL. */
PKM_API const pkm_cmpl_symbol_t *pkm_cmpl_symbol_by_name(const pkm_cmpl_packet_t *p, size_t field,
                                                         const char *name);

/* The symbol of field `field` of packet p with exactly this value (an enum value, or a bitflag
 * field's single-bit mask), or NULL. */
PKM_API const pkm_cmpl_symbol_t *pkm_cmpl_symbol_by_value(const pkm_cmpl_packet_t *p, size_t field,
                                                          uint64_t value);

/* Registers the schema of every Complete Definition packet that has one into reg (0x10, whose
 * payload is undefined, is left out). All or nothing: if any of those ids already has a schema
 * in reg, nothing is registered and the result is PKM_ESTATE. PKM_EINVAL for NULL. */
PKM_API int pkm_cmpl_register(pkm_registry_t *reg);

/* ---- The ids, and each schema's field indexes (the order of values to encode) ---- */

enum {
    PKM_CMPL_CONNECT_REQUEST = 0x00,
    PKM_CMPL_CONNECT_SUCCESS = 0x01,
    PKM_CMPL_CONNECT_FAILURE = 0x02,
    PKM_CMPL_CHALLENGE_IDENTITY = 0x03,
    PKM_CMPL_CHALLENGE_RESPONSE = 0x04,
    PKM_CMPL_REESTABLISH_SECRET = 0x05,
    PKM_CMPL_KEEP_ALIVE_CLIENTBOUND = 0x06,
    PKM_CMPL_KEEP_ALIVE_SERVERBOUND = 0x07,
    PKM_CMPL_IRC_CHANNEL_LIST = 0x10,
};

/* 0x00 Connect Request: Version, Json, UUID (the NIL UUID when not logged in). */
enum { PKM_CMPL_CONNREQ_VERSION, PKM_CMPL_CONNREQ_TRAINER_INFO, PKM_CMPL_CONNREQ_SENTRY_ACCOUNT };
/* 0x01 Connect Success: Json, Unsigned Int Bitflag (bits 4-7 reserved: must be 0). */
enum { PKM_CMPL_CONNOK_SERVER_INFO, PKM_CMPL_CONNOK_ACTIONS };
/* 0x02 Connect Failure: Json, Byte n, n x Json (the Byte must equal the array's n). */
enum { PKM_CMPL_CONNFAIL_REASON, PKM_CMPL_CONNFAIL_NUM_ARGS, PKM_CMPL_CONNFAIL_ARGS };
/* 0x03 Challenge Identity: String. */
enum { PKM_CMPL_CHALLENGE_AUTHORITY_REQUEST };
/* 0x04 Challenge Response: String, String. */
enum { PKM_CMPL_CHALLREP_SESSION_KEY, PKM_CMPL_CHALLREP_AUTHORIZATION };
/* 0x05 Re-establish Secret: Byte Enum 0..8. */
enum { PKM_CMPL_REESTABLISH_REASON };
/* 0x06 Keep Alive (Clientbound): Long, Unsigned Short, Byte Enum (any packet id), Int, Instant. */
enum {
    PKM_CMPL_KACB_ID,
    PKM_CMPL_KACB_PACKETS_RECEIVED,
    PKM_CMPL_KACB_LAST_ID,
    PKM_CMPL_KACB_LAST_HASH,
    PKM_CMPL_KACB_ENCODING_TIME,
};
/* 0x07 Keep Alive (Serverbound): Long, Instant, Unsigned Short, Byte Enum, Int (the spec's
 * order, which differs from 0x06's). */
enum {
    PKM_CMPL_KASB_ID,
    PKM_CMPL_KASB_ENCODING_TIME,
    PKM_CMPL_KASB_PACKETS_RECEIVED,
    PKM_CMPL_KASB_LAST_ID,
    PKM_CMPL_KASB_LAST_HASH,
};

/* Available Actions bits (0x01 Connect Success) and the bits the spec reserves. */
#define PKM_CMPL_ACT_TRADE      0x01u
#define PKM_CMPL_ACT_BATTLE     0x02u
#define PKM_CMPL_ACT_IRC        0x04u
#define PKM_CMPL_ACT_GAME_SHARE 0x08u
#define PKM_CMPL_ACT_RESERVED   0xF0u

/* Re-establish Secret reasons (0x05); 2..8 are implementation-specified side secrets. */
#define PKM_CMPL_REASON_NORMAL          0
#define PKM_CMPL_REASON_PASSWORD        1
#define PKM_CMPL_REASON_SIDE_SECRET_MIN 2
#define PKM_CMPL_REASON_SIDE_SECRET_MAX 8

/* The Sentry PokemonSMS game id ([pkmcom.cmpl.posthandshake.connect.acc]). */
#define PKM_CMPL_SENTRY_GAME_ID "f008f340-bff6-11e8-a355-529269fb1459"

#ifdef __cplusplus
}
#endif
#endif
