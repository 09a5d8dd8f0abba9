/* SPDX-License-Identifier: MIT */
/* pkmcom serve: a PkmCom/TCP server on the libuv server (server.h) that echoes each packet to its
 * sender, or relays it to every other client (--relay), optionally printing it as a JSON line. */
#include <errno.h>
#include <pthread.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include "relay_redis.h"
#include "tool.h"

static const char serve_help[] =
    "usage: pkmcom serve --listen HOST:PORT [options]\n"
    "\n"
    "Runs a PkmCom/TCP server. Each packet a client sends is echoed back to it unchanged\n"
    "(id, hash and content, on the raw path: no schema needed), or with --relay sent to\n"
    "every other connected client instead. Connections and handshake failures are logged\n"
    "to stderr. SIGINT or SIGTERM stops it: no new connections, open ones closed, exit 0.\n"
    "\n"
    "  --listen HOST:PORT   address to listen on; PORT 0 picks a free port (the log line\n"
    "                       \"listening on HOST:PORT\" gives it); [::1]:PORT for IPv6\n"
    "  --key FILE           the server's private key (PEM). Default: server_key.pem in the\n"
    "                       configuration directory, created (mode 0600) on first use\n"
    "  --password-file F    require a password (alternative handshaking): the first\n"
    "                       line of F. Default: $PKMCOM_PASSWORD, if set\n"
    "  --password PW        the password on the command line: works, with a warning\n"
    "                       (other users can see a command line)\n"
    "  --relay              send each packet to every other client (a lobby), not back\n"
    "  --redis URL          with --relay, across instances too: each client's packet is\n"
    "                       also published on Redis (redis://HOST[:PORT][/CHANNEL]; port\n"
    "                       6379, channel pkmcom by default), and the packets other\n"
    "                       instances publish there go to every client here. Redis away:\n"
    "                       the local relay goes on, reconnecting with backoff, said once.\n"
    "                       A Redis password: redis://[USER]:PASSWORD@HOST..., percent-\n"
    "                       encoded (%40 for '@'); better --redis-password-file\n"
    "  --redis-password-file F\n"
    "                       the Redis password (AUTH) on the first line of F, not in\n"
    "                       the URL, which other users see; an ACL user: redis://USER@HOST\n"
    "  --print              write each packet received to stdout as one JSON line\n"
    "                       {\"id\":16,\"hash\":123,\"size\":5,\"content\":\"<hex>\"}\n"
    "                       (a Complete Definition packet, ids 0-7, also gets \"hash_ok\",\n"
    "                       \"name\" and \"fields\": its fields by name)\n"
    "  --max-conns N        at most N connections at once (0, the default: no limit)\n"
    "  --loops N            event loops (threads) serving connections; each connection\n"
    "                       stays on one. Default: one per CPU core (0 means the same)\n"
    "  --proxy-trusted CIDR[,CIDR...]\n"
    "                       behind a load balancer (HAProxy send-proxy / send-proxy-v2):\n"
    "                       connections from these addresses (e.g. 127.0.0.1/32,10.0.0.0/8)\n"
    "                       must start with a PROXY v1 or v2 header, and the client it names\n"
    "                       is the source in logs and limits; health checks (LOCAL, or a\n"
    "                       connect that sends nothing) are not logged. A PROXY header from\n"
    "                       any other address is refused (a forged source)\n"
    "\n";

