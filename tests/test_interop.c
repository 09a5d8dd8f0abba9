/* SPDX-License-Identifier: MIT */
/* Interoperability: libpkmcom's engine over real loopback sockets against tests/interop/pkmpeer.py,
 * a Python peer written independently from WIRE-PROFILE.md (version 2), in both roles, with
 * re-establishment; and against tests/interop/impostor.py and a version-1 peer, which must fail.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include "support.h"
#include "support/clients.h"

extern char **environ;

#ifndef PYTHON /* overridable only to try the skip path by hand */
#define PYTHON "/usr/bin/python3"
#endif
#define TRIGGER_ID 0x05 /* the Complete Definition's "Re-establish Secret" */
#define PATH_CAP   4096

/* Content sizes exchanged: empty, one byte, around one block, and large. */
static const size_t sizes[] = {0, 1, 15, 16, 17, 1000, 65536};
#define NSIZES (sizeof sizes / sizeof sizes[0])
#define SIZES  "0,1,15,16,17,1000,65536"

typedef struct {
    t_keys keys;
    int have_python;           /* /usr/bin/python3 can import cryptography */
    int timeout_s;             /* each side's I/O bound; longer under valgrind */
    char peer[PATH_CAP];       /* tests/interop/pkmpeer.py */
    char impostor[PATH_CAP];   /* tests/interop/impostor.py */
    char server_pub[PATH_CAP]; /* tests/data/server_key.pub.pem: all the impostor has */
    char vectors[PATH_CAP];    /* tests/interop/sample-vectors.json */
    char server_pem[PATH_CAP]; /* tests/data/server_key.pem: the Python server's long-term key */
    char server_fp[PKM_FINGERPRINT_SIZE]; /* its fingerprint, pinned by the C client */
} group_t;

typedef struct {
    group_t *g;
    pid_t child;   /* the pkmpeer.py process, or 0 */
    int child_out; /* read end of its stdout (server mode), or -1 */
    int fd;        /* the TCP connection, or -1 */
    int lfd;       /* the C server's listening socket, or -1 */
    int eof;       /* the peer closed the connection */
    pkm_engine_t *e;
} fix_t;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the child process ---- */

/* Starts /usr/bin/python3 with argv (NULL-terminated, argv[0] included); stdin is /dev/null. With
 * out_fd non-NULL its stdout is a pipe whose read end is returned there. Returns the pid, or -1. */
static pid_t spawn(char *const argv[], int *out_fd)
{
    posix_spawn_file_actions_t fa;
    int pfd[2] = {-1, -1};
    pid_t pid = -1;
    if (out_fd && pipe(pfd) != 0) return -1;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd) {
        posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
        posix_spawn_file_actions_addclose(&fa, pfd[0]);
        posix_spawn_file_actions_addclose(&fa, pfd[1]);
    }
    if (posix_spawn(&pid, PYTHON, &fa, NULL, argv, environ) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    if (out_fd) {
        close(pfd[1]);
        if (pid < 0) {
            close(pfd[0]);
        } else {
            *out_fd = pfd[0];
        }
    }
    return pid;
}

/* Waits for the child up to timeout_ms; then kills it (SIGKILL) and reaps it. Returns its exit
 * status, or -1 if it had to be killed or did not exit normally. */
static int reap(pid_t pid, long timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        if (r < 0 && errno != EINTR) return -1;
        if (now_ms() >= deadline) break;
        tcl_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return -1;
}

/* Waits for the fixture's child (up to the I/O bound and a margin) and returns its exit status. */
static int child_status(fix_t *f)
{
    int st = reap(f->child, (f->g->timeout_s + 10) * 1000L);
    f->child = 0;
    if (f->child_out >= 0) close(f->child_out);
    f->child_out = -1;
    return st;
}

/* Runs pkmpeer.py with the given arguments to the end; returns its exit status. */
static int run_peer(group_t *g, const char *a1, const char *a2)
{
    char *argv[] = {PYTHON, g->peer, (char *)a1, (char *)a2, NULL};
    pid_t pid = spawn(argv, NULL);
    assert_true(pid > 0);
    return reap(pid, 60000);
}

