/* SPDX-License-Identifier: MIT */
/* Benchmark 7: a good client's connect latency under a handshake flood (issue 13). `pkmcom serve`
 * (build/pkmcom) on 127.0.0.1; the good client (this process, source 127.0.0.1) connects a few
 * times a second, first on the quiet server (the anchor), then while a forked flood process on
 * source 127.0.0.2 keeps 64 connections going that each send a valid ClientKey and 528 random
 * bytes as KeyShare and close, with no RSA work of its own. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <openssl/rand.h>
#include <pkmcom/pkmcom.h>
#include "bench_common.h"

#define FLOOD_CONNS    64   /* flood connections at once */
#define GOOD_INTERVAL  0.25 /* seconds between the good client's connects */
#define GOOD_SAMPLES   32   /* connects per phase: 8 s at 4 a second */
#define CAPACITY_S     3.0  /* how long the capacity is measured */
#define WARM_S         0.5  /* the start of each flood run not counted */
#define FLOOD_LEAD_S   1.0  /* flood running before the good client measures under it */
#define KEYSHARE_BYTES 528
#define CONFIRM_BYTES  16 /* a bogus encrypted 0xFF packet (capacity mode) */
#define SYN_GIVEUP_S   0.03
#define PACE_X         3.0 /* the paced flood: this many times the measured capacity */
#define PACE_X_TEXT    "3"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static _Noreturn void die(const char *what, int err)
{
    fprintf(stderr, "bench_flood: %s: %s\n", what,
            err < 0 ? pkm_errname(err) : (err > 0 ? strerror(err) : "failed"));
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The p-th percentile (0..100) of n sorted values, nearest rank. */
static double percentile(const double *v, size_t n, double p)
{
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

static void sleep_until(double t)
{
    for (;;) {
        double d = t - bench_now();
        if (d <= 0) return;
        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = read(fd, b, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* ---- the flood process ---------------------------------------------------------------------
 * Commands on its control pipe: 'C' (capacity: each connection sends ClientKey, KeyShare and a
 * bogus 16-byte 0xFF packet, then reads until the server closes it: the server has done its two
 * private-key operations by then), 'F' (flood: each sends ClientKey and KeyShare and closes at
 * once, as fast as it can) or 'P' followed by a double R (the same flood paced: a new connection
 * every 1/R s, at most FLOOD_CONNS at once), each run until the next byte arrives ('S'); then it
 * answers with struct flood_result. 'Q' ends it. */

struct flood_result {
    uint64_t done;      /* connections completed after the warm-up */
    double seconds;     /* time counted */
    uint64_t errors;    /* connect/send failures (the slot is retried) */
    double cpu;         /* the flood process's CPU seconds over the run */
    uint64_t abandoned; /* connects given up (SYN dropped) and made again */
};

struct slot {
    int fd;
    int sent;
    double opened;
};

static uint8_t g_payload[4 + 1024 + KEYSHARE_BYTES + CONFIRM_BYTES];
static size_t g_ck_len;                       /* ClientKey's bytes: Int n + DER */
static uint8_t g_random[KEYSHARE_BYTES * 64]; /* KeyShares are taken from here in turn */
static unsigned g_rand_next;

/* Capacity mode connects from many sources (127.1.0.0/16, one address after the other), as a
 * population of clients would, so that the per-source limits of `pkmcom serve` (handshakes in
 * flight, connection rate) do not cap what is measured; the flood comes from 127.0.0.2 alone. */
static uint32_t g_next_src;

static int flood_open(int ep, uint16_t port, struct slot *s, int capacity)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    /* The port is picked at connect time, by the 4-tuple: TIME_WAIT ports are reused on
     * loopback (tcp_tw_reuse), so a long flood does not run out of them. */
    (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = {0}, dst = {0};
    src.sin_family = dst.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(capacity ? 0x7f010000 + (g_next_src++ & 0xffff) : 0x7f000002);
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    dst.sin_port = htons(port);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
        (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS)) {
        close(fd);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        return -1;
    }
    s->fd = fd;
    s->sent = 0;
    s->opened = bench_now();
    return 0;
}

static void flood_close(int ep, struct slot *s)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
    /* Take what the server sent (its ServerKey) so that close() sends a FIN, not a reset. */
    uint8_t buf[4096];
    while (read(s->fd, buf, sizeof buf) > 0) {
    }
    close(s->fd);
    s->fd = -1;
}

static void flood_run(int ctl, int res, uint16_t port, int capacity, double rate)
{
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1", errno);
    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, ctl, &cev) != 0) die("epoll_ctl", errno);
    struct slot slots[FLOOD_CONNS];
    struct flood_result r = {0, 0, 0, 0, 0};
    size_t len = g_ck_len + KEYSHARE_BYTES + (capacity ? CONFIRM_BYTES : 0);
    double t0 = bench_now(), counted_from = t0 + WARM_S, cpu0 = bench_cpu_now(), next_at = t0;
    for (int i = 0; i < FLOOD_CONNS; i++) {
        slots[i].fd = -1; /* paced: opened on the schedule below */
        if (rate <= 0 && flood_open(ep, port, &slots[i], capacity) != 0) r.errors++;
    }
    for (int stop = 0; !stop;) {
        struct epoll_event evs[FLOOD_CONNS + 1];
        int n = epoll_wait(ep, evs, FLOOD_CONNS + 1, rate > 0 ? 1 : 10);
        if (n < 0 && errno != EINTR) die("epoll_wait", errno);
        for (int k = 0; k < n; k++) {
            struct slot *s = evs[k].data.ptr;
            if (!s) {
                stop = 1;
                continue;
            }
            int finished = 0, failed = 0;
            if (!s->sent) {
                /* Connected (or failed): ClientKey, a fresh-looking KeyShare, [0xFF]. */
                memcpy(g_payload + g_ck_len, g_random + (size_t)g_rand_next * KEYSHARE_BYTES,
                       KEYSHARE_BYTES);
                g_rand_next = (g_rand_next + 1) % 64;
                ssize_t w = send(s->fd, g_payload, len, MSG_NOSIGNAL);
                if (w != (ssize_t)len) {
                    failed = 1;
                } else if (capacity) {
                    s->sent = 1;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
                    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
                } else {
                    finished = 1;
                }
            } else {
                uint8_t buf[4096];
                ssize_t got;
                while ((got = read(s->fd, buf, sizeof buf)) > 0) {
                }
                if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) finished = 1;
            }
            if (finished || failed) {
                flood_close(ep, s);
                if (failed)
                    r.errors++;
                else if (bench_now() >= counted_from)
                    r.done++;
                if (rate > 0) {
                    s->fd = -1; /* reopened on the schedule below */
                } else if (flood_open(ep, port, s, capacity) != 0) {
                    s->fd = -1;
                    r.errors++;
                }
            }
        }
        /* Slots whose socket could not be made (no port yet): try again. A connect still not
         * accepted by the kernel after SYN_GIVEUP_S (its SYN dropped: the server's accept queue
         * is full) is given up and made again, as an attacker would, rather than left waiting
         * for the SYN's retransmission a second or more later. */
        double now = bench_now();
        for (int i = 0; i < FLOOD_CONNS; i++) {
            if (slots[i].fd >= 0 && !slots[i].sent && !capacity &&
                now - slots[i].opened > SYN_GIVEUP_S) {
                flood_close(ep, &slots[i]);
                r.abandoned++;
            }
            if (rate > 0) continue;
            if (slots[i].fd < 0 && flood_open(ep, port, &slots[i], capacity) != 0) slots[i].fd = -1;
        }
        /* Paced: the connections due by now, in free slots (a schedule fallen behind by more
         * than 5 ms is not caught up in a burst: the rate reported is what was sent). */
        if (rate > 0) {
            if (next_at < now - 0.005) next_at = now - 0.005;
            for (int i = 0; i < FLOOD_CONNS && next_at <= now; i++) {
                if (slots[i].fd >= 0) continue;
                if (flood_open(ep, port, &slots[i], capacity) != 0) {
                    slots[i].fd = -1;
                    r.errors++;
                }
                next_at += 1.0 / rate;
            }
        }
    }
    r.seconds = bench_now() - counted_from;
    r.cpu = bench_cpu_now() - cpu0;
    for (int i = 0; i < FLOOD_CONNS; i++)
        if (slots[i].fd >= 0) flood_close(ep, &slots[i]);
    close(ep);
    char stop;
    if (read_all(ctl, &stop, 1) != 0) die("flood: control pipe", errno);
    if (write_all(res, &r, sizeof r) != 0) die("flood: result pipe", errno);
}