/* (A second string: C11 compilers need support only 4095 characters in one.) */
static const char serve_help_limits[] =
    "Limits against floods and peers that pin memory (a source is an IPv4 address or an\n"
    "IPv6 /64; 0 turns a limit off, but 0 queued means none wait; refusals are logged\n"
    "once per source and interval):\n"
    "  --max-handshakes N             RSA handshakes in flight in all (16); past a cap a\n"
    "                                 handshake waits, without RSA work, served fairly\n"
    "                                 across sources\n"
    "  --max-handshakes-per-source N  in flight per source (4)\n"
    "  --max-queued N                 handshakes waiting in all (4096); past it: closed\n"
    "  --max-queued-per-source N      waiting per source (256)\n"
    "  --max-conns-per-source N       connections open per source (256)\n"
    "  --conn-rate-per-source N       new connections a second per source (64), in\n"
    "  --conn-burst-per-source N      bursts of up to N (0, the default: twice the rate);\n"
    "                                 past it a connection is closed at accept, before\n"
    "                                 any handshake work\n"
    "  --secret-fails N               a source failing the password N times (5) within\n"
    "  --secret-window SEC            SEC seconds (60) is refused for\n"
    "  --secret-ban SEC               SEC seconds (300)\n"
    "  --handshake-timeout SEC        a handshake completes within SEC seconds (10)\n"
    "  --idle-timeout SEC             close a connection silent for SEC seconds (300)\n"
    "  --partial-deadline SEC         a started packet completes within SEC seconds (30)\n"
    "  --partial-budget MIB           all partly received packets together (64 MiB); past\n"
    "                                 it the connections holding the most are closed\n"
    "  --log-interval SEC             one refusal line per source per SEC seconds (60)\n"
    "  -q, --quiet          log only failures\n"
    "  -h, --help           this help\n";

/* The limits options: name, the config field's default in `pkmcom serve`, its maximum, and the
 * unit of the option (1: a count; 1000: seconds to ms; 1 MiB). */
enum {
    L_HS,
    L_HS_SRC,
    L_Q,
    L_Q_SRC,
    L_CONNS_SRC,
    L_RATE_SRC,
    L_BURST_SRC,
    L_FAILS,
    L_WINDOW,
    L_BAN,
    L_HS_TIMEOUT,
    L_IDLE,
    L_PARTIAL,
    L_BUDGET,
    L_LOGINT,
    L_COUNT
};
static const struct {
    const char *name;
    uint64_t def, max;
} limit_opts[L_COUNT] = {
    [L_HS] = {"max-handshakes", 16, 1000000},
    [L_HS_SRC] = {"max-handshakes-per-source", 4, 1000000},
    [L_Q] = {"max-queued", 4096, 1000000},
    [L_Q_SRC] = {"max-queued-per-source", 256, 1000000},
    [L_CONNS_SRC] = {"max-conns-per-source", 256, 10000000},
    [L_RATE_SRC] = {"conn-rate-per-source", 64, 10000000},
    [L_BURST_SRC] = {"conn-burst-per-source", 0, 10000000},
    [L_FAILS] = {"secret-fails", 5, 1000000},
    [L_WINDOW] = {"secret-window", 60, 86400 * 30},
    [L_BAN] = {"secret-ban", 300, 86400 * 30},
    [L_HS_TIMEOUT] = {"handshake-timeout", 10, 86400},
    [L_IDLE] = {"idle-timeout", 300, 86400 * 30},
    [L_PARTIAL] = {"partial-deadline", 30, 86400},
    [L_BUDGET] = {"partial-budget", 64, 1u << 20},
    [L_LOGINT] = {"log-interval", 60, 86400},
};

struct redis_relay;

struct serve {
    pkm_server_t *srv;
    int relay, print, quiet;
    struct redis_relay *redis; /* --redis, or NULL */
    /* The callbacks run on several loops' threads (--loops): mu guards what follows and keeps
     * --print's lines whole. */
    pthread_mutex_t mu;
    /* Handshakes the client abandoned (end of stream or reset): under a flood there are
     * thousands a second, so they are summed up in one line at most once a second. */
    unsigned long left_unlogged;
    time_t left_logged_at;
};

/* For the signal handler only: the server to stop and the signal that stopped it. */
static pkm_server_t *volatile stop_target;
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
    if (stop_target) pkm_server_stop(stop_target);
}

static void conn_name(pkm_server_conn_t *conn, char *out, size_t cap)
{
    char peer[PKM_SERVER_PEER_SIZE];
    if (pkm_server_conn_peer(conn, peer, sizeof peer) < 0) snprintf(peer, sizeof peer, "?");
    snprintf(out, cap, "[#%llu %s]", (unsigned long long)pkm_server_conn_id(conn), peer);
}

