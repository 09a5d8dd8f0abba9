/* SPDX-License-Identifier: MIT */
/* The engine's two byte streams: the receive and send buffers (bytes in, bytes out), the packet
 * layer of the encrypted channel over them (WIRE-PROFILE section 4: queue, seal, next_packet,
 * decrypted lazily), what the engine wants next, and trimming. The handshake is engine.c's. */
#include <string.h>
#include <openssl/crypto.h>
#include "engine_state.h"
#include "internal.h"

#define RECV_CHUNK 16384 /* room offered per recv_buf when the buffer must grow */
#define SEND_MIN   4096

void pkm__engine_wipe_free(void *p, size_t n)
{
    if (!p) return;
    OPENSSL_cleanse(p, n);
    pkm__free(p);
}

/* Moves a buffer to a larger allocation (doubling, but never past `most` when that is above
 * `want`: 0 = no bound), wiping the old one (it may hold plaintext). */
static int buf_grow(uint8_t **buf, size_t *cap, size_t used, size_t want, size_t most)
{
    size_t ncap = *cap ? *cap : SEND_MIN;
    while (ncap < want) {
        if (ncap > SIZE_MAX / 2) {
            ncap = want;
            break;
        }
        ncap *= 2;
    }
    if (most >= want && ncap > most) ncap = most;
    uint8_t *n = pkm__malloc(ncap);
    if (!n) return PKM_ENOMEM;
    if (used) memcpy(n, *buf, used);
    pkm__engine_wipe_free(*buf, *cap);
    *buf = n;
    *cap = ncap;
    return 0;
}

/* ---- send buffer ---- */

/* Makes room for n more bytes at slen. */
int pkm__engine_send_reserve(pkm_engine_t *e, size_t n)
{
    if (e->scap - e->slen >= n) return 0;
    if (e->sstart > 0) {
        memmove(e->sbuf, e->sbuf + e->sstart, e->slen - e->sstart);
        e->senc -= e->sstart;
        e->slen -= e->sstart;
        e->sstart = 0;
        if (e->scap - e->slen >= n) return 0;
    }
    if (n > SIZE_MAX - e->slen) return PKM_ENOMEM;
    return buf_grow(&e->sbuf, &e->scap, e->slen, e->slen + n, 0);
}

/* Inserts n ready-to-send bytes at senc (before any held plaintext) and returns where to write
 * them, or NULL when out of memory. */
uint8_t *pkm__engine_send_insert(pkm_engine_t *e, size_t n)
{
    if (pkm__engine_send_reserve(e, n) < 0) return NULL;
    memmove(e->sbuf + e->senc + n, e->sbuf + e->senc, e->slen - e->senc);
    uint8_t *p = e->sbuf + e->senc;
    e->senc += n;
    e->slen += n;
    return p;
}

/* ---- bytes in ---- */

/* How many unconsumed bytes the engine is willing to hold: one largest packet plus a chunk
 * (ample for every handshake message too). */
static size_t recv_limit(const pkm_engine_t *e)
{
    return pkm__padded_size(e->max_packet) + RECV_CHUNK;
}

/* Makes room for n more bytes at rend, compacting first. */
static int recv_reserve(pkm_engine_t *e, size_t n)
{
    if (e->rpos == e->rend) e->rpos = e->rend = 0; /* nothing buffered (pk_head implies bytes) */
    if (e->rcap - e->rend >= n) return 0;
    if (e->rpos > 0) {
        memmove(e->rbuf, e->rbuf + e->rpos, e->rend - e->rpos);
        e->rend -= e->rpos;
        e->rpos = 0;
        if (e->rcap - e->rend >= n) return 0;
    }
    if (n > SIZE_MAX - e->rend) return PKM_ENOMEM;
    /* Never larger than the engine will ever hold: a largest packet then takes about its own
     * size, not the next power of two (a 1 MiB packet: 1.02 MiB, not 2 MiB). */
    return buf_grow(&e->rbuf, &e->rcap, e->rend, e->rend + n, recv_limit(e));
}

