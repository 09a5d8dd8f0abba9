/* SPDX-License-Identifier: MIT */
/* Tests of the engine's two send paths, pkm_engine_queue_packet() and pkm_engine_seal_packet():
 * whichever way a packet is assembled and wherever it is written, the bytes are one EVP pass over
 * the chain; sealed packets mix with queued ones, reach a real peer, and every refusal to seal
 * leaves the engine and its chain untouched. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include "support.h"
#include "engine_internal.h"

enum { QUEUE, SEAL };

/* Around the copy/in-place switch-over (4096) and the block boundaries. */
static const size_t sizes[] = {0,    1,    6,    7,    8,    15,   16,   4088, 4089, 4095,  4096,
                               4097, 4102, 4103, 4104, 4105, 4111, 4112, 4113, 5000, 65536, 65543};
#define NSIZES (sizeof sizes / sizeof sizes[0])
#define MAXSZ  65543

/* Sends one packet of `n` bytes of `content` from e by `how`, appending its wire bytes to
 * wire + *len (queued bytes are taken from the send buffer and acknowledged at once). */
static void send_one(pkm_engine_t *e, int how, const uint8_t *content, size_t n, uint8_t *wire,
                     size_t *len)
{
    uint32_t hash = pkm_packet_hash(0x21, pkm_hashsum_bytes(content, n));
    size_t got = 0;
    if (how == SEAL) {
        size_t cap = pkm_engine_wire_size(n);
        assert_int_equal(
            pkm_engine_seal_packet(e, 0x21, hash, n ? content : NULL, n, wire + *len, cap, &got),
            0);
        assert_int_equal(got, cap);
    } else {
        assert_int_equal(pkm_engine_queue_packet(e, 0x21, hash, n ? content : NULL, n), 0);
        const uint8_t *p = pkm_engine_send_buf(e, &got);
        assert_int_equal(got, pkm_engine_wire_size(n));
        memcpy(wire + *len, p, got);
        assert_int_equal(pkm_engine_send_ack(e, got), 0);
    }
    *len += got;
}

/* Every size, whichever way the engine assembles the packet (queue_packet copies small content
 * into its send buffer and encrypts large content where it lies; seal does the same into the
 * caller's memory), in every order of the two calls over two packets (the second continuing the
 * first's chain), gives the bytes of one AES-256-CBC pass over header + content + PKCS#7
 * padding, computed here with EVP directly. */
static void send_paths_match_evp(void **state)
{
    (void)state;
    static const uint8_t key[32] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6,
                                    7, 8, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4};
    static const uint8_t iv[16] = {0x5A, 0x5B, 0x5C, 0x5D, 0x5E, 0x5F, 0x60, 0x61,
                                   0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69};
    static const int orders[][2] = {{QUEUE, QUEUE}, {QUEUE, SEAL}, {SEAL, QUEUE}, {SEAL, SEAL}};
    const size_t cap = 2 * (MAXSZ + 32);
    uint8_t *content = malloc(MAXSZ + 3), *plain = malloc(cap), *want = malloc(cap),
            *wire = malloc(cap);
    assert_non_null(content);
    assert_non_null(plain);
    assert_non_null(want);
    assert_non_null(wire);
    t_rng r;
    t_rng_seed(&r, 11);
    t_rng_bytes(&r, content, MAXSZ + 3);
    for (size_t k = 0; k < NSIZES; k++) {
        for (size_t o = 0; o < sizeof orders / sizeof orders[0]; o++) {
            size_t n = sizes[k], len = 0, plen = 0;
            pkm_engine_config_t cfg;
            pkm_engine_config_init(&cfg, PKM_ROLE_SERVER);
            cfg.server_key = t_shared_keys.server_key;
            pkm_engine_t *e = NULL;
            assert_int_equal(pkm_engine_new(&cfg, &e), 0);
            assert_int_equal(pkm__engine_test_start(e, key, iv), 0);
            for (int j = 0; j < 2; j++) {
                const uint8_t *c = content + j * 3;
                send_one(e, orders[o][j], c, n, wire, &len);
                size_t total = ((9 + n) / 16 + 1) * 16; /* header, content, 1..16 of padding */
                uint32_t hash = pkm_packet_hash(0x21, pkm_hashsum_bytes(c, n));
                assert_int_equal(pkm_packet_header_write(plain + plen, 0x21, hash, n), 0);
                memcpy(plain + plen + 9, c, n);
                memset(plain + plen + 9 + n, (int)(total - 9 - n), total - 9 - n);
                plen += total;
            }
            EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
            int outl = 0;
            assert_non_null(ctx);
            assert_int_equal(EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, iv), 1);
            assert_int_equal(EVP_CIPHER_CTX_set_padding(ctx, 0), 1);
            assert_int_equal(EVP_EncryptUpdate(ctx, want, &outl, plain, (int)plen), 1);
            EVP_CIPHER_CTX_free(ctx);
            assert_int_equal((size_t)outl, plen);
            assert_int_equal(len, plen);
            assert_memory_equal(wire, want, plen);
            pkm_engine_free(e);
        }
    }
    free(content);
    free(plain);
    free(want);
    free(wire);
}