/* Reads the "PORT <n>" line the Python server prints. Returns the port, or -1. */
static int read_port(fix_t *f)
{
    char line[64];
    size_t len = 0;
    long long deadline = now_ms() + f->g->timeout_s * 1000LL;
    while (len < sizeof line - 1 && now_ms() < deadline) {
        struct pollfd p = {.fd = f->child_out, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t n = read(f->child_out, line + len, 1);
        if (n <= 0) return -1;
        if (line[len] == '\n') {
            line[len] = 0;
            int port = 0;
            return sscanf(line, "PORT %d", &port) == 1 && port > 0 && port < 65536 ? port : -1;
        }
        len++;
    }
    return -1;
}

/* ---- the engine over a non-blocking socket ---- */

static int nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* One round: writes what the engine has to send, waits (at most 100 ms, never past the deadline)
 * for the socket, reads what arrived. Returns 0, or a negative error: the engine's, PKM_EIO,
 * PKM_ECONNRESET, or PKM_ETIMEOUT once the deadline has passed. */
static int io_round(fix_t *f, long long deadline)
{
    pkm_engine_t *e = f->e;
    unsigned w = pkm_engine_wants(e);
    if ((w & PKM_WANT_JOB) && t_run_job(e) != 0) return pkm_engine_error(e);
    if (pkm_engine_wants(e) & PKM_WANT_CLOSED) return pkm_engine_error(e);
    size_t len = 0;
    const uint8_t *out = pkm_engine_send_buf(e, &len);
    while (len > 0) {
        ssize_t n = send(f->fd, out, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return errno == ECONNRESET || errno == EPIPE ? PKM_ECONNRESET : PKM_EIO;
        }
        pkm_engine_send_ack(e, (size_t)n);
        out = pkm_engine_send_buf(e, &len);
    }
    long long left = deadline - now_ms();
    if (left <= 0) return PKM_ETIMEOUT;
    struct pollfd p = {.fd = f->fd, .events = (short)((f->eof ? 0 : POLLIN) | (len ? POLLOUT : 0))};
    if (p.events == 0) {
        tcl_sleep_ms(left > 10 ? 10 : (long)left);
        return 0;
    }
    int r = poll(&p, 1, (int)(left > 100 ? 100 : left));
    if (r < 0) return errno == EINTR ? 0 : PKM_EIO;
    if (r == 0 || f->eof || !(p.revents & (POLLIN | POLLHUP | POLLERR))) return 0;
    size_t cap = 0;
    uint8_t *in = pkm_engine_recv_buf(e, &cap);
    if (cap == 0) return pkm_engine_state(e) == PKM_STATE_CLOSED ? pkm_engine_error(e) : 0;
    ssize_t n = recv(f->fd, in, cap, 0);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return errno == ECONNRESET ? PKM_ECONNRESET : PKM_EIO;
    }
    if (n == 0) {
        f->eof = 1;
        return pkm_engine_recv_eof(e);
    }
    return pkm_engine_recv_ack(e, (size_t)n);
}

static long long deadline_of(const fix_t *f)
{
    return now_ms() + f->g->timeout_s * 1000LL;
}

/* Writes out everything the engine has to send. */
static int flush(fix_t *f, long long deadline)
{
    size_t len = 0;
    for (;;) {
        pkm_engine_send_buf(f->e, &len);
        if (len == 0) return 0;
        int r = io_round(f, deadline);
        if (r != 0) return r;
    }
}

/* Runs I/O until the engine is established (first handshake or re-establishment) and has written
 * out what it had to send. Returns 0 or the error that stopped it. */
static int until_established(fix_t *f)
{
    long long deadline = deadline_of(f);
    while (pkm_engine_state(f->e) != PKM_STATE_ESTABLISHED) {
        int r = io_round(f, deadline);
        if (r != 0) return r;
    }
    return flush(f, deadline);
}

/* The next packet: 1 with *p filled (content borrowed from the engine), or a negative error
 * (PKM_EEOF once the peer closed between packets). */
