/* SPDX-License-Identifier: MIT */
/* The key log (docs/PROTOCOL.md "Key log"): the PKMCOM_KEYS_V2 line format, a parsed key log,
 * and a decoder that follows one direction of a captured PkmCom/TCP stream with it. */
#ifndef PKMCOM_KEYLOG_H
#define PKMCOM_KEYLOG_H

#include "pkmcom/common.h"
#include "pkmcom/packet.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * WARNING: a key log holds the keys of the sessions it lists. Anyone who holds the file (or the
 * lines a key-log callback receives) and a capture of a session can read and forge that
 * session's traffic. Use it for debugging only; never on a production server.
 *
 * One line per completed handshake and per completed re-establishment:
 *   PKMCOM_KEYS_V2 <client_iv> <k_cs> <k_sc> <iv>\n
 * lowercase hex of 16, 32, 32 and 16 bytes: the IV the client sent in the clear at the end of its
 * KeyShare (the lookup key every capture shows), the direction keys K_cs and K_sc, and the
 * combined IV (the server's KeyShare IV is iv XOR client_iv). Readers ignore blank lines, lines
 * starting with '#' and lines with another first word.
 */

#define PKM_KEYLOG_LABEL "PKMCOM_KEYS_V2"
/* A formatted line: label, 4 spaces, 192 hex digits, '\n', NUL. */
#define PKM_KEYLOG_LINE_SIZE (sizeof PKM_KEYLOG_LABEL - 1 + 4 + 2 * (16 + 32 + 32 + 16) + 2)
/* The environment variable naming the file the library appends key-log lines to. */
#define PKM_KEYLOG_ENV "PKMCOM_KEYLOGFILE"

typedef struct pkm_keylog_entry {
    uint8_t client_iv[16];
    uint8_t k_cs[32];
    uint8_t k_sc[32];
    uint8_t iv[16];
} pkm_keylog_entry_t;

/* Writes the line for *e, with its '\n' and a terminating NUL, into out. */
PKM_API void pkm_keylog_format(const pkm_keylog_entry_t *e, char out[PKM_KEYLOG_LINE_SIZE]);

/* Parses one line (len bytes, a trailing "\n" or "\r\n" allowed). Returns 1 with *out filled,
 * 0 for a line to ignore (blank, '#' comment, another label), PKM_EINVAL for a PKMCOM_KEYS_V2
 * line that is malformed (*out is then wiped). Hex digits may be upper or lower case. */
PKM_API int pkm_keylog_parse_line(const char *line, size_t len, pkm_keylog_entry_t *out);

/* A parsed key log: the entries of a text, in order. */
typedef struct pkm_keylog pkm_keylog_t;

/* Parses a whole text (lines as above). Malformed PKMCOM_KEYS_V2 lines are skipped and counted
 * in *bad (may be NULL). *out is the caller's: pkm_keylog_free(). PKM_EINVAL, PKM_ENOMEM. */
PKM_API int pkm_keylog_parse(const char *text, size_t len, pkm_keylog_t **out, size_t *bad);

/* Reads and parses the file at path. PKM_EKEYFILE if it cannot be read; else as parse. */
PKM_API int pkm_keylog_load(const char *path, pkm_keylog_t **out, size_t *bad);

/* Frees (and wipes) a key log. NULL is allowed. */
PKM_API void pkm_keylog_free(pkm_keylog_t *kl);

PKM_API size_t pkm_keylog_count(const pkm_keylog_t *kl);
/* Entry i (borrowed, valid until pkm_keylog_free), or NULL when i is out of range. */
PKM_API const pkm_keylog_entry_t *pkm_keylog_get(const pkm_keylog_t *kl, size_t i);

/* The entry whose client_iv is this one (PKM_DIR_C2S) or whose server IV (iv XOR client_iv) is
 * this one (PKM_DIR_S2C); NULL if none. */
enum pkm_dir { PKM_DIR_C2S = 1, PKM_DIR_S2C = 2 };
PKM_API const pkm_keylog_entry_t *pkm_keylog_find(const pkm_keylog_t *kl, int dir,
                                                  const uint8_t keyshare_iv[16]);

/* ---- following one direction of a captured stream ----
 *
 * A decoder takes the bytes one side sent, in order, one unit at a time: first the ServerKey or
 * ClientKey, then the KeyShare, then encrypted records. A KeyShare whose IV matches a key-log
 * entry gives the keys for the records that follow it; a KeyShare met later between records (a
 * re-establishment) is recognised by its IV matching an entry, and switches to that entry's
 * keys. Without a matching entry, the rest of the direction is opaque ciphertext (the record
 * boundaries are encrypted too). The decoder only reads: it does no I/O and checks no Hash.
 * Between records, fewer than 528 bytes whose first block decrypts to a header with a Size over
 * the limit are taken as the start of a KeyShare (more bytes are asked for); a KeyShare whose
 * first block happens to decrypt to a small plausible header (about 1 in 10^7) and that arrives
 * in pieces shorter than that record would be misread. */

enum pkm_unit_kind {
    PKM_UNIT_KEY = 1,      /* ServerKey / ClientKey: Int n, then n bytes of DER */
    PKM_UNIT_KEYSHARE = 2, /* two 256-byte RSA ciphertexts, then the 16-byte IV */
    PKM_UNIT_RECORD = 3,   /* one decrypted packet (the 0xFF confirmation included) */
    PKM_UNIT_OPAQUE = 4,   /* ciphertext that cannot be decrypted (no key, or lost track) */
};

typedef struct pkm_unit {
    int kind;
    size_t len; /* stream bytes the unit spans */
    /* KEYSHARE: the entry its IV matched (borrowed from the key log), or NULL; rekey is 1 for a
     * KeyShare met between records (a re-establishment), 0 for the first one. */
    const pkm_keylog_entry_t *entry;
    int rekey;
    /* RECORD: the packet (content points into the caller's plaintext buffer), the padding length
     * (1..16) and whether it is valid PKCS#7; err is 0, or PKM_EPADDING / PKM_ETOOBIG /
     * PKM_ENEGLEN (a header whose Size is negative or over the limit: the unit is then the first
     * block only, and the rest of the direction becomes opaque). */
    pkm_packet_t pkt;
    size_t pad_len;
    int err;
    /* OPAQUE: why: PKM_EHANDSHAKE (no key-log entry matched the KeyShare), or the record error
     * that lost track. */
} pkm_unit_t;

typedef struct pkm_streamdec pkm_streamdec_t;

/* A decoder for direction dir (PKM_DIR_C2S: what the client sent) using key log kl (borrowed:
 * it must outlive the decoder; may be NULL: then nothing is decrypted). max_size: the largest
 * Size taken as a record (0: PKM_DEFAULT_MAX_SIZE). *out: pkm_streamdec_free(). */
PKM_API int pkm_streamdec_new(const pkm_keylog_t *kl, int dir, size_t max_size,
                              pkm_streamdec_t **out);
PKM_API void pkm_streamdec_free(pkm_streamdec_t *d);

/* Makes the decoder look up the KeyShares it meets from now on in kl (e.g. the key log read again
 * during a live capture: lines appended since). The entry already in use stays borrowed from the
 * previous key log, which must therefore stay alive as long as the decoder. */
PKM_API void pkm_streamdec_set_keylog(pkm_streamdec_t *d, const pkm_keylog_t *kl);

/* How many bytes the next unit spans, given the avail bytes at p that follow the last unit
 * taken. Returns > 0: the unit's length (it may exceed avail: wait for that many); 0: not enough
 * bytes to tell, *need (never NULL) receives how many are needed to tell. Opaque data has no
 * length: it is reported as avail (at least 1). Does not change the decoder. */
PKM_API size_t pkm_streamdec_next_len(pkm_streamdec_t *d, const uint8_t *p, size_t avail,
                                      size_t *need);

/* Takes the next unit: len must be what pkm_streamdec_next_len() returned for these bytes (and
 * avail >= len). plain (len bytes of the caller's memory) receives the plaintext of a RECORD
 * (header, content, padding); u->pkt.content points into it. Returns 0, or PKM_EINVAL. */
PKM_API int pkm_streamdec_take(pkm_streamdec_t *d, const uint8_t *p, size_t len, uint8_t *plain,
                               pkm_unit_t *u);

#ifdef __cplusplus
}
#endif
#endif
