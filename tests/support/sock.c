/* SPDX-License-Identifier: MIT */
/* Shared test helpers for plain TCP sockets on loopback (tests/support.h): the server, PROXY and
 * limit tests connect from chosen 127.0.0.x source addresses through these. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include "support.h"

int t_tcp_connect(uint16_t port, const char *from, int rcv_timeout_s)
{
    return t_tcp_connect_rcvbuf(port, from, rcv_timeout_s, 0);
}

int t_tcp_connect_rcvbuf(uint16_t port, const char *from, int rcv_timeout_s, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (rcvbuf) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf); /* before connect */
    if (rcv_timeout_s > 0) {
        struct timeval tv = {rcv_timeout_s, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    struct sockaddr_in a;
    if (from) {
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, from, &a.sin_addr), 1);
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    }
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

uint16_t t_local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}
