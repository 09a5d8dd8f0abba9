/* SPDX-License-Identifier: MIT
 * The README's client: connects to a PkmCom/TCP server, sends one packet and prints the answer.
 * Usage: client HOST PORT [SHA256:FINGERPRINT]   (try it against `pkmcom serve`, which echoes) */
#include <stdio.h>
#include <stdlib.h>
#include <pkmcom/pkmcom.h>

/* What failed: the connection's own sentence when it has one, else the error code's. */
static void report(const char *what, const char *msg, int rc)
{
    fprintf(stderr, "client: %s: %s\n", what, (msg && *msg) ? msg : pkm_strerror(rc));
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s HOST PORT [SHA256:FINGERPRINT]\n", argv[0]);
        return 2;
    }
    char err[PKM_ERRMSG_SIZE] = "";
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    if (argc == 4) cfg.engine.pin_fingerprint = argv[3]; /* accept only this server key */
    cfg.errbuf = err;
    cfg.errbuf_size = sizeof err;

    pkm_conn_t *c;
    int rc = pkm_connect(argv[1], atoi(argv[2]), &cfg, &c); /* TCP + the whole handshake */
    if (rc < 0) {
        report("connect", err, rc);
        return 1;
    }
    printf("connected to %s, server key %s\n", pkm_conn_peer_addr(c), pkm_conn_peer_fingerprint(c));

    /* One packet on the raw path: id 0x10, its Hash = id*31 + the hashcode of its content. */
    const uint8_t hello[] = "hello";
    uint32_t hash = pkm_packet_hash(0x10, pkm_hashsum_bytes(hello, 5));
    pkm_packet_t pkt;
    if ((rc = pkm_conn_send(c, 0x10, hash, hello, 5, 5000)) < 0 ||
        (rc = pkm_conn_recv(c, &pkt, 5000)) < 0) { /* waits at most 5 s for each */
        report("exchange", pkm_conn_errmsg(c), rc);
        pkm_conn_close(c);
        return 1;
    }
    /* pkt.content points into the connection's buffer: valid until the next call on c. */
    printf("got packet 0x%02X, %zu bytes: %.*s\n", pkt.id, pkt.size, (int)pkt.size,
           (const char *)pkt.content);
    pkm_conn_close(c); /* closes the socket, wipes the keys */
    return 0;
}
