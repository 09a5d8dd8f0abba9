/* SPDX-License-Identifier: MIT */
/* The echoing impostor of issue 11, for tests: shows a real server's public key, sends random
 * bytes as its KeyShare, then echoes every byte the client sends (what fooled wire profile 1). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <openssl/rand.h>
#include "support.h"

#define KEYSHARE 528

size_t t_impostor_hello(const uint8_t *der, size_t der_len, uint8_t *out, size_t cap)
{
    assert_true(der_len >= 1 && cap >= 4 + der_len);
    out[0] = (uint8_t)(der_len >> 24);
    out[1] = (uint8_t)(der_len >> 16);
    out[2] = (uint8_t)(der_len >> 8);
    out[3] = (uint8_t)der_len;
    memcpy(out + 4, der, der_len);
    return 4 + der_len;
}

size_t t_impostor_client_hello_len(const uint8_t *p, size_t n)
{
    if (n < 4) return 0;
    size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (len > 1024) return 0;
    return n >= 4 + len + KEYSHARE ? 4 + len + KEYSHARE : 0;
}

struct t_impostor {
    int lfd;
    uint16_t port;
    uint8_t hello[4 + 1024];
    size_t hello_len;
    pthread_t thread;
    atomic_int stop;
    atomic_size_t connections, echoed;
};

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One connection: ServerKey (the real server's), then after the ClientKey 528 random bytes as
 * the KeyShare, then after the client's KeyShare an echo of everything, until the client goes. */
static void serve_one(t_impostor *im, int fd)
{
    uint8_t buf[4096];
    if (write_all(fd, im->hello, im->hello_len) < 0) return;
    if (read_all(fd, buf, 4) < 0) return;
    size_t n = (size_t)buf[0] << 24 | (size_t)buf[1] << 16 | (size_t)buf[2] << 8 | buf[3];
    if (n < 1 || n > 1024 || read_all(fd, buf, n) < 0) return;
    uint8_t share[KEYSHARE];
    if (RAND_bytes(share, sizeof share) != 1) return;
    if (write_all(fd, share, sizeof share) < 0) return;
    if (read_all(fd, buf, KEYSHARE) < 0) return; /* the client's KeyShare: useless to us */
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return;
        if (write_all(fd, buf, (size_t)r) < 0) return;
        atomic_fetch_add(&im->echoed, (size_t)r);
    }
}

static void *impostor_main(void *arg)
{
    t_impostor *im = arg;
    while (!atomic_load(&im->stop)) {
        struct pollfd p = {.fd = im->lfd, .events = POLLIN};
        int r = poll(&p, 1, 50); /* a stop check every 50 ms, not a timing assumption */
        if (r <= 0) continue;
        int fd = accept(im->lfd, NULL, NULL);
        if (fd < 0) continue;
        atomic_fetch_add(&im->connections, 1);
        serve_one(im, fd);
        close(fd);
    }
    return NULL;
}

t_impostor *t_impostor_start(const uint8_t *server_der, size_t der_len)
{
    return t_impostor_start_port(server_der, der_len, 0);
}

t_impostor *t_impostor_start_port(const uint8_t *server_der, size_t der_len, uint16_t port)
{
    t_impostor *im = calloc(1, sizeof *im);
    assert_non_null(im);
    im->hello_len = t_impostor_hello(server_der, der_len, im->hello, sizeof im->hello);
    im->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(im->lfd >= 0);
    int one = 1; /* to take over the port a real server has just left */
    assert_int_equal(setsockopt(im->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(im->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(im->lfd, 8), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(im->lfd, (struct sockaddr *)&a, &al), 0);
    im->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&im->thread, NULL, impostor_main, im), 0);
    return im;
}

uint16_t t_impostor_port(const t_impostor *im)
{
    return im->port;
}

size_t t_impostor_connections(t_impostor *im)
{
    return atomic_load(&im->connections);
}

size_t t_impostor_echoed(t_impostor *im)
{
    return atomic_load(&im->echoed);
}

size_t t_impostor_stop(t_impostor *im)
{
    if (!im) return 0;
    atomic_store(&im->stop, 1);
    pthread_join(im->thread, NULL);
    close(im->lfd);
    size_t echoed = atomic_load(&im->echoed);
    free(im);
    return echoed;
}
