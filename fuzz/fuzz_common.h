/* SPDX-License-Identifier: MIT */
/* Shared by the engine fuzz targets (header-only: each fuzz/fuzz_*.c is its own program): fixed
 * RSA-2048 keys embedded as PEM, a deterministic M/IV hook, chunked feeding and seed writing. */
#ifndef PKM_FUZZ_COMMON_H
#define PKM_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "pkmcom/engine.h"
#include "pkmcom/keys.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: oracle failed: %s\n", __FILE__, __LINE__, #cond);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The server's long-term key: the same key as tests/data/server_key.pem. */
static const char fuzz_server_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDHS3hEm1GW3vDO\n"
    "r44xwSwqpdY0V4oKb+ybi9F37mJt87rvYomKrx8x0+/MFKrDARmI+Ej+iMFFkrE7\n"
    "/eaUwnacRvCW+mYzeV4SB9NaUamb+kp8ynCvdi9BwEONxKEkiYZqeXLCP2P5kELz\n"
    "hyXF4tbZDoHs01pKBezryM5O+Ox9rheMr2Xr3lc800QKMliGRJxyjoPv8Lzah6Ry\n"
    "SV7FzYWZnyDvGSFAIldGrwnypmtdK6B0OQ481HdT3STUp0Q/mIxYDENGqXUBCUjV\n"
    "szdv3FJ8KB2PUVOsAkz0RFU8QP6jT3QZQ70YF56/GXJ5Drfc7U5hj1HYSMGN/5Eb\n"
    "Y19gmxB5AgMBAAECggEAQg3UB105Xhl3U/Hg3cHKWzpK9F89S/dLw0REwYzbx9ic\n"
    "EUKmFrazTqcRmCETdf2T0o+EVgTKlj4oCxu8xHptqJ9kl43XuODVmoFIfmuJnT6I\n"
    "WLMaRTWVNSQ936uXw03npLurGxG6l5lGb4PQM7XbAucpje6BQv6Sx5VvN8KOU5r9\n"
    "vo7qtln2z7Y+JA57wr5DaB1zuA+bQ21XkBzWt1sM0C1BxKdElW3cQ6eA/M6/2kts\n"
    "3PLGws0iz4JvP+CbulUbXFgAGu/eUXNdoV4QeZQarH8DJDoenoEg6EzFt97bSWxn\n"
    "57omF/DimJFhKYI57tBUMTindf5gtn07I8cAuiPozwKBgQDoPtOIECyuXKNLyPpt\n"
    "Y91rwHA6DWP9lGxC++8A7urq1T22HtTKHwmyKhOh97Vgbt4+knVw8F2UlWcCHlLm\n"
    "76EPxXa4a9eAFBMnW129eVgGioZDczJly4fT3TwJp91nNK+wjJPTBtfFSnIVWs0G\n"
    "WIsOaK3rfJbCu946PetIDsZGXwKBgQDbrdsxESOwXQZ3+Ki/64L2C992NdWhkWXT\n"
    "BcjOHjzZuQ9HR/jyAcJWSKuLeYQDOn4dIF4LRlNJP0ZUj7vIEpJjSAfExQ1yfbim\n"
    "hDI0P+wVTIg0eosraegpiEueuZ5kysvxrTn485RbevufM31XQEWfaTpldfMUJfqv\n"
    "4yFg+MioJwKBgQDMBQUGbk8SDUdWeAOmvSfyVGdCWCkSxqQkY/UduMSd7x37MzJz\n"
    "LLjzzorYqianxD1wcnDA+ib7NBP9hG4HeVLf6/PTJsl1Ni1tUZITtNljRaWU80m+\n"
    "qwFzWNI5GUIiO+JrEdN6enRqWG/H2rBpdrcRvVurlxNJloguWd6qum/ruQKBgQC3\n"
    "kk/Bb+4f2YynQk5ZmkdkrkU89f2gNu0c6w+DVndJBUEEMtuP9/Jawf0/3vp27DEo\n"
    "y7xqtYixg8OUtEuaBBL6Dd4YCwaSrwZXd86wJN52ae7D08dqLuUHl9KBP+FhnqnQ\n"
    "Og5gv8MwstODlLZf6+CCNp/K20aWhqo2wplI/HxJLwKBgG/vRJAIiIwV5l9xdWOU\n"
    "GoDwINgKLyw1GIYq2exMLXQtcJ4NvweeOK0vpo7eTM8+R6fVj9Y/YlifjdnjetiE\n"
    "DoUYaqpN9JcBuDyNT1PhbQcWuR1EX/rZbDEakvU4uA+jDmJo/4tF6uB3pirr6c3W\n"
    "DVdoEHbfb9yNNHGT2Mm0Tgaf\n"
    "-----END PRIVATE KEY-----\n";

