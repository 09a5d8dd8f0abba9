/* SPDX-License-Identifier: MIT */
/* The Redis relay of the tool (tools/relay_redis.c): its URL parser and message format, then two
 * relays on one libuv loop against a live redis-server (Debian's package) on a free loopback
 * port, which is stopped and restarted on the same port; then one with passwords (requirepass and
 * an ACL user). Every wait is bounded. */
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include "support.h"
#include "support/clients.h"
#include "support/daemon.h"
#include "relay_redis.h"

#define WAIT_MS 10000 /* the cap of every wait (reconnection backoff included) */

/* ---- URL and format (no Redis) -------------------------------------------------------------- */

static void test_url(void **state)
{
    (void)state;
    relay_redis_url_t u;
    char err[256];
    assert_int_equal(relay_redis_parse_url("redis://127.0.0.1:6380/lobby-1", &u, err, sizeof err),
                     0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_string_equal(u.channel, "lobby-1");
    assert_int_equal(relay_redis_parse_url("redis://cache.example", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "cache.example");
    assert_int_equal(u.port, RELAY_REDIS_DEFAULT_PORT);
    assert_string_equal(u.channel, RELAY_REDIS_DEFAULT_CHANNEL);
    assert_int_equal(relay_redis_parse_url("redis://[::1]:7000", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "");

    /* userinfo: USER:PASSWORD@, :PASSWORD@ (the default user), USER@ (the password apart) */
    assert_int_equal(
        relay_redis_parse_url("redis://alice:s3cret@127.0.0.1:6380/ch", &u, err, sizeof err), 0);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.password, "s3cret");
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_string_equal(u.channel, "ch");
    assert_int_equal(relay_redis_parse_url("redis://:pw@cache.example", &u, err, sizeof err), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "pw");
    assert_string_equal(u.host, "cache.example");
    assert_int_equal(u.port, RELAY_REDIS_DEFAULT_PORT);
    assert_int_equal(relay_redis_parse_url("redis://bob@h:1", &u, err, sizeof err), 0);
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.password, "");
    assert_string_equal(u.host, "h");
    /* percent-escapes (either case), raw sub-delims and ':' in the password, an IPv6 host */
    assert_int_equal(relay_redis_parse_url("redis://a%40b%3a:p%40ss%3A%2f%25w:r;d!*~@[::1]:7000/c",
                                           &u, err, sizeof err),
                     0);
    assert_string_equal(u.user, "a@b:");
    assert_string_equal(u.password, "p@ss:/%w:r;d!*~");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_string_equal(u.channel, "c");
    assert_int_equal(relay_redis_parse_url("redis://:%C3%A9t%C3%A9@h", &u, err, sizeof err), 0);
    assert_string_equal(u.password, "\xC3\xA9t\xC3\xA9");
    relay_redis_url_wipe(&u);
    static const uint8_t zero[sizeof u.password] = {0};
    assert_memory_equal(u.password, zero, sizeof zero);

    /* what logs and errors show instead of a URL */
    static const struct {
        const char *url, *shown;
    } redact[] = {
        {"redis://alice:pw@h:1/c", "redis://alice:***@h:1/c"},
        {"redis://:p%40w@h", "redis://:***@h"},
        {"redis://bob@h", "redis://***@h"},
        {"redis://:a@b@h", "redis://:***@h"},
        {"rediss://u:pw@h", "rediss://u:***@h"},
        {"redis://h:1/c", "redis://h:1/c"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof redact / sizeof *redact; i++) {
        char shown[64];
        relay_redis_redact_url(redact[i].url, shown, sizeof shown);
        assert_string_equal(shown, redact[i].shown);
    }

    static const struct {
        const char *url, *reason; /* a word the error must contain */
    } bad[] = {
        {"", "empty"},
        {"http://h:1", "not a redis://"},
        {"rediss://h:1", "TLS"},
        {"redis://", "no host"},
        {"redis://:6379", "no host"},
        {"redis://h:", "no port"},
        {"redis://h:0", "out of range"},
        {"redis://h:65536", "out of range"},
        {"redis://h:99999999999999999999", "out of range"},
        {"redis://h:12x", "port"},
        {"redis://h:1/", "empty channel"},
        {"redis://h:1/a b", "channel"},
        {"redis://h:1/a/b", "channel"},
        {"redis://:@h", "empty password"},
        {"redis://u:@h", "empty password"},
        {"redis://@h", "empty user"},
        {"redis://:pw@", "no host"},
        {"redis://u s:pw@h", "user name"},
        {"redis://u%4:pw@h", "percent-escape in the user"},
        {"redis://u%00:pw@h", "%00 in the user"},
        {"redis://:p%4@h", "percent-escape in the password"},
        {"redis://:p%zz@h", "percent-escape in the password"},
        {"redis://:p%@h", "percent-escape in the password"},
        {"redis://:p%00x@h", "%00 in the password"},
        {"redis://:pa ss@h", "must be percent-encoded"},
        {"redis://:pa#ss@h", "must be percent-encoded"},
        {"redis://:pa\"ss@h", "must be percent-encoded"},
        {"redis://:pa/ss@h:1", "'/' before the '@'"},
        {"redis://:pa@ss@h:1", "more than one '@'"},
        {"redis://h:1/chan@nel", "'/' before the '@'"},
        {"redis://h:1/c?x=1", "query"},
        {"redis://[::1:1", "']'"},
        {"redis://h%20:1", "host"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        if (relay_redis_parse_url(bad[i].url, &u, err, sizeof err) != -1 ||
            !strstr(err, bad[i].reason))
            fail_msg("URL '%s': error '%s', want one naming '%s'", bad[i].url, err, bad[i].reason);
    }
    /* the password is never in the error, whatever is wrong with the URL */
    static const char *const leaky[] = {
        "redis://:SECRET%4@h",   "redis://:SECRET x@h",  "redis://:SE@CRET@h:1",
        "redis://:SECRET/x@h",   "redis://:SECRET@h:0",  "redis://u:SECRET@h:1/a b",
        "rediss://u:SECRET@h",   "redis://:SECRET@",     "redis://SECRET@h?x",
        "redis://u:SECRET%00@h", "redis://:SECRET@h:1/",
    };
    for (size_t i = 0; i < sizeof leaky / sizeof *leaky; i++) {
        err[0] = 0;
        assert_int_equal(relay_redis_parse_url(leaky[i], &u, err, sizeof err), -1);
        if (!err[0] || strstr(err, "SECRET") || strstr(err, "CRET"))
            fail_msg("URL '%s': the error shows the password: '%s'", leaky[i], err);
        assert_int_equal(u.password[0], 0); /* wiped on failure */
    }
    char longpw[RELAY_REDIS_PASSWORD_MAX + 32];
    snprintf(longpw, sizeof longpw, "redis://:%0*d@h", RELAY_REDIS_PASSWORD_MAX + 1, 0);
    assert_int_equal(relay_redis_parse_url(longpw, &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "password longer"));
    snprintf(longpw, sizeof longpw, "redis://:%0*d@h", RELAY_REDIS_PASSWORD_MAX, 0);
    assert_int_equal(relay_redis_parse_url(longpw, &u, err, sizeof err), 0);
    assert_int_equal(strlen(u.password), RELAY_REDIS_PASSWORD_MAX);
    char longch[RELAY_REDIS_CHANNEL_MAX + 32];
    snprintf(longch, sizeof longch, "redis://h:1/%0*d", RELAY_REDIS_CHANNEL_MAX + 1, 0);
    assert_int_equal(relay_redis_parse_url(longch, &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "longer"));
}

static void test_format(void **state)
{
    (void)state;
    uint8_t content[40], buf[128];
    for (size_t i = 0; i < sizeof content; i++)
        content[i] = (uint8_t)(i * 37 + 1);
    size_t n = relay_redis_encode(buf, sizeof buf, 0x0102030405060708ull, 0xA1B2C3D4E5F60718ull,
                                  0x42, 0xDEADBEEFu, content, sizeof content);
    assert_int_equal(n, RELAY_REDIS_HEADER_SIZE + sizeof content);
    /* the documented layout, byte by byte */
    static const uint8_t head[RELAY_REDIS_HEADER_SIZE] = {
        'P',  'K',  'R',  1,    1,    2,    3,    4,    5,    6,    7, 8, 0xA1, 0xB2, 0xC3,
        0xD4, 0xE5, 0xF6, 0x07, 0x18, 0x42, 0xDE, 0xAD, 0xBE, 0xEF, 0, 0, 0,    40};
    assert_memory_equal(buf, head, sizeof head);
    uint64_t inst, conn;
    uint8_t id;
    uint32_t hash;
    const uint8_t *c;
    size_t len;
    assert_int_equal(relay_redis_decode(buf, n, &inst, &conn, &id, &hash, &c, &len), 0);
    assert_true(inst == 0x0102030405060708ull && conn == 0xA1B2C3D4E5F60718ull);
    assert_int_equal(id, 0x42);
    assert_int_equal(hash, 0xDEADBEEFu);
    assert_int_equal(len, sizeof content);
    assert_memory_equal(c, content, sizeof content);
    /* empty content */
    assert_int_equal(relay_redis_encode(buf, sizeof buf, 1, 2, 3, 4, NULL, 0),
                     RELAY_REDIS_HEADER_SIZE);
    assert_int_equal(
        relay_redis_decode(buf, RELAY_REDIS_HEADER_SIZE, &inst, &conn, &id, &hash, &c, &len), 0);
    assert_int_equal(len, 0);
    /* too small a buffer */
    assert_int_equal(relay_redis_encode(buf, RELAY_REDIS_HEADER_SIZE + 3, 1, 2, 3, 4, content, 4),
                     0);
    /* malformed: every truncation, a byte more, another magic or version, a length that lies */
    n = relay_redis_encode(buf, sizeof buf, 9, 9, 9, 9, content, 10);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(relay_redis_decode(buf, k, &inst, &conn, &id, &hash, &c, &len), -1);
    assert_int_equal(relay_redis_decode(buf, n + 1, &inst, &conn, &id, &hash, &c, &len), -1);
    for (int k = 0; k < 4; k++) {
        buf[k] ^= 0x20;
        assert_int_equal(relay_redis_decode(buf, n, &inst, &conn, &id, &hash, &c, &len), -1);
        buf[k] ^= 0x20;
    }
    buf[28] = 11;
    assert_int_equal(relay_redis_decode(buf, n, &inst, &conn, &id, &hash, &c, &len), -1);
    buf[28] = 10;
    assert_int_equal(relay_redis_decode(buf, n, &inst, &conn, &id, &hash, &c, &len), 0);
}

/* ---- live Redis ----------------------------------------------------------------------------- */

/* With auth: requirepass AUTH_PW for the default user, and the ACL user AUTH_USER (password
 * AUTH_USER_PW) that may subscribe and publish. */
#define AUTH_PW      "s3cret:p@ss/w%rd"
#define AUTH_PW_URL  "s3cret:p%%40ss%%2Fw%%25rd" /* AUTH_PW percent-encoded, as a format */
#define AUTH_USER    "lobby"
#define AUTH_USER_PW "lobby-pw-2"

static struct {
    const char *bin;
    t_daemon d; /* redis-server, in its temporary directory */
    int port;
    int auth; /* start redis-server with the passwords above */
} rs;

static int redis_accepts(void *ctx)
{
    (void)ctx;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)rs.port);
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0) close(fd);
    return ok;
}

