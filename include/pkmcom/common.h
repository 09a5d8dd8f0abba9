/* SPDX-License-Identifier: MIT */
/* libpkmcom: error codes, pkm_strerror(), the allocator hook and version macros shared by every
 * module. Every fallible function returns 0 (or a count) on success and a negative PKM_E* code.
 * Getters given a NULL object all answer "none" the same way: NULL for a value that may be
 * absent (a fingerprint, a failed step), "" for a sentence or an address, -1 for a descriptor,
 * 0 for a port, an id, a count or a flag, PKM_EINVAL for an error code, PKM_STATE_CLOSED for a
 * state. */
#ifndef PKMCOM_COMMON_H
#define PKMCOM_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(PKM_BUILDING_LIBRARY) && defined(__GNUC__)
#define PKM_API __attribute__((visibility("default")))
#else
#define PKM_API
#endif

#define PKM_VERSION_MAJOR  0
#define PKM_VERSION_MINOR  1
#define PKM_VERSION_PATCH  0
#define PKM_VERSION_STRING "0.1.0"

/* Error codes: ONE table, X(name, value, sentence), from which the enum below and src/error.c's
 * pkm_errname()/pkm_strerror() are generated. 0 is success; every error is negative. The numeric
 * values are part of the ABI: new codes are appended, never renumbered, and a code that falls out
 * of use stays (documented as reserved). The sentence is what pkm_strerror() returns. */
