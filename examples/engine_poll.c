/* SPDX-License-Identifier: MIT
 * The sans-IO engine (engine.h) in your own event loop: a client over one socket with poll().
 * The engine never touches the socket: this loop moves bytes between the two and hands packets
 * in and out. Usage: engine_poll HOST PORT [SHA256:FINGERPRINT]  (sends one packet, prints the
 * echo) */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <pkmcom/pkmcom.h>

/* A plain TCP connection (blocking connect), then non-blocking for the loop. -1 on failure. */
static int tcp_connect(const char *host, const char *port)
{
    struct addrinfo hints = {0}, *res, *ai;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
    int fd = -1;
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s HOST PORT [SHA256:FINGERPRINT]\n", argv[0]);
        return 2;
    }
    int fd = tcp_connect(argv[1], argv[2]);
    if (fd < 0) {
        fprintf(stderr, "engine_poll: cannot connect to %s:%s\n", argv[1], argv[2]);
        return 1;
    }
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, PKM_ROLE_CLIENT);
    if (argc == 4) cfg.pin_fingerprint = argv[3];
    pkm_engine_t *e;
    int rc = pkm_engine_new(&cfg, &e); /* generates the client's ephemeral key (~100 ms) */
    if (rc < 0) {
        fprintf(stderr, "engine_poll: %s\n", pkm_strerror(rc));
        close(fd);
        return 1;
    }

    const uint8_t ping[] = "ping";
    int queued = 0, status = 1;
    for (;;) {
        /* 1. Once established, queue our packet (encrypted into the engine's send buffer). */
        if (!queued && pkm_engine_state(e) == PKM_STATE_ESTABLISHED) {
            rc = pkm_engine_queue_packet(e, 0x20, pkm_packet_hash(0x20, pkm_hashsum_bytes(ping, 4)),
                                         ping, 4);
            if (rc < 0) break;
            queued = 1;
        }
        /* 2. Take what has arrived: 1 = a packet, 0 = none yet, < 0 = the engine closed. */
        pkm_packet_t pkt;
        rc = pkm_engine_next_packet(e, &pkt);
        if (rc == 1) {
            printf("got packet 0x%02X, %zu bytes: %.*s\n", pkt.id, pkt.size, (int)pkt.size,
                   (const char *)pkt.content);
            status = 0;
            break;
        }
        if (rc < 0 || pkm_engine_state(e) == PKM_STATE_CLOSED) break;

        /* 3. Wait for the socket: readable always, writable while the engine has bytes to send. */
        size_t out_len;
        const uint8_t *out = pkm_engine_send_buf(e, &out_len);
        struct pollfd p = {.fd = fd, .events = POLLIN | (out_len ? POLLOUT : 0)};
        int n = poll(&p, 1, 10000);
        if (n == 0) {
            pkm_engine_close(e, PKM_ETIMEOUT); /* our own timeout */
            break;
        }
        if (n < 0 && errno != EINTR) break;
        if (p.revents & POLLOUT) {
            ssize_t w = send(fd, out, out_len, MSG_NOSIGNAL);
            if (w > 0)
                pkm_engine_send_ack(e, (size_t)w);
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                break;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            size_t cap;
            uint8_t *in = pkm_engine_recv_buf(e, &cap); /* cap 0: take packets first (step 2) */
            ssize_t r = cap ? recv(fd, in, cap, 0) : 0;
            if (r > 0)
                pkm_engine_recv_ack(e, (size_t)r); /* runs the handshake as bytes arrive */
            else if (r == 0 && cap)
                pkm_engine_recv_eof(e);
            else if (r < 0 && errno != EAGAIN && errno != EINTR)
                break;
        }
    }
    if (status != 0) {
        int err = pkm_engine_error(e);
        const char *step = pkm_engine_fail_step(e);
        fprintf(stderr, "engine_poll: %s%s%s\n", err ? pkm_strerror(err) : "socket error",
                step ? " at " : "", step ? step : "");
    }
    pkm_engine_free(e); /* wipes the keys */
    close(fd);
    return status;
}
