/* SPDX-License-Identifier: MIT */
/* The I/O seam of conn.c: every read, write and poll of a connection goes through a table that
 * tests replace to inject short counts, EINTR, EAGAIN, ECONNRESET. Not installed. */
#ifndef PKM_CONN_INTERNAL_H
#define PKM_CONN_INTERNAL_H

#include <poll.h>
#include <sys/types.h>
#include "pkmcom/conn.h"

/* The calls conn.c makes on a socket. Each behaves as its POSIX namesake (returns -1 and sets
 * errno on failure). read = recv(fd, buf, n, 0), write = send(fd, buf, n, MSG_NOSIGNAL). ctx is
 * passed through untouched. */
struct pkm__io {
    ssize_t (*read)(void *ctx, int fd, void *buf, size_t n);
    ssize_t (*write)(void *ctx, int fd, const void *buf, size_t n);
    int (*poll)(void *ctx, struct pollfd *fds, nfds_t nfds, int timeout_ms);
    void *ctx;
};

/* The real socket calls. */
extern const struct pkm__io pkm__io_default;

/* The public entry points with an I/O table (NULL = pkm__io_default). The table is BORROWED: it
 * must outlive the connection (or the call, for one that fails). It is used for the whole life of
 * the connection, from the first byte of the handshake (and for pkm__connect_io, the connect
 * wait). */
int pkm__connect_io(const char *host, int port, const pkm_conn_config_t *cfg,
                    const struct pkm__io *io, pkm_conn_t **out);
int pkm__conn_from_fd_io(int fd, int role, const pkm_conn_config_t *cfg, const struct pkm__io *io,
                         pkm_conn_t **out);
int pkm__accept_io(pkm_listener_t *l, const struct pkm__io *io, pkm_conn_t **out);

/* Replaces a connection's I/O table from now on (NULL = pkm__io_default). */
void pkm__conn_set_io(pkm_conn_t *c, const struct pkm__io *io);

#endif