/* The client's key pair (made with `openssl genpkey -algorithm RSA -pkeyopt
 * rsa_keygen_bits:2048` for these targets only). */
static const char fuzz_client_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDGX0iW190Dk8pU\n"
    "JU0ntDwqa6DIRY+3IKnxPsuCl1wYlz8Hb5wWawzwomrBO2He1bBDFkPBvRZSil24\n"
    "eijnkuK240/pvVHYwAZDt2eDwWsZuqjP6M6Vkeai8a80/9EH2DPNw3UfMnAi+Z+7\n"
    "sCrFqOp65ayMRTRYiUfCLwo/ZRWgQhojb6nvAmpR02S/exwwgL4O8ezqkDuF1ljJ\n"
    "MonT3dJcAI9rQWH43Tu8/3ChDiB45dTbWRVWqAdOd/w7FkHEJtBfP3WjyK7IajDk\n"
    "hHknPYV4jrgTXUxYaMTJvgfJ1H9dU5Fn2gHz3oHr5pkluXLTk4MJpPoJ6mb+QmTY\n"
    "AyyOzuixAgMBAAECggEAE8S9FCMw6EFbIWWSOcmxUTzmie68srAzn1H1r+7rg5vW\n"
    "8SPDN0y1vmlBID6Ns0oyRY07dVwllFYrns21s9Ykd7tRZGa0eFgyh58IVs34oVjD\n"
    "p+x4YdlnVYemQS7ZIuH9z5yR2GkLWcDslSSqLoZ1z4eB2XywCb6sgwJzD/w/2ndu\n"
    "1cL/5L2VjQzzGHOHOB0W1lYF4enLrCpdDS7Z2M/xHEsb+JdcizN/4KVR3JLiLBX2\n"
    "Xdo0ebwTw9O4WxAYl6SqjH7nl/k2DJKGvArbmP0gkcJFjPbw38hbfs/ez316VMOF\n"
    "p14bgbdtYU0tdgGngXZgB/y30l+tjGMwd13IfzcYUQKBgQD1T+GipD4W0zhAiDMk\n"
    "SuQvo+DvPqGQVqEmC/ld2wM9JIJzGJrWfdsbAYZwQGezIAhKCZ/Gktm5A3uBAjIS\n"
    "H+dC5Wt9M95ne7AWH+C/m9Eej7SCJ3no+OPw75JKFNoosds6FdXpGku2e8/OmiJj\n"
    "oxoLeRfzYqV9Fb1IilYYc7kA7QKBgQDPA9pSF2Yze//VpelltCHKh+HT2aY/ZG/U\n"
    "VGmecUcBtOqjfPiUjWPsR7bV5DUd2v8T5pgEGH2J/qY9QlwG4uBBbRIsdQ7FSh4L\n"
    "7dovONhAih4q0blf5TaJ9T37lgAbjNzJ0jOmFgTRIdQgET/nH/APUuccF0bMWcW2\n"
    "zIKN7qbCVQKBgCADydW5C6Vc8YVygQImh/szrwJqMRmuRJ+7hlLaZ2TOY/vzZRnD\n"
    "GRpAK7Rwo1f8QTiwYtq+hY2gx7iBedllsn/Hgyy23TqyKLvqcyFui28qoAswbbea\n"
    "69yg1321lPckpxDAksc2OFVbeTZkZUKNobOHnTmVUTWu5aIW87+DMszNAoGAf93B\n"
    "XDNXzTUqMKzqHQfGV3LW6iPlrAI9kMkS8+rEESnORG1MnXU34xnotPTgWjCKnaAx\n"
    "BVabNEE2LWBvt1Ercz4Lm6oyFWpSZMvlmIVkDXlCaPBhr/nEVjJEtsFQD7RSK9bK\n"
    "UCwJjaN3gtckwX3YqZ5rYc5+zHomxWJMwZ5HIoECgYBUzfDjgDenDxT/PxF/XQKp\n"
    "8397Y1gM506LDf4f3D58v3VSpRqGHynk2WiN6s2iA8VPEf11fuKsoBMalrY1WXYj\n"
    "9XwUqfyoy9DlI3DciO40kDr4M0nR1slCoGbVLaGiKQZmao5iIY3ZOHQ7DF3ubAbT\n"
    "+TDQIawl4x8L44gpgWmGaA==\n"
    "-----END PRIVATE KEY-----\n";

/* Loads an embedded PEM through the public API (a 0600 temporary file); aborts on failure. */
static inline pkm_key_t *fuzz_load_key(const char *pem)
{
    char path[] = "/tmp/pkm_fuzz_key_XXXXXX";
    int fd = mkstemp(path);
    FUZZ_CHECK(fd >= 0);
    size_t n = strlen(pem);
    FUZZ_CHECK(write(fd, pem, n) == (ssize_t)n);
    close(fd);
    pkm_key_t *k = NULL;
    int rc = pkm_key_load_pem(path, &k);
    unlink(path);
    FUZZ_CHECK(rc == 0 && k);
    return k;
}

