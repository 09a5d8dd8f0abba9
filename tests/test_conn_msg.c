/* SPDX-License-Identifier: MIT */
/* Tests of the one-call typed packets (pkm_registry_encode_content, pkm_registry_verify_hook,
 * pkm_conn_send_msg / pkm_conn_recv_msg) and of waiting on a connection together with another
 * descriptor (pkm_conn_pending, pkm_conn_poll_events, pkm_conn_wait), over a socketpair with an
 * echoing server in a pthread. */
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support.h"
#include "pkmcom/pkmcom.h"

#define WAIT 5000 /* ms: a bound on every wait, so that a bug fails instead of hanging */

static pkm_key_t *g_server_key, *g_client_key;

/* Packet 0x01: {name: String, score: Unsigned Int, data: Byte Array (length from field 1)}. */
static const pkm_field_t byte_elem = {.type = PKM_T_BYTE};
static const pkm_field_t chat_fields[] = {
    {.name = "name", .type = PKM_T_STRING},
    {.name = "score", .type = PKM_T_UINT},
    {.name = "data", .type = PKM_T_ARRAY, .elem = &byte_elem, .len_field = PKM_LEN_FIELD(1)},
};
static const pkm_schema_t chat = {"Chat", chat_fields, 3};

static pkm_registry_t *new_registry(void)
{
    pkm_registry_t *reg = pkm_registry_new();
    assert_non_null(reg);
    assert_int_equal(pkm_registry_register(reg, 0x01, &chat), 0);
    return reg;
}

static void chat_values(pkm_value_t v[3], const char *name, const uint8_t *data, size_t n)
{
    memset(v, 0, 3 * sizeof v[0]);
    v[0].str.ptr = name;
    v[0].str.len = strlen(name);
    v[1].u64 = n;
    v[2].bytes.ptr = data;
    v[2].bytes.len = n;
}

static int group_setup(void **state)
{
    (void)state;
    return pkm_key_generate(&g_server_key) != 0 || pkm_key_generate(&g_client_key) != 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pkm_key_free(g_server_key);
    pkm_key_free(g_client_key);
    return 0;
}

/* ---- encoding ---- */

static void encode_content_matches_packet(void **state)
{
    (void)state;
    pkm_registry_t *reg = new_registry();
    const uint8_t data[5] = {1, 2, 3, 4, 5};
    pkm_value_t v[3];
    chat_values(v, "ann", data, sizeof data);

    uint8_t packet[128], content[128];
    size_t plen = 0, clen = 0;
    uint32_t hash = 0;
    assert_int_equal(pkm_registry_encode(reg, 0x01, v, 3, packet, sizeof packet, &plen), 0);
    assert_int_equal(
        pkm_registry_encode_content(reg, 0x01, v, 3, content, sizeof content, &clen, &hash), 0);
    /* The same content and the same Hash as the framed packet carries. */
    pkm_packet_t hdr;
    assert_int_equal(pkm_packet_header_read(packet, sizeof packet, &hdr), 0);
    assert_int_equal(clen, hdr.size);
    assert_int_equal(plen, PKM_HEADER_SIZE + clen);
    assert_memory_equal(content, packet + PKM_HEADER_SIZE, clen);
    assert_int_equal(hash, hdr.hash);

    uint8_t *big = NULL;
    size_t blen = 0;
    uint32_t bhash = 0;
    assert_int_equal(pkm_registry_encode_content_alloc(reg, 0x01, v, 3, &big, &blen, &bhash), 0);
    assert_int_equal(blen, clen);
    assert_memory_equal(big, content, clen);
    assert_int_equal(bhash, hash);
    pkm_bytes_free(big);

    /* Errors: no schema, a buffer too small, a value out of range. */
    assert_int_equal(
        pkm_registry_encode_content(reg, 0x02, v, 3, content, sizeof content, &clen, &hash),
        PKM_EUNKNOWNID);
    assert_int_equal(pkm_registry_encode_content(reg, 0x01, v, 3, content, 4, &clen, &hash),
                     PKM_ENOSPC);
    v[1].u64 = 4; /* the length field no longer matches the array */
    assert_int_equal(pkm_registry_encode_content_alloc(reg, 0x01, v, 3, &big, &blen, &bhash),
                     PKM_EARRLEN);
    assert_null(big);

    /* The hook accepts the packet and refuses it with a wrong Hash or an unknown id. */
    pkm_packet_t pkt = {.id = 0x01, .hash = hash, .size = clen, .content = content};
    assert_int_equal(pkm_registry_verify_hook(reg, &pkt), 0);
    pkt.hash ^= 1;
    assert_int_equal(pkm_registry_verify_hook(reg, &pkt), PKM_EHASH);
    pkt.hash ^= 1;
    pkt.id = 0x07;
    assert_int_equal(pkm_registry_verify_hook(reg, &pkt), PKM_EUNKNOWNID);
    pkm_registry_free(reg);
}