uint8_t *pkm_engine_recv_buf(pkm_engine_t *e, size_t *cap)
{
    if (cap) *cap = 0;
    if (!e || !cap || e->state == PKM_STATE_CLOSED) return NULL;
    e->rgiven = 0;
    size_t held = e->rend - e->rpos, limit = recv_limit(e);
    if (held >= limit) return NULL;
    size_t room = limit - held;
    int r = recv_reserve(e, room < RECV_CHUNK ? room : RECV_CHUNK);
    if (r < 0) {
        pkm__engine_fail(e, r);
        return NULL;
    }
    size_t free_bytes = e->rcap - e->rend;
    e->rgiven = free_bytes < room ? free_bytes : room;
    *cap = e->rgiven;
    return e->rbuf + e->rend;
}

int pkm_engine_recv_ack(pkm_engine_t *e, size_t n)
{
    if (!e) return PKM_EINVAL;
    if (e->state == PKM_STATE_CLOSED) return e->err;
    if (n > e->rgiven) return PKM_EINVAL;
    e->rgiven = 0;
    e->rend += n;
    return pkm__engine_process(e);
}

int pkm_engine_feed(pkm_engine_t *e, const uint8_t *p, size_t n)
{
    if (!e || (n && !p)) return PKM_EINVAL;
    if (e->state == PKM_STATE_CLOSED) return e->err;
    e->rgiven = 0;
    if (n) {
        int r = recv_reserve(e, n);
        if (r < 0) return pkm__engine_fail(e, r);
        memcpy(e->rbuf + e->rend, p, n);
        e->rend += n;
    }
    return pkm__engine_process(e);
}

int pkm_engine_recv_eof(pkm_engine_t *e)
{
    if (!e) return PKM_EINVAL;
    e->eof = 1;
    return pkm__engine_process(e);
}

/* ---- bytes out ---- */

const uint8_t *pkm_engine_send_buf(pkm_engine_t *e, size_t *len)
{
    if (len) *len = 0;
    if (!e || !len || e->state == PKM_STATE_CLOSED || e->senc == e->sstart) return NULL;
    *len = e->senc - e->sstart;
    return e->sbuf + e->sstart;
}

int pkm_engine_send_ack(pkm_engine_t *e, size_t n)
{
    if (!e || n > e->senc - e->sstart) return PKM_EINVAL;
    e->sstart += n;
    if (e->sstart == e->slen) e->sstart = e->senc = e->slen = 0;
    return 0;
}

/* ---- application packets ---- */

/* From this content size on, a packet's content is encrypted where it lies instead of being
 * copied next to its header first (below it, the copy is cheaper than two more EVP calls). */
#define ENCRYPT_IN_PLACE_BELOW 4096

size_t pkm_engine_wire_size(size_t size)
{
    return size > INT32_MAX ? 0 : pkm__padded_size(size);
}

/* Writes the packet (header, content, PKCS#7 padding: `total` bytes) at p, encrypted on the send
 * chain when `encrypt` is set, as plaintext otherwise (held during a re-establishment). */
static int seal(pkm_engine_t *e, uint8_t *p, size_t total, uint8_t id, uint32_t hash,
                const uint8_t *content, size_t size, int encrypt)
{
    PKM_GUARD(pkm_packet_header_write(p, id, hash, size));
    size_t pad = total - PKM_HEADER_SIZE - size; /* 1..16 */
    if (encrypt && size >= ENCRYPT_IN_PLACE_BELOW) {
        /* A large packet is encrypted from where its content lies, without copying it first:
         * the first block (header + 7 content bytes) and the last (the content's tail + padding)
         * are assembled at p, the full blocks between go straight from `content`. Three EVP
         * calls on the same chain; the bytes are the same as the one-call path's. */
        const size_t head = PKM__BLOCK_SIZE - PKM_HEADER_SIZE; /* 7 content bytes */
        size_t mid = (size - head) / PKM__BLOCK_SIZE * PKM__BLOCK_SIZE;
        size_t tail = size - head - mid; /* 0..15, then pad = 16 - tail */
        memcpy(p + PKM_HEADER_SIZE, content, head);
        uint8_t *last = p + PKM__BLOCK_SIZE + mid;
        memcpy(last, content + head + mid, tail);
        memset(last + tail, (int)pad, pad);
        PKM_GUARD(pkm__channel_encrypt(&e->ch, p, PKM__BLOCK_SIZE));
        PKM_GUARD(pkm__channel_encrypt_from(&e->ch, p + PKM__BLOCK_SIZE, content + head, mid));
        return pkm__channel_encrypt(&e->ch, last, PKM__BLOCK_SIZE);
    }
    if (size) memcpy(p + PKM_HEADER_SIZE, content, size);
    memset(p + PKM_HEADER_SIZE + size, (int)pad, pad);
    /* Whole packet, one EVP call, in place. */
    return encrypt ? pkm__channel_encrypt(&e->ch, p, total) : 0;
}