/* A deterministic stand-in for RAND_bytes for the handshake's M and IV (splitmix64), so that a
 * recorded transcript replays into the same keys. Reset per input. */
typedef struct {
    uint64_t s;
} fuzz_rng;

static inline int fuzz_random(void *ctx, uint8_t *out, size_t n)
{
    fuzz_rng *r = ctx;
    for (size_t i = 0; i < n; i++) {
        uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        out[i] = (uint8_t)(z ^ (z >> 31));
    }
    return 0;
}

/* Chunk sizes drawn from the input: pattern 0 feeds everything at once, otherwise sizes cycle
 * pseudo-randomly through 1..pattern (so 1 gives byte-at-a-time). */
typedef struct {
    uint32_t state;
    uint8_t pattern;
} fuzz_chunker;

static inline size_t fuzz_next_chunk(fuzz_chunker *c, size_t left)
{
    if (c->pattern == 0) return left;
    c->state = c->state * 1103515245u + 12345u;
    size_t n = 1 + (c->state >> 16) % c->pattern;
    return n < left ? n : left;
}

/* Gives up to n bytes to the engine, through recv_buf/recv_ack (use_buf) or pkm_engine_feed
 * (which takes everything). Returns how many it took (0 when recv_buf offers no room: the caller
 * must take packets or run the deferred work first), or the engine's negative error. */
static inline long fuzz_give(pkm_engine_t *e, const uint8_t *p, size_t n, int use_buf)
{
    if (!use_buf) {
        int rc = pkm_engine_feed(e, p, n);
        return rc < 0 ? rc : (long)n;
    }
    size_t cap = 0;
    uint8_t *dst = pkm_engine_recv_buf(e, &cap);
    if (!dst || cap == 0) {
        FUZZ_CHECK(cap == 0);
        return pkm_engine_state(e) == PKM_STATE_CLOSED ? pkm_engine_error(e) : 0;
    }
    size_t k = n < cap ? n : cap;
    memcpy(dst, p, k);
    int rc = pkm_engine_recv_ack(e, k);
    return rc < 0 ? rc : (long)k;
}

/* Drains what the engine has to send (to nowhere, or appended to *log when log is not NULL). */
typedef struct {
    uint8_t *p;
    size_t len, cap;
} fuzz_log;

static inline void fuzz_log_add(fuzz_log *l, const uint8_t *p, size_t n)
{
    if (l->len + n > l->cap) {
        size_t cap = l->cap ? l->cap : 4096;
        while (cap < l->len + n)
            cap *= 2;
        l->p = realloc(l->p, cap);
        FUZZ_CHECK(l->p);
        l->cap = cap;
    }
    memcpy(l->p + l->len, p, n);
    l->len += n;
}

static inline void fuzz_drain(pkm_engine_t *e, fuzz_log *log)
{
    size_t len = 0;
    const uint8_t *p = pkm_engine_send_buf(e, &len);
    if (!p || !len) return;
    if (log) fuzz_log_add(log, p, len);
    FUZZ_CHECK(pkm_engine_send_ack(e, len) == 0);
}

/* Writes one seed file dir/name (seed-generator mode). */
static inline void fuzz_write_seed(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f);
    FUZZ_CHECK(fwrite(p, 1, n, f) == n);
    fclose(f);
    fprintf(stderr, "seed: %s (%zu bytes)\n", path, n);
}

/* ---- the behaviour of one side, shared by the engine targets and their seed generators ---- */

/* The packet that makes a client re-establish the secret (the Complete Definition's 0x05). */
#define FUZZ_TRIGGER_ID 0x05

typedef struct {
    pkm_engine_t *e;
    int is_server;
    int echo;       /* server: queue every received packet back */
    int rekey;      /* server: after the first packet, send the trigger and re-establish;
                       client: re-establish on receiving the trigger */
    int rekeyed;    /* the re-establishment has been started */
    size_t packets; /* application packets taken */
    fuzz_log *sent; /* where this side's output goes (NULL: dropped) */
} fuzz_side;

static const uint8_t fuzz_trigger_content[1] = {0}; /* reason 0: normal */

/* Runs deferred work, takes every packet and acts on it, and drains the output. Returns the
 * number of packets taken (>= 0), or the negative error that closed the engine. */