static void stop_redis(void)
{
    t_daemon_stop(&rs.d, WAIT_MS);
}

/* Starts redis-server on rs.port (no persistence, loopback only); 0 once it accepts. */
static int start_redis(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", rs.port);
    char *const plain[] = {
        (char *)rs.bin, "--port", port,    "--bind", "127.0.0.1",   "--save", "",
        "--appendonly", "no",     "--dir", rs.d.dir, "--daemonize", "no",     "--protected-mode",
        "yes",          NULL};
    char *const auth[] = {(char *)rs.bin,
                          "--port",
                          port,
                          "--bind",
                          "127.0.0.1",
                          "--save",
                          "",
                          "--appendonly",
                          "no",
                          "--dir",
                          rs.d.dir,
                          "--daemonize",
                          "no",
                          "--protected-mode",
                          "yes",
                          "--requirepass",
                          AUTH_PW,
                          "--user",
                          AUTH_USER,
                          "on",
                          ">" AUTH_USER_PW,
                          "&pkm-auth",
                          "+subscribe",
                          "+publish",
                          NULL};
    return t_daemon_start(&rs.d, "redis.log", 1, rs.auth ? auth : plain, WAIT_MS, redis_accepts,
                          NULL);
}

static int setup(void **state)
{
    memset(&rs, 0, sizeof rs);
    static const char *const paths[] = {"/usr/bin/redis-server", "/usr/local/bin/redis-server",
                                        "/usr/sbin/redis-server", NULL};
    rs.bin = t_daemon_find(paths);
    if (!rs.bin) {
        *state = NULL;
        return 0;
    }
    if (t_daemon_init(&rs.d, "/tmp/pkm_redis_XXXXXX") != 0) return -1;
    for (int attempt = 0; attempt < 3; attempt++) {
        rs.port = t_free_port();
        if (rs.port && start_redis() == 0) {
            *state = &rs;
            return 0;
        }
    }
    return -1;
}

