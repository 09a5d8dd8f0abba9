/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the encrypted channel's packet framing (WIRE-PROFILE section 4). A server
 * engine is put straight into the established state with a fixed K/IV (pkm__engine_test_start)
 * and fed the input in chunks whose sizes come from the input; it takes packets until error.
 *
 * Input: byte 0 = chunk pattern (see fuzz_next_chunk); byte 1 = flags:
 *   bit 0  encrypt the rest first (a peer engine on the same K/IV), else it is raw ciphertext
 *   bit 1  (with bit 0) the rest is packet records [id][size hi][size lo][content], queued as
 *          real packets (id 0: encoded through a schema so its Hash is right; id 0xFF: built by
 *          hand, which the receiver must refuse), else it is plaintext blocks queued as they are
 *   bit 2  a verify hook (pkm_registry_verify) checks every received packet
 *   bit 3  max_packet_size 64 instead of 1 MiB
 *   bit 4  the stream ends (recv_eof) after the last byte
 *   bit 5  bytes go in through recv_buf/recv_ack instead of pkm_engine_feed
 *   bit 6  the server echoes each packet back; the peer must decrypt the same packets
 * In record mode the oracle is exact: the packets come out as queued, in order, and the engine
 * closes only where a record must be refused, with that record's error. */
#include <stdlib.h>
#include <string.h>
#include "fuzz_common.h"
#include "engine_internal.h"
#include "pkmcom/schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static pkm_key_t *server_key, *client_key;
static pkm_registry_t *registry;
static const uint8_t K[32] = {0x4b, 0x65, 0x79, 0x21, 1,  2,  3,  4,  5,  6,  7,
                              8,    9,    10,   11,   12, 13, 14, 15, 16, 17, 18,
                              19,   20,   21,   22,   23, 24, 25, 26, 27, 28};
static const uint8_t IV[16] = {0x49, 0x56, 0x21, 0,    0xff, 0xee, 0xdd, 0xcc,
                               0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44};

#define SMALL_MAX 64

/* id 0: a Byte Array whose length an Unsigned Short gives (what records with id 0 become). */
static const pkm_field_t byte_elem = {.type = PKM_T_BYTE};
static const pkm_field_t blob_fields[] = {
    {.name = "n", .type = PKM_T_USHORT},
    {.name = "data", .type = PKM_T_ARRAY, .elem = &byte_elem, .len_field = PKM_LEN_FIELD(0)},
};
static const pkm_schema_t blob = {"Blob", blob_fields, 2};
/* id 1: one Long String (records with id 1 are queued raw, so mostly refused by the hook). */
static const pkm_field_t text_fields[] = {{.name = "text", .type = PKM_T_LSTRING}};
static const pkm_schema_t text = {"Text", text_fields, 1};

static int verify_hook(void *ctx, const pkm_packet_t *pkt)
{
    return pkm_registry_verify(ctx, pkt);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    server_key = fuzz_load_key(fuzz_server_pem);
    client_key = fuzz_load_key(fuzz_client_pem);
    registry = pkm_registry_new();
    FUZZ_CHECK(registry && pkm_registry_register(registry, 0, &blob) == 0 &&
               pkm_registry_register(registry, 1, &text) == 0);
    return 0;
}

/* A packet expected at the receiver, and the error that must close it instead (0: accepted). */
typedef struct {
    uint8_t id;
    uint32_t hash;
    const uint8_t *content;
    size_t size;
    int err;
} rec_t;

#define MAX_RECS 512

typedef struct {
    rec_t recs[MAX_RECS];
    size_t n_recs, got;
    int exact;       /* record mode: check every packet against recs */
    int echo;        /* queue each packet back on the server */
    pkm_engine_t *s; /* receiver (server) */
    pkm_engine_t *c; /* sender (client) */
    fuzz_log echoes; /* what the server sent back */
    uint8_t *owned[MAX_RECS];
    size_t n_owned;
} state_t;

static pkm_engine_t *new_engine(int role, size_t max, int verify)
{
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, role);
    if (role == PKM_ROLE_SERVER)
        cfg.server_key = server_key;
    else
        cfg.client_key = pkm_key_ref(client_key);
    cfg.max_packet_size = max;
    if (verify) {
        cfg.verify = verify_hook;
        cfg.verify_ctx = registry;
    }
    pkm_engine_t *e = NULL;
    FUZZ_CHECK(pkm_engine_new(&cfg, &e) == 0);
    FUZZ_CHECK(pkm__engine_test_start(e, K, IV) == 0);
    FUZZ_CHECK(pkm_engine_state(e) == PKM_STATE_ESTABLISHED);
    size_t len = 1;
    FUZZ_CHECK(pkm_engine_send_buf(e, &len) == NULL && len == 0); /* the ServerKey was dropped */
    return e;
}