/* ---- over a connection ---- */

struct server {
    int fd;
    pkm_registry_t *reg;
    int rc; /* what ended the echo loop */
    pthread_t th;
};

/* Server: checks every packet with the registry's hook and echoes it back. */
static void *server_main(void *arg)
{
    struct server *s = arg;
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    cfg.engine.server_key = g_server_key;
    cfg.engine.verify = pkm_registry_verify_hook;
    cfg.engine.verify_ctx = s->reg;
    cfg.handshake_timeout_ms = WAIT;
    pkm_conn_t *c = NULL;
    s->rc = pkm_conn_from_fd(s->fd, PKM_ROLE_SERVER, &cfg, &c);
    if (s->rc < 0) return NULL;
    for (;;) {
        pkm_packet_t p;
        int r = pkm_conn_recv(c, &p, WAIT);
        if (r != 1) {
            s->rc = r;
            break;
        }
        if ((r = pkm_conn_send(c, p.id, p.hash, p.content, p.size, WAIT)) < 0) {
            s->rc = r;
            break;
        }
    }
    pkm_conn_close(c);
    return NULL;
}

static pkm_conn_t *start(struct server *s, pkm_registry_t *reg)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    memset(s, 0, sizeof *s);
    s->fd = sv[1];
    s->reg = reg;
    assert_int_equal(pthread_create(&s->th, NULL, server_main, s), 0);
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    cfg.engine.client_key = pkm_key_ref(g_client_key);
    cfg.handshake_timeout_ms = WAIT;
    pkm_conn_t *c = NULL;
    assert_int_equal(pkm_conn_from_fd(sv[0], PKM_ROLE_CLIENT, &cfg, &c), 0);
    return c;
}