int pkm_engine_queue_packet(pkm_engine_t *e, uint8_t id, uint32_t hash, const uint8_t *content,
                            size_t size)
{
    if (!e) return PKM_EINVAL;
    if (e->state == PKM_STATE_CLOSED) return PKM_ECLOSED;
    if (e->state == PKM_STATE_HANDSHAKE) return PKM_ESTATE;
    if (id == PKM_HANDSHAKE_ID || (size && !content)) return PKM_EINVAL;
    if (size > INT32_MAX) return PKM_ETOOBIG;
    size_t total = pkm__padded_size(size);
    if (total > e->max_send) return PKM_ETOOBIG;
    if (e->slen - e->sstart > e->max_send - total) return PKM_EQUEUE;
    PKM_GUARD(pkm__engine_send_reserve(e, total));
    int established = e->state == PKM_STATE_ESTABLISHED;
    int r = seal(e, e->sbuf + e->slen, total, id, hash, content, size, established);
    if (r < 0) return pkm__engine_fail(e, r); /* the send chain is in an unknown state */
    e->slen += total;
    if (established) e->senc = e->slen;
    /* else REKEYING: held as plaintext until the new key is confirmed */
    return 0;
}

int pkm_engine_seal_packet(pkm_engine_t *e, uint8_t id, uint32_t hash, const uint8_t *content,
                           size_t size, uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (out_len) *out_len = 0;
    if (!e || !out || !out_len) return PKM_EINVAL;
    if (e->state == PKM_STATE_CLOSED) return PKM_ECLOSED;
    /* Sealed bytes are written after the send buffer's: so only when it is empty, and never
     * while a re-establishment holds packets back. */
    if (e->state != PKM_STATE_ESTABLISHED || e->slen != 0) return PKM_ESTATE;
    if (id == PKM_HANDSHAKE_ID || (size && !content)) return PKM_EINVAL;
    if (size > INT32_MAX) return PKM_ETOOBIG;
    size_t total = pkm__padded_size(size);
    if (out_cap < total) return PKM_ENOSPC;
    uintptr_t c0 = (uintptr_t)content, o0 = (uintptr_t)out; /* not overlapping */
    if (size && c0 < o0 + total && o0 < c0 + size) return PKM_EINVAL;
    int r = seal(e, out, total, id, hash, content, size, 1);
    if (r < 0) {
        OPENSSL_cleanse(out, total); /* no half-encrypted plaintext left behind */
        return pkm__engine_fail(e, r);
    }
    *out_len = total;
    return 0;
}

/* The stream ended: cleanly between packets, or inside one. */
static int recv_ended(const pkm_engine_t *e)
{
    return e->rend == e->rpos ? PKM_EEOF : PKM_EPROTO;
}

/* The first n received bytes, writable (the packet layer decrypts them where they lie), or NULL
 * when fewer are buffered. */
static uint8_t *received_span(pkm_engine_t *e, size_t n)
{
    pkm_reader in = pkm__engine_received(e);
    return pkm__read_skip(&in, n) == 0 ? e->rbuf + e->rpos : NULL;
}

/* Decrypts, in place, the received bytes from rpos + rdec up to rpos + upto (whole blocks,
 * buffered). */
static int decrypt_upto(pkm_engine_t *e, size_t upto)
{
    if (upto <= e->rdec) return 0;
    PKM_GUARD(pkm__channel_decrypt(&e->ch, e->rbuf + e->rpos + e->rdec, upto - e->rdec));
    e->rdec = upto;
    return 0;
}

/* The next packet: 1 (in *out), 0 when bytes are missing, or a negative error (next_packet
 * closes the engine with it). */
