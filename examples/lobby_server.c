/* SPDX-License-Identifier: MIT
 * A lobby chat server on server.h (protocol: lobby.h): a client joins with a name, each line it
 * says goes to everyone else, joins and leaves are announced. Usage: lobby_server PORT [KEY.pem] */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lobby.h"

static pkm_server_t *g_server;
static pkm_registry_t *g_reg;

/* Sends Said {from, text} to every established connection but `except`. */
static void tell(const pkm_server_conn_t *except, const char *from, const char *text)
{
    pkm_value_t v[2] = {{.str = {from, strlen(from)}}, {.str = {text, strlen(text)}}};
    pkm_server_broadcast_msg(g_server, except, g_reg, LOBBY_SAID, v, 2, NULL);
}

/* Every packet passed the registry's check (engine.verify below), so it decodes. */
static void on_packet(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt)
{
    (void)user;
    pkm_msg_t *m;
    if (pkm_registry_decode(g_reg, pkt, &m) < 0) return;
    const char *text = pkm_msg_field(m, 0)->str.ptr; /* a Join's name or a Say's text */
    char *name = pkm_server_conn_get_data(conn), line[300];
    if (pkt->id == LOBBY_JOIN && !name && (name = strdup(text)) != NULL) {
        pkm_server_conn_set_data(conn, name); /* freed in on_close */
        snprintf(line, sizeof line, "%s joined", name);
        tell(conn, "lobby", line);
        fprintf(stderr, "%s\n", line);
    } else if (pkt->id == LOBBY_SAY && name) {
        tell(conn, name, text);
    }
    pkm_msg_free(m);
}

static void on_close(void *user, pkm_server_conn_t *conn, int err, const char *fail_step)
{
    (void)user;
    char *name = pkm_server_conn_get_data(conn), line[300];
    if (pkm_handshake_failure(PKM_ROLE_SERVER, err, fail_step, line, sizeof line))
        fprintf(stderr, "%s\n", line); /* which side closed the handshake, at which step */
    if (!name) return;
    snprintf(line, sizeof line, "%s left", name);
    tell(conn, "lobby", line);
    free(name);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) return fprintf(stderr, "usage: %s PORT [KEY.pem]\n", argv[0]), 2;
    char err[PKM_SERVER_ERRMSG_SIZE] = "", fp[PKM_FINGERPRINT_SIZE];
    pkm_key_t *key = NULL;
    int rc = argc == 3 ? pkm_key_load_pem_errbuf(argv[2], &key, err, sizeof err)
                       : pkm_key_generate(&key);
    if (rc == 0) rc = pkm_registry_new_from(lobby_packets, 3, &g_reg);
    pkm_server_config_t cfg;
    pkm_server_config_init(&cfg);
    cfg.host = "127.0.0.1";
    cfg.port = (uint16_t)atoi(argv[1]);
    cfg.engine.server_key = key;
    cfg.engine.verify = pkm_registry_verify_hook; /* a packet off its schema closes */
    cfg.engine.verify_ctx = g_reg;
    cfg.on_packet = on_packet;
    cfg.on_close = on_close;
    cfg.errbuf = err; /* e.g. "cannot listen on 127.0.0.1:7000: Address already in use" */
    cfg.errbuf_size = sizeof err;
    if (rc == 0 && (rc = pkm_server_new(&cfg, &g_server)) == 0) {
        pkm_key_fingerprint(key, fp);
        printf("listening on 127.0.0.1:%u %s\n", (unsigned)pkm_server_port(g_server), fp);
        fflush(stdout);
        rc = pkm_server_run(g_server); /* the loop, until pkm_server_stop() */
        pkm_server_free(g_server);
    }
    if (rc < 0) fprintf(stderr, "lobby_server: %s\n", err[0] ? err : pkm_strerror(rc));
    pkm_registry_free(g_reg);
    pkm_key_free(key);
    return rc < 0 ? 1 : 0;
}
