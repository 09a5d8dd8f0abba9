/* SPDX-License-Identifier: MIT */
/* A server connection's RSA job on libuv's thread pool, and the handshake admission slot it
 * holds: asking for one, handing free ones to waiting handshakes, submitting and cancelling. */
#include <stdatomic.h>
#include <uv.h>
#include "pkmcom/server.h"
#include "internal.h"
#include "server_internal.h"

/* One connection's RSA job on the thread pool. The pool thread touches the job only (and srv's
 * test hook). c is set to NULL when the connection closes first: the job is then cancelled if
 * still queued, or freed when the pool hands it back, without touching the freed connection. */
struct jobreq {
    uv_work_t req;
    pkm_server_t *srv;
    pkm__loop *loop; /* the connection's loop, where job_after runs */
    pkm_server_conn_t *c;
    pkm_job_t *job;
    pkm__source_key src; /* the admission slot it holds, freed when it ends or is cancelled */
};

static void job_event(pkm_server_t *srv, int event)
{
    if (srv->job_hook) srv->job_hook(srv->job_hook_ctx, event);
}

/* An admission slot of `src` is free again (its RSA work ended or was cancelled, or it was
 * never used): hands the free slots to waiting handshakes, round-robin across sources (of every
 * loop: a connection of another loop is told by a message, PKM__MSG_GRANT). */
void pkm__hs_release(pkm__loop *L, const pkm__source_key *src)
{
    pkm_server_t *srv = L->srv;
    uint64_t now = uv_now(L->uv);
    pkm_server_conn_t *mine = NULL, **tail = &mine;
    uv_mutex_lock(&srv->lim_mu);
    now = lim_now_locked(srv, now);
    (void)pkm__limits_hs_end(srv->lim, src, now);
    void *user;
    while (!L->stopping && pkm__limits_hs_next(srv->lim, now, &user)) {
        pkm_server_conn_t *c = user;
        if (c->loop == L) {
            c->gnext = NULL;
            *tail = c;
            tail = &c->gnext;
            continue;
        }
        /* c is open (a closing one leaves the queue under this lock first): the grant is c's
         * until its loop takes it, or its close gives the slot back. */
        pkm__msg *m = pkm__calloc(1, sizeof *m);
        if (!m) { /* cannot tell c's loop: the slot is given back, c's handshake is refused */
            (void)pkm__limits_hs_end(srv->lim, &c->src, now);
            continue; /* (c waits no more: its handshake timeout closes it) */
        }
        c->hs_granted = 1;
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
        m->kind = PKM__MSG_GRANT;
        m->conn = c;
        pkm__loop_send(c->loop, m);
    }
    st_limits_locked(srv);
    uv_mutex_unlock(&srv->lim_mu);
    while (mine) {
        pkm_server_conn_t *c = mine;
        mine = c->gnext;
        c->gnext = NULL;
        c->hs_queued = 0;
        c->hs_slot = 1;
        pkm__sconn_pump(c); /* submits its job (a pump running for c does it when it goes on) */
    }
}

/* Lets go of c's job: cancelled if still queued (then never run), otherwise freed by job_after
 * when the pool is done with it; either way it no longer refers to c. */
void pkm__job_detach(pkm_server_conn_t *c)
{
    struct jobreq *j = c->job;
    if (!j) return;
    c->job = NULL;
    j->c = NULL;
    uv_cancel((uv_req_t *)&j->req); /* fails harmlessly when it is already running or done */
}

/* The one way a connection closes: stats, on_close, then the socket. err 0 = closed by this
 * side; fail_step non-NULL = a handshake failed. A connection not admitted yet (PROXY protocol)
 * closes silently: no stats but the caller's, no on_close. */
/* c's engine wants its RSA job run: asks for admission when c holds no slot. Returns 1 when the
 * job may be submitted now, 0 when it waits (or c was refused and closed). */