static inline int fuzz_service(fuzz_side *sd)
{
    int count = 0, r;
    for (;;) {
        unsigned w = pkm_engine_wants(sd->e);
        if (w & PKM_WANT_JOB) {
            pkm_job_t *job = NULL;
            if ((r = pkm_engine_job_take(sd->e, &job)) < 0) return r;
            (void)pkm_job_run(job);
            if ((r = pkm_engine_job_done(sd->e, job)) < 0) return r;
            continue;
        }
        if (!(w & (PKM_WANT_PACKET | PKM_WANT_CLOSED))) break;
        pkm_packet_t pk;
        r = pkm_engine_next_packet(sd->e, &pk); /* closed: its error */
        if (r < 0) {
            FUZZ_CHECK(pkm_engine_state(sd->e) == PKM_STATE_CLOSED && pkm_engine_error(sd->e) == r);
            size_t len = 1;
            FUZZ_CHECK(pkm_engine_send_buf(sd->e, &len) == NULL && len == 0); /* no message */
            return r;
        }
        if (r == 0) continue; /* the packet is not all in: the bit is clear now */
        FUZZ_CHECK(pk.id != PKM_HANDSHAKE_ID);
        sd->packets++;
        count++;
        if (sd->is_server) {
            if (sd->echo) {
                r = pkm_engine_queue_packet(sd->e, pk.id, pk.hash, pk.content, pk.size);
                if (r == PKM_EQUEUE) {
                    fuzz_drain(sd->e, sd->sent);
                    r = pkm_engine_queue_packet(sd->e, pk.id, pk.hash, pk.content, pk.size);
                }
                FUZZ_CHECK(r == 0);
            }
            if (sd->rekey && !sd->rekeyed) {
                sd->rekeyed = 1;
                uint32_t h = pkm_packet_hash(FUZZ_TRIGGER_ID, 0); /* hashsum of one Byte 0 */
                FUZZ_CHECK(pkm_engine_queue_packet(sd->e, FUZZ_TRIGGER_ID, h, fuzz_trigger_content,
                                                   1) == 0);
                if ((r = pkm_engine_rekey(sd->e, NULL, 0)) < 0) return r;
            }
        } else if (sd->rekey && pk.id == FUZZ_TRIGGER_ID) {
            sd->rekeyed = 1;
            if ((r = pkm_engine_rekey(sd->e, NULL, 0)) < 0) return r;
        }
        fuzz_drain(sd->e, sd->sent);
    }
    fuzz_drain(sd->e, sd->sent);
    return count;
}

/* Feeds `stream` to the side in chunks, servicing it after each; the engine must never stall
 * (offer no room while holding no complete packet and wanting no work). eof: tell it the stream
 * ended. Returns 0 or the error that closed the engine. */
static inline int fuzz_run_stream(fuzz_side *sd, const uint8_t *stream, size_t n, uint8_t pattern,
                                  int use_buf, int eof)
{
    fuzz_chunker ch = {pattern, pattern};
    size_t off = 0;
    int r = fuzz_service(sd);
    if (r < 0) return r;
    while (off < n) {
        size_t end = off + fuzz_next_chunk(&ch, n - off);
        while (off < end) {
            long g = fuzz_give(sd->e, stream + off, end - off, use_buf);
            if (g < 0) return (int)g;
            off += (size_t)g;
            int t = fuzz_service(sd);
            if (t < 0) return t;
            FUZZ_CHECK(g > 0 || t > 0); /* stalled */
        }
    }
    if (eof) {
        if ((r = pkm_engine_recv_eof(sd->e)) < 0) return r;
        if ((r = fuzz_service(sd)) < 0) return r;
        FUZZ_CHECK(0); /* an engine told EOF fails a handshake or reports EOF for next_packet */
    }
    return 0;
}

/* Seed generator: moves bytes between a live client and server until nothing moves, appending
 * what each side receives to to_client / to_server (either may be NULL). Both sides are serviced
 * as above. Returns when quiet. */
static inline void fuzz_pump(fuzz_side *c, fuzz_side *s, fuzz_log *to_client, fuzz_log *to_server)
{
    for (int moved = 1; moved;) {
        moved = 0;
        fuzz_log cs = {0}, sc = {0};
        fuzz_side *sides[2] = {c, s};
        fuzz_log *outs[2] = {&cs, &sc};
        for (int i = 0; i < 2; i++) {
            fuzz_log *keep = sides[i]->sent;
            sides[i]->sent = outs[i];
            (void)fuzz_service(sides[i]);
            sides[i]->sent = keep;
        }
        if (cs.len) {
            moved = 1;
            if (to_server) fuzz_log_add(to_server, cs.p, cs.len);
            (void)pkm_engine_feed(s->e, cs.p, cs.len);
        }
        if (sc.len) {
            moved = 1;
            if (to_client) fuzz_log_add(to_client, sc.p, sc.len);
            (void)pkm_engine_feed(c->e, sc.p, sc.len);
        }
        free(cs.p);
        free(sc.p);
    }
}

#endif