static int next_packet(fix_t *f, pkm_packet_t *p)
{
    long long deadline = deadline_of(f);
    for (;;) {
        int r = pkm_engine_next_packet(f->e, p);
        if (r != 0) return r;
        r = io_round(f, deadline);
        if (r != 0) return r;
    }
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
    group_t *g = calloc(1, sizeof *g);
    assert_non_null(g);
    const char *src = getenv("PKM_SOURCE_DIR");
    assert_non_null(src); /* set by ctest */
    snprintf(g->peer, sizeof g->peer, "%s/tests/interop/pkmpeer.py", src);
    snprintf(g->impostor, sizeof g->impostor, "%s/tests/interop/impostor.py", src);
    snprintf(g->server_pub, sizeof g->server_pub, "%s/tests/data/server_key.pub.pem", src);
    snprintf(g->vectors, sizeof g->vectors, "%s/tests/interop/sample-vectors.json", src);
    snprintf(g->server_pem, sizeof g->server_pem, "%s/tests/data/server_key.pem", src);
    const char *vg = getenv("PKM_VALGRIND");
    g->timeout_s = vg && strcmp(vg, "1") == 0 ? 60 : 10;

    char *argv[] = {PYTHON, "-c", "import cryptography", NULL};
    pid_t pid = access(PYTHON, X_OK) == 0 ? spawn(argv, NULL) : -1;
    g->have_python = pid > 0 && reap(pid, 30000) == 0;
    if (!g->have_python) {
        fprintf(stderr,
                "test_interop: %s cannot import cryptography (Debian package "
                "python3-cryptography): every interop test is skipped\n",
                PYTHON);
    } else {
        t_keys_init(&g->keys);
        char pub[PATH_CAP];
        snprintf(pub, sizeof pub, "%s/tests/data/server_key.pub.pem", src);
        pkm_key_t *k = NULL;
        assert_int_equal(pkm_key_load_pem(pub, &k), 0);
        assert_int_equal(pkm_key_fingerprint(k, g->server_fp), 0);
        pkm_key_free(k);
    }
    *state = g;
    return 0;
}

static int group_teardown(void **state)
{
    group_t *g = *state;
    if (g->have_python) t_keys_free(&g->keys);
    free(g);
    return 0;
}

static int setup(void **state)
{
    fix_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->g = *state;
    f->child_out = f->fd = f->lfd = -1;
    *state = f;
    return 0;
}

/* Also runs after a failed assertion: no child, socket or engine outlives its test. */
static int teardown(void **state)
{
    fix_t *f = *state;
    if (f->child > 0) {
        kill(f->child, SIGKILL);
        reap(f->child, 5000);
    }
    if (f->child_out >= 0) close(f->child_out);
    if (f->fd >= 0) close(f->fd);
    if (f->lfd >= 0) close(f->lfd);
    pkm_engine_free(f->e);
    *state = f->g;
    free(f);
    return 0;
}

static void assert_step(const fix_t *f, const char *step)
{
    const char *got = pkm_engine_fail_step(f->e);
    assert_non_null(got);
    assert_string_equal(got, step);
}

static void need_python(fix_t *f)
{
    if (!f->g->have_python) skip();
}

/* ---- the two roles of the C side ---- */

/* Spawns argv (a Python server that prints "PORT <n>") and connects a C client engine (pinning
 * tests/data/server_key.pem's fingerprint) with the given secret. */