static int take_packet(pkm_engine_t *e, pkm_packet_t *out)
{
    uint8_t *p;
    if (!e->pk_head) {
        /* The first block alone tells the packet's length. A server decrypts every whole block
         * it holds at once (one EVP call for a read's worth of packets, not two per packet). */
        if (!(p = received_span(e, PKM__BLOCK_SIZE))) return e->eof ? recv_ended(e) : 0;
        size_t held = e->rend - e->rpos;
        PKM_GUARD(decrypt_upto(e, e->client ? PKM__BLOCK_SIZE : held - held % PKM__BLOCK_SIZE));
        PKM_GUARD(pkm_packet_header_read(p, e->max_packet, &e->pk));
        e->pk_total = pkm__padded_size(e->pk.size);
        e->pk_head = 1;
    }
    if (!(p = received_span(e, e->pk_total))) return e->eof ? recv_ended(e) : 0;
    PKM_GUARD(decrypt_upto(e, e->pk_total));
    e->pk_head = 0;
    e->rdec -= e->pk_total;
    /* Header, content and PKCS#7 padding, within the packet: the pad length is fixed by Size,
     * and every pad byte must equal it. */
    pkm_reader body;
    const uint8_t *content, *pad;
    size_t npad = e->pk_total - PKM_HEADER_SIZE - e->pk.size;
    pkm__reader_init(&body, p, e->pk_total);
    PKM_GUARD(pkm__read_skip(&body, PKM_HEADER_SIZE));
    PKM_GUARD(pkm__read_ptr(&body, &content, e->pk.size));
    PKM_GUARD(pkm__read_ptr(&body, &pad, npad));
    unsigned bad = 0;
    for (size_t i = 0; i < npad; i++)
        bad |= pad[i] ^ (unsigned)npad;
    PKM_ENSURE(!bad, PKM_EPADDING);
    PKM_ENSURE(e->pk.id != PKM_HANDSHAKE_ID, PKM_EPROTO);
    *out = e->pk;
    out->content = content;
    e->rpos += body.pos;
    if (e->verify) {
        int r = e->verify(e->verify_ctx, out);
        if (r != 0) return r < 0 ? r : PKM_EPROTO;
    }
    return 1;
}

int pkm_engine_next_packet(pkm_engine_t *e, pkm_packet_t *out)
{
    if (!e || !out) return PKM_EINVAL;
    if (e->state == PKM_STATE_CLOSED) return e->err;
    if (e->state != PKM_STATE_ESTABLISHED) return 0;
    int r = take_packet(e, out);
    return r < 0 ? pkm__engine_fail(e, r) : r;
}

/* ---- what the engine wants ---- */

unsigned pkm_engine_wants(const pkm_engine_t *e)
{
    if (!e || e->state == PKM_STATE_CLOSED) return PKM_WANT_CLOSED;
    unsigned w = 0;
    size_t held = e->rend - e->rpos;
    if (e->senc > e->sstart) w |= PKM_WANT_SEND;
    if (!e->eof && held < recv_limit(e)) w |= PKM_WANT_RECV;
    /* Once established, a packet is known complete only after its first block was decrypted
     * (next_packet does that, lazily); before that, one buffered block is enough to ask. */
    if (e->state == PKM_STATE_ESTABLISHED &&
        (e->eof || (e->pk_head ? held >= e->pk_total : held >= PKM__BLOCK_SIZE)))
        w |= PKM_WANT_PACKET;
    if (e->job_state == JS_WANTED) w |= PKM_WANT_JOB;
    return w;
}

/* ---- memory ---- */

void pkm_engine_trim(pkm_engine_t *e)
{
    if (!e) return;
    if (e->rpos == e->rend && !e->pk_head) { /* a decrypted first block implies held bytes */
        pkm__engine_wipe_free(e->rbuf, e->rcap);
        e->rbuf = NULL;
        e->rcap = e->rpos = e->rend = e->rgiven = e->rdec = 0;
    }
    if (e->sstart == e->slen) {
        pkm__engine_wipe_free(e->sbuf, e->scap);
        e->sbuf = NULL;
        e->scap = e->sstart = e->senc = e->slen = 0;
    }
}

/* ---- test-only hooks (engine_internal.h) ---- */

int pkm__engine_queue_raw(pkm_engine_t *e, const uint8_t *plain, size_t n)
{
    if (e->state != PKM_STATE_ESTABLISHED) return PKM_ESTATE;
    if (n == 0 || n % PKM__BLOCK_SIZE != 0) return PKM_EINVAL;
    PKM_GUARD(pkm__engine_send_reserve(e, n));
    uint8_t *p = e->sbuf + e->slen;
    memcpy(p, plain, n);
    PKM_GUARD(pkm__channel_encrypt(&e->ch, p, n));
    e->slen += n;
    e->senc = e->slen;
    return 0;
}
