/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the engine fed arbitrary bytes. Byte 0 picks the mode (client handshake,
 * server handshake, or the established packet layer with a fixed key) and byte 1 the chunk size
 * the rest is delivered in; no input may crash, leak or read out of bounds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>
#include "pkmcom/engine.h"
#include "engine_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Keys made once per process (fuzzing harness state, not library state). */
static pkm_key_t *server_key;
static char client_pem[64];

static void remove_pem(void)
{
    unlink(client_pem);
}

static void init_keys(void)
{
    if (server_key) return;
    pkm_key_t *c = NULL;
    if (pkm_key_generate(&server_key) < 0 || pkm_key_generate(&c) < 0) abort();
    strcpy(client_pem, "/tmp/pkm_fuzz_client_XXXXXX");
    int fd = mkstemp(client_pem);
    if (fd < 0) abort();
    close(fd);
    atexit(remove_pem);
    if (pkm_key_save_pem(c, client_pem) < 0) abort();
    pkm_key_free(c);
}

static const uint8_t fixed_key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t fixed_iv[16] = {0xA5};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    init_keys();
    int mode = data[0] % 3;
    size_t chunk = (size_t)data[1] + 1;
    data += 2;
    size -= 2;

    pkm_engine_config_t cfg;
    pkm_engine_t *e = NULL;
    pkm_engine_config_init(&cfg, mode == 0 ? PKM_ROLE_CLIENT : PKM_ROLE_SERVER);
    cfg.max_packet_size = 4096;
    if (mode == 0) {
        if (pkm_key_load_pem(client_pem, &cfg.client_key) < 0) abort();
    } else {
        cfg.server_key = server_key;
    }
    if (pkm_engine_new(&cfg, &e) < 0) abort();

    uint8_t *buf = NULL;
    if (mode == 2) {
        /* The rest is plaintext: encrypt it (zero-extended to whole blocks) under the fixed key
         * so the engine's packet parsing sees exactly these bytes. */
        if (pkm__engine_test_start(e, fixed_key, fixed_iv) < 0) abort();
        size_t n = (size + 15) / 16 * 16;
        buf = calloc(1, n ? n : 1);
        if (!buf) abort();
        memcpy(buf, data, size);
        EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
        int outl = 0;
        if (!x || EVP_EncryptInit_ex(x, EVP_aes_256_cbc(), NULL, fixed_key, fixed_iv) != 1 ||
            EVP_CIPHER_CTX_set_padding(x, 0) != 1 ||
            EVP_EncryptUpdate(x, buf, &outl, buf, (int)n) != 1)
            abort();
        EVP_CIPHER_CTX_free(x);
        data = buf;
        size = n;
    }
    pkm_packet_t pkt;
    size_t off = 0;
    int eof = 0;
    for (;;) {
        unsigned w = pkm_engine_wants(e);
        if (w & PKM_WANT_CLOSED) break;
        if (w & PKM_WANT_SEND) {
            size_t len = 0;
            pkm_engine_send_buf(e, &len);
            (void)pkm_engine_send_ack(e, len);
        } else if (w & PKM_WANT_PACKET) {
            if (pkm_engine_next_packet(e, &pkt) == 1 && pkt.size &&
                pkt.content[pkt.size - 1] == 0x5A)
                (void)pkm_engine_rekey(e, NULL, 0);
        } else if ((w & PKM_WANT_RECV) && off < size) {
            size_t cap = 0, n = size - off < chunk ? size - off : chunk;
            uint8_t *dst = pkm_engine_recv_buf(e, &cap);
            if (n > cap) n = cap;
            if (n) memcpy(dst, data + off, n);
            (void)pkm_engine_recv_ack(e, n);
            off += n;
        } else if (!eof) {
            eof = 1;
            (void)pkm_engine_recv_eof(e);
        } else {
            break;
        }
    }
    pkm_engine_free(e);
    free(buf);
    return 0;
}
