/* SPDX-License-Identifier: MIT */
/* What the libuv server's files share (not installed): test-only hooks into the server, for
 * counting what happens to connections' RSA jobs on the thread pool. */
#ifndef PKM_SERVER_INTERNAL_H
#define PKM_SERVER_INTERNAL_H

#include "pkmcom/server.h"

/* What happened to one connection's RSA job. */
enum pkm__job_event {
    PKM__JOB_QUEUED = 1, /* submitted to the thread pool (loop thread) */
    PKM__JOB_RUN,        /* about to run (a pool thread) */
    PKM__JOB_CANCELLED,  /* never run: its connection closed while it was queued (loop thread) */
    PKM__JOB_ORPHANED,   /* ran, and was freed because its connection had closed (loop thread) */
};
typedef void (*pkm__job_hook_fn)(void *ctx, int event);

/* Sets the hook, called with each event (from the thread named above: make it thread-safe).
 * Before pkm_server_run() only. For tests. */
void pkm__server_set_job_hook(pkm_server_t *srv, pkm__job_hook_fn fn, void *ctx);

#endif