static int setup_auth(void **state)
{
    int rc = setup(state);
    rs.auth = 1;
    if (rc != 0 || !*state) return rc;
    stop_redis(); /* again, with the passwords, on the same port */
    for (int attempt = 0; attempt < 3; attempt++)
        if (start_redis() == 0) return 0;
    return -1;
}

static int teardown(void **state)
{
    (void)state;
    stop_redis();
    static const char *const files[] = {"redis.log", "dump.rdb" /* not written (--save ""), but */,
                                        NULL};
    t_daemon_done(&rs.d, files);
    return 0;
}

/* One relay's side of the test: what it received and logged. */
typedef struct {
    const char *name;
    relay_redis_t *r;
    size_t got;
    uint64_t last_instance, last_conn;
    uint8_t last_id;
    uint32_t last_hash;
    uint8_t last[64];
    size_t last_len;
    int lost_logs, back_logs, other_logs;
    int refused_logs, noauth_logs; /* "refused the relay's AUTH", "wants a password" */
    char refused_msg[256];         /* the last of those */
    int leaked;                    /* a log line held a password */
    uint32_t posts_seen; /* packets of id 0x45 (posted), whose hash numbers them 0, 1, 2... */
    int posts_out_of_order;
} side_t;

static void on_message(void *ctx, uint64_t instance, uint64_t conn_id, uint8_t id, uint32_t hash,
                       const uint8_t *content, size_t len)
{
    side_t *s = ctx;
    s->got++;
    s->last_instance = instance;
    s->last_conn = conn_id;
    s->last_id = id;
    s->last_hash = hash;
    s->last_len = len;
    memcpy(s->last, content, len < sizeof s->last ? len : sizeof s->last);
    if (id == 0x45) {
        if (hash != s->posts_seen) s->posts_out_of_order++;
        s->posts_seen++;
    }
}

