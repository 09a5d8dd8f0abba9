/* SPDX-License-Identifier: MIT */
/* The libuv server's RSA jobs on the thread pool (one pool thread here): a queued job of a closed
 * connection is cancelled and never run; a running one is freed when it ends, the connection
 * being gone. Counted through the server's test-only job hook (server_internal.h). */
#include "support.h"
#include "support/clients.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "pkmcom/pkmcom.h"
#include "server_internal.h"

/* What the job hook saw; a job about to run waits until the gate opens. */
typedef struct jobs {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int queued, run, cancelled, orphaned;
    int gate_open;
    int closes, close_errs; /* on_close calls, and those with an error other than 0 */
} jobs_t;

static void job_hook(void *ctx, int event)
{
    jobs_t *j = ctx;
    pthread_mutex_lock(&j->mu);
    switch (event) {
    case PKM__JOB_QUEUED: j->queued++; break;
    case PKM__JOB_RUN:
        j->run++;
        while (!j->gate_open)
            pthread_cond_wait(&j->cv, &j->mu);
        break;
    case PKM__JOB_CANCELLED: j->cancelled++; break;
    case PKM__JOB_ORPHANED: j->orphaned++; break;
    }
    pthread_mutex_unlock(&j->mu);
}

static void on_close(void *user, pkm_server_conn_t *conn, int err, const char *step)
{
    jobs_t *j = user;
    (void)conn, (void)step;
    pthread_mutex_lock(&j->mu);
    j->closes++;
    if (err != 0) j->close_errs++;
    pthread_mutex_unlock(&j->mu);
}

static int get(jobs_t *j, const int *field)
{
    pthread_mutex_lock(&j->mu);
    int v = *field;
    pthread_mutex_unlock(&j->mu);
    return v;
}

/* Waits (up to 20 s) until *field reaches n. */
static void wait_for(jobs_t *j, const int *field, int n, const char *what)
{
    for (int i = 0; i < 4000; i++) {
        if (get(j, field) >= n) return;
        tcl_sleep_ms(5);
    }
    fail_msg("waited in vain for %s to reach %d", what, n);
}

static void *run_thread(void *arg)
{
    return (void *)(intptr_t)pkm_server_run(arg);
}

/* A client that reads the ServerKey and sends its ClientKey and KeyShare: the server then wants
 * the job that decrypts that KeyShare. */
static pkm_engine_t *client_to_keyshare(int fd)
{
    pkm_engine_config_t ec;
    pkm_engine_config_init(&ec, PKM_ROLE_CLIENT);
    ec.client_key = t_client_key(&t_shared_keys);
    pkm_engine_t *e = NULL;
    assert_int_equal(pkm_engine_new(&ec, &e), 0);
    while (!(pkm_engine_wants(e) & PKM_WANT_SEND)) {
        size_t cap = 0;
        uint8_t *p = pkm_engine_recv_buf(e, &cap);
        assert_non_null(p);
        ssize_t n = recv(fd, p, cap, 0);
        assert_true(n > 0);
        assert_int_equal(pkm_engine_recv_ack(e, (size_t)n), 0);
    }
    size_t len = 0;
    const uint8_t *out;
    while ((out = pkm_engine_send_buf(e, &len)) != NULL) {
        ssize_t n = send(fd, out, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        pkm_engine_send_ack(e, (size_t)n);
    }
    return e;
}

static void queued_job_of_closed_conn_is_cancelled(void **state)
{
    (void)state;
    jobs_t j;
    memset(&j, 0, sizeof j);
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);
    pkm_server_config_t cfg;
    pkm_server_config_init(&cfg);
    cfg.loops = t_server_loops();
    cfg.host = "127.0.0.1";
    cfg.engine.server_key = t_shared_keys.server_key;
    cfg.handshake_timeout_ms = 0; /* no timer: the connections close only when told */
    cfg.on_close = on_close;
    cfg.user = &j;
    pkm_server_t *srv = NULL;
    assert_int_equal(pkm_server_new(&cfg, &srv), 0);
    pkm__server_set_job_hook(srv, job_hook, &j);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_thread, srv), 0);
    uint16_t port = pkm_server_port(srv);

    /* A's job takes the only pool thread and waits at the gate; B's job queues behind it. */
    int fa = t_tcp_connect(port, NULL, 0);
    pkm_engine_t *ea = client_to_keyshare(fa);
    wait_for(&j, &j.run, 1, "A's job running");
    int fb = t_tcp_connect(port, NULL, 0);
    pkm_engine_t *eb = client_to_keyshare(fb);
    wait_for(&j, &j.queued, 2, "B's job queued");
    assert_int_equal(get(&j, &j.run), 1);

    /* Stopping closes both connections: B's queued job is cancelled at once, A's (running)
     * is detached from its connection. */
    pkm_server_stop(srv);
    wait_for(&j, &j.cancelled, 1, "B's job cancelled");
    wait_for(&j, &j.closes, 2, "both connections closed");
    assert_int_equal(get(&j, &j.orphaned), 0); /* A's job still waits at the gate */

    /* A's job ends after its connection: freed on its return, the connection untouched. */
    pthread_mutex_lock(&j.mu);
    j.gate_open = 1;
    pthread_cond_broadcast(&j.cv);
    pthread_mutex_unlock(&j.mu);
    void *rc = NULL;
    assert_int_equal(pthread_join(th, &rc), 0);
    assert_int_equal((int)(intptr_t)rc, 0);
    pkm_server_free(srv);

    assert_int_equal(j.queued, 2);
    assert_int_equal(j.run, 1); /* B's job never ran */
    assert_int_equal(j.cancelled, 1);
    assert_int_equal(j.orphaned, 1);
    assert_int_equal(j.closes, 2);
    assert_int_equal(j.close_errs, 0); /* closed by this side (the stop) */
    close(fa);
    close(fb);
    pkm_engine_free(ea);
    pkm_engine_free(eb);
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
}

int main(void)
{
    /* One pool thread, before libuv starts its pool: a second job then waits in the queue. */
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(queued_job_of_closed_conn_is_cancelled),
    };
    return cmocka_run_group_tests(tests, t_keys_setup, t_keys_teardown);
}