static _Noreturn void flood_main(int ctl, int res, uint16_t port)
{
    for (;;) {
        char cmd;
        if (read_all(ctl, &cmd, 1) != 0 || cmd == 'Q') _exit(0);
        double rate = 0;
        if (cmd == 'P' && read_all(ctl, &rate, sizeof rate) != 0) _exit(1);
        flood_run(ctl, res, port, cmd == 'C', rate);
    }
}

/* ---- the server: `pkmcom serve` ---------------------------------------------------------- */

/* build/pkmcom, found from this program's own place (build/bench/bench_flood). */
static void find_pkmcom(char *out, size_t cap)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) die("readlink /proc/self/exe", errno);
    self[n] = 0;
    char *dir = dirname(self); /* build/bench */
    snprintf(out, cap, "%s/../pkmcom", dir);
    if (access(out, X_OK) != 0) {
        fprintf(stderr, "bench_flood: no %s: build the pkmcom tool first (make)\n", out);
        exit(1);
    }
}

/* `pkmcom serve` with its defaults, plus `extra` (NULL-terminated options, or NULL). */
static pid_t start_server(const char *pkmcom, const char *key, const char *log, uint16_t *port,
                          const char *const *extra)
{
    pid_t pid = fork();
    if (pid < 0) die("fork", errno);
    if (pid == 0) {
        /* Ends with this program, however it ends (run.sh's timeout included). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1) _exit(127);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int null = open("/dev/null", O_RDWR);
        if (fd < 0 || null < 0) _exit(127);
        dup2(null, 0);
        dup2(null, 1);
        dup2(fd, 2);
        const char *argv[16] = {"pkmcom", "serve", "--listen", "127.0.0.1:0", "--key", key};
        int n = 6;
        for (; extra && *extra && n < 15; extra++)
            argv[n++] = *extra;
        argv[n] = NULL;
        execv(pkmcom, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    /* Its log says "pkmcom: listening on 127.0.0.1:PORT (...)". */
    for (int tries = 0; tries < 1000; tries++) {
        FILE *f = fopen(log, "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            const char *p = strstr(line, "listening on 127.0.0.1:");
            if (p) {
                *port = (uint16_t)strtoul(p + strlen("listening on 127.0.0.1:"), NULL, 10);
                fclose(f);
                if (*port) return pid;
            }
        }
        if (f) fclose(f);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "bench_flood: pkmcom serve exited; its log:\n");
            FILE *l = fopen(log, "r");
            while (l && fgets(line, sizeof line, l))
                fputs(line, stderr);
            if (l) fclose(l);
            exit(1);
        }
        usleep(10000);
    }
    die("pkmcom serve did not say where it listens", 0);
}