static void send_recv_msg(void **state)
{
    (void)state;
    pkm_registry_t *reg = new_registry();
    struct server s;
    pkm_conn_t *c = start(&s, reg);

    const uint8_t data[3] = {9, 8, 7};
    pkm_value_t v[3];
    chat_values(v, "bob", data, sizeof data);
    assert_int_equal(pkm_conn_send_msg(c, reg, 0x01, v, 3, WAIT), 0);
    pkm_msg_t *m = NULL;
    assert_int_equal(pkm_conn_recv_msg(c, reg, &m, WAIT), 1);
    assert_non_null(m);
    assert_int_equal(pkm_msg_id(m), 0x01);
    const pkm_value_t *name = pkm_msg_get(m, "name");
    assert_non_null(name);
    assert_int_equal(name->str.len, 3);
    assert_memory_equal(name->str.ptr, "bob", 3);
    assert_int_equal(pkm_msg_get(m, "score")->u64, 3);
    assert_memory_equal(pkm_msg_get(m, "data")->bytes.ptr, data, 3);
    pkm_msg_free(m);

    /* A packet larger than the stack buffer takes the allocating path. */
    static uint8_t big[5000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    chat_values(v, "carol", big, sizeof big);
    assert_int_equal(pkm_conn_send_msg(c, reg, 0x01, v, 3, WAIT), 0);
    assert_int_equal(pkm_conn_recv_msg(c, reg, &m, WAIT), 1);
    assert_int_equal(pkm_msg_get(m, "data")->bytes.len, sizeof big);
    assert_memory_equal(pkm_msg_get(m, "data")->bytes.ptr, big, sizeof big);
    pkm_msg_free(m);

    /* An encoding error queues nothing and leaves the connection usable. */
    v[1].u64 = 1;
    assert_int_equal(pkm_conn_send_msg(c, reg, 0x01, v, 3, WAIT), PKM_EARRLEN);
    assert_int_equal(pkm_conn_send_msg(c, reg, 0x09, v, 3, WAIT), PKM_EUNKNOWNID);
    assert_int_equal(pkm_conn_error(c), 0);

    /* A raw packet with a wrong Hash is refused by the server's hook, which closes. */
    chat_values(v, "dan", data, sizeof data);
    uint8_t content[64];
    size_t len = 0;
    uint32_t hash = 0;
    assert_int_equal(
        pkm_registry_encode_content(reg, 0x01, v, 3, content, sizeof content, &len, &hash), 0);
    assert_int_equal(pkm_conn_send(c, 0x01, hash ^ 0x10, content, len, WAIT), 0);
    int r = pkm_conn_recv_msg(c, reg, &m, WAIT);
    assert_true(r == PKM_EEOF || r == PKM_ECONNRESET);
    assert_null(m);
    pkm_conn_close(c);
    pthread_join(s.th, NULL);
    assert_int_equal(s.rc, PKM_EHASH);
    pkm_registry_free(reg);
}

static void wait_with_extra_fd(void **state)
{
    (void)state;
    pkm_registry_t *reg = new_registry();
    struct server s;
    pkm_conn_t *c = start(&s, reg);
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);

    /* Nothing anywhere: a zero wait times out, nothing is pending, the socket wants POLLIN. */
    int rev = -1;
    assert_int_equal(pkm_conn_pending(c), 0);
    assert_int_equal(pkm_conn_poll_events(c), POLLIN);
    assert_int_equal(pkm_conn_wait(c, pipefd[0], POLLIN, &rev, 0), PKM_EAGAIN);
    assert_int_equal(rev, 0);

    /* The extra descriptor alone. */
    assert_int_equal(write(pipefd[1], "x", 1), 1);
    assert_int_equal(pkm_conn_wait(c, pipefd[0], POLLIN, &rev, WAIT), PKM_CONN_EXTRA);
    assert_true(rev & POLLIN);
    char ch;
    assert_int_equal(read(pipefd[0], &ch, 1), 1);

    /* Two packets echoed back: the wait reports the connection; after the first recv the
     * second is already buffered, so pending() says to receive again before any poll. */
    const uint8_t data[2] = {1, 2};
    pkm_value_t v[3];
    chat_values(v, "eve", data, sizeof data);
    assert_int_equal(pkm_conn_send_msg(c, reg, 0x01, v, 3, WAIT), 0);
    assert_int_equal(pkm_conn_send_msg(c, reg, 0x01, v, 3, WAIT), 0);
    int got = 0;
    for (int rounds = 0; got < 2 && rounds < 100; rounds++) {
        int w = pkm_conn_wait(c, pipefd[0], POLLIN, &rev, WAIT);
        assert_int_equal(w, PKM_CONN_READY);
        while (pkm_conn_pending(c)) {
            pkm_packet_t p;
            int r = pkm_conn_recv(c, &p, 0);
            if (r == PKM_EAGAIN) break;
            assert_int_equal(r, 1);
            assert_int_equal(p.id, 0x01);
            got++;
        }
    }
    assert_int_equal(got, 2);
    assert_int_equal(pkm_conn_pending(c), 0);
    assert_int_equal(pkm_conn_wait(c, -1, 0, NULL, 0), PKM_EAGAIN);

    /* The peer closes: the wait reports the connection, recv gives the end. */
    shutdown(pkm_conn_fd(c), SHUT_WR); /* the server's recv sees EOF and closes */
    assert_int_equal(pkm_conn_wait(c, pipefd[0], POLLIN, &rev, WAIT), PKM_CONN_READY);
    pkm_packet_t p;
    assert_int_equal(pkm_conn_recv(c, &p, 0), PKM_EEOF);
    assert_int_equal(pkm_conn_pending(c), 1);
    assert_int_equal(pkm_conn_poll_events(c), 0);
    assert_int_equal(pkm_conn_wait(c, -1, 0, NULL, WAIT), PKM_CONN_READY);
    assert_int_equal(pkm_conn_wait(NULL, -1, 0, NULL, 0), PKM_EINVAL);
    pkm_conn_close(c);
    pthread_join(s.th, NULL);
    assert_int_equal(s.rc, PKM_EEOF);
    close(pipefd[0]);
    close(pipefd[1]);
    pkm_registry_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encode_content_matches_packet),
        cmocka_unit_test(send_recv_msg),
        cmocka_unit_test(wait_with_extra_fd),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