int pkm__hs_admit(pkm_server_conn_t *c)
{
    if (c->hs_slot) return 1;
    if (c->hs_queued) return 0;
    pkm_server_t *srv = c->srv;
    pkm__refusal why = PKM__REFUSE_NONE;
    uint64_t ticket = 0;
    uv_mutex_lock(&srv->lim_mu);
    pkm__admit a = pkm__limits_hs_begin(srv->lim, &c->src, c,
                                        lim_now_locked(srv, uv_now(c->loop->uv)), &ticket, &why);
    /* (hs_queued is set under the lock: another loop's hs_release may admit c at once) */
    if (a == PKM__ADMIT_QUEUED) {
        c->hs_queued = 1;
        c->hs_ticket = ticket;
    }
    st_limits_locked(srv);
    uv_mutex_unlock(&srv->lim_mu);
    switch (a) {
    case PKM__ADMIT_NOW: c->hs_slot = 1; return 1;
    case PKM__ADMIT_QUEUED: return 0;
    default:
        st_add(&c->loop->st.refused, 1);
        pkm__log_refusal(srv, c->loop, &c->src, why, "a handshake");
        pkm__sconn_close(c, PKM_EAGAIN);
        return 0;
    }
}

/* On a pool thread: the job's work, and nothing else (no connection, no engine). */
static void job_work(uv_work_t *req)
{
    struct jobreq *j = (struct jobreq *)req;
    job_event(j->srv, PKM__JOB_RUN);
    (void)pkm_job_run(j->job); /* an error is the job's result: job_done closes the engine */
}

/* Back on the loop: the result goes into the engine, unless the connection is gone. */
static void job_after(uv_work_t *req, int status)
{
    struct jobreq *j = (struct jobreq *)req;
    pkm_server_conn_t *c = j->c;
    pkm_job_t *job = j->job;
    pkm_server_t *srv = j->srv;
    pkm__loop *L = j->loop;
    pkm__source_key src = j->src;
    pkm__enter_loop(L);
    pkm__free(j);
    if (c) c->job = NULL; /* before anything can close c (do_close would detach j) */
    if (status == UV_ECANCELED || !c) {
        /* Cancelled (only ever by detach_job), or run after its connection closed. */
        job_event(srv, status == UV_ECANCELED ? PKM__JOB_CANCELLED : PKM__JOB_ORPHANED);
        pkm_job_free(job);
        if (c) pkm__sconn_close(c, PKM_EINTERNAL); /* (not reached: a cancelled job was detached) */
        pkm__hs_release(L, &src); /* its slot: the RSA work never ran, or is over */
        return;
    }
    (void)pkm_engine_job_done(c->eng, job); /* an error closes the engine: pump sees it */
    pkm__sconn_pump(c);
    pkm__hs_release(L, &src);
}

/* Hands the engine's RSA job (the decryption of the client's KeyShare) to the thread pool; the
 * engine stays here and goes on reading meanwhile. First writes out what the engine has (the
 * server's KeyShare must not wait for our decryption: the client decrypts meanwhile). */
void pkm__job_start(pkm_server_conn_t *c)
{
    pkm__sconn_flush(c);
    if (c->state >= CS_CLOSING) return;
    pkm_job_t *job = NULL;
    if (pkm_engine_job_take(c->eng, &job) < 0)
        return; /* the engine closed: pkm__sconn_pump (or do_close)
                    frees the slot */
    struct jobreq *j = pkm__malloc(sizeof *j);
    if (!j) {
        pkm_job_free(job);
        pkm__sconn_close(c, PKM_ENOMEM);
        return;
    }
    j->srv = c->srv;
    j->loop = c->loop;
    j->c = c;
    j->job = job;
    j->src = c->src;
    if (uv_queue_work(c->loop->uv, &j->req, job_work, job_after) < 0) {
        pkm__free(j);
        pkm_job_free(job);
        pkm__sconn_close(c, PKM_EINTERNAL);
        return;
    }
    c->job = j;
    c->hs_slot = 0; /* the job holds it now: job_after frees it */
    job_event(c->srv, PKM__JOB_QUEUED);
}
