/* SPDX-License-Identifier: MIT */
/* Typed packets over a conn.h connection (pkm_conn_send_msg, pkm_conn_recv_msg): the registry's
 * encoding and decoding around pkm_conn_send / pkm_conn_recv, on the public API only. */
#include "pkmcom/conn.h"
#include "internal.h"

int pkm_conn_send_msg(pkm_conn_t *c, const pkm_registry_t *reg, uint8_t id,
                      const pkm_value_t *fields, size_t n, int64_t timeout_ms)
{
    PKM_ENSURE(c && reg, PKM_EINVAL);
    uint8_t small[1024];
    size_t len = 0;
    uint32_t hash = 0;
    int r = pkm_registry_encode_content(reg, id, fields, n, small, sizeof small, &len, &hash);
    if (r == 0) return pkm_conn_send(c, id, hash, small, len, timeout_ms);
    if (r != PKM_ENOSPC) return r;
    uint8_t *big = NULL;
    PKM_GUARD(pkm_registry_encode_content_alloc(reg, id, fields, n, &big, &len, &hash));
    r = pkm_conn_send(c, id, hash, big, len, timeout_ms);
    pkm_bytes_free(big);
    return r;
}

int pkm_conn_recv_msg(pkm_conn_t *c, const pkm_registry_t *reg, pkm_msg_t **out, int64_t timeout_ms)
{
    if (out) *out = NULL;
    PKM_ENSURE(c && reg && out, PKM_EINVAL);
    pkm_packet_t pkt;
    int r = pkm_conn_recv(c, &pkt, timeout_ms);
    if (r != 1) return r;
    PKM_GUARD(pkm_registry_decode(reg, &pkt, out));
    return 1;
}