/* Takes every complete packet. Returns how many, or the (negative) error that closed it. */
static int take_packets(state_t *st)
{
    int count = 0;
    for (;;) {
        pkm_packet_t pk;
        int r = pkm_engine_next_packet(st->s, &pk);
        if (r == 0) return count;
        if (r < 0) {
            FUZZ_CHECK(pkm_engine_state(st->s) == PKM_STATE_CLOSED && pkm_engine_error(st->s) == r);
            return r;
        }
        FUZZ_CHECK(r == 1 && pk.id != PKM_HANDSHAKE_ID && (pk.size == 0 || pk.content));
        if (st->exact) {
            FUZZ_CHECK(st->got < st->n_recs);
            const rec_t *x = &st->recs[st->got];
            FUZZ_CHECK(x->err == 0 && pk.id == x->id && pk.hash == x->hash && pk.size == x->size);
            FUZZ_CHECK(pk.size == 0 || memcmp(pk.content, x->content, pk.size) == 0);
        }
        st->got++;
        if (st->echo) {
            int q = pkm_engine_queue_packet(st->s, pk.id, pk.hash, pk.content, pk.size);
            if (q == PKM_EQUEUE) {
                fuzz_drain(st->s, &st->echoes);
                q = pkm_engine_queue_packet(st->s, pk.id, pk.hash, pk.content, pk.size);
            }
            FUZZ_CHECK(q == 0);
            fuzz_drain(st->s, &st->echoes);
        }
        count++;
    }
}

