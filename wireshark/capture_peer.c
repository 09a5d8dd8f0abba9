/* SPDX-License-Identifier: MIT */
/* pkm_capture_peer: one PkmCom/TCP session over 127.0.0.1:PORT between a server thread and a
 * client, with a password, Complete Definition packets and a re-establishment, for the capture
 * test (tests/cli_capture.sh). Prints every packet sent, one JSON line each, with "dir". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "pkmcom/pkmcom.h"

#define TIMEOUT 10000

static const char *secret = "capture-pw";
static const char *secret2 = "second-pw";
static pkm_listener_t *listener;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void die(const char *what, int r)
{
    fprintf(stderr, "pkm_capture_peer: %s: %s\n", what, pkm_strerror(r));
    exit(1);
}

/* Encodes a Complete Definition packet, sends it and prints it. */
static void send_cmpl(pkm_conn_t *c, const char *dir, uint8_t id, const pkm_value_t *v, size_t n)
{
    const pkm_cmpl_packet_t *p = pkm_cmpl_by_id(id);
    if (!p || !p->schema) die("no schema", PKM_EUNKNOWNID);
    uint8_t *buf = NULL;
    size_t len = 0;
    uint32_t ch = 0;
    int r = pkm_schema_encode_alloc(p->schema, v, n, &buf, &len, &ch);
    if (r < 0) die("encode", r);
    uint32_t hash = pkm_packet_hash(id, ch);
    if ((r = pkm_conn_send(c, id, hash, buf, len, TIMEOUT)) < 0) die("send", r);
    pthread_mutex_lock(&out_lock);
    printf("{\"dir\":\"%s\",\"id\":%u,\"hash\":%lu,\"size\":%zu,\"content\":\"", dir, id,
           (unsigned long)hash, len);
    for (size_t i = 0; i < len; i++)
        printf("%02x", buf[i]);
    printf("\"}\n");
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    pkm_bytes_free(buf);
}

static void expect(pkm_conn_t *c, uint8_t id)
{
    pkm_packet_t pkt;
    int r = pkm_conn_recv(c, &pkt, TIMEOUT);
    if (r != 1) die("recv", r);
    if (pkt.id != id) die("unexpected packet", PKM_EPROTO);
}

static void *server(void *arg)
{
    (void)arg;
    pkm_conn_t *c = NULL;
    int r = pkm_accept(listener, &c);
    if (r < 0) die("accept", r);
    expect(c, PKM_CMPL_CONNECT_REQUEST);
    /* Re-establish Secret, reason 1 (password): the new derivation uses the second password. */
    pkm_value_t reason[] = {PKM_V_U(PKM_CMPL_REASON_PASSWORD)};
    send_cmpl(c, "s2c", PKM_CMPL_REESTABLISH_SECRET, reason, 1);
    if ((r = pkm_conn_rekey(c, (const uint8_t *)secret2, strlen(secret2), TIMEOUT)) < 0)
        die("server rekey", r);
    expect(c, PKM_CMPL_KEEP_ALIVE_SERVERBOUND);
    pkm_value_t ok[] = {PKM_V_STR("{\"name\":\"capture\"}"),
                        PKM_V_U(PKM_CMPL_ACT_TRADE | PKM_CMPL_ACT_IRC)};
    send_cmpl(c, "s2c", PKM_CMPL_CONNECT_SUCCESS, ok, 2);
    if ((r = pkm_conn_flush(c, TIMEOUT)) < 0) die("flush", r);
    /* Wait for the client to close first. */
    pkm_packet_t pkt;
    (void)pkm_conn_recv(c, &pkt, TIMEOUT);
    pkm_conn_close(c);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: pkm_capture_peer PORT SERVER_KEY_PEM\n");
        return 2;
    }
    int port = atoi(argv[1]);
    pkm_key_t *key = NULL;
    int r = pkm_key_load_pem(argv[2], &key);
    if (r < 0) die("server key", r);
    pkm_conn_config_t sc;
    pkm_conn_config_init(&sc);
    sc.engine.server_key = key;
    sc.engine.secret = (const uint8_t *)secret;
    sc.engine.secret_len = strlen(secret);
    if ((r = pkm_listen("127.0.0.1", port, &sc, &listener)) < 0) die("listen", r);
    pthread_t t;
    if (pthread_create(&t, NULL, server, NULL) != 0) die("thread", PKM_ENOMEM);

    pkm_conn_config_t cc;
    pkm_conn_config_init(&cc);
    cc.engine.secret = (const uint8_t *)secret;
    cc.engine.secret_len = strlen(secret);
    pkm_conn_t *c = NULL;
    if ((r = pkm_connect("127.0.0.1", port, &cc, &c)) < 0) die("connect", r);
    pkm_value_t req[] = {PKM_V_VERSION(1, 0), PKM_V_STR("{\"trainer\":\"Red\"}"),
                         PKM_V_UUID(0x0123456789abcdefULL, 0xfedcba9876543210ULL)};
    send_cmpl(c, "c2s", PKM_CMPL_CONNECT_REQUEST, req, 3);
    expect(c, PKM_CMPL_REESTABLISH_SECRET);
    if ((r = pkm_conn_rekey(c, (const uint8_t *)secret2, strlen(secret2), TIMEOUT)) < 0)
        die("client rekey", r);
    pkm_value_t ka[] = {PKM_V_I(42), PKM_V_TIME(1700000000, 5), PKM_V_U(1),
                        PKM_V_U(PKM_CMPL_REESTABLISH_SECRET), PKM_V_I(155)};
    send_cmpl(c, "c2s", PKM_CMPL_KEEP_ALIVE_SERVERBOUND, ka, 5);
    expect(c, PKM_CMPL_CONNECT_SUCCESS);
    pkm_conn_close(c);
    pthread_join(t, NULL);
    pkm_listener_close(listener);
    pkm_key_free(key);
    return 0;
}
