/* SPDX-License-Identifier: MIT */
/* Test helper: many PkmCom/TCP clients on one libuv loop (engines with their RSA work on the
 * thread pool), each doing a full handshake and a number of checked echo round trips. */
#ifndef PKM_TEST_CLIENTS_H
#define PKM_TEST_CLIENTS_H

#include <stddef.h>
#include <stdint.h>
#include "pkmcom/keys.h"

typedef struct tcl_opts {
    uint16_t port;          /* server on 127.0.0.1:port */
    size_t nclients;        /* how many connections */
    pkm_key_t *const *keys; /* client key pairs, reused round robin (pkm_key_ref per client) */
    size_t nkeys;
    const uint8_t *secret; /* alternative handshaking secret, or NULL */
    size_t secret_len;
    size_t echoes;      /* packets each client sends, one at a time, each reply checked */
    size_t payload;     /* content bytes per packet */
    size_t max_pending; /* connections connecting or handshaking at once (0 = 128) */
    /* Hold mode: when every client is established and done with its echoes, write one byte to
     * ready_fd, then keep every connection open until release_fd becomes readable (or closes);
     * then close them all. -1 = no hold: each client closes when done. */
    int ready_fd, release_fd;
    uint64_t timeout_ms; /* give up after this long (0 = 60 s) */
} tcl_opts_t;

typedef struct tcl_result {
    size_t established; /* handshakes completed */
    size_t echoed;      /* clients whose every echo came back identical */
    size_t failed;      /* clients that failed (connect, handshake, closed early, bad reply) */
    size_t bad_replies; /* replies that differ from what was sent */
    int first_err;      /* the first failure's PKM_E* (or libuv) code, 0 if none */
    int timed_out;
} tcl_result_t;

/* Runs the clients on a fresh loop on the calling thread until all are done. Returns 0 if the
 * run itself worked (look at *res for the outcome), negative on setup failure. */
int tcl_run(const tcl_opts_t *opts, tcl_result_t *res);

/* Frees OpenSSL's per-thread state (DRBGs, error queue) in each of libuv's thread-pool threads,
 * which RSA work on the pool creates and which would otherwise outlive OpenSSL's own exit-time
 * cleanup (libuv joins its pool only in a destructor, after OpenSSL's atexit handler): valgrind
 * reports it as lost. Call at the end of a test program that used the pool. */
void tcl_pool_thread_cleanup(void);

/* Measurement helpers shared by the tests and bench/bench_memory.c. Sleeps ms milliseconds, the
 * whole interval even when a signal interrupts it. */
void tcl_sleep_ms(long ms);
/* Heap in use: glibc's count of allocated bytes in every arena plus mmapped chunks. */
size_t tcl_heap_in_use(void);
/* VmRSS from /proc/self/status, in bytes (0 if unreadable). */
size_t tcl_rss_bytes(void);
/* Reads one byte within timeout_ms; the byte, or -1. */
int tcl_read_byte(int fd, int timeout_ms);
/* Raises the soft open-file limit to the hard limit. */
void tcl_raise_nofile(void);

#endif
