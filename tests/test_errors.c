/* SPDX-License-Identifier: MIT */
/* Errors that name what to fix (issue 16): each refusal's sentence names the field or file, the
 * expected form and what was given; configuration is refused before any socket is made. */
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include "pkmcom/conn.h"
#include "pkmcom/keys.h"
#include "pkmcom/schema.h"
#include "pkmcom/server.h"
#include "support.h"

/* The sentence holds every one of the NULL-terminated fragments. */
static void assert_says(const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    for (const char *want; (want = va_arg(ap, const char *)) != NULL;) {
        if (!strstr(msg, want)) {
            print_error("sentence \"%s\" lacks \"%s\"\n", msg, want);
            va_end(ap);
            fail();
        }
    }
    va_end(ap);
}

/* ---- the engine config validator ---- */

static void engine_validator_names_the_field(void **state)
{
    (void)state;
    char eb[PKM_ERRMSG_SIZE];
    pkm_engine_config_t c;
    pkm_engine_config_init(&c, PKM_ROLE_CLIENT);
    assert_int_equal(pkm_engine_config_validate(&c, eb, sizeof eb), 0);
    assert_string_equal(eb, "");

    c.pin_fingerprint = "0123abcd";
    assert_int_equal(pkm_engine_config_validate(&c, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "pin_fingerprint: expected \"SHA256:\" and 43 base64 characters",
                "got \"0123abcd\"", NULL);
    /* Right length and prefix, a character outside base64. */
    c.pin_fingerprint = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-";
    assert_int_equal(pkm_engine_config_check(&c), PKM_EINVAL);
    c.pin_fingerprint = t_shared_keys.server_fp;
    assert_int_equal(pkm_engine_config_validate(&c, eb, sizeof eb), 0);

    c.secret = (const uint8_t *)"x";
    c.secret_len = PKM_MAX_SECRET + 1;
    assert_int_equal(pkm_engine_config_validate(&c, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "secret_len: at most 4096 bytes", "got 4097", NULL);
    c.secret_len = 0;
    c.max_packet_size = 0;
    assert_int_equal(pkm_engine_config_validate(&c, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "max_packet_size: expected 1..2147483647 bytes, got 0", NULL);
    c.max_packet_size = PKM_DEFAULT_MAX_SIZE;
    c.server_key = t_shared_keys.server_key;
    assert_int_equal(pkm_engine_config_validate(&c, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "server_key: must be NULL for a client", NULL);

    pkm_engine_config_init(&c, PKM_ROLE_SERVER);
    assert_int_equal(pkm_engine_config_validate(&c, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "server_key: required for a server", NULL);
    c.server_key = t_shared_keys.server_key;
    c.pin_fingerprint = t_shared_keys.server_fp;
    assert_int_equal(pkm_engine_config_validate(&c, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "pin_fingerprint: client only", NULL);
    /* A short buffer gets a cut, terminated sentence; none at all is allowed. */
    char tiny[8];
    assert_int_equal(pkm_engine_config_validate(&c, tiny, sizeof tiny), PKM_EINVAL);
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
    assert_int_equal(pkm_engine_config_validate(&c, NULL, 0), PKM_EINVAL);
    assert_int_equal(pkm_engine_config_validate(NULL, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "NULL", NULL);
}

/* ---- conn.h: refused before resolving or connecting ---- */

/* A local port nothing listens on (bound, then closed). */
static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

/* pkm_connect to a port nothing listens on: a config error must win over PKM_ECONNECT, which
 * shows that no connection was tried before the check. */
static int connect_err(const char *host, int port, pkm_conn_config_t *cfg, char *eb, size_t n)
{
    pkm_conn_t *c = NULL;
    cfg->errbuf = eb;
    cfg->errbuf_size = n;
    int r = pkm_connect(host, port, cfg, &c);
    assert_null(c);
    return r;
}

static void connect_refuses_bad_config_first(void **state)
{
    (void)state;
    char eb[PKM_ERRMSG_SIZE];
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    const char *nowhere = "127.0.0.1";
    int port = closed_port();
    assert_int_equal(connect_err(nowhere, port, &cfg, eb, sizeof eb), PKM_ECONNECT);

    cfg.engine.pin_fingerprint = "deadbeef";
    assert_int_equal(connect_err(nowhere, port, &cfg, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "pkm_connect: invalid argument: engine.pin_fingerprint: expected \"SHA256:\"",
                "got \"deadbeef\"", NULL);
    cfg.engine.pin_fingerprint = NULL;

    assert_int_equal(connect_err(nowhere, 99999, &cfg, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "port: expected 1..65535, got 99999", NULL);
    assert_int_equal(connect_err(nowhere, 0, &cfg, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "port: expected 1..65535, got 0", NULL);
    assert_int_equal(connect_err(NULL, port, &cfg, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "host: required", NULL);
    assert_int_equal(connect_err("", port, &cfg, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "host: expected a host name", NULL);

    cfg.handshake_timeout_ms = -5;
    assert_int_equal(connect_err(nowhere, port, &cfg, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "handshake_timeout_ms: expected 0 (no bound) or a positive", "got -5", NULL);
    cfg.handshake_timeout_ms = 1000;
    cfg.idle_timeout_ms = -1;
    assert_int_equal(connect_err(nowhere, port, &cfg, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "idle_timeout_ms", "got -1", NULL);
    cfg.idle_timeout_ms = 0;

    uint8_t secret[PKM_MAX_SECRET + 1] = {0};
    cfg.engine.secret = secret;
    cfg.engine.secret_len = sizeof secret;
    assert_int_equal(connect_err(nowhere, port, &cfg, eb, sizeof eb), PKM_EINVAL);
    assert_says(eb, "engine.secret_len: at most 4096 bytes (PKM_MAX_SECRET), got 4097", NULL);
}

static void listen_and_from_fd_name_the_field(void **state)
{
    (void)state;
    char eb[PKM_ERRMSG_SIZE];
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    cfg.errbuf = eb;
    cfg.errbuf_size = sizeof eb;
    pkm_listener_t *l = NULL;
    assert_int_equal(pkm_listen("127.0.0.1", 0, &cfg, &l), PKM_EINVAL);
    assert_says(eb, "pkm_listen: invalid argument: engine.server_key: required for a server", NULL);
    cfg.engine.server_key = t_shared_keys.server_key;
    assert_int_equal(pkm_listen("127.0.0.1", 70000, &cfg, &l), PKM_EINVAL);
    assert_says(eb, "port: expected 0 (an ephemeral port) or 1..65535, got 70000", NULL);
    assert_null(l);

    pkm_conn_t *c = NULL;
    assert_int_equal(pkm_conn_from_fd(-1, PKM_ROLE_CLIENT, &cfg, &c), PKM_EINVAL);
    assert_says(eb, "pkm_conn_from_fd: invalid argument: fd: expected a connected stream socket",
                NULL);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(pkm_conn_from_fd(sv[0], 7, &cfg, &c), PKM_EINVAL); /* closes sv[0] */
    assert_says(eb, "role: expected PKM_ROLE_CLIENT", "got 7", NULL);
    close(sv[1]);
}

/* ---- key files: the path and errno's text ---- */

static void key_file_errors_name_path_and_errno(void **state)
{
    (void)state;
    char dir[] = "/tmp/pkm-errors-XXXXXX", path[128], eb[PKM_ERRMSG_SIZE], want[192];
    assert_non_null(mkdtemp(dir));
    pkm_key_t *k = NULL;

    snprintf(path, sizeof path, "%s/missing.pem", dir);
    assert_int_equal(pkm_key_load_pem_errbuf(path, &k, eb, sizeof eb), PKM_EKEYFILE);
    snprintf(want, sizeof want, "key file %s: cannot open: %s", path, strerror(ENOENT));
    assert_string_equal(eb, want);
    assert_null(k);

    assert_int_equal(pkm_key_load_pem_errbuf(dir, &k, eb, sizeof eb), PKM_EKEYFILE);
    snprintf(want, sizeof want, "key file %s: not a regular file", dir);
    assert_string_equal(eb, want);

    snprintf(path, sizeof path, "%s/garbage.pem", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("this is not a key\n", f);
    fclose(f);
    assert_int_equal(pkm_key_load_pem_errbuf(path, &k, eb, sizeof eb), PKM_EKEY);
    assert_says(eb, path, "no usable key in it: expected an unencrypted PEM key", NULL);
    unlink(path);

    /* A private key readable by others: the path and the fix. */
    snprintf(path, sizeof path, "%s/open.pem", dir);
    assert_int_equal(pkm_key_save_pem(t_shared_keys.server_key, path), 0);
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(pkm_key_load_pem_errbuf(path, &k, eb, sizeof eb), PKM_EKEYPERM);
    assert_says(eb, path, "readable by group or others (chmod 600 it)", NULL);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(pkm_key_load_pem_errbuf(path, &k, eb, sizeof eb), 0);
    assert_string_equal(eb, "");
    assert_non_null(k);
    pkm_key_free(k);
    unlink(path);
    rmdir(dir);
}

/* ---- the server's errbuf ---- */

static void quiet_log(void *user, int level, const char *msg)
{
    (void)user;
    (void)level;
    (void)msg;
}

static void server_new_says_why(void **state)
{
    (void)state;
    char eb[PKM_SERVER_ERRMSG_SIZE];
    pkm_server_config_t cfg;
    pkm_server_config_init(&cfg);
    cfg.host = "127.0.0.1";
    cfg.errbuf = eb;
    cfg.errbuf_size = sizeof eb;
    cfg.raise_fd_limit = 0;
    pkm_server_t *srv = NULL;
    assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EINVAL);
    assert_says(eb, "pkm_server_new: invalid argument: engine.server_key: required", NULL);
    cfg.engine.server_key = t_shared_keys.server_key;
    cfg.idle_timeout_ms = -3;
    assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EINVAL);
    assert_says(eb, "idle_timeout_ms: expected 0 or more, got -3", NULL);
    cfg.idle_timeout_ms = 0;
    cfg.proxy_trusted = "10.0.0.0/8,nonsense";
    cfg.on_log = quiet_log;
    assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EINVAL);
    assert_says(eb, "pkm_server_new: invalid argument: proxy_trusted", "nonsense", NULL);
    cfg.proxy_trusted = NULL;

    /* The port of a server already listening: address in use, named with the address. */
    pkm_server_t *first = NULL;
    assert_int_equal(pkm_server_new(&cfg, &first), 0);
    assert_string_equal(eb, "");
    cfg.port = pkm_server_port(first);
    assert_int_equal(pkm_server_new(&cfg, &srv), PKM_EIO);
    assert_null(srv);
    char want[64];
    snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%u: ", (unsigned)cfg.port);
    assert_says(eb, want, strerror(EADDRINUSE), NULL);
    pkm_server_free(first);
}

/* ---- schema errors: packet id, field path and offset ---- */

static const pkm_field_t player_f[] = {
    {.name = "score", .type = PKM_T_INT},
    {.name = "name", .type = PKM_T_STRING},
};
static const pkm_schema_t player = {"Player", player_f, 2};
static const pkm_field_t player_elem = {.type = PKM_T_STRUCT, .sub = &player};
static const pkm_field_t chat_f[] = {
    {.name = "room", .type = PKM_T_BYTE},
    {.name = "text", .type = PKM_T_STRING},
    {.name = "count", .type = PKM_T_BYTE},
    {.name = "players", .type = PKM_T_ARRAY, .elem = &player_elem, .len_field = PKM_LEN_FIELD(2)},
};
static const pkm_schema_t chat = {"ChatMessage", chat_f, 4};

static void *last_error_elsewhere(void *arg)
{
    (void)arg;
    return (void *)pkm_schema_last_error(); /* this thread's: none */
}

static void schema_errors_name_packet_field_offset(void **state)
{
    (void)state;
    pkm_registry_t *reg = pkm_registry_new();
    assert_non_null(reg);
    assert_int_equal(pkm_registry_register(reg, 0x12, &chat), 0);
    uint8_t buf[256];
    size_t len;
    uint32_t hash;

    /* Encoding: invalid UTF-8 in 'text', which begins after the 1-byte 'room'. */
    pkm_value_t v[4] = {PKM_V_U(1), PKM_V_STR("a\xff"), PKM_V_U(0), PKM_V_ARRAY(NULL, 0)};
    assert_int_equal(pkm_registry_encode_content(reg, 0x12, v, 4, buf, sizeof buf, &len, &hash),
                     PKM_EUTF8);
    assert_string_equal(pkm_schema_last_error(),
                        "packet 0x12 (ChatMessage) field 'text' at offset 1: text is not valid "
                        "UTF-8");
    /* Per thread: another thread has no record; this one keeps its own. */
    pthread_t th;
    void *other = NULL;
    assert_int_equal(pthread_create(&th, NULL, last_error_elsewhere, NULL), 0);
    assert_int_equal(pthread_join(th, &other), 0);
    assert_string_equal((const char *)other, "");
    assert_says(pkm_schema_last_error(), "field 'text'", NULL);

    /* A nested field: the path and the offset of the value inside the array element. */
    pkm_value_t p0[2] = {PKM_V_I(7), PKM_V_STR("ann")};
    pkm_value_t p1[2] = {PKM_V_I(8), PKM_V_STR("b\xc3")}; /* cut UTF-8 */
    pkm_value_t players[2] = {PKM_V_STRUCT(p0, 2), PKM_V_STRUCT(p1, 2)};
    v[1] = PKM_V_STR("hi");
    v[2] = PKM_V_U(2);
    v[3] = PKM_V_ARRAY(players, 2);
    assert_int_equal(pkm_registry_encode_content(reg, 0x12, v, 4, buf, sizeof buf, &len, &hash),
                     PKM_EUTF8);
    /* room 1 + text 2+2 + count 1 = 6; players[0] = 4 + 2+3 = 9; players[1].score 4: 19. */
    assert_says(pkm_schema_last_error(),
                "packet 0x12 (ChatMessage) field 'players[1].name' at "
                "offset 19:",
                NULL);
    /* Too few values. */
    assert_int_equal(pkm_registry_encode_content(reg, 0x12, v, 3, buf, sizeof buf, &len, &hash),
                     PKM_ETYPE);
    assert_says(pkm_schema_last_error(), "3 values given for the 4 fields of ChatMessage", NULL);
    /* A success clears it. */
    p1[1] = PKM_V_STR("bo");
    assert_int_equal(pkm_registry_encode_content(reg, 0x12, v, 4, buf, sizeof buf, &len, &hash), 0);
    assert_string_equal(pkm_schema_last_error(), "");

    /* Decoding what a peer sent: a raw 0xF5 byte in 'text' (offset 1). */
    const uint8_t bad[] = {0x01, 0x00, 0x02, 'h', 0xF5, 0x00};
    pkm_packet_t pkt = {.id = 0x12, .hash = 0, .content = bad, .size = sizeof bad};
    pkm_msg_t *m = NULL;
    assert_int_equal(pkm_registry_decode(reg, &pkt, &m), PKM_EMUTF8_BYTE);
    assert_null(m);
    assert_says(pkm_schema_last_error(), "packet 0x12 (ChatMessage) field 'text' at offset 1: ",
                pkm_strerror(PKM_EMUTF8_BYTE), NULL);
    /* Trailing bytes, a wrong Hash, an unknown id. */
    uint8_t good[] = {0x01, 0x00, 0x02, 'h', 'i', 0x00, 0xAA};
    pkt.content = good;
    pkt.size = sizeof good;
    assert_int_equal(pkm_registry_verify(reg, &pkt), PKM_ESIZE);
    assert_says(pkm_schema_last_error(),
                "packet 0x12 (ChatMessage) at offset 6:", "1 bytes after the last field", NULL);
    pkt.size = sizeof good - 1;
    pkt.hash = 0x1234;
    assert_int_equal(pkm_registry_verify_hook(reg, &pkt), PKM_EHASH);
    assert_says(pkm_schema_last_error(),
                "packet 0x12 (ChatMessage): ", "the packet says 0x00001234, its content gives 0x",
                NULL);
    pkt.id = 0x13;
    assert_int_equal(pkm_registry_decode(reg, &pkt, &m), PKM_EUNKNOWNID);
    assert_string_equal(pkm_schema_last_error(),
                        "packet 0x13: no schema registered for this packet id");
    pkm_registry_free(reg);

    /* A registry from a table in one call: each entry registered, or nothing on a bad entry. */
    const pkm_registry_entry_t table[] = {{0x12, &chat}, {0x20, &player}};
    assert_int_equal(pkm_registry_new_from(table, 2, &reg), 0);
    assert_ptr_equal(pkm_registry_lookup(reg, 0x12), &chat);
    assert_ptr_equal(pkm_registry_lookup(reg, 0x20), &player);
    assert_null(pkm_registry_lookup(reg, 0x13));
    pkm_registry_free(reg);
    const pkm_registry_entry_t twice[] = {{0x12, &chat}, {0x12, &player}};
    reg = (pkm_registry_t *)1;
    assert_int_equal(pkm_registry_new_from(twice, 2, &reg), PKM_ESTATE);
    assert_null(reg);
    const pkm_registry_entry_t reserved[] = {{0xFF, &chat}};
    assert_int_equal(pkm_registry_new_from(reserved, 1, &reg), PKM_EINVAL);
    assert_int_equal(pkm_registry_new_from(NULL, 0, &reg), 0);
    pkm_registry_free(reg);
}

/* ---- handshake closes: which side, which step, on both sides ---- */

/* A server on its own thread that records each on_close. */
typedef struct {
    pkm_server_t *srv;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int closes;
    int err[8];
    char step[8][32];
} hs_srv;

static void hs_on_close(void *user, pkm_server_conn_t *conn, int err, const char *step)
{
    (void)conn;
    hs_srv *h = user;
    pthread_mutex_lock(&h->mu);
    if (h->closes < 8) {
        h->err[h->closes] = err;
        snprintf(h->step[h->closes], sizeof h->step[0], "%s", step ? step : "");
        h->closes++;
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void *hs_run(void *arg)
{
    hs_srv *h = arg;
    pkm_server_run(h->srv);
    return NULL;
}

static void hs_start(hs_srv *h, size_t max_conns, int64_t hs_timeout_ms)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    pkm_server_config_t cfg;
    pkm_server_config_init(&cfg);
    cfg.host = "127.0.0.1";
    cfg.raise_fd_limit = 0;
    cfg.engine.server_key = t_shared_keys.server_key;
    cfg.engine.secret = (const uint8_t *)"sesame";
    cfg.engine.secret_len = 6;
    cfg.max_conns = max_conns;
    cfg.handshake_timeout_ms = hs_timeout_ms;
    cfg.on_close = hs_on_close;
    cfg.user = h;
    assert_int_equal(pkm_server_new(&cfg, &h->srv), 0);
    assert_int_equal(pthread_create(&h->th, NULL, hs_run, h), 0);
}

/* Waits for the n-th on_close and returns its index. */
static int hs_wait_close(hs_srv *h, int n)
{
    pthread_mutex_lock(&h->mu);
    while (h->closes < n)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    return n - 1;
}

static void hs_stop(hs_srv *h)
{
    pkm_server_stop(h->srv);
    pthread_join(h->th, NULL);
    pkm_server_free(h->srv);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
}

static int hs_connect(hs_srv *h, const char *pin, const char *secret, char *eb)
{
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    cfg.engine.client_key = t_client_key(&t_shared_keys);
    cfg.engine.pin_fingerprint = pin;
    cfg.engine.secret = (const uint8_t *)secret;
    cfg.engine.secret_len = strlen(secret);
    cfg.errbuf = eb;
    cfg.errbuf_size = PKM_ERRMSG_SIZE;
    pkm_conn_t *c = NULL;
    int r = pkm_connect("127.0.0.1", pkm_server_port(h->srv), &cfg, &c);
    pkm_conn_close(c);
    return r;
}

static void handshake_closes_say_who_and_where(void **state)
{
    (void)state;
    hs_srv h;
    hs_start(&h, 0, 0);
    char eb[PKM_ERRMSG_SIZE], why[256];

    /* A client whose pin names another key leaves before its ClientKey: the server says the
     * client closed at step 2, not "wrong secret". */
    assert_int_equal(hs_connect(&h, t_shared_keys.client_fp, "sesame", eb), PKM_EPIN);
    int i = hs_wait_close(&h, 1);
    assert_int_equal(h.err[i], PKM_EEOF);
    assert_string_equal(h.step[i], "ClientKey");
    assert_true(pkm_handshake_failure(PKM_ROLE_SERVER, h.err[i], h.step[i], why, sizeof why) > 0);
    assert_says(why, "the client closed the connection during handshake step 2 (ClientKey)",
                "before sending its ClientKey", "refused this server's key", NULL);
    assert_null(strstr(why, "secret"));

    /* A wrong secret: the server's confirmation check fails (its sentence says so); the client
     * sees the server close at step 5 instead of answering. */
    assert_int_equal(hs_connect(&h, t_shared_keys.server_fp, "wrong", eb), PKM_EHANDSHAKE);
    assert_says(eb, "the server closed the connection during handshake step 5",
                "instead of answering the client's confirmation (0xFF)", "the secret differs",
                NULL);
    i = hs_wait_close(&h, 2);
    assert_int_equal(h.err[i], PKM_EHANDSHAKE);
    assert_string_equal(h.step[i], "confirmation (0xFF)");
    assert_true(pkm_handshake_failure(PKM_ROLE_SERVER, h.err[i], h.step[i], why, sizeof why) > 0);
    assert_says(why, "the client's confirmation (0xFF) did not check", "secret differs", NULL);
    assert_int_equal(hs_connect(&h, t_shared_keys.server_fp, "sesame", eb), 0);
    hs_stop(&h);

    /* A server at its connection cap closes a new connection before its ServerKey; a
     * connection that sends nothing times out at step 2 on the server. */
    hs_start(&h, 1, 300);
    int raw = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(pkm_server_port(h.srv)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(raw, (struct sockaddr *)&a, sizeof a), 0);
    uint8_t byte;
    assert_int_equal(recv(raw, &byte, 1, 0), 1); /* the ServerKey: it is admitted */
    assert_int_equal(hs_connect(&h, t_shared_keys.server_fp, "sesame", eb), PKM_EHANDSHAKE);
    assert_says(eb, "the server closed the connection during handshake step 1 (ServerKey)",
                "before sending its ServerKey", "a connection cap", NULL);
    i = hs_wait_close(&h, 1);
    assert_int_equal(h.err[i], PKM_ETIMEOUT);
    assert_true(pkm_handshake_failure(PKM_ROLE_SERVER, h.err[i], h.step[i], why, sizeof why) > 0);
    assert_says(why, "still waiting at handshake step 2 (ClientKey) for the client's ClientKey",
                NULL);
    close(raw);
    hs_stop(&h);

    /* Cases with nothing to add: "" and 0. */
    assert_int_equal(pkm_handshake_failure(PKM_ROLE_CLIENT, PKM_EPIN, "ServerKey", why, 256), 0);
    assert_string_equal(why, "");
    assert_int_equal(pkm_handshake_failure(PKM_ROLE_SERVER, PKM_EEOF, NULL, why, 256), 0);
    assert_true(pkm_handshake_failure(PKM_ROLE_CLIENT, PKM_ETIMEOUT, "KeyShare", why, 256) > 0);
    assert_says(why, "still waiting at handshake step 3 (KeyShare) for the server's KeyShare",
                NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(engine_validator_names_the_field),
        cmocka_unit_test(connect_refuses_bad_config_first),
        cmocka_unit_test(listen_and_from_fd_name_the_field),
        cmocka_unit_test(key_file_errors_name_path_and_errno),
        cmocka_unit_test(server_new_says_why),
        cmocka_unit_test(schema_errors_name_packet_field_offset),
        cmocka_unit_test(handshake_closes_say_who_and_where),
    };
    return cmocka_run_group_tests(tests, t_keys_setup, t_keys_teardown);
}
