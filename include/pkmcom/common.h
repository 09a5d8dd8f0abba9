/* libpkmcom: error codes, pkm_strerror(), the allocator hook and version macros shared by every
 * module. Every fallible function returns 0 (or a count) on success and a negative PKM_E* code. */
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

/* Error codes. 0 is success; every error is negative and has a sentence in pkm_strerror().
 * The numeric values are part of the ABI: new codes are appended, never renumbered. */
typedef enum pkm_error {
    PKM_OK = 0,
    /* generic */
    PKM_EINVAL = -1,    /* invalid argument (NULL where an object is required, bad option) */
    PKM_ENOMEM = -2,    /* allocation failed */
    PKM_ETRUNC = -3,    /* input ends before the value is complete */
    PKM_ENOSPC = -4,    /* the output buffer is too small */
    PKM_ESTATE = -5,    /* the call is not valid in the object's current state */
    PKM_EINTERNAL = -6, /* an internal invariant failed (a bug: please report it) */
    /* APL preconditions and codec */
    PKM_EBOOL = -20,    /* Boolean byte other than 0 or 1 */
    PKM_EENUM = -21,    /* Enum value the schema does not declare */
    PKM_EBITFLAG = -22, /* a reserved Bitflag bit is set */
    PKM_ENAN = -23,     /* Float or Double is NaN */
    PKM_ENANOS = -24,   /* Instant/Duration nanos outside [0, 1e9) */
    PKM_ESECONDS =
        -25, /* Instant/Duration seconds outside (-31556889864401400, 31556889864401400] */
    PKM_ENEGLEN = -26,      /* negative length prefix or packet Size */
    PKM_EMUTF8_NUL = -27,   /* Modified UTF-8 with a raw 0x00 byte */
    PKM_EMUTF8_BYTE = -28,  /* Modified UTF-8 with a byte 0xF0-0xFF */
    PKM_EMUTF8_CONT = -29,  /* Modified UTF-8 with a stray continuation byte */
    PKM_EMUTF8_TRUNC = -30, /* Modified UTF-8 ending inside a multi-byte sequence */
    PKM_EUTF8 = -31,        /* text given by the application is not valid UTF-8 */
    PKM_EJSON = -32,        /* Json field is not valid RFC 8259 JSON */
    PKM_EJSON_NOTOBJ = -33, /* Json field is valid JSON but not one object */
    PKM_ETOOLONG = -34,     /* a String/Array is too long for its length prefix or length field */
    PKM_EARRLEN = -35,      /* an Array's length does not match the field that gives it */
    PKM_ESIZE = -36,        /* packet Size does not match its content, or trailing bytes */
    PKM_EHASH = -37,        /* packet Hash does not match its content */
    PKM_EUNKNOWNID = -38,   /* no schema is registered for the packet id */
    PKM_ETOOBIG = -39,      /* packet Size exceeds the configured maximum */
    PKM_ESCHEMA = -40,      /* the schema itself is malformed */
    PKM_EVERSION = -41,     /* Version major outside 1..256 or minor outside 0..255 */
    PKM_ETYPE = -42,        /* a value does not match its field's type */
    PKM_ERANGE = -43,       /* a number does not fit its field's type */
    /* keys */
    PKM_EKEYLEN = -60,  /* a public key length prefix outside 1..1024 */
    PKM_EKEY = -61,     /* a key that does not parse, is not RSA-2048, or e != 65537 */
    PKM_EKEYPERM = -62, /* a private key file readable by group or others */
    PKM_EKEYFILE = -63, /* a key file cannot be read or written */
    PKM_ECRYPTO = -64,  /* the cryptographic library failed (not caused by the peer) */
    PKM_ERANDOM = -65,  /* the random generator failed */
    /* PkmCom/TCP engine and connections */
    PKM_EHANDSHAKE = -80, /* handshake failed: wrong secret, or not the server you expected */
    PKM_EPIN = -81,       /* the server's key does not match the pinned fingerprint */
    PKM_EPADDING = -82,   /* bad CBC padding in a received packet */
    PKM_EPROTO = -83,     /* the peer broke the protocol (unexpected bytes or packet) */
    PKM_ECLOSED = -84,    /* the connection is closed */
    PKM_EEOF = -85,       /* the peer closed the connection */
    PKM_ETIMEOUT = -86,   /* the operation timed out */
    PKM_EAGAIN = -87,     /* nothing to do now: try again when more bytes arrive */
    PKM_EIO = -88,        /* a socket operation failed (see errno) */
    PKM_ERESOLVE = -89,   /* the host name could not be resolved */
    PKM_ECONNECT = -90,   /* the TCP connection could not be made */
    PKM_EQUEUE = -91,     /* the send queue is full */
    PKM_ECONNRESET = -92, /* the peer reset the connection */
    PKM_EKNOWNHOST = -93, /* the server's key differs from the one recorded in known_hosts */
    PKM_ENOPROOF = -94,   /* client: the server's 0xFF answer is wrong: it did not prove it holds
                             its key, or the secret differs (or it speaks wire profile 1) */
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