/* Record mode: queues each record on the client (the sender) and notes what must arrive. */
static void queue_records(state_t *st, const uint8_t *p, size_t n, size_t max)
{
    while (n >= 3 && st->n_recs < MAX_RECS) {
        rec_t *x = &st->recs[st->n_recs];
        uint8_t id = p[0];
        size_t len = (size_t)p[1] << 8 | p[2];
        p += 3;
        n -= 3;
        if (len > n) len = n;
        memset(x, 0, sizeof *x);
        x->id = id;
        if (id == 0) {
            /* Through the schema: a correct packet that passes the verify hook. */
            pkm_value_t v[2] = {PKM_V_U(len), PKM_V_BYTES(p, len)};
            uint8_t *buf = NULL;
            size_t blen = 0;
            FUZZ_CHECK(pkm_registry_encode_alloc(registry, 0, v, 2, &buf, &blen) == 0);
            pkm_packet_t h;
            FUZZ_CHECK(pkm_packet_header_read(buf, PKM_DEFAULT_MAX_SIZE, &h) == 0);
            x->hash = h.hash;
            x->content = buf + PKM_HEADER_SIZE;
            x->size = blen - PKM_HEADER_SIZE;
            st->owned[st->n_owned++] = buf;
            FUZZ_CHECK(pkm_engine_queue_packet(st->c, 0, x->hash, x->content, x->size) == 0);
        } else {
            x->hash = pkm_hashsum_bytes(p, len) + id;
            x->content = p;
            x->size = len;
            if (id == PKM_HANDSHAKE_ID) {
                /* queue_packet refuses 0xFF: build it by hand, padding included. */
                size_t total = ((PKM_HEADER_SIZE + len) / 16 + 1) * 16;
                uint8_t *plain = malloc(total);
                FUZZ_CHECK(pkm_packet_header_write(plain, id, x->hash, len) == 0);
                if (len) memcpy(plain + PKM_HEADER_SIZE, p, len);
                memset(plain + PKM_HEADER_SIZE + len, (int)(total - PKM_HEADER_SIZE - len),
                       total - PKM_HEADER_SIZE - len);
                FUZZ_CHECK(pkm__engine_queue_raw(st->c, plain, total) == 0);
                free(plain);
            } else {
                FUZZ_CHECK(pkm_engine_queue_packet(st->c, id, x->hash, p, len) == 0);
            }
        }
        /* The first check that fails at the receiver, in the engine's order. */
        if (x->size > max)
            x->err = PKM_ETOOBIG;
        else if (id == PKM_HANDSHAKE_ID)
            x->err = PKM_EPROTO;
        p += len;
        n -= len;
        st->n_recs++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    fuzz_chunker ch = {data[0], data[0]};
    uint8_t flags = data[1];
    const uint8_t *payload = data + 2;
    size_t plen = size - 2;
    int encrypt = flags & 1, records = encrypt && (flags & 2), verify = (flags & 4) != 0;
    size_t max = (flags & 8) ? SMALL_MAX : PKM_DEFAULT_MAX_SIZE;
    int eof = (flags & 16) != 0, use_buf = (flags & 32) != 0;

    static state_t st; /* large; zeroed per input (one input at a time) */
    memset(&st, 0, sizeof st);
    st.echo = (flags & 64) != 0;
    st.s = new_engine(PKM_ROLE_SERVER, max, verify);
    st.c = new_engine(PKM_ROLE_CLIENT, PKM_DEFAULT_MAX_SIZE, 0);

    fuzz_log wire = {0};
    const uint8_t *stream = payload;
    size_t slen = plen;
    if (encrypt) {
        if (records) {
            st.exact = 1;
            queue_records(&st, payload, plen, max);
            if (verify) {
                for (size_t i = 0; i < st.n_recs; i++) {
                    rec_t *x = &st.recs[i];
                    if (x->err) continue;
                    pkm_packet_t pk = {x->id, x->hash, x->content, x->size};
                    x->err = pkm_registry_verify(registry, &pk);
                }
            }
        } else if (plen) {
            size_t n = (plen + 15) / 16 * 16;
            uint8_t *plain = calloc(1, n);
            memcpy(plain, payload, plen);
            FUZZ_CHECK(pkm__engine_queue_raw(st.c, plain, n) == 0);
            free(plain);
        }
        fuzz_drain(st.c, &wire);
        stream = wire.p;
        slen = wire.len;
    }

    /* Feed in chunks, taking packets after each; the engine must never stall: when it offers no
     * room it must hold a complete packet. */
    int err = 0;
    size_t off = 0;
    while (off < slen && !err) {
        size_t k = fuzz_next_chunk(&ch, slen - off);
        size_t end = off + k;
        while (off < end) {
            long r = fuzz_give(st.s, stream + off, end - off, use_buf);
            if (r < 0) {
                err = (int)r;
                break;
            }
            off += (size_t)r;
            int t = take_packets(&st);
            if (t < 0) {
                err = t;
                break;
            }
            FUZZ_CHECK(r > 0 || t > 0); /* no room and no packet: stalled */
        }
    }
    if (!err && eof) {
        int r = pkm_engine_recv_eof(st.s);
        if (r < 0) err = r;
        int t = take_packets(&st);
        if (t < 0) err = t;
        /* After the last packet, the end of the stream itself is reported: PKM_EEOF between
         * packets, PKM_EPROTO inside one (or a packet's own error). */
        FUZZ_CHECK(err != 0);
    }
    if (err)
        FUZZ_CHECK(pkm_engine_state(st.s) == PKM_STATE_CLOSED && pkm_engine_error(st.s) == err);

    if (st.exact) {
        if (!err || err == PKM_EEOF) {
            FUZZ_CHECK(!eof || err == PKM_EEOF);
            FUZZ_CHECK(st.got == st.n_recs); /* everything queued arrived */
        } else {
            /* Closed by the first record that must be refused, with its error. */
            FUZZ_CHECK(st.got < st.n_recs && st.recs[st.got].err == err);
        }
    }

    if (st.echo && st.echoes.len) {
        /* The sender decrypts the echoes: the same packets, on the other direction's chain. */
        FUZZ_CHECK(pkm_engine_feed(st.c, st.echoes.p, st.echoes.len) == 0);
        size_t back = 0;
        pkm_packet_t pk;
        int r;
        while ((r = pkm_engine_next_packet(st.c, &pk)) == 1) {
            if (st.exact) {
                const rec_t *x = &st.recs[back];
                FUZZ_CHECK(pk.id == x->id && pk.hash == x->hash && pk.size == x->size);
                FUZZ_CHECK(pk.size == 0 || memcmp(pk.content, x->content, pk.size) == 0);
            }
            back++;
        }
        FUZZ_CHECK(r == 0 && back == st.got);
    }

    pkm_engine_free(st.s);
    pkm_engine_free(st.c);
    for (size_t i = 0; i < st.n_owned; i++)
        pkm_bytes_free(st.owned[i]);
    free(wire.p);
    free(st.echoes.p);
    return 0;
}
