/* SPDX-License-Identifier: MIT */
/* An in-memory pump between two sans-IO engines for the tests (declared in tests/support.h). */
#include <stdlib.h>
#include <string.h>
#include "support.h"

void t_pump_init(t_pump *p, pkm_engine_t *a, pkm_engine_t *b, size_t chunk)
{
    memset(p, 0, sizeof *p);
    p->a = a;
    p->b = b;
    p->chunk = chunk;
}

static void log_append(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *src, size_t n)
{
    if (*len + n > *cap) {
        size_t ncap = *cap ? *cap : 4096;
        while (ncap < *len + n)
            ncap *= 2;
        uint8_t *nb = realloc(*buf, ncap);
        assert_non_null(nb);
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, src, n);
    *len += n;
}

int t_run_job(pkm_engine_t *e)
{
    pkm_job_t *job = NULL;
    int r = pkm_engine_job_take(e, &job);
    if (r < 0) return r;
    (void)pkm_job_run(job);
    return pkm_engine_job_done(e, job);
}

/* One move from `from` to `to`; returns the bytes moved. */
static size_t move(t_pump *p, pkm_engine_t *from, pkm_engine_t *to, int ab)
{
    if (!(pkm_engine_wants(from) & PKM_WANT_SEND) || (pkm_engine_wants(to) & PKM_WANT_CLOSED))
        return 0;
    size_t len = 0;
    const uint8_t *src = pkm_engine_send_buf(from, &len);
    if (p->chunk && len > p->chunk) len = p->chunk;
    if (p->use_feed) {
        if (p->record) {
            if (ab)
                log_append(&p->log_ab, &p->log_ab_len, &p->log_ab_cap, src, len);
            else
                log_append(&p->log_ba, &p->log_ba_len, &p->log_ba_cap, src, len);
        }
        (void)pkm_engine_feed(to, src, len);
    } else {
        size_t cap = 0;
        uint8_t *dst = pkm_engine_recv_buf(to, &cap);
        if (cap == 0) return 0; /* the receiver wants its packets taken first */
        if (len > cap) len = cap;
        memcpy(dst, src, len);
        if (p->record) {
            if (ab)
                log_append(&p->log_ab, &p->log_ab_len, &p->log_ab_cap, src, len);
            else
                log_append(&p->log_ba, &p->log_ba_len, &p->log_ba_cap, src, len);
        }
        (void)pkm_engine_recv_ack(to, len);
    }
    assert_int_equal(pkm_engine_send_ack(from, len), 0);
    return len;
}

size_t t_pump_run(t_pump *p)
{
    size_t total = 0;
    for (;;) {
        size_t moved = move(p, p->a, p->b, 1) + move(p, p->b, p->a, 0);
        int progress = moved > 0;
        if (!p->no_work) {
            if (pkm_engine_wants(p->a) & PKM_WANT_JOB) {
                (void)t_run_job(p->a);
                progress = 1;
            }
            if (pkm_engine_wants(p->b) & PKM_WANT_JOB) {
                (void)t_run_job(p->b);
                progress = 1;
            }
        }
        /* A closed engine's socket is closed: its peer reads EOF. */
        if ((pkm_engine_wants(p->a) & PKM_WANT_CLOSED) && !p->eof_b) {
            p->eof_b = 1;
            (void)pkm_engine_recv_eof(p->b);
            progress = 1;
        }
        if ((pkm_engine_wants(p->b) & PKM_WANT_CLOSED) && !p->eof_a) {
            p->eof_a = 1;
            (void)pkm_engine_recv_eof(p->a);
            progress = 1;
        }
        total += moved;
        if (!progress) return total;
    }
}

void t_pump_done(t_pump *p)
{
    free(p->log_ab);
    free(p->log_ba);
    p->log_ab = p->log_ba = NULL;
    p->log_ab_len = p->log_ba_len = p->log_ab_cap = p->log_ba_cap = 0;
}
