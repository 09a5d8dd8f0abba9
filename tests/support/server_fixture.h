/* SPDX-License-Identifier: MIT */
/* Test helper: a pkm_server on 127.0.0.1:0 run on a thread of its own, an observer that counts
 * what its callbacks and RSA job hook saw, bounded waits, and a blocking client. */
#ifndef PKM_TEST_SERVER_FIXTURE_H
#define PKM_TEST_SERVER_FIXTURE_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include "pkmcom/pkmcom.h"
#include "server_internal.h"

/* ---- the server on a thread ---- */

typedef struct t_srv {
    pkm_server_t *srv;
    pthread_t th;
    uint16_t port; /* the port it listens on (set by t_srv_new) */
    int run_rc;    /* what pkm_server_run returned (after t_srv_join) */
} t_srv;

/* pkm_server_config_init, then t_server_loops() loops on 127.0.0.1 (port 0) with key. */
void t_srv_config(pkm_server_config_t *cfg, pkm_key_t *key);
/* pkm_server_new (asserted) and, when hook is not NULL, the test-only job hook. */
void t_srv_new(t_srv *s, const pkm_server_config_t *cfg, pkm__job_hook_fn hook, void *hook_ctx);
/* Runs the server made by t_srv_new on a new thread. */
void t_srv_run(t_srv *s);
/* t_srv_new, then t_srv_run. */
void t_srv_start(t_srv *s, const pkm_server_config_t *cfg, pkm__job_hook_fn hook, void *hook_ctx);
/* Joins the thread (the caller stopped the server), asserts pkm_server_run returned 0 and frees
 * the server. */
void t_srv_join(t_srv *s);
/* pkm_server_stop, then t_srv_join. */
void t_srv_stop(t_srv *s);

/* An on_packet that echoes every packet back to its connection. */
void t_srv_echo(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt);
/* An on_log that prints warnings and errors to stderr and drops the rest. */
void t_srv_log_warnings(void *user, int level, const char *msg);

/* Waits (up to 20 s) until f(stats) equals n; fails the test naming `what` otherwise. */
typedef uint64_t (*t_stat_fn)(const pkm_server_stats_t *st);
void t_srv_wait_stat(pkm_server_t *srv, t_stat_fn f, uint64_t n, const char *what);
uint64_t t_st_refused(const pkm_server_stats_t *st);

/* ---- the observer: what the callbacks and the job hook saw (each under mu) ---- */

typedef struct t_obs {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int gate_open;                        /* a job about to run waits until it is set */
    int queued, run, cancelled, orphaned; /* job hook events */
    int connects;                         /* on_connect calls */
    int closes, close_errs;               /* on_close calls, and those with an error */
    int enomem, etimeout, eagain;         /* on_close calls with these errors */
    uint16_t last_err_port;               /* peer port of the last close with an error */
    int logs, proxy_logs;                 /* on_log lines, of which about PROXY headers */
    char peer[PKM_SERVER_PEER_SIZE];      /* the last on_connect's pkm_server_conn_peer */
    char last_log[512];                   /* the last on_log line */
} t_obs;

void t_obs_init(t_obs *o, int gate_open);
void t_obs_done(t_obs *o);
/* The job hook (give it to t_srv_new with o): counts events; PKM__JOB_RUN waits for the gate. */
void t_obs_job_hook(void *ctx, int event);
void t_obs_open_gate(t_obs *o);
/* Reads *field (a member of o) under the lock. */
int t_obs_get(t_obs *o, const int *field);
/* Waits (up to 20 s) until *field reaches n; fails the test naming `what` otherwise. */
void t_obs_wait(t_obs *o, const int *field, int n, const char *what);
/* Copies the last on_connect's peer (PKM_SERVER_PEER_SIZE bytes) under the lock. */
void t_obs_peer(t_obs *o, char *out);
/* Zeroes the log counts (after pkm_server_new: the start's own lines, the open-file limit). */
void t_obs_reset_logs(t_obs *o);

/* What t_obs_config sets besides on_close and user (always set). */
enum { T_OBS_ECHO = 1, T_OBS_CONNECT = 2, T_OBS_LOG = 4 };
/* Points cfg's callbacks at o: on_close, user and those picked by `what`. */
void t_obs_config(pkm_server_config_t *cfg, t_obs *o, unsigned what);

/* ---- a blocking client: one engine (t_client, t_shared_keys) over a socket ---- */

/* Writes all the engine has to send (stops at a failed send). */
void t_cli_send_all(pkm_engine_t *e, int fd);
/* Reads once into the engine: the bytes read, 0 at the end of the stream, <0 on an error. */
ssize_t t_cli_recv_once(pkm_engine_t *e, int fd);
/* A client (secret: alternative handshaking secret, or NULL) that reads the ServerKey and sends
 * its ClientKey and KeyShare (each asserted): the server then wants the job for that KeyShare. */
pkm_engine_t *t_cli_to_keyshare(int fd, const char *secret);
/* A client through the whole handshake: the engine, established; NULL when the server closed
 * the connection first (*got_bytes, when not NULL: whether it sent anything at all). */
pkm_engine_t *t_cli_establish(int fd, const char *secret, int *got_bytes);
/* The handshake and one echoed packet on e: 1 when both worked; 0 when the server closed the
 * connection first (*got_bytes, when not NULL: whether it sent anything at all). */
int t_cli_session_on(pkm_engine_t *e, int fd, int *got_bytes);
/* t_cli_session_on with a fresh client engine (secret as for t_cli_to_keyshare), freed after. */
int t_cli_session(int fd, const char *secret, int *got_bytes);

#endif
