/* SPDX-License-Identifier: MIT */
/* Packet schemas: static tables that describe a packet's content field by field, the generic
 * encoder / decoder / verifier built on them, decoded messages, and the id -> schema registry. */
#ifndef PKMCOM_SCHEMA_H
#define PKMCOM_SCHEMA_H

#include "pkmcom/apl.h"
#include "pkmcom/packet.h"

#ifdef __cplusplus
extern "C" {
#endif

struct pkm_schema;

/* One field of a structure (or the element of an array). Meant for static const tables with C99
 * designated initializers; members a type does not use stay zero.
 *
 *   static const int64_t kinds[] = {0, 1, 2};
 *   static const pkm_field_t byte_elem = {.type = PKM_T_BYTE};
 *   static const pkm_field_t fields[] = {
 *       {.name = "kind", .type = PKM_T_ENUM, .base = PKM_T_BYTE,
 *        .enum_values = kinds, .n_enum_values = 3},
 *       {.name = "flags", .type = PKM_T_BITFLAG, .base = PKM_T_UINT, .reserved_mask = 0xFF000000},
 *       {.name = "count", .type = PKM_T_USHORT},
 *       {.name = "data", .type = PKM_T_ARRAY, .elem = &byte_elem, .len_field = PKM_LEN_FIELD(2)},
 *       {.name = "digest", .type = PKM_T_ARRAY, .elem = &byte_elem, .fixed_len = 32},
 *   };
 *   static const pkm_schema_t example = {"Example", fields, 5};
 */
typedef struct pkm_field {
    const char *name; /* for diagnostics and pkm_msg_get(); may be NULL */
    pkm_type_t type;
    /* ENUM: the integer type (BYTE..LONG). BITFLAG: the integer type or UUID. */
    pkm_type_t base;
    /* ENUM: the declared values (at least one, each within the base type's range). */
    const int64_t *enum_values;
    size_t n_enum_values;
    /* BITFLAG: the reserved bits, which must be 0. For a UUID base, reserved_mask applies to the
     * most significant half (msb) and reserved_mask_lo to the least significant half (lsb). */
    uint64_t reserved_mask;
    uint64_t reserved_mask_lo;
    /* ARRAY: the element (any type, STRUCT included; its name is not used). */
    const struct pkm_field *elem;
    /* ARRAY: the element count is the constant fixed_len when len_field is 0, otherwise the value
     * of an EARLIER integer field of the same structure: len_field = PKM_LEN_FIELD(its index).
     * (Encoded this way so that a zero-initialised member means "fixed length".) */
    uint32_t fixed_len;
    uint32_t len_field;
    /* STRUCT: the structure's own schema. */
    const struct pkm_schema *sub;
} pkm_field_t;

#define PKM_LEN_FIELD(index) ((uint32_t)(index) + 1u)

/* Limits a valid schema keeps (pkm_schema_validate): nesting depth (a structure inside a
 * structure or array counts one level), and a length field must be one of the first
 * PKM_SCHEMA_MAX_LEN_INDEX fields of its structure (so that the verifier needs no memory). */
#define PKM_SCHEMA_MAX_DEPTH     32
#define PKM_SCHEMA_MAX_LEN_INDEX 64

/* A structure: a packet's content, or a STRUCT field's type. */
typedef struct pkm_schema {
    const char *name;
    const pkm_field_t *fields;
    size_t n_fields;
} pkm_schema_t;

/* Checks a schema: known types, ENUM with at least one value in range of its integer base,
 * BITFLAG masks within the base's width, ARRAY with an element and a len_field that names an
 * earlier plain integer field among the first PKM_SCHEMA_MAX_LEN_INDEX, no element that can encode
 * to zero bytes, STRUCT with a schema, depth <= PKM_SCHEMA_MAX_DEPTH (so no cycle).
 * Returns 0 or PKM_ESCHEMA (PKM_EINVAL for NULL). The registry validates on registration; the
 * functions below that take a schema directly expect one that passed this check (they still fail
 * safely, with PKM_ESCHEMA, on the faults they meet). */
PKM_API int pkm_schema_validate(const pkm_schema_t *s);

/* ---- Encoding: values -> content bytes, into caller memory, no allocation ----
 * `fields` holds one value per schema field (n must equal s->n_fields, else PKM_ETYPE), read as
 * pkm_value_t says for each type. Every precondition is checked, so a packet that would be
 * rejected by its receiver is never produced: PKM_ERANGE (integer outside its type), PKM_EBOOL,
 * PKM_EENUM, PKM_EBITFLAG, PKM_ENAN, PKM_ENANOS, PKM_ESECONDS, PKM_EVERSION, PKM_EUTF8 (text not
 * UTF-8), PKM_EJSON / PKM_EJSON_NOTOBJ, PKM_ETOOLONG (String over 65535 Modified UTF-8 bytes, Long
 * String / array / content over INT32_MAX), PKM_EARRLEN (array n differs from its fixed length
 * or its length field), PKM_ETYPE (struct value with the wrong field count), PKM_ENOSPC. */

/* The encoded content size of the values (everything is checked except Json syntax). */
PKM_API int pkm_schema_size(const pkm_schema_t *s, const pkm_value_t *fields, size_t n,
                            size_t *size);

/* Encodes the content into out[cap]. *len receives its size; *content_hash (may be NULL) its
 * hashcode (the packet Hash is pkm_packet_hash(id, *content_hash)). */
PKM_API int pkm_schema_encode(const pkm_schema_t *s, const pkm_value_t *fields, size_t n,
                              uint8_t *out, size_t cap, size_t *len, uint32_t *content_hash);

/* The same into a new buffer of exactly *len bytes (*out; free it with pkm_bytes_free()). */
PKM_API int pkm_schema_encode_alloc(const pkm_schema_t *s, const pkm_value_t *fields, size_t n,
                                    uint8_t **out, size_t *len, uint32_t *content_hash);

/* Encodes a complete packet (9-byte header + content) for `id` into out[cap]; *len receives
 * PKM_HEADER_SIZE + content size. */
PKM_API int pkm_schema_encode_packet(const pkm_schema_t *s, uint8_t id, const pkm_value_t *fields,
                                     size_t n, uint8_t *out, size_t cap, size_t *len);

/* ---- Decoding ---- */

/* Checks a received packet against a schema without allocating: the content must decode exactly
 * (PKM_ETRUNC if it ends early, PKM_ESIZE if bytes remain), every precondition must hold (the
 * error of the first violation), array lengths from fields must be >= 0 (PKM_ENEGLEN) and fit
 * the remaining content (PKM_ETRUNC), and pkt->hash must equal pkm_packet_hash(pkt->id, content
 * hashcode) (PKM_EHASH). pkt->id is only used for the Hash. */
PKM_API int pkm_schema_verify(const pkm_schema_t *s, const pkm_packet_t *pkt);

/* A decoded message: the values of one packet, owning everything they point to (text, bytes,
 * nested arrays and structures) in a single allocation. Immutable; freed by pkm_msg_free(). */
typedef struct pkm_msg pkm_msg_t;

/* Verifies (as pkm_schema_verify) then decodes, with exactly one allocation. On success *out is
 * a new message the caller frees with pkm_msg_free(); it does not point into pkt->content (which
 * may be released at once) but it borrows `s`, which must outlive it. On failure *out is NULL. */
PKM_API int pkm_schema_decode(const pkm_schema_t *s, const pkm_packet_t *pkt, pkm_msg_t **out);

/* Frees a message (NULL is fine). Every pointer obtained from it becomes invalid. */
PKM_API void pkm_msg_free(pkm_msg_t *m);

PKM_API uint8_t pkm_msg_id(const pkm_msg_t *m);
PKM_API const pkm_schema_t *pkm_msg_schema(const pkm_msg_t *m);
/* The content's values, one per schema field (*n receives the count). */
PKM_API const pkm_value_t *pkm_msg_fields(const pkm_msg_t *m, size_t *n);
/* The value of field i, or NULL if i is out of range. */
PKM_API const pkm_value_t *pkm_msg_field(const pkm_msg_t *m, size_t i);
/* The value of the top-level field with this name, or NULL. */
PKM_API const pkm_value_t *pkm_msg_get(const pkm_msg_t *m, const char *name);

/* ---- Registry: packet id -> schema ----
 * Ids 0x00..0xFE are the application's; 0xFF is the built-in handshake packet (one Unsigned Int
 * Enum field whose only value is 0x504B4D00) and cannot be registered or replaced. Schemas are
 * borrowed: they must outlive the registry (static tables do). Register everything before
 * sharing the registry: after that it is read-only, and any number of threads may use it. */
typedef struct pkm_registry pkm_registry_t;

/* The built-in 0xFF handshake schema (static storage). */
PKM_API const pkm_schema_t *pkm_handshake_schema(void);

/* A new registry knowing only 0xFF. NULL if out of memory. Free with pkm_registry_free(). */
PKM_API pkm_registry_t *pkm_registry_new(void);
PKM_API void pkm_registry_free(pkm_registry_t *reg);

/* A registry made from a table in one call: pkm_registry_new(), then pkm_registry_register() of
 * each entry in order. *out (the caller's, pkm_registry_free) is NULL on failure: PKM_ENOMEM, or
 * the first registration's error (PKM_EINVAL, PKM_ESTATE, PKM_ESCHEMA). E.g.
 *   static const pkm_registry_entry_t packets[] = {{0x10, &say}, {0x11, &said}};
 *   pkm_registry_t *reg; rc = pkm_registry_new_from(packets, 2, &reg); */
typedef struct pkm_registry_entry {
    uint8_t id;
    const pkm_schema_t *schema; /* borrowed, as for pkm_registry_register */
} pkm_registry_entry_t;
PKM_API int pkm_registry_new_from(const pkm_registry_entry_t *entries, size_t n,
                                  pkm_registry_t **out);

/* Registers s for id after pkm_schema_validate(). PKM_EINVAL for id 0xFF or NULL arguments,
 * PKM_ESTATE if the id already has a schema, PKM_ESCHEMA for a malformed schema. */
PKM_API int pkm_registry_register(pkm_registry_t *reg, uint8_t id, const pkm_schema_t *s);

/* The schema for id, or NULL. */
PKM_API const pkm_schema_t *pkm_registry_lookup(const pkm_registry_t *reg, uint8_t id);

/* pkm_schema_verify() with the schema registered for pkt->id: 0, PKM_EUNKNOWNID for an id with
 * no schema, or the size / hash / precondition error. Allocates nothing. */
PKM_API int pkm_registry_verify(const pkm_registry_t *reg, const pkm_packet_t *pkt);

/* pkm_schema_decode() with the schema registered for pkt->id (PKM_EUNKNOWNID otherwise). */
PKM_API int pkm_registry_decode(const pkm_registry_t *reg, const pkm_packet_t *pkt,
                                pkm_msg_t **out);

/* pkm_schema_encode_packet() with the schema registered for id: a complete packet in out[cap]. */
PKM_API int pkm_registry_encode(const pkm_registry_t *reg, uint8_t id, const pkm_value_t *fields,
                                size_t n, uint8_t *out, size_t cap, size_t *len);

/* The same into a new buffer of exactly *len bytes (*out; free it with pkm_bytes_free()). */
PKM_API int pkm_registry_encode_alloc(const pkm_registry_t *reg, uint8_t id,
                                      const pkm_value_t *fields, size_t n, uint8_t **out,
                                      size_t *len);

/* Content plus Hash in one call, for the raw send paths (pkm_conn_send, pkm_server_send,
 * pkm_engine_queue_packet) that take the Id, the Hash and the content apart: encodes the content
 * of packet `id` with the schema registered for it into out[cap] (*len its size) and sets *hash
 * to the packet's Hash, pkm_packet_hash(id, content hashcode). Errors as pkm_schema_encode(),
 * PKM_EUNKNOWNID for an id with no schema, PKM_EINVAL for NULL arguments. */
PKM_API int pkm_registry_encode_content(const pkm_registry_t *reg, uint8_t id,
                                        const pkm_value_t *fields, size_t n, uint8_t *out,
                                        size_t cap, size_t *len, uint32_t *hash);

/* The same into a new buffer of exactly *len bytes (*out, NULL on failure; free it with
 * pkm_bytes_free()). */
PKM_API int pkm_registry_encode_content_alloc(const pkm_registry_t *reg, uint8_t id,
                                              const pkm_value_t *fields, size_t n, uint8_t **out,
                                              size_t *len, uint32_t *hash);

/* pkm_registry_verify() with the signature of the engine's verify hook (engine.h,
 * pkm_engine_config_t.verify): set cfg.verify = pkm_registry_verify_hook and cfg.verify_ctx =
 * the registry (a const pkm_registry_t *, BORROWED: it must outlive every connection using it).
 * Safe from any thread once registration is over. */
PKM_API int pkm_registry_verify_hook(void *ctx, const pkm_packet_t *pkt);

/* What the last failed encode, verify or decode of this header (pkm_schema_* and pkm_registry_*,
 * so also pkm_conn_send_msg / pkm_conn_recv_msg, pkm_server_send_msg, the verify hook) met, and
 * where: the packet id (when known), the schema's name, the field's path (nested fields joined
 * by '.', array elements as [j]) and the byte offset in the content at which that value begins,
 * then pkm_strerror()'s sentence and a note, e.g. "packet 0x12 (ChatMessage) field 'text' at
 * offset 5: Modified UTF-8 string contains a byte 0xF0-0xFF" or "packet 0x12 (ChatMessage):
 * packet Hash does not match its content (the packet says 0x..., its content gives 0x...)".
 * "" after a success. Thread rules: the record is per thread (thread-local), so a registry
 * shared by many threads is fine: call this on the thread that made the failing call, before
 * its next call of this header (the server's verify hook runs on the loop thread: call it from
 * on_close). Static per-thread storage, valid until that next call. */
PKM_API const char *pkm_schema_last_error(void);

/* Frees memory the library allocated for bytes it gave you (NULL is fine). */
PKM_API void pkm_bytes_free(uint8_t *p);

#ifdef __cplusplus
}
#endif
#endif
