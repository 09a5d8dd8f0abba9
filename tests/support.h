/* SPDX-License-Identifier: MIT */
/* Helpers shared by the test programs: cmocka includes, hex conversion, deterministic PRNG. */
#ifndef PKM_TEST_SUPPORT_H
#define PKM_TEST_SUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "pkmcom/engine.h"

/* Parses hex (spaces allowed) into out; returns the byte count, or -1 on bad input/overflow. */
int t_unhex(const char *hex, uint8_t *out, size_t cap);

/* A deterministic xorshift64* PRNG so that random round trips are reproducible. */
typedef struct {
    uint64_t s;
} t_rng;
void t_rng_seed(t_rng *r, uint64_t seed);
uint64_t t_rng_next(t_rng *r);
void t_rng_bytes(t_rng *r, uint8_t *out, size_t n);

/* An in-memory "network" between two engines (tests/support/pump.c): moves the bytes each engine
 * has to send into the other's receive buffer, at most `chunk` bytes per move (0 = no limit),
 * runs the RSA job an engine wants (t_run_job), and tells an engine the peer closed (recv_eof)
 * once the other engine is closed. Optionally records what went each way. */
typedef struct {
    pkm_engine_t *a, *b;
    size_t chunk;
    int use_feed;             /* move with pkm_engine_feed instead of recv_buf/recv_ack */
    int no_work;              /* leave deferred work alone */
    int eof_a, eof_b;         /* recv_eof already delivered to a / b */
    uint8_t *log_ab, *log_ba; /* transcripts (when record is set), malloc'd */
    size_t log_ab_len, log_ba_len, log_ab_cap, log_ba_cap;
    int record;
} t_pump;
void t_pump_init(t_pump *p, pkm_engine_t *a, pkm_engine_t *b, size_t chunk);
/* Moves bytes both ways until nothing moves; returns the number of bytes moved. */
size_t t_pump_run(t_pump *p);
/* Frees the transcripts. */
void t_pump_done(t_pump *p);
/* Takes the job the engine wants, runs it on this thread and gives it back: returns what
 * pkm_engine_job_take / pkm_engine_job_done returned. */
int t_run_job(pkm_engine_t *e);

/* Engine fixtures (tests/support/engine_fixture.c): keys made once per test program. */
typedef struct {
    pkm_key_t *server_key; /* long-term key pair, borrowed by every server engine */
    char client_pem[64];   /* a client key pair saved once (0600), loaded afresh per engine */
    char server_fp[PKM_FINGERPRINT_SIZE];
    char client_fp[PKM_FINGERPRINT_SIZE];
} t_keys;
void t_keys_init(t_keys *k);
void t_keys_free(t_keys *k);
/* The keys of a program whose cases share one set: made by t_keys_setup and freed by
 * t_keys_teardown, given to cmocka_run_group_tests as its group setup and teardown. */
extern t_keys t_shared_keys;
int t_keys_setup(void **state);
int t_keys_teardown(void **state);
pkm_key_t *t_client_key(const t_keys *k); /* a fresh copy of the client key pair */
/* A pkm_engine_config_t.random hook drawing from a t_rng (ctx). */
int t_det_random(void *ctx, uint8_t *out, size_t n);
typedef struct {
    const char *secret; /* alternative handshaking secret, or NULL */
    const char *pin;    /* client: pinned fingerprint, or NULL */
    int defer;          /* defer_crypto */
    int generate_key;   /* client: no client_key, let the engine generate one */
    size_t max_packet;  /* 0 = default */
    size_t max_send;    /* 0 = default */
    t_rng *rng;         /* deterministic M/IV, or NULL */
    int (*verify)(void *ctx, const pkm_packet_t *pkt);
} t_opts;
pkm_engine_t *t_client(const t_keys *k, const t_opts *o); /* o may be NULL */
pkm_engine_t *t_server(const t_keys *k, const t_opts *o);
/* 1 when the suite runs under valgrind (PKM_VALGRIND=1): heavy loops may then sample. */
int t_under_valgrind(void);
/* The event loops server tests give pkm_server_config_t.loops: PKM_TEST_LOOPS (ctest runs each
 * server test with 1 and, as NAME_loops2, with 2), else 1. */
unsigned t_server_loops(void);
/* A TCP connection to 127.0.0.1:port, bound first to source address `from` (e.g. "127.0.0.2";
 * NULL: any); with rcv_timeout_s > 0 its reads time out after that many seconds (a test that
 * would hang fails instead). Asserts every step; returns the fd, which the caller closes. */
int t_tcp_connect(uint16_t port, const char *from, int rcv_timeout_s);
/* The same with the socket's SO_RCVBUF set to rcvbuf bytes first (0: the system's default). */
int t_tcp_connect_rcvbuf(uint16_t port, const char *from, int rcv_timeout_s, int rcvbuf);
/* The local port of a connected IPv4 socket (asserts). */
uint16_t t_local_port(int fd);
/* Pumps a fresh pair to the end of the handshake and asserts both are established. */
void t_handshake(pkm_engine_t *c, pkm_engine_t *s, size_t chunk);

/* The echoing impostor of issue 11 (tests/support/impostor.c): it holds only a real server's
 * PUBLIC key. It shows that key as its ServerKey, answers the ClientKey with 528 random bytes as
 * its KeyShare, reads the client's KeyShare, then echoes every byte the client sends. Under wire
 * profile 1 the echoed 0xFF passed as the server's answer; under profile 2 a client must fail at
 * the confirmation with PKM_ENOPROOF.
 * In memory: t_impostor_hello writes the ServerKey message for der (4 + der_len bytes, cap at
 * least that); t_impostor_client_hello_len says how many bytes of a client's first flight are its
 * ClientKey + KeyShare (0 while incomplete), the rest being what the impostor echoes.
 * Over TCP: t_impostor_start listens on 127.0.0.1 (an ephemeral port) and serves connections
 * one after another in a thread until t_impostor_stop.
 * As a process, for the CLI tests: `test_engine_auth --impostor KEY.pem [PORT]` (see there). */
size_t t_impostor_hello(const uint8_t *der, size_t der_len, uint8_t *out, size_t cap);
size_t t_impostor_client_hello_len(const uint8_t *p, size_t n);
typedef struct t_impostor t_impostor;
t_impostor *t_impostor_start(const uint8_t *server_der, size_t der_len);
/* The same on a given port of 127.0.0.1 (0 = any), with SO_REUSEADDR. */
t_impostor *t_impostor_start_port(const uint8_t *server_der, size_t der_len, uint16_t port);
uint16_t t_impostor_port(const t_impostor *im);
size_t t_impostor_connections(t_impostor *im); /* connections accepted so far */
size_t t_impostor_echoed(t_impostor *im);      /* bytes echoed so far, over all connections */
/* Stops and frees the impostor, after the connection it is serving ends; returns the bytes it
 * echoed over all connections. */
size_t t_impostor_stop(t_impostor *im);

/* The DER SubjectPublicKeyInfo of an `alg` ("RSA" or "RSA-PSS") public key built from n and e
 * with EVP_PKEY_fromdata (OpenSSL encodes any exponent: keys the library must refuse), into out;
 * returns its length. Fails the test on any error. (tests/support/spki.c) */
struct bignum_st;
size_t t_spki_from_ne(const char *alg, const struct bignum_st *n, const struct bignum_st *e,
                      uint8_t *out, size_t cap);

#endif