/* How many lines the server logged, and its last one (on stderr, for the record). */
static void server_log_summary(const char *log)
{
    FILE *f = fopen(log, "r");
    if (!f) return;
    char line[512], last[512] = "";
    unsigned long n = 0;
    while (fgets(line, sizeof line, f)) {
        n++;
        memcpy(last, line, sizeof last);
    }
    fclose(f);
    fprintf(stderr, "bench_flood: pkmcom serve logged %lu lines, the last: %s", n, last);
}

/* ---- the good client ----------------------------------------------------------------------- */

/* One pkm_connect until established, then closed: its time in ms, negated when it failed. */
static double good_connect(uint16_t port, pkm_key_t *ckey)
{
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    cfg.engine.client_key = pkm_key_ref(ckey); /* one key for every connect: no key generation */
    char err[PKM_ERRMSG_SIZE];
    cfg.errbuf = err;
    cfg.errbuf_size = sizeof err;
    pkm_conn_t *c = NULL;
    double t0 = bench_now();
    int r = pkm_connect("127.0.0.1", port, &cfg, &c);
    double t = (bench_now() - t0) * 1e3;
    if (r != 0) {
        fprintf(stderr, "bench_flood: good connect failed after %.1f ms: %s\n", t, err);
        return -(t > 0 ? t : 1e-3);
    }
    pkm_conn_close(c);
    return t;
}

/* One connect of a phase, on its own thread. */
struct good_arg {
    uint16_t port;
    pkm_key_t *ckey;
    double ms; /* its time; negated when it failed */
};

static void *good_thread(void *p)
{
    struct good_arg *a = p;
    a->ms = good_connect(a->port, a->ckey);
    return NULL;
}

