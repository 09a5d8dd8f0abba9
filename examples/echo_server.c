/* SPDX-License-Identifier: MIT
 * A minimal echo server on server.h (libuv underneath): every packet goes back to its sender.
 * Usage: echo_server PORT [KEY.pem]   (PORT 0: a free one; no key: a fresh RSA-2048 key)
 * Prints "listening on 127.0.0.1:PORT SHA256:..." once ready; SIGINT or SIGTERM stops it. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <pkmcom/pkmcom.h>

static pkm_server_t *g_server;

/* pkm_server_stop() is safe from a signal handler. */
static void on_signal(int sig)
{
    (void)sig;
    pkm_server_stop(g_server);
}

/* Called on the loop thread for every packet; pkt is valid only during the call. */
static void on_packet(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt)
{
    (void)user;
    /* Echo (a send queue overflow would close this connection, which is fine here). */
    (void)pkm_server_send(conn, pkt->id, pkt->hash, pkt->content, pkt->size);
}

static void on_close(void *user, pkm_server_conn_t *conn, int err, const char *fail_step)
{
    (void)user;
    if (fail_step) /* a failed handshake: which step, never a secret */
        fprintf(stderr, "echo_server: connection %llu: handshake failed at %s: %s\n",
                (unsigned long long)pkm_server_conn_id(conn), fail_step, pkm_strerror(err));
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s PORT [KEY.pem]\n", argv[0]);
        return 2;
    }
    pkm_key_t *key;
    int rc = argc == 3 ? pkm_key_load_pem(argv[2], &key) : pkm_key_generate(&key);
    if (rc < 0) {
        fprintf(stderr, "echo_server: key: %s\n", pkm_strerror(rc));
        return 1;
    }
    char fp[PKM_FINGERPRINT_SIZE];
    pkm_key_fingerprint(key, fp);

    pkm_server_config_t cfg;
    pkm_server_config_init(&cfg);
    cfg.host = "127.0.0.1";
    cfg.port = (uint16_t)atoi(argv[1]);
    cfg.engine.server_key = key; /* borrowed: freed after the server */
    cfg.on_packet = on_packet;
    cfg.on_close = on_close;
    if ((rc = pkm_server_new(&cfg, &g_server)) < 0) { /* binds and listens */
        fprintf(stderr, "echo_server: %s\n", pkm_strerror(rc));
        pkm_key_free(key);
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    printf("listening on 127.0.0.1:%u %s\n", (unsigned)pkm_server_port(g_server), fp);
    fflush(stdout);

    rc = pkm_server_run(g_server); /* the loop, until pkm_server_stop() */
    pkm_server_free(g_server);
    pkm_key_free(key);
    return rc < 0 ? 1 : 0;
}