static void on_log(void *ctx, int level, const char *msg)
{
    side_t *s = ctx;
    if (strstr(msg, AUTH_PW) || strstr(msg, "p%40ss") || strstr(msg, AUTH_USER_PW) ||
        strstr(msg, "wrong-pw"))
        s->leaked++;
    if (strstr(msg, "refused the relay's AUTH") || strstr(msg, "wants a password")) {
        if (strstr(msg, "refused"))
            s->refused_logs++;
        else
            s->noauth_logs++;
        snprintf(s->refused_msg, sizeof s->refused_msg, "%s", msg);
    } else if (strstr(msg, "lost Redis"))
        s->lost_logs++;
    else if (strstr(msg, "is back"))
        s->back_logs++;
    else
        s->other_logs++;
    fprintf(stderr, "[%s] %s: %s\n", s->name, level == RELAY_REDIS_LOG_WARN ? "warn" : "info", msg);
}

static void tick(uv_timer_t *t)
{
    (void)t;
}

typedef int (*pred_fn)(side_t *a, side_t *b);

/* Runs the loop until pred holds or ms pass; returns pred's last value. */
static int run_until(uv_loop_t *loop, pred_fn pred, side_t *a, side_t *b, long ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, tick, 10, 10);
    uint64_t end = uv_now(loop) + (uint64_t)ms;
    int ok;
    while (!(ok = pred(a, b)) && uv_now(loop) < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

static int connected(const side_t *s)
{
    relay_redis_stats_t st;
    relay_redis_get_stats(s->r, &st);
    return st.connected;
}

static int both_up(side_t *a, side_t *b)
{
    return connected(a) && connected(b);
}

static int both_down(side_t *a, side_t *b)
{
    return !connected(a) && !connected(b);
}

static int b_got_one(side_t *a, side_t *b)
{
    (void)a;
    return b->got >= 1;
}

static int a_got_one(side_t *a, side_t *b)
{
    (void)b;
    return a->got >= 1;
}

static int b_got_two(side_t *a, side_t *b)
{
    (void)a;
    return b->got >= 2;
}

static int three_attempts(side_t *a, side_t *b)
{
    relay_redis_stats_t st;
    (void)b;
    relay_redis_get_stats(a->r, &st);
    return st.attempts >= 3;
}

#define POSTS 200

static int b_got_posts(side_t *a, side_t *b)
{
    (void)a;
    return b->got >= 1 + POSTS;
}

/* Another thread posts through A while the loop runs on the test's thread. */
static void *poster(void *arg)
{
    relay_redis_t *r = arg;
    for (uint32_t i = 0; i < POSTS; i++) {
        uint8_t c[4] = {(uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i};
        if (relay_redis_post(r, 100 + i, 0x45, i, c, sizeof c) != 0) return (void *)1;
    }
    return NULL;
}

static int never(side_t *a, side_t *b)
{
    (void)a;
    (void)b;
    return 0;
}

/* The live tests' start: skipped without redis-server (the group setup's *state), else a loop. */
static void live_begin(void **state, uv_loop_t *loop)
{
    if (!*state) {
        fprintf(stderr, "redis-server not installed (scripts/deps.sh test installs it): skipped\n");
        skip();
    }
    assert_int_equal(uv_loop_init(loop), 0);
}

static void test_live(void **state)
{
    uv_loop_t loop;
    live_begin(state, &loop);
    char url[96];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/pkm-test", rs.port);
    side_t a = {.name = "A"}, b = {.name = "B"};
    char *err = NULL;
    a.r = relay_redis_new(&loop, url, NULL, on_message, &a, &err);
    assert_non_null(a.r);
    b.r = relay_redis_new(&loop, url, NULL, on_message, &b, &err);
    assert_non_null(b.r);
    assert_true(relay_redis_instance_id(a.r) != relay_redis_instance_id(b.r));
    relay_redis_set_log(a.r, on_log);
    relay_redis_set_log(b.r, on_log);
    /* a bad URL is refused at once, with its reason */
    assert_null(relay_redis_new(&loop, "redis://h:0", NULL, on_message, &a, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "out of range"));
    free(err);

    assert_true(run_until(&loop, both_up, &a, &b, WAIT_MS));

    /* A's packet reaches B, not A */
    const uint8_t hello[] = "hello, lobby";
    assert_int_equal(relay_redis_publish(a.r, 7, 0x42, 0x12345678u, hello, sizeof hello), 0);
    assert_true(run_until(&loop, b_got_one, &a, &b, WAIT_MS));
    assert_int_equal(b.got, 1);
    assert_true(b.last_instance == relay_redis_instance_id(a.r));
    assert_true(b.last_conn == 7);
    assert_int_equal(b.last_id, 0x42);
    assert_int_equal(b.last_hash, 0x12345678u);
    assert_int_equal(b.last_len, sizeof hello);
    assert_memory_equal(b.last, hello, sizeof hello);
    /* B answers after receiving: Redis sends A's own message to A's subscriber before B's, so
     * once A has B's, it has had (and skipped) its own. */
    assert_int_equal(relay_redis_publish(b.r, 9, 0x43, 1, (const uint8_t *)"re", 2), 0);
    assert_true(run_until(&loop, a_got_one, &a, &b, WAIT_MS));
    assert_int_equal(a.got, 1);
    assert_true(a.last_instance == relay_redis_instance_id(b.r) && a.last_conn == 9);
    relay_redis_stats_t sa, sb;
    relay_redis_get_stats(a.r, &sa);
    relay_redis_get_stats(b.r, &sb);
    assert_int_equal(sa.skipped_own, 1);
    assert_int_equal(sb.skipped_own, 1);
    assert_int_equal(sa.received, 1);
    assert_int_equal(sb.received, 1);
    assert_int_equal(sa.published, 1);
    assert_int_equal(sa.dropped, 0);
    assert_int_equal(a.lost_logs + b.lost_logs, 0);

    /* posted from another thread: every packet arrives, in order (the last one is the last) */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, poster, a.r), 0);
    int posted = run_until(&loop, b_got_posts, &a, &b, WAIT_MS);
    void *prc = NULL;
    assert_int_equal(pthread_join(th, &prc), 0);
    assert_null(prc);
    assert_true(posted);
    assert_int_equal(b.got, 1 + POSTS);
    assert_int_equal(b.posts_seen, POSTS);
    assert_int_equal(b.posts_out_of_order, 0);
    assert_true(b.last_conn == 100 + POSTS - 1 && b.last_hash == POSTS - 1 && b.last_len == 4);
    relay_redis_get_stats(a.r, &sa);
    assert_int_equal(sa.published, 1 + POSTS);
    assert_int_equal(sa.dropped, 0);
    b.got = 1; /* the counts below go on from the first exchange */

    /* Redis goes away: each relay logs the loss once, and drops (counts) publishes */
    stop_redis();
    assert_true(run_until(&loop, both_down, &a, &b, WAIT_MS));
    for (int i = 0; i < 5; i++)
        assert_int_equal(relay_redis_publish(a.r, 7, 0x42, 0, hello, sizeof hello), 1);
    run_until(&loop, never, &a, &b, 800); /* several reconnection attempts fail meanwhile */
    for (int i = 0; i < 5; i++)
        assert_int_equal(relay_redis_publish(a.r, 7, 0x42, 0, hello, sizeof hello), 1);
    relay_redis_get_stats(a.r, &sa);
    assert_int_equal(sa.dropped, 10);
    assert_int_equal(sa.published, 1 + POSTS);
    assert_int_equal(sa.losses, 1);
    assert_int_equal(a.lost_logs, 1);
    assert_int_equal(b.lost_logs, 1);
    assert_int_equal(a.back_logs, 0);

    /* Redis is back on the same port: both reconnect, log it once, and delivery resumes */
    int started = -1;
    for (int attempt = 0; attempt < 3 && started != 0; attempt++)
        started = start_redis();
    assert_int_equal(started, 0);
    assert_true(run_until(&loop, both_up, &a, &b, WAIT_MS));
    assert_int_equal(a.back_logs, 1);
    assert_int_equal(b.back_logs, 1);
    assert_int_equal(a.lost_logs, 1);
    const uint8_t again[] = "again";
    assert_int_equal(relay_redis_publish(a.r, 8, 0x44, 5, again, sizeof again), 0);
    assert_true(run_until(&loop, b_got_two, &a, &b, WAIT_MS));
    assert_int_equal(b.got, 2);
    assert_true(b.last_conn == 8 && b.last_id == 0x44 && b.last_hash == 5);
    assert_memory_equal(b.last, again, sizeof again);
    relay_redis_get_stats(a.r, &sa);
    assert_int_equal(sa.recoveries, 1);
    assert_int_equal(sa.published, 2 + POSTS);

    /* freeing closes everything on the loop */
    relay_redis_free(a.r);
    relay_redis_free(b.r);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A server that accepts (the kernel does, into the backlog) and never answers: each attempt
 * times out, is retried, and the log says so once. No Redis needed. */
static void test_silent_server(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 128), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    char url[96];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(a.sin_port));
    side_t c = {.name = "C"};
    char *err = NULL;
    c.r = relay_redis_new(&loop, url, NULL, on_message, &c, &err);
    assert_non_null(c.r);
    relay_redis_set_log(c.r, on_log);
    relay_redis_set_connect_timeout(c.r, 100); /* the attempt under way too */
    assert_true(run_until(&loop, three_attempts, &c, &c, WAIT_MS));
    relay_redis_stats_t st;
    relay_redis_get_stats(c.r, &st);
    assert_int_equal(st.connected, 0);
    assert_int_equal(st.losses, 1);
    assert_int_equal(c.other_logs, 1); /* "cannot reach ... (no answer within 100 ms)", once */
    assert_int_equal(c.lost_logs + c.back_logs, 0);
    assert_int_equal(relay_redis_publish(c.r, 1, 1, 1, (const uint8_t *)"x", 1), 1);
    relay_redis_free(c.r);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    close(fd);
}