/* Takes the next packet from e and checks it is (id, content, n). */
static void expect_packet(pkm_engine_t *e, uint8_t id, const uint8_t *content, size_t n)
{
    pkm_packet_t pkt;
    assert_int_equal(pkm_engine_next_packet(e, &pkt), 1);
    assert_int_equal(pkt.id, id);
    assert_int_equal(pkt.size, n);
    assert_int_equal(pkt.hash, pkm_packet_hash(id, pkm_hashsum_bytes(content, n)));
    if (n) assert_memory_equal(pkt.content, content, n);
}

/* Over a real handshake, both ways: a batch of sealed packets of every size, fed to the peer in
 * one piece, arrives whole and in order, and queued packets keep working after it. */
static void sealed_packets_arrive(void **state)
{
    (void)state;
    pkm_engine_t *c = t_client(&t_shared_keys, NULL), *s = t_server(&t_shared_keys, NULL);
    t_handshake(c, s, 0);
    size_t cap = 0;
    for (size_t k = 0; k < NSIZES; k++)
        cap += pkm_engine_wire_size(sizes[k]);
    uint8_t *content = malloc(MAXSZ + NSIZES), *batch = malloc(cap);
    assert_non_null(content);
    assert_non_null(batch);
    t_rng r;
    t_rng_seed(&r, 12);
    t_rng_bytes(&r, content, MAXSZ + NSIZES); /* packet k starts at content + k */
    pkm_engine_t *pairs[2][2] = {{c, s}, {s, c}};
    for (int d = 0; d < 2; d++) {
        pkm_engine_t *from = pairs[d][0], *to = pairs[d][1];
        size_t len = 0;
        for (size_t k = 0; k < NSIZES; k++)
            send_one(from, SEAL, content + k, sizes[k], batch, &len);
        assert_int_equal(len, cap);
        assert_int_equal(pkm_engine_feed(to, batch, len), 0);
        for (size_t k = 0; k < NSIZES; k++)
            expect_packet(to, 0x21, content + k, sizes[k]);
        /* The chain goes on with a queued packet. */
        len = 0;
        send_one(from, QUEUE, content, 100, batch, &len);
        assert_int_equal(pkm_engine_feed(to, batch, len), 0);
        expect_packet(to, 0x21, content, 100);
        pkm_packet_t pkt;
        assert_int_equal(pkm_engine_next_packet(to, &pkt), 0);
    }
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    free(content);
    free(batch);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

/* Seals `content` from c and checks s receives it: the chain was where it should be. */
static void seal_then_deliver(pkm_engine_t *c, pkm_engine_t *s, const uint8_t *content, size_t n)
{
    uint8_t wire[64];
    size_t len = 0;
    send_one(c, SEAL, content, n, wire, &len);
    assert_int_equal(pkm_engine_feed(s, wire, len), 0);
    expect_packet(s, 0x21, content, n);
}

/* Every refusal: its error, *out_len 0, nothing written, the engine still established and its
 * chain not advanced (the next sealed packet still decrypts at the peer). */
static void seal_refusals(void **state)
{
    (void)state;
    uint8_t content[40], out[64], canary[64];
    size_t got = 99;
    memset(content, 0x3C, sizeof content);
    memset(canary, 0xEE, sizeof canary);

    assert_int_equal(pkm_engine_wire_size(0), 16);
    assert_int_equal(pkm_engine_wire_size(6), 16);
    assert_int_equal(pkm_engine_wire_size(7), 32);
    assert_int_equal(pkm_engine_wire_size(23), 48);
    assert_int_equal(pkm_engine_wire_size((size_t)INT32_MAX + 1), 0);
    assert_int_equal(pkm_engine_seal_packet(NULL, 1, 0, content, 1, out, sizeof out, &got),
                     PKM_EINVAL);
    assert_int_equal(got, 0);

    pkm_engine_t *c = t_client(&t_shared_keys, NULL), *s = t_server(&t_shared_keys, NULL);
    /* During the handshake. */
    got = 99;
    assert_int_equal(pkm_engine_seal_packet(c, 1, 0, content, 1, out, sizeof out, &got),
                     PKM_ESTATE);
    assert_int_equal(got, 0);
    t_handshake(c, s, 0);

    memcpy(out, canary, sizeof out);
    got = 99;
    assert_int_equal(pkm_engine_seal_packet(c, 1, 0, content, 23, out, 47, &got), PKM_ENOSPC);
    assert_int_equal(got, 0);
    assert_int_equal(pkm_engine_seal_packet(c, PKM_HANDSHAKE_ID, 0, content, 1, out, 64, &got),
                     PKM_EINVAL);
    assert_int_equal(pkm_engine_seal_packet(c, 1, 0, NULL, 1, out, 64, &got), PKM_EINVAL);
    assert_int_equal(pkm_engine_seal_packet(c, 1, 0, content, 1, NULL, 64, &got), PKM_EINVAL);
    assert_int_equal(pkm_engine_seal_packet(c, 1, 0, content, 1, out, 64, NULL), PKM_EINVAL);
    assert_int_equal(pkm_engine_seal_packet(c, 1, 0, content, (size_t)INT32_MAX + 1, out, 64, &got),
                     PKM_ETOOBIG);
    /* content and out overlapping, either way round. */
    assert_int_equal(pkm_engine_seal_packet(c, 1, 0, out + 8, 20, out, 64, &got), PKM_EINVAL);
    assert_int_equal(pkm_engine_seal_packet(c, 1, 0, out, 20, out + 16, 48, &got), PKM_EINVAL);
    assert_memory_equal(out, canary, sizeof out);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    seal_then_deliver(c, s, content, 23);

    /* Bytes pending in the send buffer: refused until they are acknowledged. */
    assert_int_equal(pkm_engine_queue_packet(c, 0x21, pkm_packet_hash(0x21, 0), NULL, 0), 0);
    assert_int_equal(pkm_engine_seal_packet(c, 1, 0, content, 1, out, 64, &got), PKM_ESTATE);
    size_t len = 0;
    const uint8_t *w = pkm_engine_send_buf(c, &len);
    assert_int_equal(pkm_engine_feed(s, w, len), 0);
    assert_int_equal(pkm_engine_send_ack(c, len), 0);
    expect_packet(s, 0x21, NULL, 0);
    seal_then_deliver(c, s, content, 40);

    /* While the server re-establishes the secret: refused (queue_packet holds packets back). */
    uint8_t reason = 0;
    assert_int_equal(pkm_engine_queue_packet(s, 0x30, pkm_packet_hash(0x30, 0), &reason, 1), 0);
    assert_int_equal(pkm_engine_rekey(s, NULL, 0), 0);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_REKEYING);
    assert_int_equal(pkm_engine_seal_packet(s, 1, 0, content, 1, out, 64, &got), PKM_ESTATE);

    /* Closed. */
    pkm_engine_close(c, PKM_EPROTO);
    assert_int_equal(pkm_engine_seal_packet(c, 1, 0, content, 1, out, 64, &got), PKM_ECLOSED);
    assert_int_equal(got, 0);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(send_paths_match_evp),
        cmocka_unit_test(sealed_packets_arrive),
        cmocka_unit_test(seal_refusals),
    };
    return cmocka_run_group_tests(tests, t_keys_setup, t_keys_teardown);
}