#define PKM_ERROR_TABLE(X)                                                                         \
    X(PKM_OK, 0, "success")                                                                        \
    /* generic */                                                                                  \
    /* invalid argument (NULL where an object is required, bad option) */                          \
    X(PKM_EINVAL, -1, "invalid argument")                                                          \
    /* allocation failed */                                                                        \
    X(PKM_ENOMEM, -2, "out of memory")                                                             \
    /* input ends before the value is complete */                                                  \
    X(PKM_ETRUNC, -3, "input ends before the value is complete")                                   \
    /* the output buffer is too small */                                                           \
    X(PKM_ENOSPC, -4, "output buffer too small")                                                   \
    /* the call is not valid in the object's current state */                                      \
    X(PKM_ESTATE, -5, "operation not valid in the current state")                                  \
    /* an internal invariant failed (a bug: please report it) */                                   \
    X(PKM_EINTERNAL, -6, "internal error in libpkmcom (a bug: please report it)")                  \
    /* APL preconditions and codec */                                                              \
    /* Boolean byte other than 0 or 1 */                                                           \
    X(PKM_EBOOL, -20, "Boolean field is neither 0 nor 1")                                          \
    /* Enum value the schema does not declare */                                                   \
    X(PKM_EENUM, -21, "Enum field holds a value its schema does not declare")                      \
    /* a reserved Bitflag bit is set */                                                            \
    X(PKM_EBITFLAG, -22, "Bitflag field has a reserved bit set")                                   \
    /* Float or Double is NaN */                                                                   \
    X(PKM_ENAN, -23, "Float or Double field is NaN")                                               \
    /* Instant/Duration nanos outside [0, 1e9) */                                                  \
    X(PKM_ENANOS, -24, "Instant or Duration nanos outside 0..999999999")                           \
    /* Instant/Duration seconds outside (-31556889864401400, 31556889864401400] */                 \
    X(PKM_ESECONDS, -25,                                                                           \
      "Instant or Duration seconds outside (-31556889864401400, 31556889864401400]")               \
    /* negative length prefix or packet Size */                                                    \
    X(PKM_ENEGLEN, -26, "negative length or packet Size")                                          \
    /* Modified UTF-8 with a raw 0x00 byte */                                                      \
    X(PKM_EMUTF8_NUL, -27, "Modified UTF-8 string contains a raw NUL byte")                        \
    /* Modified UTF-8 with a byte 0xF0-0xFF */                                                     \
    X(PKM_EMUTF8_BYTE, -28, "Modified UTF-8 string contains a byte 0xF0-0xFF")                     \
    /* Modified UTF-8 with a stray continuation byte */                                            \
    X(PKM_EMUTF8_CONT, -29, "Modified UTF-8 string has a continuation byte without a lead byte")   \
    /* Modified UTF-8 ending inside a multi-byte sequence */                                       \
    X(PKM_EMUTF8_TRUNC, -30, "Modified UTF-8 string ends inside a multi-byte character")           \
    /* text given by the application is not valid UTF-8 */                                         \
    X(PKM_EUTF8, -31, "text is not valid UTF-8")                                                   \
    /* Json field is not valid RFC 8259 JSON */                                                    \
    X(PKM_EJSON, -32, "Json field is not valid JSON")                                              \
    /* Json field is valid JSON but not one object */                                              \
    X(PKM_EJSON_NOTOBJ, -33, "Json field is not a single JSON object")                             \
    /* a String/Array is too long for its length prefix or length field */                         \
    X(PKM_ETOOLONG, -34, "string or array too long for its length prefix or length field")         \
    /* an Array's length does not match the field that gives it */                                 \
    X(PKM_EARRLEN, -35, "array length does not match the field that gives it")                     \
    /* packet Size does not match its content, or trailing bytes */                                \
    X(PKM_ESIZE, -36, "packet Size does not match its content")                                    \
    /* packet Hash does not match its content */                                                   \
    X(PKM_EHASH, -37, "packet Hash does not match its content")                                    \
    /* no schema is registered for the packet id */                                                \
    X(PKM_EUNKNOWNID, -38, "no schema registered for this packet id")                              \
    /* packet Size exceeds the configured maximum */                                               \
    X(PKM_ETOOBIG, -39, "packet Size exceeds the configured maximum")                              \
    /* the schema itself is malformed */                                                           \
    X(PKM_ESCHEMA, -40, "malformed packet schema")                                                 \
    /* Version major outside 1..256 or minor outside 0..255 */                                     \
    X(PKM_EVERSION, -41, "Version out of range (major 1..256, minor 0..255)")                      \
    /* a value does not match its field's type */                                                  \
    X(PKM_ETYPE, -42, "value does not match the field type")                                       \
    /* a number does not fit its field's type */                                                   \
    X(PKM_ERANGE, -43, "number out of range for the field type")                                   \
    /* keys */                                                                                     \
    /* a public key length prefix outside 1..1024 */                                               \
    X(PKM_EKEYLEN, -60, "public key length outside 1..1024 bytes")                                 \
    /* a key that does not parse, is not RSA-2048, or e != 65537 */                                \
    X(PKM_EKEY, -61,                                                                               \
      "not an RSA-2048 key with public exponent 65537 (in canonical DER, for a received key)")     \
    /* a private key file readable by group or others */                                           \
    X(PKM_EKEYPERM, -62, "private key file is readable by group or others (chmod 600 it)")         \
    /* a key file cannot be read or written */                                                     \
    X(PKM_EKEYFILE, -63, "key file cannot be read or written")                                     \
    /* the cryptographic library failed (not caused by the peer) */                                \
    X(PKM_ECRYPTO, -64, "cryptographic library failure")                                           \
    /* the random generator failed */                                                              \
    X(PKM_ERANDOM, -65, "random number generator failure")                                         \
    /* PkmCom/TCP engine and connections */                                                        \
    /* handshake failed: wrong secret, or not the server you expected */                           \
    X(PKM_EHANDSHAKE, -80, "handshake failed: wrong secret, or not the server you expected")       \
    /* the server's key does not match the pinned fingerprint */                                   \
    X(PKM_EPIN, -81, "server key does not match the pinned fingerprint")                           \
    /* bad CBC padding in a received packet */                                                     \
    X(PKM_EPADDING, -82, "bad padding in an encrypted packet")                                     \
    /* the peer broke the protocol (unexpected bytes or packet) */                                 \
    X(PKM_EPROTO, -83, "protocol violation by the peer")                                           \
    /* the connection is closed */                                                                 \
    X(PKM_ECLOSED, -84, "connection is closed")                                                    \
    /* the peer closed the connection */                                                           \
    X(PKM_EEOF, -85, "connection closed by the peer")                                              \
    /* the operation timed out */                                                                  \
    X(PKM_ETIMEOUT, -86, "operation timed out")                                                    \
    /* nothing to do now: try again when more bytes arrive */                                      \
    X(PKM_EAGAIN, -87, "no data yet: try again later")                                             \
    /* a socket operation failed (see errno) */                                                    \
    X(PKM_EIO, -88, "socket I/O error")                                                            \
    /* the host name could not be resolved */                                                      \
    X(PKM_ERESOLVE, -89, "host name could not be resolved")                                        \
    /* the TCP connection could not be made */                                                     \
    X(PKM_ECONNECT, -90, "could not connect to the server")                                        \
    /* the send queue is full */                                                                   \
    X(PKM_EQUEUE, -91, "send queue is full")                                                       \
    /* the peer reset the connection */                                                            \
    X(PKM_ECONNRESET, -92, "connection reset by the peer")                                         \
    /* reserved: nothing in the library returns it (the value stays so that no code is             \
     * renumbered); a trust check that keeps known_hosts may. */                                   \
    X(PKM_EKNOWNHOST, -93,                                                                         \
      "server key differs from the one recorded in known_hosts: possible impersonation")           \
    /* client: the server's 0xFF answer is wrong: it did not prove it holds its key, or the secret \
     * differs (or it speaks wire profile 1) */                                                    \
    X(PKM_ENOPROOF, -94,                                                                           \
      "the server could not prove it holds its key (the pinned one, if pinned), or the secret "    \
      "differs: an impostor, a wrong secret, or a server that speaks only wire profile 1")

