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
#include "support/server_fixture.h"

static void queued_job_of_closed_conn_is_cancelled(void **state)
{
    (void)state;
    t_obs j;
    t_obs_init(&j, 0);
    pkm_server_config_t cfg;
    t_srv_config(&cfg, t_shared_keys.server_key);
    cfg.handshake_timeout_ms = 0; /* no timer: the connections close only when told */
    t_obs_config(&cfg, &j, 0);
    t_srv s;
    t_srv_start(&s, &cfg, t_obs_job_hook, &j);
    uint16_t port = s.port;

    /* A's job takes the only pool thread and waits at the gate; B's job queues behind it. */
    int fa = t_tcp_connect(port, NULL, 0);
    pkm_engine_t *ea = t_cli_to_keyshare(fa, NULL);
    t_obs_wait(&j, &j.run, 1, "A's job running");
    int fb = t_tcp_connect(port, NULL, 0);
    pkm_engine_t *eb = t_cli_to_keyshare(fb, NULL);
    t_obs_wait(&j, &j.queued, 2, "B's job queued");
    assert_int_equal(t_obs_get(&j, &j.run), 1);

    /* Stopping closes both connections: B's queued job is cancelled at once, A's (running)
     * is detached from its connection. */
    pkm_server_stop(s.srv);
    t_obs_wait(&j, &j.cancelled, 1, "B's job cancelled");
    t_obs_wait(&j, &j.closes, 2, "both connections closed");
    assert_int_equal(t_obs_get(&j, &j.orphaned), 0); /* A's job still waits at the gate */

    /* A's job ends after its connection: freed on its return, the connection untouched. */
    t_obs_open_gate(&j);
    t_srv_join(&s);

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
    t_obs_done(&j);
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