static void c_client_to(fix_t *f, char *argv[], const char *secret)
{
    f->child = spawn(argv, &f->child_out);
    assert_true(f->child > 0);
    int port = read_port(f);
    assert_true(port > 0);

    f->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(f->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(nonblocking(f->fd), 0);
    t_opts o = {.secret = secret, .pin = f->g->server_fp};
    f->e = t_client(&f->g->keys, &o);
}

/* `pkmpeer.py server --port 0 --key tests/data/server_key.pem ARGS...` and a C client. */
static void c_client_to_py_server(fix_t *f, const char *secret, const char *const extra[])
{
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", f->g->timeout_s);
    char *argv[24] = {PYTHON,  f->g->peer,       "server",    "--port", "0",
                      "--key", f->g->server_pem, "--timeout", timeout};
    size_t n = 9;
    for (size_t i = 0; extra && extra[i]; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    c_client_to(f, argv, secret);
}

/* Listens on an ephemeral loopback port, spawns `pkmpeer.py client --port P ARGS...` and accepts
 * its connection into a C server engine with the given secret. */
static void py_client_to_c_server(fix_t *f, const char *secret, const char *const extra[])
{
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(f->lfd, 1), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);

    char port[16], timeout[16];
    snprintf(port, sizeof port, "%u", (unsigned)ntohs(sa.sin_port));
    snprintf(timeout, sizeof timeout, "%d", f->g->timeout_s);
    char *argv[24] = {
        PYTHON,      f->g->peer, "client", "--port", port, "--key", f->g->keys.client_pem,
        "--timeout", timeout};
    size_t n = 9;
    for (size_t i = 0; extra && extra[i]; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    f->child = spawn(argv, NULL);
    assert_true(f->child > 0);

    struct pollfd p = {.fd = f->lfd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, f->g->timeout_s * 1000), 1);
    f->fd = accept(f->lfd, NULL, NULL);
    assert_true(f->fd >= 0);
    assert_int_equal(nonblocking(f->fd), 0);
    t_opts o = {.secret = secret};
    f->e = t_server(&f->g->keys, &o);
}

/* C client: sends `rounds` packets (sizes cycling through `sizes`, Hash = Id*31 + hashsum of the
 * bytes, as the Python server checks) and checks each echo byte for byte. */
static void exchange(fix_t *f, t_rng *rng, size_t rounds)
{
    for (size_t i = 0; i < rounds; i++) {
        size_t size = sizes[i % NSIZES];
        uint8_t id = (uint8_t)(0x10 + i);
        uint8_t *content = malloc(size ? size : 1);
        assert_non_null(content);
        t_rng_bytes(rng, content, size);
        uint32_t hash = pkm_packet_hash(id, pkm_hashsum_bytes(content, size));
        assert_int_equal(pkm_engine_queue_packet(f->e, id, hash, content, size), 0);
        assert_int_equal(flush(f, deadline_of(f)), 0);
        pkm_packet_t p;
        assert_int_equal(next_packet(f, &p), 1);
        assert_int_equal(p.id, id);
        assert_int_equal(p.hash, hash);
        assert_int_equal(p.size, size);
        if (size) assert_memory_equal(p.content, content, size);
        free(content);
    }
}

/* C server: echoes packets until the client closes; after `rekey_after` packets (if >= 0) sends
 * the trigger packet and re-establishes with `rekey_secret`. Returns the number echoed. */
static size_t echo(fix_t *f, int rekey_after, const char *rekey_secret)
{
    size_t echoed = 0;
    int rekeyed = 0;
    for (;;) {
        if (rekey_after >= 0 && echoed == (size_t)rekey_after && !rekeyed) {
            assert_int_equal(pkm_engine_queue_packet(f->e, TRIGGER_ID, TRIGGER_ID * 31u, NULL, 0),
                             0);
            size_t sl = rekey_secret ? strlen(rekey_secret) : 0;
            assert_int_equal(pkm_engine_rekey(f->e, (const uint8_t *)rekey_secret, sl), 0);
            assert_int_equal(until_established(f), 0);
            rekeyed = 1;
            continue;
        }
        pkm_packet_t p;
        int r = next_packet(f, &p);
        if (r == PKM_EEOF) break;
        assert_int_equal(r, 1);
        assert_int_equal(pkm_engine_queue_packet(f->e, p.id, p.hash, p.content, p.size), 0);
        assert_int_equal(flush(f, deadline_of(f)), 0);
        echoed++;
    }
    assert_true(rekey_after < 0 || rekeyed);
    return echoed;
}

/* ---- the Python peer alone ---- */

static void test_py_selftest(void **state)
{
    fix_t *f = *state;
    need_python(f);
    assert_int_equal(run_peer(f->g, "selftest", NULL), 0);
}

/* The sample vectors were computed with the openssl CLI (tests/interop/make-sample-vectors.sh). */
static void test_py_vectors(void **state)
{
    fix_t *f = *state;
    need_python(f);
    assert_int_equal(run_peer(f->g, "check-vectors", f->g->vectors), 0);
}

/* ---- libpkmcom client, Python server ---- */

/* Both sides fail the (re-)handshake at the 0xFF step, whatever went wrong before it (wrong
 * secret, a KeyShare that does not decrypt, stray bytes): WIRE-PROFILE section 3 steps 3 and 5. */
static void fails_at_confirmation(fix_t *f)
{
    assert_int_equal(until_established(f), PKM_EHANDSHAKE);
    assert_step(f, "confirmation (0xFF)");
    close(f->fd);
    f->fd = -1;
    assert_int_equal(child_status(f), 1);
}

/* `flags` (NULL-terminated, may be NULL) are extra pkmpeer.py options. */
static void c_client_case(void **state, const char *secret, const char *const flags[])
{
    fix_t *f = *state;
    need_python(f);
    const char *extra[8] = {NULL};
    size_t n = 0;
    for (size_t i = 0; flags && flags[i]; i++)
        extra[n++] = flags[i];
    if (secret) {
        extra[n++] = "--secret";
        extra[n++] = secret;
    }
    c_client_to_py_server(f, secret, extra);
    assert_int_equal(until_established(f), 0);
    assert_string_equal(pkm_engine_peer_fingerprint(f->e), f->g->server_fp);
    t_rng rng;
    t_rng_seed(&rng, 1);
    exchange(f, &rng, 2 * NSIZES);
    close(f->fd);
    f->fd = -1;
    assert_int_equal(child_status(f), 0);
}

static void test_c_client_plain(void **state)
{
    c_client_case(state, NULL, NULL);
}

static void test_c_client_secret(void **state)
{
    c_client_case(state, "correct horse \xc3\xa9", NULL);
}

/* The Python server reads the client's KeyShare before sending its own, and writes in 1..7-byte
 * pieces: the C client must send its KeyShare as soon as it holds the server's key. */
static void test_c_client_late_dribble(void **state)
{
    const char *flags[] = {"--late-keyshare", "--dribble", NULL};
    c_client_case(state, NULL, flags);
}

/* Implicit rejection: a KeyShare that does not decrypt is not reported at the KeyShare step. */
static void test_c_client_corrupt_keyshare(void **state)
{
    fix_t *f = *state;
    need_python(f);
    const char *extra[] = {"--corrupt-keyshare", NULL};
    c_client_to_py_server(f, NULL, extra);
    fails_at_confirmation(f);
}

/* A wrong secret fails on both sides, at the 0xFF step. */
static void test_c_client_wrong_secret(void **state)
{
    fix_t *f = *state;
    need_python(f);
    const char *extra[] = {"--secret", "one", NULL};
    c_client_to_py_server(f, "two", extra);
    fails_at_confirmation(f);
}

/* A version-1 server (one key K = SHA-256(M || S) both ways) fails at step 5: WIRE-PROFILE
 * section 7, "a version-1 peer fails against a version-2 one at step 5, never silently". */
static void test_c_client_v1_server(void **state)
{
    fix_t *f = *state;
    need_python(f);
    const char *extra[] = {"--v1-keys", NULL};
    c_client_to_py_server(f, NULL, extra);
    fails_at_confirmation(f);
}

/* The echoing impostor (the real server's public key, a random KeyShare, every byte echoed):
 * under version 1 the echoed 0xFF was a valid answer; now the pinned client must refuse it at
 * the confirmation, though the key shown is the pinned one. */
static void impostor_case(void **state, const char *secret)
{
    fix_t *f = *state;
    need_python(f);
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", f->g->timeout_s);
    char *argv[] = {PYTHON,           f->g->impostor, "--port", "0", "--key",
                    f->g->server_pub, "--timeout",    timeout,  NULL};
    c_client_to(f, argv, secret);
    /* The answer arrived and did not decrypt: not a close, a failed proof. */
    assert_int_equal(until_established(f), PKM_ENOPROOF);
    assert_step(f, "confirmation (0xFF)");
    assert_string_equal(pkm_engine_peer_fingerprint(f->e), f->g->server_fp);
    close(f->fd);
    f->fd = -1;
    assert_int_equal(child_status(f), 0); /* it did echo, and saw the client leave */
}

/* A valid, encrypted 0xFF packet from the Python server right after the handshake: a protocol
 * error (WIRE-PROFILE section 3 step 5: "A 0xFF packet is valid only here"). */
static void test_c_client_stray_ff(void **state)
{
    fix_t *f = *state;
    need_python(f);
    const char *extra[] = {"--stray-ff", NULL};
    c_client_to_py_server(f, NULL, extra);
    assert_int_equal(until_established(f), 0);
    pkm_packet_t p;
    assert_int_equal(next_packet(f, &p), PKM_EPROTO);
    close(f->fd);
    f->fd = -1;
    assert_int_equal(child_status(f), 0);
}

static void test_c_client_impostor(void **state)
{
    impostor_case(state, NULL);
}

static void test_c_client_impostor_secret(void **state)
{
    impostor_case(state, "hunter2");
}

/* What pkmpeer.py --bad-key offers: its modulus with exponent 3, n-2 and 2^16+3, and its key
 * without the NULL parameters or with a long-form length (not canonical DER). */
static const char *const bad_keys[] = {"e3", "n-2", "65539", "no-null", "long-len"};
#define NBAD (sizeof bad_keys / sizeof bad_keys[0])

/* Closes the fixture's connection, engine and child, so that one test can run several cases. */
static void reset(fix_t *f)
{
    if (f->fd >= 0) close(f->fd);
    if (f->lfd >= 0) close(f->lfd);
    f->fd = f->lfd = -1;
    f->eof = 0;
    pkm_engine_free(f->e);
    f->e = NULL;
}

/* A refused ServerKey: the C client fails at that step and closes without sending a byte (no
 * ClientKey, no KeyShare encrypted under it): the Python server checks that it got nothing. */
static void test_c_client_refuses_bad_server_keys(void **state)
{
    fix_t *f = *state;
    need_python(f);
    for (size_t i = 0; i < NBAD; i++) {
        const char *extra[] = {"--bad-key", bad_keys[i], NULL};
        c_client_to_py_server(f, NULL, extra);
        int r = until_established(f);
        if (r >= 0) fail_msg("ServerKey %s accepted", bad_keys[i]);
        assert_step(f, "ServerKey");
        close(f->fd);
        f->fd = -1;
        if (child_status(f) != 0) fail_msg("ServerKey %s: the client sent bytes", bad_keys[i]);
        reset(f);
    }
}

/* ---- Python client, libpkmcom server ---- */

static void c_server_case(void **state, const char *secret, const char *const flags[])
{
    fix_t *f = *state;
    need_python(f);
    char count[16];
    snprintf(count, sizeof count, "%zu", 2 * NSIZES);
    const char *extra[12] = {"--count", count, "--size", SIZES};
    size_t n = 4;
    for (size_t i = 0; flags && flags[i]; i++)
        extra[n++] = flags[i];
    if (secret) {
        extra[n++] = "--secret";
        extra[n++] = secret;
    }
    py_client_to_c_server(f, secret, extra);
    assert_int_equal(until_established(f), 0);
    assert_int_equal(echo(f, -1, NULL), 2 * NSIZES);
    assert_int_equal(child_status(f), 0);
}

static void test_c_server_plain(void **state)
{
    c_server_case(state, NULL, NULL);
}

static void test_c_server_secret(void **state)
{
    c_server_case(state, "hunter2", NULL);
}

/* The Python client waits for the server's KeyShare before sending its own ("The server sends its
 * KeyShare after reading ClientKey, without waiting for the client's KeyShare"), dribbling. */
static void test_c_server_late_dribble(void **state)
{
    const char *flags[] = {"--late-keyshare", "--dribble", NULL};
    c_server_case(state, NULL, flags);
}

static void test_c_server_corrupt_keyshare(void **state)
{
    fix_t *f = *state;
    need_python(f);
    const char *extra[] = {"--count", "1", "--corrupt-keyshare", NULL};
    py_client_to_c_server(f, NULL, extra);
    fails_at_confirmation(f);
}

static void test_c_server_wrong_secret(void **state)
{
    fix_t *f = *state;
    need_python(f);
    const char *extra[] = {"--count", "1", "--secret", "one", NULL};
    py_client_to_c_server(f, "two", extra);
    fails_at_confirmation(f);
}

static void test_c_server_v1_client(void **state)
{
    fix_t *f = *state;
    need_python(f);
    const char *extra[] = {"--count", "1", "--v1-keys", NULL};
    py_client_to_c_server(f, NULL, extra);
    fails_at_confirmation(f);
}

/* The same from the Python client: the C server closes, sending nothing. */
static void test_c_server_stray_ff(void **state)
{
    fix_t *f = *state;
    need_python(f);
    const char *extra[] = {"--stray-ff", NULL};
    py_client_to_c_server(f, NULL, extra);
    assert_int_equal(until_established(f), 0);
    pkm_packet_t p;
    assert_int_equal(next_packet(f, &p), PKM_EPROTO);
    close(f->fd);
    f->fd = -1;
    assert_int_equal(child_status(f), 0); /* the Python client saw the close, and no byte */
}

/* A refused ClientKey: the C server fails at that step and sends nothing more, in particular no
 * KeyShare (so no public-key operation under that key); the Python client checks that. */
static void test_c_server_refuses_bad_client_keys(void **state)
{
    fix_t *f = *state;
    need_python(f);
    for (size_t i = 0; i < NBAD; i++) {
        const char *extra[] = {"--bad-key", bad_keys[i], NULL};
        py_client_to_c_server(f, NULL, extra);
        int r = until_established(f);
        if (r >= 0) fail_msg("ClientKey %s accepted", bad_keys[i]);
        assert_step(f, "ClientKey");
        close(f->fd);
        f->fd = -1;
        if (child_status(f) != 0) fail_msg("ClientKey %s: the server answered it", bad_keys[i]);
        reset(f);
    }
}

/* The server's own 0xFF answer sent back to it (the version-1 reflection, the other way) is
 * garbage under K_cs: the server closes the connection with an error, sending nothing. */
static void test_c_server_reflected_answer(void **state)
{
    fix_t *f = *state;
    need_python(f);
    const char *extra[] = {"--reflect-confirm", NULL};
    py_client_to_c_server(f, NULL, extra);
    assert_int_equal(until_established(f), 0);
    pkm_packet_t p;
    int r = next_packet(f, &p);
    assert_true(r < 0);
    assert_int_not_equal(r, PKM_EEOF); /* not a clean end between packets */
    assert_int_equal(pkm_engine_state(f->e), PKM_STATE_CLOSED);
    close(f->fd);
    f->fd = -1;
    assert_int_equal(child_status(f), 0); /* the Python client saw the close, and no byte */
}

/* ---- re-establishing the secret (WIRE-PROFILE section 5) ---- */

/* Appends "--secret S" (if S) and the NULL-terminated flags to argv at *n. */
static void add_args(const char **argv, size_t *n, const char *secret, const char *const flags[])
{
    for (size_t i = 0; flags && flags[i]; i++)
        argv[(*n)++] = flags[i];
    if (secret) {
        argv[(*n)++] = "--secret";
        argv[(*n)++] = secret;
    }
    argv[*n] = NULL;
}

/* libpkmcom server echoes 3 packets, then triggers with `new_secret`; the Python client (given
 * `py_new_secret` and `flags`) exchanges 3 more packets afterwards. ok = 0: the re-establishment
 * must fail on both sides at the 0xFF step. */
static void c_server_rekey_case(void **state, const char *secret, const char *new_secret,
                                const char *py_new_secret, const char *const flags[], int ok)
{
    fix_t *f = *state;
    need_python(f);
    const char *extra[16] = {"--count",
                             "3",
                             "--size",
                             SIZES,
                             "--expect-rekey",
                             "--trigger-id",
                             "5",
                             "--rekey-secret",
                             py_new_secret ? py_new_secret : ""};
    size_t n = 9;
    add_args(extra, &n, secret, flags);
    py_client_to_c_server(f, secret, extra);
    assert_int_equal(until_established(f), 0);
    if (ok) {
        assert_int_equal(echo(f, 3, new_secret), 6);
        assert_int_equal(child_status(f), 0);
        return;
    }
    for (size_t i = 0; i < 3; i++) {
        pkm_packet_t p;
        assert_int_equal(next_packet(f, &p), 1);
        assert_int_equal(pkm_engine_queue_packet(f->e, p.id, p.hash, p.content, p.size), 0);
    }
    assert_int_equal(pkm_engine_queue_packet(f->e, TRIGGER_ID, TRIGGER_ID * 31u, NULL, 0), 0);
    size_t sl = new_secret ? strlen(new_secret) : 0;
    assert_int_equal(pkm_engine_rekey(f->e, (const uint8_t *)new_secret, sl), 0);
    fails_at_confirmation(f);
}

static void test_rekey_c_server(void **state)
{
    c_server_rekey_case(state, NULL, NULL, NULL, NULL, 1);
}

static void test_rekey_c_server_new_secret(void **state)
{
    c_server_rekey_case(state, "first", "second", "second", NULL, 1);
}

static void test_rekey_c_server_wrong_secret(void **state)
{
    c_server_rekey_case(state, NULL, "second", "not the same", NULL, 0);
}

/* The client reads the server's new KeyShare before sending its own: the server must send it
 * "right after the trigger packet" without waiting. */
static void test_rekey_c_server_late(void **state)
{
    const char *flags[] = {"--late-keyshare", "--dribble", NULL};
    c_server_rekey_case(state, NULL, NULL, NULL, flags, 1);
}

/* "a stray packet there makes the handshake fail and the connection close" */
static void test_rekey_c_server_stray(void **state)
{
    const char *flags[] = {"--stray-before-rekey", NULL};
    c_server_rekey_case(state, NULL, NULL, NULL, flags, 0);
}

/* The Python server (given `py_new_secret` and `flags`) echoes 3 packets and triggers; the
 * libpkmcom client re-establishes with `new_secret`, then exchanges one packet of each size. */
static void py_server_rekey_case(void **state, const char *secret, const char *new_secret,
                                 const char *py_new_secret, const char *const flags[], int ok)
{
    fix_t *f = *state;
    need_python(f);
    const char *extra[16] = {"--rekey-after",  "3",
                             "--trigger-id",   "5",
                             "--rekey-secret", py_new_secret ? py_new_secret : ""};
    size_t n = 6;
    add_args(extra, &n, secret, flags);
    c_client_to_py_server(f, secret, extra);
    assert_int_equal(until_established(f), 0);
    t_rng rng;
    t_rng_seed(&rng, 2);
    exchange(f, &rng, 3);
    pkm_packet_t p;
    assert_int_equal(next_packet(f, &p), 1);
    assert_int_equal(p.id, TRIGGER_ID);
    assert_int_equal(p.hash, TRIGGER_ID * 31u);
    assert_int_equal(p.size, 0);
    size_t sl = new_secret ? strlen(new_secret) : 0;
    assert_int_equal(pkm_engine_rekey(f->e, (const uint8_t *)new_secret, sl), 0);
    if (!ok) {
        fails_at_confirmation(f);
        return;
    }
    assert_int_equal(until_established(f), 0);
    exchange(f, &rng, NSIZES);
    close(f->fd);
    f->fd = -1;
    assert_int_equal(child_status(f), 0);
}

static void test_rekey_py_server(void **state)
{
    py_server_rekey_case(state, NULL, NULL, NULL, NULL, 1);
}

static void test_rekey_py_server_new_secret(void **state)
{
    py_server_rekey_case(state, "first", "second", "second", NULL, 1);
}

static void test_rekey_py_server_wrong_secret(void **state)
{
    py_server_rekey_case(state, "first", "third", "second", NULL, 0);
}

/* The Python server waits for the client's new KeyShare before sending its own: the C client must
 * send its KeyShare once it has read the trigger, without waiting for the server's. */
static void test_rekey_py_server_late(void **state)
{
    const char *flags[] = {"--late-keyshare", "--dribble", NULL};
    py_server_rekey_case(state, "first", NULL, NULL, flags, 1);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        T(test_py_selftest),
        T(test_py_vectors),
        T(test_c_client_plain),
        T(test_c_client_secret),
        T(test_c_client_wrong_secret),
        T(test_c_client_late_dribble),
        T(test_c_client_corrupt_keyshare),
        T(test_c_client_v1_server),
        T(test_c_client_stray_ff),
        T(test_c_client_refuses_bad_server_keys),
        T(test_c_client_impostor),
        T(test_c_client_impostor_secret),
        T(test_c_server_plain),
        T(test_c_server_secret),
        T(test_c_server_wrong_secret),
        T(test_c_server_late_dribble),
        T(test_c_server_corrupt_keyshare),
        T(test_c_server_v1_client),
        T(test_c_server_reflected_answer),
        T(test_c_server_stray_ff),
        T(test_c_server_refuses_bad_client_keys),
        T(test_rekey_c_server),
        T(test_rekey_c_server_new_secret),
        T(test_rekey_c_server_wrong_secret),
        T(test_rekey_c_server_late),
        T(test_rekey_c_server_stray),
        T(test_rekey_py_server),
        T(test_rekey_py_server_new_secret),
        T(test_rekey_py_server_wrong_secret),
        T(test_rekey_py_server_late),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
