/* SPDX-License-Identifier: MIT */
/* The argument checks of the conn.h entry points (src/config.c), made before any socket call, each
 * refusal a sentence naming the argument or field. Not installed. */
#ifndef PKM_CONFIG_INTERNAL_H
#define PKM_CONFIG_INTERNAL_H

#include "pkmcom/conn.h"

/* Which conn.h call is checking (for its name in the sentence and its rules). */
enum pkm__conn_call {
    PKM__CALL_CONNECT, /* host required, port 1..65535 */
    PKM__CALL_LISTEN,  /* host optional, port 0..65535 */
    PKM__CALL_FROM_FD, /* port_or_fd is the descriptor (>= 0), role given */
};

/* Checks the call's arguments, cfg's timeouts and its engine config (as `role`, with
 * defer_crypto 0, copied into *ec). 0, or PKM_EINVAL with "pkm_connect: invalid argument: port:
 * expected 1..65535, got 99999" in msg (n bytes, may be NULL/0). Takes nothing. */
int pkm__conn_config_check(enum pkm__conn_call call, const char *host, int port_or_fd, int role,
                           const pkm_conn_config_t *cfg, const void *out, pkm_engine_config_t *ec,
                           char *msg, size_t n);

#endif