typedef enum pkm_error {
#define PKM_ERROR_ENUM_(name, value, sentence) name = value,
    PKM_ERROR_TABLE(PKM_ERROR_ENUM_)
#undef PKM_ERROR_ENUM_
} pkm_error_t;

/* A sentence describing an error code, for users. Never NULL; static storage. */
PKM_API const char *pkm_strerror(int err);

/* The symbolic name of an error code ("PKM_EHASH"), for logs and tests. Never NULL. */
PKM_API const char *pkm_errname(int err);

/* Allocator hook. Every allocation the library makes itself goes through these three functions
 * (OpenSSL's, jansson's and libuv's own allocations do not). It is process-wide: set it before
 * other threads use the library. Memory allocated through one hook may be freed through a later
 * one, so the hooks must share one heap: the intended use is a wrapper around malloc that counts,
 * logs or fails on purpose (fault injection). NULL for all three restores malloc/realloc/free;
 * a mix of NULL and non-NULL is PKM_EINVAL. */
typedef void *(*pkm_malloc_fn)(size_t size);
typedef void *(*pkm_realloc_fn)(void *ptr, size_t size);
typedef void (*pkm_free_fn)(void *ptr);
PKM_API int pkm_set_allocator(pkm_malloc_fn m, pkm_realloc_fn r, pkm_free_fn f);
/* Allocation through the hook installed now (malloc/realloc/free by default), for libraries built
 * on libpkmcom (libpkmcom-server allocates through these): a size of 0 allocates a unique
 * pointer, not NULL; pkm_calloc() refuses (NULL) a count * size that overflows; pkm_realloc() is
 * realloc's contract (NULL on failure, ptr left valid); pkm_free(NULL) does nothing. Memory from
 * these must be released with pkm_free(). */
PKM_API void *pkm_malloc(size_t size);
PKM_API void *pkm_calloc(size_t count, size_t size);
PKM_API void *pkm_realloc(void *ptr, size_t size);
PKM_API void pkm_free(void *ptr);

/* The library's version string, "0.1.0". */
PKM_API const char *pkm_version(void);

#ifdef __cplusplus
}
#endif
#endif