/* GOOD_SAMPLES connects, one started every GOOD_INTERVAL s whatever the earlier ones are doing
 * (each on its own thread: clients arrive on their own schedule, as a population of clients
 * would, so a slow server does not thin out the samples); their times, sorted, in v (a failed
 * connect counts with the time it took to fail, at most the handshake timeout, which keeps the
 * percentiles honest); *failed says how many failed. Returns GOOD_SAMPLES. */
static size_t good_phase(uint16_t port, pkm_key_t *ckey, double *v, size_t *failed)
{
    pthread_t th[GOOD_SAMPLES];
    struct good_arg a[GOOD_SAMPLES];
    double t0 = bench_now();
    for (int i = 0; i < GOOD_SAMPLES; i++) {
        sleep_until(t0 + i * GOOD_INTERVAL);
        a[i].port = port;
        a[i].ckey = ckey;
        a[i].ms = 0;
        if (pthread_create(&th[i], NULL, good_thread, &a[i]) != 0) die("pthread_create", 0);
    }
    *failed = 0;
    for (int i = 0; i < GOOD_SAMPLES; i++) {
        pthread_join(th[i], NULL);
        if (a[i].ms < 0) (*failed)++;
        v[i] = a[i].ms < 0 ? -a[i].ms : a[i].ms;
    }
    qsort(v, GOOD_SAMPLES, sizeof v[0], cmp_double);
    return GOOD_SAMPLES;
}

static struct flood_result flood_phase(int ctl, int res, char mode, double rate, double seconds,
                                       pkm_key_t *ckey, uint16_t port, double *v, size_t *nv,
                                       size_t *failed)
{
    if (write_all(ctl, &mode, 1) != 0) die("control pipe", errno);
    if (mode == 'P' && write_all(ctl, &rate, sizeof rate) != 0) die("control pipe", errno);
    if (v) {
        sleep_until(bench_now() + FLOOD_LEAD_S);
        *nv = good_phase(port, ckey, v, failed);
    } else {
        sleep_until(bench_now() + seconds);
    }
    char stop = 'S';
    struct flood_result r;
    if (write_all(ctl, &stop, 1) != 0 || read_all(res, &r, sizeof r) != 0)
        die("flood process", errno);
    return r;
}

/* ---- memory a peer can pin ----------------------------------------------------------------
 * PIN_CONNS clients each complete the handshake, announce a packet of PIN_SIZE bytes of content
 * (the largest `pkmcom serve` accepts) and send all of it but the last PIN_HELD_BACK bytes, then
 * wait. The server (its own instance, with --partial-deadline PIN_DEADLINE_S so that the run
 * takes seconds rather than the default 30 s) must close each at the deadline and give the
 * memory back: its VmRSS before, at the peak and after. */

#define PIN_CONNS      40
#define PIN_SIZE       (1u << 20)
#define PIN_HELD_BACK  16
#define PIN_DEADLINE_S 2

/* VmRSS (or another /proc/PID/status field) of pid, in KiB; -1 if unreadable. */
static long proc_status_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    size_t fl = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') v = strtol(line + fl + 1, NULL, 10);
    if (f) fclose(f);
    return v;
}

static int tcp_connect_to(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket", errno);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect", errno);
    return fd;
}

static void engine_send_all(pkm_engine_t *e, int fd)
{
    size_t len = 0;
    const uint8_t *out;
    while ((out = pkm_engine_send_buf(e, &len)) != NULL && len) {
        ssize_t n = send(fd, out, len, MSG_NOSIGNAL);
        if (n <= 0) die("send", errno);
        pkm_engine_send_ack(e, (size_t)n);
    }
}

/* A client engine through the handshake on fd (blocking), with ckey. */
static pkm_engine_t *pin_establish(int fd, pkm_key_t *ckey)
{
    pkm_engine_config_t ec;
    pkm_engine_config_init(&ec, PKM_ROLE_CLIENT);
    ec.client_key = pkm_key_ref(ckey);
    pkm_engine_t *e = NULL;
    int r = pkm_engine_new(&ec, &e);
    if (r < 0) die("pkm_engine_new", r);
    while (pkm_engine_state(e) != PKM_STATE_ESTABLISHED) {
        engine_send_all(e, fd);
        if (pkm_engine_state(e) == PKM_STATE_CLOSED) die("pin: handshake", pkm_engine_error(e));
        size_t cap = 0;
        uint8_t *p = pkm_engine_recv_buf(e, &cap);
        ssize_t n = p ? recv(fd, p, cap, 0) : -1;
        if (n <= 0) die("pin: the server closed during the handshake", n < 0 ? errno : 0);
        if ((r = pkm_engine_recv_ack(e, (size_t)n)) < 0) die("pin: handshake", r);
    }
    engine_send_all(e, fd); /* (nothing: a client sends its 0xFF before it is established) */
    return e;
}

