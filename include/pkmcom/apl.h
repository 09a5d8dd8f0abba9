/* SPDX-License-Identifier: MIT */
/* The PkmCom Abstract Protocol Layout (APL) types: the type tags, the value an application reads
 * and writes, hashcodes, preconditions, Modified UTF-8 conversion and the Json check. */
#ifndef PKMCOM_APL_H
#define PKMCOM_APL_H

#include <stdbool.h>
#include <string.h>
#include "pkmcom/common.h"
#include "pkmcom/packet.h"

#ifdef __cplusplus
extern "C" {
#endif

/* jansson's object type (jansson declares `typedef struct json_t {...} json_t`). Include
 * <jansson.h> yourself to use the json_t a pkm_value_json() call gives you. */
struct json_t;

/* The 21 APL types and Structure. The numbering is stable (part of the ABI). */
typedef enum pkm_type {
    PKM_T_BYTE = 1, /* unsigned 8-bit           value.u64 0..255 */
    PKM_T_SBYTE,    /* signed 8-bit             value.i64 -128..127 */
    PKM_T_SHORT,    /* signed 16-bit            value.i64 */
    PKM_T_USHORT,   /* unsigned 16-bit          value.u64 */
    PKM_T_INT,      /* signed 32-bit            value.i64 */
    PKM_T_UINT,     /* unsigned 32-bit          value.u64 */
    PKM_T_LONG,     /* signed 64-bit            value.i64 */
    PKM_T_FLOAT,    /* IEEE binary32, no NaN    value.f32 */
    PKM_T_DOUBLE,   /* IEEE binary64, no NaN    value.f64 */
    PKM_T_BOOL,     /* 0 or 1                   value.b */
    PKM_T_STRING,   /* u16 length + Modified UTF-8    value.str (standard UTF-8) */
    PKM_T_JSON,     /* a String holding one JSON object value.str */
    PKM_T_LSTRING,  /* Int length (>= 0) + Modified UTF-8 value.str */
    PKM_T_LJSON,    /* a Long String holding one JSON object value.str */
    PKM_T_VERSION,  /* 2 bytes (major-1, minor)  value.version */
    PKM_T_UUID,     /* msb Long, lsb Long        value.uuid */
    PKM_T_INSTANT,  /* seconds Long, nanos Int   value.time */
    PKM_T_DURATION, /* seconds Long, nanos Int   value.time */
    PKM_T_ENUM,     /* an integer type restricted to declared values: value.u64 / value.i64 */
    PKM_T_BITFLAG,  /* an integer (value.u64, the bit pattern) or UUID (value.uuid) bit set */
    PKM_T_ARRAY,    /* n elements: value.array, or value.bytes for a plain Byte Array */
    PKM_T_STRUCT,   /* fields in order: value.structure */
} pkm_type_t;

/* Text: standard UTF-8, explicit length (may contain NUL bytes). In a decoded message the text
 * is also followed by a NUL terminator (not counted in len), for convenience. */
typedef struct pkm_str {
    const char *ptr;
    size_t len;
} pkm_str_t;

/* A Byte Array's content. */
typedef struct pkm_bytes {
    const uint8_t *ptr;
    size_t len;
} pkm_bytes_t;

/* Version: major 1..256, minor 0..255 (anything else is PKM_EVERSION). */
typedef struct pkm_version {
    uint16_t major;
    uint16_t minor;
} pkm_version_t;

typedef struct pkm_uuid {
    uint64_t msb, lsb;
} pkm_uuid_t;

/* Instant (seconds since 1970-01-01T00:00:00Z) or Duration: 0 <= nanos < 1e9 and
 * -31556889864401400 < seconds <= 31556889864401400. */
typedef struct pkm_time {
    int64_t seconds;
    int32_t nanos;
} pkm_time_t;

typedef union pkm_value pkm_value_t;

typedef struct pkm_array {
    const pkm_value_t *items;
    size_t n;
} pkm_array_t;

typedef struct pkm_structure {
    const pkm_value_t *fields;
    size_t n;
} pkm_structure_t;

/* One value. Which member is used depends on the field's type (see pkm_type_t):
 * - unsigned integers (Byte, Unsigned Short, Unsigned Int) and Enums of them: u64;
 *   signed integers (Signed Byte, Short, Int, Long) and Enums of them: i64. A non-negative number
 *   reads the same through either member. Bitflags of an integer: u64, the bit pattern
 *   zero-extended (on encode a signed base also accepts the value sign-extended in i64).
 * - Bitflag of UUID: uuid. Float: f32. Double: f64. Boolean: b.
 * - String, Json, Long String, Long Json: str, standard UTF-8.
 * - Array: array (items[n]); an Array whose element is a plain Byte: bytes instead.
 * - Structure: structure (fields[n], in schema order). */
union pkm_value {
    uint64_t u64;
    int64_t i64;
    float f32;
    double f64;
    bool b;
    pkm_str_t str;
    pkm_bytes_t bytes;
    pkm_version_t version;
    pkm_uuid_t uuid;
    pkm_time_t time;
    pkm_array_t array;
    pkm_structure_t structure;
};

/* Value constructors for tables of values (C99 compound literals). */
#define PKM_V_U(x)              ((pkm_value_t){.u64 = (uint64_t)(x)})
#define PKM_V_I(x)              ((pkm_value_t){.i64 = (int64_t)(x)})
#define PKM_V_F32(x)            ((pkm_value_t){.f32 = (x)})
#define PKM_V_F64(x)            ((pkm_value_t){.f64 = (x)})
#define PKM_V_BOOL(x)           ((pkm_value_t){.b = (x)})
#define PKM_V_STR(lit)          ((pkm_value_t){.str = {(lit), sizeof(lit) - 1}})
#define PKM_V_STRN(p, n)        ((pkm_value_t){.str = {(p), (n)}})
#define PKM_V_BYTES(p, n)       ((pkm_value_t){.bytes = {(p), (n)}})
#define PKM_V_VERSION(maj, min) ((pkm_value_t){.version = {(maj), (min)}})
#define PKM_V_UUID(m, l)        ((pkm_value_t){.uuid = {(m), (l)}})
#define PKM_V_TIME(s, ns)       ((pkm_value_t){.time = {(s), (ns)}})
#define PKM_V_ARRAY(p, n)       ((pkm_value_t){.array = {(p), (n)}})
#define PKM_V_STRUCT(p, n)      ((pkm_value_t){.structure = {(p), (n)}})

/* ---- Hashcodes (WIRE-PROFILE section 1). All arithmetic is unsigned 32-bit and wraps. ---- */

/* One step of hashsum(): the running hash h followed by a value of hashcode x. hashsum() of a
 * list is the fold of this step from h = 0 (0 for no value, hashcode(a) for one). */
static inline uint32_t pkm_hash_step(uint32_t h, uint32_t x)
{
    return h * 31u + x;
}

/* Long (or any 64-bit pattern): high 32 bits XOR low 32 bits. */
static inline uint32_t pkm_hash_long(uint64_t v)
{
    return (uint32_t)(v >> 32) ^ (uint32_t)v;
}

/* Float: its bit pattern as an Unsigned Int. */
static inline uint32_t pkm_hash_float(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Double: its bit pattern as a Long. */
static inline uint32_t pkm_hash_double(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return pkm_hash_long(u);
}

/* Boolean: 1331 for false, 1337 for true. */
static inline uint32_t pkm_hash_bool(bool b)
{
    return b ? 1337u : 1331u;
}

/* Version: hashsum(major, minor) = major*31 + minor (major = first byte + 1). */
static inline uint32_t pkm_hash_version(pkm_version_t v)
{
    return (uint32_t)v.major * 31u + v.minor;
}

/* UUID: hashsum(msb, lsb) as Longs. */
static inline uint32_t pkm_hash_uuid(pkm_uuid_t u)
{
    return pkm_hash_long(u.msb) * 31u + pkm_hash_long(u.lsb);
}

/* Instant / Duration: hashsum(seconds as Long, nanos as Int). */
static inline uint32_t pkm_hash_time(pkm_time_t t)
{
    return pkm_hash_long((uint64_t)t.seconds) * 31u + (uint32_t)t.nanos;
}

/* String / Json / Long String / Long Json: hashsum of its Modified UTF-8 bytes (unsigned), which
 * is pkm_hashsum_bytes() of the wire bytes (without the length prefix). A String given in standard
 * UTF-8 can be hashed with pkm_utf8_hash(). */

/* ---- Preconditions on single values ---- */

/* 0, PKM_ENANOS (nanos outside [0, 1e9)) or PKM_ESECONDS. */
PKM_API int pkm_check_time(pkm_time_t t);
/* 0 or PKM_EVERSION. */
PKM_API int pkm_check_version(pkm_version_t v);
/* 0 or PKM_ENAN (any NaN bit pattern: quiet, signalling, either sign). */
PKM_API int pkm_check_float(float f);
PKM_API int pkm_check_double(double d);

/* ---- Modified UTF-8 (Java DataOutput.writeUTF, without the length) ----
 *
 * Received bytes are checked by the wire rules: 01-7F stand alone; C0-DF start a 2-byte and
 * E0-EF a 3-byte sequence whose other bytes are continuation bytes 80-BF. Errors:
 *   a 00 byte                                              PKM_EMUTF8_NUL
 *   a byte F0-FF (where a character starts)                PKM_EMUTF8_BYTE
 *   a continuation byte where a character starts           PKM_EMUTF8_CONT
 *   a lead byte not followed by all its continuation bytes
 *   (the string ends, or another kind of byte comes)       PKM_EMUTF8_TRUNC
 * As in Java, overlong forms (C0 80 for NUL, C1 81 for 'A') and unpaired surrogates pass the
 * wire check: they are valid Modified UTF-8, and the Hash covers the wire bytes as they are.
 *
 * Converting received Modified UTF-8 to standard UTF-8: each 1-, 2- or 3-byte sequence gives a
 * UTF-16 code unit; a high surrogate followed by a low surrogate becomes one supplementary
 * character (4 UTF-8 bytes); an UNPAIRED surrogate becomes U+FFFD (EF BF BD), because standard
 * UTF-8 cannot carry it; C0 80 becomes a 00 byte. The UTF-8 text is never longer than the
 * Modified UTF-8 it came from.
 *
 * Converting application UTF-8 to Modified UTF-8: the input must be valid standard UTF-8
 * (RFC 3629: no overlong form, no surrogate, nothing above U+10FFFF, no byte C0, C1, F5-FF, no
 * stray or missing continuation byte), else PKM_EUTF8. NUL becomes C0 80; U+0080..U+FFFF keep
 * their 2- or 3-byte form; U+10000..U+10FFFF become a surrogate pair, each surrogate 3 bytes. */

/* Checks received Modified UTF-8. If utf8_len is not NULL it receives the length the text will
 * have in standard UTF-8. Returns 0 or a PKM_EMUTF8_* error. */
PKM_API int pkm_mutf8_check(const uint8_t *m, size_t n, size_t *utf8_len);

/* Checks and converts received Modified UTF-8 into out[cap] (no NUL terminator added); *out_len
 * receives the length written. cap >= n always suffices. PKM_EMUTF8_* or PKM_ENOSPC. */
PKM_API int pkm_mutf8_to_utf8(const uint8_t *m, size_t n, char *out, size_t cap, size_t *out_len);

/* Checks application UTF-8 and gives the length of its Modified UTF-8 form. 0 or PKM_EUTF8. */
PKM_API int pkm_utf8_mutf8_len(const char *s, size_t n, size_t *mutf8_len);

/* Converts application UTF-8 into Modified UTF-8 in out[cap]; *out_len receives the length.
 * PKM_EUTF8 or PKM_ENOSPC. cap >= 2*n always suffices (NUL doubles; nothing grows more). */
PKM_API int pkm_utf8_to_mutf8(const char *s, size_t n, uint8_t *out, size_t cap, size_t *out_len);

/* The APL hashcode of a String given in standard UTF-8: the hashsum of its Modified UTF-8 bytes.
 * PKM_EUTF8 for invalid UTF-8 (then *hash is unchanged). */
PKM_API int pkm_utf8_hash(const char *s, size_t n, uint32_t *hash);

/* ---- Json ----
 * A Json field's text (standard UTF-8) must be exactly one RFC 8259 JSON object with only JSON
 * white space (space, tab, CR, LF) around it. Checked with jansson. Choices and limits:
 * - duplicate member names are ACCEPTED (RFC 8259 allows them; jansson keeps the last one), so a
 *   peer that sends them is not disconnected;
 * - "\u0000" escapes are accepted (RFC 8259 allows them);
 * - an integer too large for int64 is accepted (parsed as a real number);
 * - jansson's own limits still apply: a number beyond the range of a double, a lone surrogate
 *   escape ("\ud800") and nesting deeper than 2048 levels are rejected as PKM_EJSON.
 * Returns 0, PKM_EJSON (not valid JSON, or trailing text) or PKM_EJSON_NOTOBJ (valid JSON, but
 * an array, string, number, true, false or null). */
PKM_API int pkm_json_check(const char *utf8, size_t n);

/* Parses a Json field's text into a new jansson object (*out; the caller owns the reference and
 * releases it with json_decref). Same rules and errors as pkm_json_check(), PKM_ENOMEM too. */
PKM_API int pkm_json_parse(const char *utf8, size_t n, struct json_t **out);

/* The same for a decoded Json / Long Json value (its str member). */
PKM_API int pkm_value_json(const pkm_value_t *v, struct json_t **out);

#ifdef __cplusplus
}
#endif
#endif