/* ---- --redis: the relay across instances (relay_redis.h) ----
 * The relay runs on a libuv loop of its own in a thread of its own, not on a server loop: hiredis
 * resolves the host name, blocking, at every connection attempt, and a Redis that is slow or away
 * must not stall the clients' loops. A client's packet (on_packet, on a server loop) goes to
 * relay_redis_post(), which any thread may call; a packet of another instance (on_redis_message, on
 * the relay's thread) is copied and handed to the server's loop by pkm_server_post(), where
 * deliver_relayed() broadcasts it to every client of this instance, with the id, hash and content
 * as received. The relay never delivers this instance's own messages, so a sender does not hear
 * itself twice. */

struct redis_relay {
    pkm_server_t *srv;
    relay_redis_t *r;
    int quiet;
    uv_loop_t loop;
    uv_async_t stop; /* wakes the relay's loop to free the relay and end */
    uv_thread_t thread;
    int loop_ready, thread_started;
    relay_redis_stats_t final; /* the relay's counters as it stopped */
};

/* One packet from another instance, on its way to the server's loop. */
struct relayed {
    uint8_t id;
    uint32_t hash;
    size_t len;
    uint8_t content[];
};

static void deliver_relayed(pkm_server_t *srv, void *ud)
{
    struct relayed *m = ud;
    pkm_server_broadcast(srv, NULL, m->id, m->hash, m->content, m->len);
    free(m);
}

static void on_redis_message(void *ctx, uint64_t instance, uint64_t conn_id, uint8_t id,
                             uint32_t hash, const uint8_t *content, size_t len)
{
    struct redis_relay *rr = ctx;
    (void)instance;
    (void)conn_id;
    struct relayed *m = malloc(sizeof *m + (len ? len : 1));
    if (!m) return; /* dropped, like any packet a full queue drops */
    m->id = id;
    m->hash = hash;
    m->len = len;
    if (len) memcpy(m->content, content, len);
    /* Refused (PKM_ECLOSED) once the server stops: nobody is left to deliver to. */
    if (pkm_server_post(rr->srv, deliver_relayed, m) != 0) free(m);
}

static void on_redis_log(void *ctx, int level, const char *msg)
{
    struct redis_relay *rr = ctx;
    if (rr->quiet && level > RELAY_REDIS_LOG_WARN) return;
    tool_log("relay: %s%s", level <= RELAY_REDIS_LOG_WARN ? "warning: " : "", msg);
}

/* On the relay's loop, once the server's loops have stopped (nothing is posted after this): what
 * was posted is published or counted, the last counters kept, the relay freed. */
static void relay_end(struct redis_relay *rr)
{
    if (!rr->r) return;
    relay_redis_drain(rr->r);
    relay_redis_get_stats(rr->r, &rr->final);
    relay_redis_free(rr->r);
    rr->r = NULL;
}

static void on_redis_stop(uv_async_t *a)
{
    relay_end(a->data);
    uv_close((uv_handle_t *)a, NULL);
}

static void redis_thread(void *arg)
{
    struct redis_relay *rr = arg;
    uv_run(&rr->loop, UV_RUN_DEFAULT);
}

/* Ends the relay's thread and frees everything; *final (if not NULL) gets its last counters. */
static void redis_relay_free(struct redis_relay *rr, relay_redis_stats_t *final)
{
    if (!rr) return;
    if (rr->thread_started) {
        uv_async_send(&rr->stop);
        uv_thread_join(&rr->thread);
    } else if (rr->loop_ready) {
        relay_end(rr);
        uv_close((uv_handle_t *)&rr->stop, NULL);
        uv_run(&rr->loop, UV_RUN_DEFAULT);
    }
    if (rr->loop_ready) uv_loop_close(&rr->loop);
    if (final) *final = rr->final;
    free(rr);
}

/* Starts the relay for url (password: --redis-password-file's, or NULL), delivering to srv.
 * Returns it, or NULL (said on stderr). */
