/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the PROXY protocol v1/v2 parser (src/proxy.c) over arbitrary bytes, whole and
 * through the accumulator in chunks (both must agree), and the CIDR list parser on the same bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include "proxy_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: oracle failed: %s\n", __FILE__, __LINE__, #cond);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static pkm__proxy_acc acc;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pkm__proxy_info whole;
    size_t need = 0;
    int rc = pkm__proxy_parse(data, size, &whole, &need);
    CHECK(rc > 0 || rc == PKM_EAGAIN || rc == PKM_EPROTO);
    if (rc > 0) {
        size_t h = (size_t)rc;
        CHECK(h <= size && h >= PKM__PROXY_MIN && h == whole.header_len);
        CHECK(whole.version == 1 ? h <= PKM__PROXY_V1_MAX : h <= PKM__PROXY_MAX);
        CHECK(whole.reason == PKM__PROXY_OK);
        int ip = whole.family == PKM__PROXY_TCP4 || whole.family == PKM__PROXY_TCP6;
        CHECK(ip == (whole.src.ss_family != AF_UNSPEC));
        /* the same header alone, and a prefix of it is only "need more" whose hint stays inside */
        pkm__proxy_info in;
        CHECK(pkm__proxy_parse(data, h, &in, NULL) == rc);
        CHECK(memcmp(&in, &whole, sizeof in) == 0);
        size_t cuts[3] = {h - 1, h / 2, 1};
        for (int i = 0; i < 3; i++) {
            CHECK(pkm__proxy_parse(data, cuts[i], &in, &need) == PKM_EAGAIN);
            CHECK(need >= 1 && cuts[i] + need <= h);
        }
    } else if (rc == PKM_EAGAIN) {
        CHECK(need >= 1 && size + need <= PKM__PROXY_MAX);
    } else {
        CHECK(whole.reason != PKM__PROXY_OK && whole.header_len == 0);
        CHECK(size > 0);
    }

    /* the accumulator, in chunks whose sizes come from the input's bytes */
    pkm__proxy_acc_init(&acc);
    size_t off = 0;
    int arc = PKM_EAGAIN;
    uint32_t s = size ? data[size - 1] : 0;
    pkm__proxy_info fed;
    while (arc == PKM_EAGAIN && off < size) {
        s = s * 1103515245u + 12345u;
        size_t m = 1 + (s >> 16) % 64;
        if (m > size - off) m = size - off;
        size_t used = 0;
        arc = pkm__proxy_acc_feed(&acc, data + off, m, &fed, &used);
        CHECK(used <= m);
        if (arc == PKM_EAGAIN) CHECK(used == m);
        off += used;
    }
    if (size == 0) arc = pkm__proxy_parse(data, 0, &fed, NULL);
    CHECK(arc == rc);
    if (rc > 0) {
        CHECK(off == (size_t)rc);
        CHECK(memcmp(&fed, &whole, sizeof fed) == 0);
    } else if (rc == PKM_EPROTO) {
        CHECK(fed.reason == whole.reason);
    }

    /* the same bytes as a trusted-proxy list */
    char text[300];
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = 0;
    pkm__cidr_list l;
    int lrc = pkm__cidr_list_parse(text, &l);
    CHECK(lrc == 0 || lrc == PKM_EINVAL || lrc == PKM_ENOMEM);
    if (lrc == 0) {
        for (size_t i = 0; i < l.n; i++) {
            CHECK(l.v[i].family == AF_INET || l.v[i].family == AF_INET6);
            CHECK(l.v[i].bits <= (l.v[i].family == AF_INET ? 32u : 128u));
            /* a block matches its own network address */
            struct sockaddr_storage ss;
            memset(&ss, 0, sizeof ss);
            if (l.v[i].family == AF_INET) {
                struct sockaddr_in *a = (struct sockaddr_in *)&ss;
                a->sin_family = AF_INET;
                memcpy(&a->sin_addr, l.v[i].addr, 4);
            } else {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
                a->sin6_family = AF_INET6;
                memcpy(&a->sin6_addr, l.v[i].addr, 16);
            }
            CHECK(pkm__cidr_list_match(&l, (const struct sockaddr *)&ss) == 1);
        }
    } else {
        CHECK(l.v == NULL && l.n == 0);
    }
    if (rc > 0) {
        (void)pkm__cidr_list_match(&l, (const struct sockaddr *)&whole.src);
        pkm__source_key k;
        char buf[PKM__SOURCE_KEY_STRLEN];
        pkm__source_key_of((const struct sockaddr *)&whole.src, &k);
        CHECK(strlen(pkm__source_key_str(&k, buf, sizeof buf)) < sizeof buf);
    }
    pkm__cidr_list_free(&l);
    return 0;
}
