/* SPDX-License-Identifier: MIT */
/* libFuzzer target: a server engine fed arbitrary bytes from the start of the handshake, as if
 * from a hostile client (ClientKey, KeyShare, the encrypted 0xFF, then packets), in chunks whose
 * sizes come from the input. The server key is fixed (embedded) and M/IV come from a
 * deterministic hook, so a recorded client transcript replays into the established state.
 *
 * Input: byte 0 = chunk pattern (fuzz_next_chunk); byte 1 = flags:
 *   bit 0 recv_buf/recv_ack instead of feed   bit 1 defer_crypto (RSA jobs)
 *   bit 2 recv_eof after the last byte        bit 3 alternative handshaking (a fixed secret)
 *   bit 4 after the first packet, send the trigger and re-establish the secret
 *   bit 5 max_packet_size 64                  bit 6 echo every packet back
 * Seeds: PKM_FUZZ_SEEDS=<dir> ./fuzz_engine_server runs a real client against the server in each
 * configuration, writes the client's bytes as seed files into <dir>, and exits. */
#include <stdlib.h>
#include <string.h>
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static pkm_key_t *server_key, *client_key;
static const char secret[] = "fuzz secret";
static int verbose; /* PKM_FUZZ_VERBOSE set: print each input's outcome (to check seeds) */

static pkm_engine_t *make_server(uint8_t flags, fuzz_rng *rng)
{
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, PKM_ROLE_SERVER);
    cfg.server_key = server_key;
    cfg.defer_crypto = (flags & 2) != 0;
    if (flags & 8) {
        cfg.secret = (const uint8_t *)secret;
        cfg.secret_len = sizeof secret - 1;
    }
    if (flags & 32) cfg.max_packet_size = 64;
    rng->s = 1;
    cfg.random = fuzz_random;
    cfg.random_ctx = rng;
    pkm_engine_t *e = NULL;
    FUZZ_CHECK(pkm_engine_new(&cfg, &e) == 0);
    return e;
}

/* ---- seed generation: a real client talks to the server as configured by `flags` ---- */

static void gen_seed(const char *dir, const char *name, uint8_t pattern, uint8_t flags)
{
    fuzz_rng srng, crng = {99};
    pkm_engine_t *s = make_server(flags, &srng);
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, PKM_ROLE_CLIENT);
    cfg.client_key = pkm_key_ref(client_key);
    if (flags & 8) {
        cfg.secret = (const uint8_t *)secret;
        cfg.secret_len = sizeof secret - 1;
    }
    cfg.random = fuzz_random;
    cfg.random_ctx = &crng;
    pkm_engine_t *c = NULL;
    FUZZ_CHECK(pkm_engine_new(&cfg, &c) == 0);
    fuzz_side cs = {.e = c, .rekey = (flags & 16) != 0};
    fuzz_side ss = {.e = s, .is_server = 1, .echo = (flags & 64) != 0, .rekey = (flags & 16) != 0};
    fuzz_log to_server = {0};
    fuzz_pump(&cs, &ss, NULL, &to_server);
    FUZZ_CHECK(pkm_engine_state(c) == PKM_STATE_ESTABLISHED);
    static const uint8_t body[40] = "PkmCom seed packet content, 40 bytes...";
    const size_t sizes[] = {0, 7, 40};
    for (size_t i = 0; i < 3; i++) {
        FUZZ_CHECK(pkm_engine_queue_packet(
                       c, (uint8_t)(0x10 + i),
                       pkm_packet_hash((uint8_t)(0x10 + i), pkm_hashsum_bytes(body, sizes[i])),
                       body, sizes[i]) == 0);
        fuzz_pump(&cs, &ss, NULL, &to_server); /* the first packet may trigger a rekey */
        FUZZ_CHECK(pkm_engine_state(c) == PKM_STATE_ESTABLISHED);
    }
    FUZZ_CHECK(ss.packets == 3 && (!(flags & 16) || cs.rekeyed));
    uint8_t *seed = malloc(2 + to_server.len);
    seed[0] = pattern;
    seed[1] = flags;
    memcpy(seed + 2, to_server.p, to_server.len);
    fuzz_write_seed(dir, name, seed, 2 + to_server.len);
    free(seed);
    free(to_server.p);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    server_key = fuzz_load_key(fuzz_server_pem);
    client_key = fuzz_load_key(fuzz_client_pem);
    verbose = getenv("PKM_FUZZ_VERBOSE") != NULL;
    const char *dir = getenv("PKM_FUZZ_SEEDS");
    if (dir) {
        gen_seed(dir, "handshake_3_packets_eof", 0, 4 | 64);
        gen_seed(dir, "secret_chunks_7", 7, 8);
        gen_seed(dir, "rekey", 0, 16 | 64);
        gen_seed(dir, "byte_at_a_time_recv_buf", 1, 1);
        gen_seed(dir, "deferred_crypto_small_max", 200, 2 | 32);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t pattern = data[0], flags = data[1];
    fuzz_rng rng;
    pkm_engine_t *e = make_server(flags, &rng);
    fuzz_side sd = {.e = e, .is_server = 1, .echo = (flags & 64) != 0, .rekey = (flags & 16) != 0};
    int r = fuzz_run_stream(&sd, data + 2, size - 2, pattern, flags & 1, (flags & 4) != 0);
    int st = pkm_engine_state(e);
    if (verbose)
        fprintf(stderr, "outcome: state %d, %s, %zu packets, rekeyed %d\n", st, pkm_errname(r),
                sd.packets, sd.rekeyed);
    if (r < 0) {
        FUZZ_CHECK(st == PKM_STATE_CLOSED && pkm_engine_error(e) == r);
        /* A failed handshake names its step; the peer's faults are these errors only. */
        const char *step = pkm_engine_fail_step(e);
        if (step) {
            FUZZ_CHECK(r == PKM_EKEYLEN || r == PKM_EKEY || r == PKM_EHANDSHAKE);
        } else {
            FUZZ_CHECK(r == PKM_EEOF || r == PKM_EPROTO || r == PKM_EPADDING || r == PKM_ETOOBIG ||
                       r == PKM_ENEGLEN);
        }
    } else {
        FUZZ_CHECK(st != PKM_STATE_CLOSED);
        if (st == PKM_STATE_HANDSHAKE) FUZZ_CHECK(sd.packets == 0);
    }
    pkm_engine_free(e);
    return 0;
}