struct pin_result {
    long before, peak, after, hwm; /* KiB */
    int closed;                    /* connections the server closed */
    double close_after_s;          /* from the last byte sent to the last connection closed */
};

static struct pin_result pin_run(const char *pkmcom, const char *key, const char *log,
                                 pkm_key_t *ckey)
{
    char deadline[16];
    snprintf(deadline, sizeof deadline, "%d", PIN_DEADLINE_S);
    const char *extra[] = {"--partial-deadline", deadline, NULL};
    uint16_t port = 0;
    pid_t server = start_server(pkmcom, key, log, &port, extra);
    struct pin_result res = {0, 0, 0, 0, 0, 0};
    /* Warm-up: a few handshakes and one whole 1 MiB packet echoed, so that the loop, the thread
     * pool and the allocator are at working size before the baseline. */
    for (int i = 0; i < 2; i++)
        if (good_connect(port, ckey) < 0) die("pin: warm-up connect", 0);
    {
        int fd = tcp_connect_to(port);
        pkm_engine_t *e = pin_establish(fd, ckey);
        uint8_t *content = calloc(1, PIN_SIZE);
        if (!content) die("calloc", ENOMEM);
        int r = pkm_engine_queue_packet(e, 0x20, 0, content, PIN_SIZE);
        free(content);
        if (r < 0) die("pin: queue", r);
        engine_send_all(e, fd);
        pkm_packet_t pkt;
        for (;;) { /* the echo */
            size_t cap = 0;
            uint8_t *p = pkm_engine_recv_buf(e, &cap);
            ssize_t n = p ? recv(fd, p, cap, 0) : -1;
            if (n <= 0) die("pin: warm-up echo", n < 0 ? errno : 0);
            if ((r = pkm_engine_recv_ack(e, (size_t)n)) < 0) die("pin: warm-up echo", r);
            if ((r = pkm_engine_next_packet(e, &pkt)) < 0) die("pin: warm-up echo", r);
            if (r == 1) break;
        }
        if (pkt.size != PIN_SIZE) die("pin: warm-up echo size", 0);
        close(fd);
        pkm_engine_free(e);
    }
    usleep(300000);
    res.before = proc_status_kib(server, "VmRSS");

    int fds[PIN_CONNS];
    pkm_engine_t *engines[PIN_CONNS];
    uint8_t *content = calloc(1, PIN_SIZE);
    if (!content) die("calloc", ENOMEM);
    for (int i = 0; i < PIN_CONNS; i++) {
        fds[i] = tcp_connect_to(port);
        engines[i] = pin_establish(fds[i], ckey);
        int r = pkm_engine_queue_packet(engines[i], 0x20, 0, content, PIN_SIZE);
        if (r < 0) die("pin: queue", r);
        size_t len = 0;
        const uint8_t *out = pkm_engine_send_buf(engines[i], &len);
        for (size_t off = 0, want = len - PIN_HELD_BACK; off < want;) {
            ssize_t n = send(fds[i], out + off, want - off, MSG_NOSIGNAL);
            if (n <= 0) die("pin: send", errno);
            off += (size_t)n;
        }
    }
    free(content);
    double sent_at = bench_now(), last_close = sent_at;
    /* Until every connection is closed by the server (or twice the deadline and 10 s pass):
     * the server's RSS, sampled every 20 ms, and the closes. */
    int open_left = PIN_CONNS;
    while (open_left > 0 && bench_now() < sent_at + 2.0 * PIN_DEADLINE_S + 10) {
        long rss = proc_status_kib(server, "VmRSS");
        if (rss > res.peak) res.peak = rss;
        struct pollfd pf[PIN_CONNS];
        int map[PIN_CONNS], n = 0;
        for (int i = 0; i < PIN_CONNS; i++)
            if (fds[i] >= 0) {
                pf[n].fd = fds[i];
                pf[n].events = POLLIN;
                map[n++] = i;
            }
        if (poll(pf, (nfds_t)n, 20) < 0 && errno != EINTR) die("poll", errno);
        for (int k = 0; k < n; k++) {
            if (!(pf[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            uint8_t b[256];
            ssize_t got = recv(pf[k].fd, b, sizeof b, 0);
            if (got > 0) continue; /* (the server sends nothing: not expected) */
            close(pf[k].fd);
            fds[map[k]] = -1;
            open_left--;
            res.closed++;
            last_close = bench_now();
        }
    }
    res.close_after_s = last_close - sent_at;
    for (int i = 0; i < PIN_CONNS; i++) {
        if (fds[i] >= 0) close(fds[i]);
        pkm_engine_free(engines[i]);
    }
    usleep(500000);
    if (good_connect(port, ckey) < 0) die("pin: a fresh client was not served", 0);
    usleep(200000);
    res.after = proc_status_kib(server, "VmRSS");
    res.hwm = proc_status_kib(server, "VmHWM");
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    return res;
}

/* For the record (stderr): the slowest connects of a phase, sorted values v[0..n). */
static void print_slowest(const char *what, const double *v, size_t n)
{
    fprintf(stderr, "bench_flood: slowest good connects, %s (ms):", what);
    for (size_t i = n > 5 ? n - 5 : 0; i < n; i++)
        fprintf(stderr, " %.2f", v[i]);
    fprintf(stderr, "\n");
}

/* One flood phase: the good client's connect times under it, sorted, and the flood's result. */
struct phase {
    struct flood_result fl;
    double v[GOOD_SAMPLES];
    size_t n, failed;
};

/* Figure 7's lines for one phase: p50 and p99 against the quiet ones (goal on p99), failed
 * good connects (goal 0), and the flood's rate actually sent against the capacity (goal: at
 * least twice). `under`: "a flood paced at ..." (in the latency names), `the`: "the paced
 * flood" (in the others). */
static void emit_phase(const struct phase *p, const char *under, const char *the, double capacity,
                       double q50, double q99, size_t nq)
{
    double rate = p->fl.seconds > 0 ? (double)p->fl.done / p->fl.seconds : 0;
    fprintf(stderr,
            "bench_flood: %s: %.0f connections/s (%llu in %.1f s, %llu errors, %llu connects "
            "given up, %.1f CPU s), %.2f x capacity; good connects under it: %zu, %zu failed\n",
            the, rate, (unsigned long long)p->fl.done, p->fl.seconds,
            (unsigned long long)p->fl.errors, (unsigned long long)p->fl.abandoned, p->fl.cpu,
            capacity > 0 ? rate / capacity : 0, p->n, p->failed);
    print_slowest(the, p->v, p->n);
    if (!(rate > 0)) die("the flood made no connections", 0);
    char n50[128], n99[128], aq50[96], aq99[96], nf[96], af[96], nr[128];
    snprintf(n50, sizeof n50, "connect p50 under %s (of %zu)", under, p->n);
    snprintf(n99, sizeof n99, "connect p99 under %s (of %zu)", under, p->n);
    snprintf(aq50, sizeof aq50, "the same client, quiet server, p50 of %zu", nq);
    snprintf(aq99, sizeof aq99, "the same client, quiet server, p99 of %zu", nq);
    snprintf(nf, sizeof nf, "failed good connects under %s", the);
    snprintf(af, sizeof af, "good connects attempted under %s", the);
    snprintf(nr, sizeof nr, "%s: rate sent (%d at once from 127.0.0.2, no RSA)", the, FLOOD_CONNS);
    struct bench_figure f50 = {n50, percentile(p->v, p->n, 50), "ms", aq50, q50, 7, NULL};
    struct bench_figure f99 = {n99, percentile(p->v, p->n, 99), "ms", aq99, q99, 7, "ratio <= 4"};
    struct bench_figure ff = {nf, (double)p->failed, "connects", af, (double)p->n, 7, "value <= 0"};
    struct bench_figure fr = {nr,
                              rate,
                              "connections/s",
                              "the server's measured handshake capacity (64 at once, many sources)",
                              capacity,
                              7,
                              "ratio >= 2"};
    bench_emit(&f50);
    bench_emit(&f99);
    bench_emit(&ff);
    bench_emit(&fr);
}

/* The temporary directory and its files, removed when the program exits, even through die(). */
static char g_dir[64], g_key[96], g_log[96], g_log2[96];
static pid_t g_main;

static void cleanup(void)
{
    if (getpid() != g_main || !g_dir[0]) return;
    unlink(g_key);
    unlink(g_log);
    unlink(g_log2);
    rmdir(g_dir);
    g_dir[0] = 0;
}

static void on_term(int sig)
{
    (void)sig;
    cleanup(); /* unlink and rmdir only: async-signal-safe */
    _exit(1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    char pkmcom[PATH_MAX + 16];
    find_pkmcom(pkmcom, sizeof pkmcom);
    double sign_s = bench_anchor_rsa2048_sign();
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;

    /* Keys: the server's (in a temp dir, for pkmcom serve), the good client's (reused), and the
     * one whose SPKI every flood connection sends. */
    snprintf(g_dir, sizeof g_dir, "/tmp/bench_flood.XXXXXX");
    if (!mkdtemp(g_dir)) die("mkdtemp", errno);
    g_main = getpid();
    atexit(cleanup);
    snprintf(g_key, sizeof g_key, "%s/key.pem", g_dir);
    snprintf(g_log, sizeof g_log, "%s/serve.log", g_dir);
    snprintf(g_log2, sizeof g_log2, "%s/serve-pin.log", g_dir);
    const char *keypath = g_key, *logpath = g_log;
    pkm_key_t *skey = NULL, *ckey = NULL, *fkey = NULL;
    int r;
    if ((r = pkm_key_generate(&skey)) != 0 || (r = pkm_key_generate(&ckey)) != 0 ||
        (r = pkm_key_generate(&fkey)) != 0)
        die("key generation", r);
    if ((r = pkm_key_save_pem(skey, keypath)) != 0) die("pkm_key_save_pem", r);
    int der = pkm_key_public_der(fkey, g_payload + 4, sizeof g_payload - 4);
    if (der <= 0) die("pkm_key_public_der", der);
    g_payload[0] = (uint8_t)(der >> 24);
    g_payload[1] = (uint8_t)(der >> 16);
    g_payload[2] = (uint8_t)(der >> 8);
    g_payload[3] = (uint8_t)der;
    g_ck_len = 4 + (size_t)der;
    if (RAND_bytes(g_random, sizeof g_random) != 1) die("RAND_bytes", 0);
    /* Each KeyShare is two 256-byte "ciphertexts" and a 16-byte IV. With the top bit clear a
     * ciphertext is below every 2048-bit modulus, so the server cannot refuse it before its
     * private-key operation (a random one at or above the modulus would be refused for free):
     * every flood connection costs the server two, and the flood none. */
    for (size_t k = 0; k < sizeof g_random; k += KEYSHARE_BYTES) {
        g_random[k] &= 0x7f;
        g_random[k + 256] &= 0x7f;
    }
    if (RAND_bytes(g_payload + g_ck_len + KEYSHARE_BYTES, CONFIRM_BYTES) != 1) die("RAND_bytes", 0);
    pkm_key_free(fkey);
    pkm_key_free(skey);

    uint16_t port = 0;
    pid_t server = start_server(pkmcom, keypath, logpath, &port, NULL);

    /* The flood process, forked before this one starts any connection. */
    int ctl[2], res[2];
    if (pipe(ctl) != 0 || pipe(res) != 0) die("pipe", errno);
    pid_t flood = fork();
    if (flood < 0) die("fork", errno);
    if (flood == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(ctl[1]);
        close(res[0]);
        flood_main(ctl[0], res[1], port);
    }
    close(ctl[0]);
    close(res[1]);

    /* Warm-up, then the quiet anchor. */
    for (int i = 0; i < 2; i++)
        if (good_connect(port, ckey) < 0) die("warm-up connect", 0);
    double quiet[GOOD_SAMPLES];
    size_t qfail = 0;
    size_t nq = good_phase(port, ckey, quiet, &qfail);
    if (qfail) die("a good connect failed on the quiet server", 0);

    /* The server's capacity: handshakes it completes per second with 64 at once. */
    struct flood_result cap =
        flood_phase(ctl[1], res[0], 'C', 0, CAPACITY_S, ckey, port, NULL, NULL, NULL);
    sleep_until(bench_now() + 0.5); /* let the server drain what the capacity run left */

    /* The flood, and the good client under it: paced at PACE_X times the capacity just
     * measured (the condition: at least twice), then unpaced (as fast as the flood
     * process can make connections, sharing the machine's cores with the server). */
    double capacity = cap.seconds > 0 ? (double)cap.done / cap.seconds : 0;
    if (!(capacity > 0)) die("the capacity run completed no handshake", 0);
    struct phase paced = {0}, unpaced = {0};
    paced.fl = flood_phase(ctl[1], res[0], 'P', PACE_X * capacity, 0, ckey, port, paced.v, &paced.n,
                           &paced.failed);
    sleep_until(bench_now() + 0.5);
    unpaced.fl =
        flood_phase(ctl[1], res[0], 'F', 0, 0, ckey, port, unpaced.v, &unpaced.n, &unpaced.failed);

    char q = 'Q';
    write_all(ctl[1], &q, 1);
    waitpid(flood, NULL, 0);
    /* The server may still hold a backlog of the flood's RSA work: give it 5 s to stop. */
    kill(server, SIGTERM);
    int st = 0;
    double give_up = bench_now() + 5;
    while (waitpid(server, &st, WNOHANG) == 0) {
        if (bench_now() > give_up) {
            fprintf(stderr, "bench_flood: pkmcom serve did not stop in 5 s: killed\n");
            kill(server, SIGKILL);
            waitpid(server, &st, 0);
            break;
        }
        usleep(10000);
    }
    server_log_summary(logpath);

    /* Memory a peer can pin, on a fresh server. */
    struct pin_result pin = pin_run(pkmcom, keypath, g_log2, ckey);
    pkm_key_free(ckey);
    fprintf(stderr,
            "bench_flood: pinning: %d connections x %u B less %d; VmRSS %ld KiB before, %ld at "
            "the peak (VmHWM %ld), %ld after; %d closed by the server, the last %.2f s after the "
            "last byte sent (deadline %d s)\n",
            PIN_CONNS, PIN_SIZE, PIN_HELD_BACK, pin.before, pin.peak, pin.hwm, pin.after,
            pin.closed, pin.close_after_s, PIN_DEADLINE_S);
    if (pin.before <= 0 || pin.after <= 0) die("pin: no VmRSS for the server", 0);
    cleanup();

    fprintf(stderr, "bench_flood: capacity %.0f handshakes/s (%llu in %.1f s, %llu errors)\n",
            capacity, (unsigned long long)cap.done, cap.seconds, (unsigned long long)cap.errors);
    double q50 = percentile(quiet, nq, 50), q99 = percentile(quiet, nq, 99);
    print_slowest("quiet server", quiet, nq);
    emit_phase(&paced, "a flood paced at " PACE_X_TEXT " x capacity", "the paced flood", capacity,
               q50, q99, nq);
    emit_phase(&unpaced, "the unpaced flood", "the unpaced flood", capacity, q50, q99, nq);
    char acap[96];
    snprintf(acap, sizeof acap, "%ld cores / (2 x openssl speed rsa2048 sign)", cores);
    struct bench_figure fc = {
        "server handshake capacity (pkmcom serve, 64 at once from many sources)",
        capacity,
        "connections/s",
        acap,
        (double)cores / (2 * sign_s),
        7,
        NULL};
    char npin[160], apin[160], npeak[160];
    snprintf(npeak, sizeof npeak,
             "server RSS growth at the peak, %d connections holding %u B packets less %d B",
             PIN_CONNS, PIN_SIZE, PIN_HELD_BACK);
    snprintf(apin, sizeof apin, "the bytes those packets pin (%d x %u B)", PIN_CONNS, PIN_SIZE);
    struct bench_figure fpeak = {npeak, (double)(pin.peak - pin.before) / 1024.0, "MiB",
                                 apin,  (double)PIN_CONNS * PIN_SIZE / 1048576.0, 9,
                                 NULL};
    snprintf(npin, sizeof npin,
             "server RSS growth after the partial-packet deadline (%d s) closed them",
             PIN_DEADLINE_S);
    struct bench_figure fpin = {npin,
                                (double)(pin.after - pin.before) / 1024.0,
                                "MiB",
                                "server RSS before (after warm-up)",
                                (double)pin.before / 1024.0,
                                9,
                                "value <= 4"};
    struct bench_figure fclosed = {"pinning connections closed by the deadline",
                                   (double)pin.closed,
                                   "connections",
                                   "pinning connections",
                                   (double)PIN_CONNS,
                                   9,
                                   "ratio >= 1"};
    bench_emit(&fc);
    bench_emit(&fpeak);
    bench_emit(&fpin);
    bench_emit(&fclosed);
    return 0;
}