/* relay_redis_new's refusals about passwords (no Redis needed: it fails before connecting). */
static void test_new_password(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    side_t a = {.name = "A"};
    char *err = NULL;
    assert_null(relay_redis_new(&loop, "redis://:pw@127.0.0.1:1", "pw2", on_message, &a, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "both in the Redis URL and given apart"));
    free(err);
    assert_null(relay_redis_new(&loop, "redis://bob@127.0.0.1:1", NULL, on_message, &a, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "names a user"));
    free(err);
    char longpw[RELAY_REDIS_PASSWORD_MAX + 2];
    memset(longpw, 'x', sizeof longpw - 1);
    longpw[sizeof longpw - 1] = 0;
    assert_null(relay_redis_new(&loop, "redis://127.0.0.1:1", longpw, on_message, &a, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "longer than"));
    free(err);
    /* nothing was left on the loop */
    assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static int a_four_attempts(side_t *a, side_t *b)
{
    relay_redis_stats_t st;
    (void)b;
    relay_redis_get_stats(a->r, &st);
    return st.attempts >= 4;
}

/* A redis-server with requirepass and an ACL user: the right passwords relay across two relays
 * (A the default user's, in the URL; B the ACL user's, given apart); a wrong one and none are
 * refused by Redis, said once each, retried with backoff; no log line holds a password. */
static void test_live_auth(void **state)
{
    uv_loop_t loop;
    live_begin(state, &loop);
    char url_a[128], url_b[128], url_w[128], url_n[128];
    snprintf(url_a, sizeof url_a, "redis://:" AUTH_PW_URL "@127.0.0.1:%d/pkm-auth", rs.port);
    snprintf(url_b, sizeof url_b, "redis://" AUTH_USER "@127.0.0.1:%d/pkm-auth", rs.port);
    snprintf(url_w, sizeof url_w, "redis://" AUTH_USER ":wrong-pw@127.0.0.1:%d/pkm-auth", rs.port);
    snprintf(url_n, sizeof url_n, "redis://127.0.0.1:%d/pkm-auth", rs.port);
    side_t a = {.name = "A"}, b = {.name = "B"}, w = {.name = "W"}, n = {.name = "N"};
    char *err = NULL;
    a.r = relay_redis_new(&loop, url_a, NULL, on_message, &a, &err);
    assert_non_null(a.r);
    b.r = relay_redis_new(&loop, url_b, AUTH_USER_PW, on_message, &b, &err);
    assert_non_null(b.r);
    relay_redis_set_log(a.r, on_log);
    relay_redis_set_log(b.r, on_log);
    assert_true(run_until(&loop, both_up, &a, &b, WAIT_MS));
    const uint8_t hello[] = "behind a password";
    assert_int_equal(relay_redis_publish(a.r, 3, 0x42, 77, hello, sizeof hello), 0);
    assert_true(run_until(&loop, b_got_one, &a, &b, WAIT_MS));
    assert_int_equal(b.got, 1);
    assert_true(b.last_instance == relay_redis_instance_id(a.r) && b.last_conn == 3);
    assert_int_equal(b.last_len, sizeof hello);
    assert_memory_equal(b.last, hello, sizeof hello);
    assert_int_equal(relay_redis_publish(b.r, 4, 0x43, 78, (const uint8_t *)"re", 2), 0);
    assert_true(run_until(&loop, a_got_one, &a, &b, WAIT_MS));
    assert_true(a.last_instance == relay_redis_instance_id(b.r) && a.last_conn == 4);
    relay_redis_stats_t st;
    relay_redis_get_stats(a.r, &st);
    assert_int_equal(st.auth_refused, 0);
    assert_int_equal(st.losses, 0);
    assert_int_equal(a.refused_logs + a.noauth_logs + b.refused_logs + b.noauth_logs, 0);

    /* a wrong password: never connected, said once with Redis's reason, retried with backoff
     * (four attempts take at least 100 + 200 + 400 ms: no spinning) */
    w.r = relay_redis_new(&loop, url_w, NULL, on_message, &w, &err);
    assert_non_null(w.r);
    relay_redis_set_log(w.r, on_log);
    uint64_t t0 = uv_now(&loop);
    assert_true(run_until(&loop, a_four_attempts, &w, &w, WAIT_MS));
    uv_update_time(&loop);
    assert_true(uv_now(&loop) - t0 >= 100 + 200 + 400);
    relay_redis_get_stats(w.r, &st);
    assert_int_equal(st.connected, 0);
    assert_true(st.auth_refused >= 3); /* every attempt was refused, not only the first */
    assert_int_equal(st.losses, 1);
    assert_int_equal(w.refused_logs, 1);
    assert_int_equal(w.noauth_logs + w.lost_logs + w.other_logs, 0);
    assert_non_null(strstr(w.refused_msg, "WRONGPASS"));
    assert_non_null(strstr(w.refused_msg, "redis://" AUTH_USER "@127.0.0.1:"));
    assert_int_equal(relay_redis_publish(w.r, 1, 1, 1, (const uint8_t *)"x", 1), 1);

    /* no password: Redis answers NOAUTH, said once */
    n.r = relay_redis_new(&loop, url_n, NULL, on_message, &n, &err);
    assert_non_null(n.r);
    relay_redis_set_log(n.r, on_log);
    assert_true(run_until(&loop, a_four_attempts, &n, &n, WAIT_MS));
    relay_redis_get_stats(n.r, &st);
    assert_int_equal(st.connected, 0);
    assert_true(st.auth_refused >= 3);
    assert_int_equal(n.noauth_logs, 1);
    assert_int_equal(n.refused_logs + n.lost_logs + n.other_logs, 0);
    assert_non_null(strstr(n.refused_msg, "NOAUTH"));

    /* meanwhile A and B stayed up, and nothing of W's or N's reached them */
    assert_true(connected(&a) && connected(&b));
    assert_int_equal(a.got, 1);
    assert_int_equal(b.got, 1);
    assert_int_equal(a.leaked + b.leaked + w.leaked + n.leaked, 0);

    relay_redis_free(a.r);
    relay_redis_free(b.r);
    relay_redis_free(w.r);
    relay_redis_free(n.r);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_silent_server),
        cmocka_unit_test(test_new_password),
        cmocka_unit_test_setup_teardown(test_live, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_auth, setup_auth, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