static struct redis_relay *redis_relay_start(pkm_server_t *srv, const char *url,
                                             const char *password, int quiet)
{
    struct redis_relay *rr = calloc(1, sizeof *rr);
    if (!rr) {
        tool_log("error: --redis: out of memory");
        return NULL;
    }
    rr->srv = srv;
    rr->quiet = quiet;
    if (uv_loop_init(&rr->loop) != 0) {
        tool_log("error: --redis: cannot make an event loop");
        free(rr);
        return NULL;
    }
    if (uv_async_init(&rr->loop, &rr->stop, on_redis_stop) != 0) {
        uv_loop_close(&rr->loop);
        tool_log("error: --redis: cannot make an event loop");
        free(rr);
        return NULL;
    }
    rr->stop.data = rr;
    rr->loop_ready = 1;
    char *err = NULL;
    rr->r = relay_redis_new(&rr->loop, url, password, on_redis_message, rr, &err);
    if (!rr->r) {
        char shown[512];
        relay_redis_redact_url(url, shown, sizeof shown);
        tool_log("error: --redis %s: %s", shown, err ? err : "cannot start the relay");
        free(err);
        redis_relay_free(rr, NULL);
        return NULL;
    }
    relay_redis_set_log(rr->r, on_redis_log);
    /* The thread takes no SIGINT or SIGTERM: they stay with the main thread's handler. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = uv_thread_create(&rr->thread, redis_thread, rr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        tool_log("error: --redis: cannot start the relay's thread: %s", uv_strerror(rc));
        redis_relay_free(rr, NULL);
        return NULL;
    }
    rr->thread_started = 1;
    return rr;
}

/* A client's packet, for the other instances. */
static void redis_relay_publish(struct redis_relay *rr, pkm_server_conn_t *conn,
                                const pkm_packet_t *pkt)
{
    /* Dropped (and counted) when Redis is away or the queue is full: nothing per packet here. */
    (void)relay_redis_post(rr->r, pkm_server_conn_id(conn), pkt->id, pkt->hash, pkt->content,
                           pkt->size);
}

/* Stops the relay (after the server's loops stopped: nothing posts any more) and logs its
 * counters. */
static void redis_relay_stop(struct redis_relay *rr)
{
    if (!rr) return;
    relay_redis_stats_t st;
    redis_relay_free(rr, &st);
    tool_log("relay: published %llu, received %llu, dropped %llu (Redis lost %llu times)",
             (unsigned long long)st.published, (unsigned long long)st.received,
             (unsigned long long)st.dropped, (unsigned long long)st.losses);
}

static void on_connect(void *user, pkm_server_conn_t *conn)
{
    struct serve *s = user;
    if (s->quiet) return;
    char name[PKM_SERVER_PEER_SIZE + 32];
    conn_name(conn, name, sizeof name);
    const char *fp = pkm_server_conn_fingerprint(conn);
    tool_log("%s connected (client's ephemeral key %s)", name, fp ? fp : "?");
}

static void on_packet(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt)
{
    struct serve *s = user;
    if (s->print) {
        pthread_mutex_lock(&s->mu);
        tool_print_packet_named(stdout, pkt);
        pthread_mutex_unlock(&s->mu);
    }
    if (s->relay) {
        pkm_server_broadcast(s->srv, conn, pkt->id, pkt->hash, pkt->content, pkt->size);
        if (s->redis) redis_relay_publish(s->redis, conn, pkt);
        return;
    }
    int rc = pkm_server_send(conn, pkt->id, pkt->hash, pkt->content, pkt->size);
    if (rc < 0 && rc != PKM_EQUEUE) { /* EQUEUE: dropped, and on_close says so */
        char name[PKM_SERVER_PEER_SIZE + 32];
        conn_name(conn, name, sizeof name);
        tool_log("%s cannot echo a packet: %s", name, pkm_strerror(rc));
    }
}

static void on_close(void *user, pkm_server_conn_t *conn, int err, const char *fail_step)
{
    struct serve *s = user;
    /* Refused by the limits, or a PROXY header from an untrusted address: the server's own
     * line says so, once per source and --log-interval (a flood must not write one each). */
    if (err == PKM_EAGAIN) return;
    char name[PKM_SERVER_PEER_SIZE + 32];
    conn_name(conn, name, sizeof name);
    /* Which side closed, at which step and why (the client left, a wrong secret, a timeout). */
    char why[256];
    if (fail_step && !pkm_handshake_failure(PKM_ROLE_SERVER, err, fail_step, why, sizeof why))
        snprintf(why, sizeof why, "%s", pkm_strerror(err));
    if (fail_step && (err == PKM_EEOF || err == PKM_ECONNRESET)) {
        pthread_mutex_lock(&s->mu);
        s->left_unlogged++;
        time_t now = time(NULL);
        if (now != s->left_logged_at) {
            if (s->left_unlogged == 1)
                tool_log("%s handshake failed at step %s: %s", name, fail_step, why);
            else
                tool_log("%lu clients left during the handshake (the last %s at step %s: %s)",
                         s->left_unlogged, name, fail_step, why);
            s->left_unlogged = 0;
            s->left_logged_at = now;
        }
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (fail_step) {
        int timeout = err == PKM_ETIMEOUT && strcmp(why, pkm_strerror(err)) != 0;
        tool_log("%s handshake failed at step %s: %s%s%s", name, fail_step,
                 timeout ? pkm_strerror(err) : "", timeout ? ", " : "", why);
        return;
    }
    if (s->quiet && (err == 0 || err == PKM_EEOF)) return;
    if (!pkm_server_conn_established(conn))
        tool_log("%s closed during the handshake%s%s", name, err ? ": " : "",
                 err ? pkm_strerror(err) : "");
    else if (err == PKM_EEOF)
        tool_log("%s disconnected", name);
    else if (err == 0)
        tool_log("%s closed", name);
    else
        tool_log("%s closed: %s", name, pkm_strerror(err));
}

static void on_log(void *user, int level, const char *msg)
{
    struct serve *s = user;
    if (s->quiet && level > PKM_LOG_WARN) return;
    if (level > PKM_LOG_INFO) return;
    tool_log("%s%s",
             level == PKM_LOG_ERROR  ? "error: "
             : level == PKM_LOG_WARN ? "warning: "
                                     : "",
             msg);
}

/* The key: --key FILE, else the configuration directory's server_key.pem (made on first use). */
static int load_server_key(const char *path, pkm_key_t **key, char *where, size_t cap)
{
    char def[TOOL_PATH_MAX];
    if (!path) {
        int st = tool_config_file("server_key.pem", def, sizeof def);
        if (st) return st;
        struct stat sb;
        if (lstat(def, &sb) != 0 && errno == ENOENT) {
            int rc = pkm_key_generate(key);
            if (rc < 0)
                return tool_fail(TOOL_EXIT_FAIL, "key generation failed: %s", pkm_strerror(rc));
            /* NOREPLACE: if another process made the file meanwhile, it is not replaced. */
            errno = 0;
            rc = pkm_key_save_pem_flags(*key, def, PKM_KEY_SAVE_NOREPLACE);
            if (rc < 0) {
                int err = errno;
                pkm_key_free(*key);
                *key = NULL;
                return tool_key_save_error(def, "server key", rc, err);
            }
            char fp[PKM_FINGERPRINT_SIZE];
            pkm_key_fingerprint(*key, fp);
            tool_log("created a new server key %s (mode 0600), fingerprint %s", def, fp);
            snprintf(where, cap, "%s", def);
            return 0;
        }
        path = def;
    }
    int st = tool_load_key(path, key);
    if (st) return st;
    if (!pkm_key_is_private(*key)) {
        pkm_key_free(*key);
        *key = NULL;
        return tool_fail(TOOL_EXIT_FAIL,
                         "%s: holds a public key only; a server needs its private key", path);
    }
    snprintf(where, cap, "%s", path);
    return 0;
}

/* One of the limits options at argv[*i]: 1 (parsed into lim[]), 0 (not one), -1 (usage error,
 * reported). */
static int serve_limit_opt(int argc, char **argv, int *i, uint64_t lim[L_COUNT])
{
    for (int k = 0; k < L_COUNT; k++) {
        const char *v;
        int r = tool_opt("serve", argc, argv, i, limit_opts[k].name, 0, &v);
        if (r == 0) continue;
        if (r < 0) return -1;
        if (tool_parse_u64(v, limit_opts[k].max, &lim[k]) < 0) {
            tool_usage_error("serve", "--%s: expected a number up to %llu, got '%s'",
                             limit_opts[k].name, (unsigned long long)limit_opts[k].max, v);
            return -1;
        }
        return 1;
    }
    return 0;
}

/* --redis URL: checked at once (a usage error, exit 2), used by redis_relay_start().
 * *has_password: the URL holds a password. */
static int serve_redis_opt(const char *url, int *has_password)
{
    relay_redis_url_t u;
    char err[768], shown[512];
    int rc = relay_redis_parse_url(url, &u, err, sizeof err);
    *has_password = rc == 0 && u.password[0];
    relay_redis_url_wipe(&u);
    if (rc == 0) return 0;
    relay_redis_redact_url(url, shown, sizeof shown);
    tool_usage_error("serve",
                     "--redis '%s': %s (expected redis://[[USER]:PASSWORD@]HOST[:PORT][/CHANNEL])",
                     shown, err);
    return -1;
}

/* The password of a --redis URL, overwritten in place with '*' (argv strings are writable) once
 * the relay has its copy: the process list no longer shows it (it did until now). */
static void mask_url_password(char *url)
{
    char *sch = strstr(url, "://"), *at = strrchr(url, '@');
    if (!sch || !at || at < sch + 3) return;
    char *colon = memchr(sch + 3, ':', (size_t)(at - sch - 3));
    for (char *p = colon ? colon + 1 : sch + 3; colon && p < at; p++)
        *p = '*';
}

int cmd_serve(int argc, char **argv)
{
    const char *listen = NULL, *keyfile = NULL, *password_file = NULL, *proxy_trusted = NULL;
    char *redis_url = NULL; /* argv's: its password is masked once the relay has it */
    const char *redis_password_file = NULL;
    int redis_url_password = 0;
    char *password = NULL; /* --password's argv string, wiped once copied */
    uint64_t max_conns = 0, loops = 0;
    uint64_t lim[L_COUNT];
    for (int k = 0; k < L_COUNT; k++)
        lim[k] = limit_opts[k].def;
    struct serve s;
    memset(&s, 0, sizeof s);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int r;
        if (tool_is_help(a)) {
            fputs(serve_help, stdout);
            fputs(serve_help_limits, stdout);
            return TOOL_EXIT_OK;
        }
        if ((r = tool_opt("serve", argc, argv, &i, "listen", 'l', &v)) != 0) {
            if (r < 0) return TOOL_EXIT_USAGE;
            listen = v;
        } else if ((r = tool_opt("serve", argc, argv, &i, "key", 'k', &v)) != 0) {
            if (r < 0) return TOOL_EXIT_USAGE;
            keyfile = v;
        } else if ((r = tool_opt("serve", argc, argv, &i, "password", 0, &v)) != 0) {
            if (r < 0) return TOOL_EXIT_USAGE;
            password = (char *)v; /* argv strings are writable */
        } else if ((r = tool_opt("serve", argc, argv, &i, "password-file", 0, &v)) != 0) {
            if (r < 0) return TOOL_EXIT_USAGE;
            password_file = v;
        } else if ((r = tool_opt("serve", argc, argv, &i, "max-conns", 0, &v)) != 0) {
            if (r < 0) return TOOL_EXIT_USAGE;
            if (tool_parse_u64(v, 10000000, &max_conns) < 0)
                return tool_usage_error("serve", "--max-conns: expected a number, got '%s'", v);
        } else if ((r = tool_opt("serve", argc, argv, &i, "loops", 0, &v)) != 0) {
            if (r < 0) return TOOL_EXIT_USAGE;
            if (tool_parse_u64(v, PKM_SERVER_MAX_LOOPS, &loops) < 0)
                return tool_usage_error("serve", "--loops: expected a number up to %d, got '%s'",
                                        PKM_SERVER_MAX_LOOPS, v);
        } else if ((r = tool_opt("serve", argc, argv, &i, "proxy-trusted", 0, &v)) != 0) {
            if (r < 0) return TOOL_EXIT_USAGE;
            proxy_trusted = v;
        } else if (strncmp(a, "--", 2) == 0 && (r = serve_limit_opt(argc, argv, &i, lim)) != 0) {
            if (r < 0) return TOOL_EXIT_USAGE;
        } else if ((r = tool_opt("serve", argc, argv, &i, "redis-password-file", 0, &v)) != 0) {
            if (r < 0) return TOOL_EXIT_USAGE;
            redis_password_file = v;
        } else if ((r = tool_opt("serve", argc, argv, &i, "redis", 0, &v)) != 0) {
            if (r < 0 || serve_redis_opt(v, &redis_url_password) < 0) return TOOL_EXIT_USAGE;
            redis_url = (char *)v; /* argv strings are writable */
        } else if (strcmp(a, "--relay") == 0) {
            s.relay = 1;
        } else if (strcmp(a, "--print") == 0) {
            s.print = 1;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            s.quiet = 1;
        } else {
            return tool_usage_error("serve", "unexpected argument '%s'", a);
        }
    }
    if (!listen) return tool_usage_error("serve", "missing --listen HOST:PORT");
    if (redis_url && !s.relay)
        return tool_usage_error("serve", "--redis relays across instances: it needs --relay");
    if (redis_password_file && !redis_url)
        return tool_usage_error("serve", "--redis-password-file is the password of --redis URL: "
                                         "it needs --redis");
    if (redis_password_file && redis_url_password)
        return tool_usage_error("serve", "give the Redis password in --redis URL or with "
                                         "--redis-password-file, not both");
    char host[TOOL_HOST_MAX];
    int port;
    if (tool_parse_hostport(listen, 1, host, &port) < 0)
        return tool_usage_error("serve", "bad address '%s': expected HOST:PORT or [IPV6]:PORT",
                                listen);

#if defined(__GLIBC__)
    /* Memory a client pinned (a partial packet of up to 1 MiB in a receive buffer) goes back to
     * the system when its connection closes: buffers from 128 KiB up are mmap'd and unmapped on
     * free. glibc's default raises that threshold to the size of the largest buffer freed so
     * far (up to 32 MiB), after which such buffers come from the heap and are kept once freed:
     * 40 clients pinning 1 MiB each left the server's RSS ~4 MiB up after the last closed.
     * Setting the threshold turns the raising off (docs/ROBUSTNESS.md part 4). */
    (void)mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif

    /* Signals first: one arriving while the key is made still stops the server cleanly. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    char *pwbuf = NULL;
    int pst = tool_get_password("serve", password, password_file, &pwbuf);
    if (pst) return pst;
    password = pwbuf;
    char *redis_pw = NULL; /* --redis-password-file's first line */
    if (redis_password_file && (pst = tool_read_password_file(redis_password_file, &redis_pw))) {
        tool_secret_free(pwbuf);
        return pst;
    }
    pkm_key_t *key = NULL;
    char where[TOOL_PATH_MAX];
    int status = load_server_key(keyfile, &key, where, sizeof where);
    if (status) {
        tool_secret_free(pwbuf);
        tool_secret_free(redis_pw);
        return status;
    }

    pkm_server_config_t cfg;
    pkm_server_config_init(&cfg);
    cfg.host = host;
    cfg.port = (uint16_t)port;
    cfg.engine.server_key = key;
    if (password) {
        cfg.engine.secret = (const uint8_t *)password;
        cfg.engine.secret_len = strlen(password);
    }
    cfg.max_conns = (size_t)max_conns;
    cfg.loops = (unsigned)loops; /* 0: one per CPU */
    cfg.max_handshakes = (uint32_t)lim[L_HS];
    cfg.max_handshakes_per_source = (uint32_t)lim[L_HS_SRC];
    cfg.max_queued = (uint32_t)lim[L_Q];
    cfg.max_queued_per_source = (uint32_t)lim[L_Q_SRC];
    cfg.max_conns_per_source = (uint32_t)lim[L_CONNS_SRC];
    cfg.conn_rate_per_source = (uint32_t)lim[L_RATE_SRC];
    cfg.conn_burst_per_source = (uint32_t)lim[L_BURST_SRC];
    cfg.secret_fails = (uint32_t)lim[L_FAILS];
    cfg.secret_window_ms = (int64_t)lim[L_WINDOW] * 1000;
    cfg.secret_ban_ms = (int64_t)lim[L_BAN] * 1000;
    cfg.handshake_timeout_ms = (int64_t)lim[L_HS_TIMEOUT] * 1000;
    cfg.idle_timeout_ms = (int64_t)lim[L_IDLE] * 1000;
    cfg.partial_deadline_ms = (int64_t)lim[L_PARTIAL] * 1000;
    cfg.partial_budget = (size_t)lim[L_BUDGET] << 20;
    cfg.log_interval_ms = (int64_t)lim[L_LOGINT] * 1000;
    cfg.proxy_trusted = proxy_trusted;
    cfg.on_connect = on_connect;
    cfg.on_packet = on_packet;
    cfg.on_close = on_close;
    cfg.on_log = on_log;
    cfg.user = &s;
    pthread_mutex_init(&s.mu, NULL);
    char why[PKM_SERVER_ERRMSG_SIZE];
    cfg.errbuf = why;
    cfg.errbuf_size = sizeof why;
    int rc = pkm_server_new(&cfg, &s.srv);
    tool_secret_free(pwbuf); /* the server keeps its own copy */
    if (rc < 0) tool_secret_free(redis_pw);
    if (rc == PKM_EINVAL && proxy_trusted) { /* why: which entry is wrong (not logged) */
        pkm_key_free(key);
        pthread_mutex_destroy(&s.mu);
        return tool_usage_error("serve", "--proxy-trusted: %s (expected CIDR[,CIDR...], got '%s')",
                                why[0] ? why : "bad list", proxy_trusted);
    }
    if (rc < 0) {
        pkm_key_free(key);
        pthread_mutex_destroy(&s.mu);
        if (rc == PKM_EIO) /* "cannot listen on HOST:PORT: Address already in use" */
            return tool_fail(TOOL_EXIT_FAIL, "%s", why);
        return tool_fail(TOOL_EXIT_FAIL, "cannot listen on %s: %s", listen,
                         why[0] ? why : pkm_strerror(rc));
    }

    if (redis_url_password)
        tool_log("warning: the password in --redis URL is where other users of this machine can "
                 "see it (the process list, shell history); use --redis-password-file FILE");
    if (redis_url) s.redis = redis_relay_start(s.srv, redis_url, redis_pw, s.quiet);
    tool_secret_free(redis_pw); /* the relay keeps its own copy */
    if (redis_url) mask_url_password(redis_url);
    if (redis_url && !s.redis) {
        pkm_server_free(s.srv);
        pthread_mutex_destroy(&s.mu);
        pkm_key_free(key);
        return TOOL_EXIT_FAIL;
    }
    stop_target = s.srv;
    if (stop_signal) pkm_server_stop(s.srv); /* a signal came while starting */

    char fp[PKM_FINGERPRINT_SIZE], bound[TOOL_HOSTPORT_MAX];
    pkm_key_fingerprint(key, fp);
    tool_format_hostport(host, pkm_server_port(s.srv), bound);
    tool_log("listening on %s (key %s, fingerprint %s; %s%s%s%s%s; %u event loop%s)", bound, where,
             fp,
             s.redis   ? "relay, across instances over Redis"
             : s.relay ? "relay"
                       : "echo",
             password ? ", password required" : "", max_conns ? ", connection cap" : "",
             proxy_trusted ? ", PROXY protocol from " : "", proxy_trusted ? proxy_trusted : "",
             pkm_server_loops(s.srv), pkm_server_loops(s.srv) == 1 ? "" : "s");

    rc = pkm_server_run(s.srv);
    stop_target = NULL;
    redis_relay_stop(s.redis); /* the loops have stopped: nothing posts to the relay any more */
    pkm_server_stats_t st;
    pkm_server_stats(s.srv, &st);
    pkm_server_free(s.srv);
    pthread_mutex_destroy(&s.mu);
    pkm_key_free(key);
    if (rc < 0) return tool_fail(TOOL_EXIT_FAIL, "server failed: %s", pkm_strerror(rc));
    tool_log("stopped%s: connections %llu (handshakes failed %llu, refused %llu by --max-conns, "
             "%llu by the limits), packets in %llu, out %llu",
             stop_signal == SIGINT    ? " on SIGINT"
             : stop_signal == SIGTERM ? " on SIGTERM"
                                      : "",
             (unsigned long long)st.accepted, (unsigned long long)st.handshakes_failed,
             (unsigned long long)st.rejected, (unsigned long long)st.refused,
             (unsigned long long)st.packets_in, (unsigned long long)st.packets_out);
    return TOOL_EXIT_OK;
}
