/* SPDX-License-Identifier: MIT */
/* Fault injection: allocation failure at every allocation (engine, codec, conn API, libuv server),
 * I/O faults at every call of the channel and of re-establishments, misbehaving clients. */
#include "support.h"
#include "support/clients.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "pkmcom/pkmcom.h"
#include "conn_internal.h"
#include "engine_internal.h"

#define SECRET  "correct horse battery staple"
#define SECRET2 "a new password"

static pkm_key_t *g_skey, *g_ckey; /* made once: RSA-2048 generation is slow */
static char g_skey_pem[64];        /* g_skey's PEM (0600), for pkm_key_load_pem under faults */
static uint8_t g_data[70000];      /* packet contents: g_data[i] = i * 7 + 3 (mod 256) */
static int g_wait = 10000;         /* ms: bound on every wait; far longer under valgrind */

static uint32_t hash_of(uint8_t id, const uint8_t *p, size_t n)
{
    return pkm_packet_hash(id, pkm_hashsum_bytes(p, n));
}

/* ========================================================================================== */
/* The counting allocator: every live allocation is recorded (pointer and the "epoch" it was made */
/* in), so that a leak is seen through the hook itself; the k-th counted allocation (and, for a  */
/* burst, the ones after it) fails. Which threads are counted: all, only those that marked       */
/* themselves (fa_mark), or all but those.                                                       */

enum fa_scope { FA_ALL, FA_MARKED, FA_UNMARKED };

#define FA_MAX 16384

static pthread_mutex_t fa_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    void *p;
    unsigned epoch;
} fa_tab[FA_MAX];
static size_t fa_n;
static unsigned fa_epoch;
static int fa_armed, fa_scope, fa_overflow;
static long fa_calls, fa_fail_at, fa_fail_end, fa_injected;
static _Thread_local int fa_mark;

/* Under fa_mu: whether this allocation fails. */
static int fa_should_fail(void)
{
    if (!fa_armed) return 0;
    if (fa_scope == FA_MARKED && !fa_mark) return 0;
    if (fa_scope == FA_UNMARKED && fa_mark) return 0;
    long n = ++fa_calls;
    if (n >= fa_fail_at && n < fa_fail_end) {
        fa_injected++;
        return 1;
    }
    return 0;
}

static void fa_add(void *p)
{
    if (fa_n == FA_MAX) {
        fa_overflow = 1;
        return;
    }
    fa_tab[fa_n].p = p;
    fa_tab[fa_n].epoch = fa_epoch;
    fa_n++;
}

/* Pointers allocated before the hook was installed are not in the table: ignored. */
static void fa_del(void *p)
{
    for (size_t i = fa_n; i-- > 0;) {
        if (fa_tab[i].p == p) {
            fa_tab[i] = fa_tab[--fa_n];
            return;
        }
    }
}

static void *fa_malloc(size_t n)
{
    pthread_mutex_lock(&fa_mu);
    void *p = fa_should_fail() ? NULL : malloc(n);
    if (p) fa_add(p);
    pthread_mutex_unlock(&fa_mu);
    return p;
}

static void *fa_realloc(void *p, size_t n)
{
    pthread_mutex_lock(&fa_mu);
    void *q = fa_should_fail() ? NULL : realloc(p, n);
    if (q) {
        if (p) fa_del(p);
        fa_add(q);
    }
    pthread_mutex_unlock(&fa_mu);
    return q;
}

static void fa_free(void *p)
{
    pthread_mutex_lock(&fa_mu);
    fa_del(p);
    free(p);
    pthread_mutex_unlock(&fa_mu);
}

static void fa_install(void)
{
    assert_int_equal(pkm_set_allocator(fa_malloc, fa_realloc, fa_free), 0);
}

static void fa_restore(void)
{
    assert_int_equal(pkm_set_allocator(NULL, NULL, NULL), 0);
}

/* Starts a new epoch: counted allocations number from 1; those numbered fail_at ..
 * fail_at + burst - 1 fail (fail_at 0: none). */
static unsigned fa_arm(long fail_at, long burst, int scope)
{
    pthread_mutex_lock(&fa_mu);
    unsigned e = ++fa_epoch;
    fa_calls = 0;
    fa_injected = 0;
    fa_fail_at = fail_at > 0 ? fail_at : 0;
    fa_fail_end = fail_at > 0 ? fail_at + burst : 0;
    fa_scope = scope;
    fa_armed = 1;
    pthread_mutex_unlock(&fa_mu);
    return e;
}

/* Stops counting and failing; returns the failures injected since fa_arm. */
static long fa_disarm(void)
{
    pthread_mutex_lock(&fa_mu);
    fa_armed = 0;
    fa_epoch++; /* what is allocated from now on is not the run's */
    long inj = fa_injected;
    pthread_mutex_unlock(&fa_mu);
    return inj;
}

/* Live allocations made in `epoch` (0: in any epoch since the hook was installed). */
static size_t fa_live(unsigned epoch)
{
    pthread_mutex_lock(&fa_mu);
    size_t n = 0;
    for (size_t i = 0; i < fa_n; i++)
        if (epoch == 0 || fa_tab[i].epoch == epoch) n++;
    int over = fa_overflow;
    pthread_mutex_unlock(&fa_mu);
    assert_false(over);
    return n;
}

/* Waits (up to g_wait) until nothing allocated in `epoch` is live; fails naming the count. */
static void fa_expect_no_leak(unsigned epoch, const char *what, long k)
{
    size_t n = 0;
    for (int i = 0; i < g_wait / 5; i++) {
        if ((n = fa_live(epoch)) == 0) return;
        tcl_sleep_ms(5);
    }
    fail_msg("%s, allocation %ld failed: %zu allocation(s) still live", what, k, n);
}

/* ========================================================================================== */
/* Setup                                                                                      */

/* Copies src (relative to PKM_SOURCE_DIR) to a fresh 0600 temporary file named in out[64] and
 * loads it: test keys from the repository, so that no RSA key is generated (a key costs ~100 ms
 * natively and ~20 s under valgrind). Returns 0, or -1 when the file is not there. */
static int load_repo_key(const char *src, char *out, pkm_key_t **key)
{
    const char *dir = getenv("PKM_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : ".", src);
    FILE *in = fopen(path, "rb");
    if (!in) return -1;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf, in);
    fclose(in);
    strcpy(out, "/tmp/pkm_faults_key_XXXXXX");
    int fd = mkstemp(out); /* mode 0600 */
    if (fd < 0) return -1;
    int ok = write(fd, buf, n) == (ssize_t)n;
    close(fd);
    if (!ok || pkm_key_load_pem(out, key) != 0) {
        unlink(out);
        out[0] = '\0';
        return -1;
    }
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    if (t_under_valgrind()) g_wait = 300000;
    for (size_t i = 0; i < sizeof g_data; i++)
        g_data[i] = (uint8_t)(i * 7 + 3);
    char client_pem[64];
    if (load_repo_key("tests/data/server_key.pem", g_skey_pem, &g_skey) == 0 &&
        load_repo_key("docs/test-vectors/client_key.TEST-ONLY.pem", client_pem, &g_ckey) == 0) {
        unlink(client_pem);
        return 0;
    }
    /* Not run from the build (no PKM_SOURCE_DIR): make the keys. */
    pkm_key_free(g_skey);
    if (g_skey_pem[0]) unlink(g_skey_pem);
    if (pkm_key_generate(&g_skey) != 0 || pkm_key_generate(&g_ckey) != 0) return -1;
    strcpy(g_skey_pem, "/tmp/pkm_faults_key_XXXXXX");
    int fd = mkstemp(g_skey_pem);
    if (fd < 0) return -1;
    close(fd);
    return pkm_key_save_pem(g_skey, g_skey_pem);
}

static int group_teardown(void **state)
{
    (void)state;
    pkm_set_allocator(NULL, NULL, NULL);
    pkm_key_free(g_skey);
    pkm_key_free(g_ckey);
    unlink(g_skey_pem);
    tcl_pool_thread_cleanup();
    return 0;
}

/* The hook itself: all three or none. */
static void allocator_hook_args(void **state)
{
    (void)state;
    assert_int_equal(pkm_set_allocator(fa_malloc, NULL, fa_free), PKM_EINVAL);
    assert_int_equal(pkm_set_allocator(NULL, fa_realloc, NULL), PKM_EINVAL);
    fa_install();
    unsigned e = fa_arm(0, 0, FA_ALL);
    pkm_registry_t *reg = pkm_registry_new();
    assert_non_null(reg);
    assert_int_equal(fa_live(e), 1);
    pkm_registry_free(reg);
    assert_int_equal(fa_live(e), 0);
    fa_disarm();
    fa_restore();
}

/* ========================================================================================== */
/* Engine: allocation k fails, k = 1, 2, ... until a run completes without a failure          */

static const size_t k_sizes[] = {0, 1, 15, 16, 17, 1000, 70000};
#define NSIZES (sizeof k_sizes / sizeof k_sizes[0])

typedef struct evar {
    const char *secret;
    int defer;    /* server engine with defer_crypto (as the libuv server runs it) */
    size_t chunk; /* pump chunk (0 = whole buffers) */
    int use_feed; /* pump with pkm_engine_feed */
} evar_t;

static int e_new(int client, const evar_t *v, pkm_engine_t **out)
{
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, client ? PKM_ROLE_CLIENT : PKM_ROLE_SERVER);
    if (client) {
        cfg.client_key = pkm_key_ref(g_ckey);
    } else {
        cfg.server_key = g_skey;
        cfg.defer_crypto = v->defer;
    }
    if (v->secret) {
        cfg.secret = (const uint8_t *)v->secret;
        cfg.secret_len = strlen(v->secret);
    }
    return pkm_engine_new(&cfg, out);
}

/* The error that closed either engine (0 if neither is closed). */
static int e_err(pkm_engine_t *a, pkm_engine_t *b)
{
    int ea = pkm_engine_state(a) == PKM_STATE_CLOSED ? pkm_engine_error(a) : 0;
    int eb = pkm_engine_state(b) == PKM_STATE_CLOSED ? pkm_engine_error(b) : 0;
    if (ea == PKM_ENOMEM || eb == PKM_ENOMEM) return PKM_ENOMEM;
    return ea ? ea : eb;
}

/* Takes `n` packets from `to`, pumping when none is buffered; checks each against k_sizes.
 * Returns 0, or the error that stopped it. */
static int e_take(t_pump *p, pkm_engine_t *to, uint8_t base_id, size_t n)
{
    for (size_t got = 0; got < n;) {
        pkm_packet_t pk;
        int r = pkm_engine_next_packet(to, &pk);
        if (r < 0) return r;
        if (r == 0) {
            if (t_pump_run(p) == 0) {
                int e = e_err(p->a, p->b);
                if (e) return e;
                fail_msg("engines stuck with %zu of %zu packets", got, n);
            }
            continue;
        }
        size_t sz = k_sizes[got % NSIZES];
        assert_int_equal(pk.id, base_id + got);
        assert_int_equal(pk.size, sz);
        assert_int_equal(pk.hash, hash_of(pk.id, g_data, sz));
        if (sz) assert_memory_equal(pk.content, g_data, sz);
        got++;
    }
    return 0;
}

static int e_queue(pkm_engine_t *e, uint8_t base_id)
{
    for (size_t i = 0; i < NSIZES; i++) {
        uint8_t id = (uint8_t)(base_id + i);
        int r = pkm_engine_queue_packet(e, id, hash_of(id, g_data, k_sizes[i]), g_data, k_sizes[i]);
        if (r < 0) return r;
    }
    return 0;
}

/* Packets both ways at once. */
static int e_exchange(t_pump *p, pkm_engine_t *c, pkm_engine_t *s, uint8_t base)
{
    int r;
    if ((r = e_queue(c, base)) < 0 || (r = e_queue(s, (uint8_t)(base + 0x40))) < 0) return r;
    t_pump_run(p);
    if ((r = e_take(p, s, base, NSIZES)) < 0) return r;
    return e_take(p, c, (uint8_t)(base + 0x40), NSIZES);
}

/* The whole life of a pair: new, handshake, packets both ways, trim, a re-establishment with a
 * packet queued during it, packets again, free. Returns 0 or the error that stopped it. */
static int e_life(const evar_t *v, pkm_engine_t **pc, pkm_engine_t **ps)
{
    int r;
    if ((r = e_new(1, v, pc)) < 0 || (r = e_new(0, v, ps)) < 0) return r;
    pkm_engine_t *c = *pc, *s = *ps;
    t_pump p;
    t_pump_init(&p, c, s, v->chunk);
    p.use_feed = v->use_feed;
    t_pump_run(&p);
    if ((r = e_err(c, s)) != 0) return r;
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    if ((r = e_exchange(&p, c, s, 0x10)) < 0) return r;
    pkm_engine_trim(c); /* buffers released: the next bytes allocate again */
    pkm_engine_trim(s);
    /* Re-establishment: the server's trigger, then both rekey; the client queues a packet while
     * REKEYING (held as plaintext, sent under the new key). */
    static const uint8_t why[1] = {7};
    if ((r = pkm_engine_queue_packet(s, 0x05, hash_of(0x05, why, 1), why, 1)) < 0) return r;
    if ((r = pkm_engine_rekey(s, (const uint8_t *)SECRET2, strlen(SECRET2))) < 0) return r;
    t_pump_run(&p);
    pkm_packet_t pk;
    r = pkm_engine_next_packet(c, &pk);
    if (r < 0) return r;
    if (r == 0) return e_err(c, s) ? e_err(c, s) : PKM_EINTERNAL;
    assert_int_equal(pk.id, 0x05);
    if ((r = pkm_engine_rekey(c, (const uint8_t *)SECRET2, strlen(SECRET2))) < 0) return r;
    assert_int_equal(pkm_engine_state(c), PKM_STATE_REKEYING);
    if ((r = pkm_engine_queue_packet(c, 0x30, hash_of(0x30, g_data, 300), g_data, 300)) < 0)
        return r;
    t_pump_run(&p);
    if ((r = e_err(c, s)) != 0) return r;
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    r = pkm_engine_next_packet(s, &pk);
    if (r < 0) return r;
    assert_int_equal(r, 1);
    assert_int_equal(pk.id, 0x30);
    assert_int_equal(pk.size, 300);
    assert_memory_equal(pk.content, g_data, 300);
    return e_exchange(&p, c, s, 0x60);
}

static int g_engine_runs;

static void engine_variant(const evar_t *v)
{
    long k;
    for (k = 1;; k++) {
        unsigned ep = fa_arm(k, 1, FA_ALL);
        pkm_engine_t *c = NULL, *s = NULL;
        int r = e_life(v, &c, &s);
        int ec = c ? pkm_engine_error(c) : 0, es = s ? pkm_engine_error(s) : 0;
        pkm_engine_free(c);
        pkm_engine_free(s);
        long inj = fa_disarm();
        g_engine_runs++;
        if (inj == 0) {
            if (r != 0) fail_msg("engine run without a fault failed: %s", pkm_errname(r));
            assert_int_equal(fa_live(ep), 0);
            break;
        }
        /* The failure surfaced as PKM_ENOMEM (returned, or the error an engine closed with); an
         * engine closed by its peer's end says so (PKM_EHANDSHAKE, PKM_EEOF, PKM_EPROTO). */
        if (r != PKM_ENOMEM && ec != PKM_ENOMEM && es != PKM_ENOMEM)
            fail_msg("allocation %ld failed: run ended with %s (client %s, server %s)", k,
                     pkm_errname(r), pkm_errname(ec), pkm_errname(es));
        int other = ec == PKM_ENOMEM ? es : ec;
        if (other != 0 && other != PKM_ENOMEM && other != PKM_EHANDSHAKE && other != PKM_EEOF &&
            other != PKM_EPROTO)
            fail_msg("allocation %ld failed: the peer engine closed with %s", k,
                     pkm_errname(other));
        fa_expect_no_leak(ep, "engine", k);
    }
    assert_true(k > 10); /* a pair and its buffers are more than ten allocations */
    printf("  engine variant (%s, %s, chunk %zu%s): allocations 1..%ld failed in turn\n",
           v->secret ? "secret" : "no secret", v->defer ? "deferred" : "inline", v->chunk,
           v->use_feed ? ", feed" : "", k - 1);
}

static void engine_alloc_failures(void **state)
{
    (void)state;
    static const evar_t vars[] = {
        {NULL, 0, 0, 0},     /* inline crypto, whole buffers */
        {SECRET, 1, 700, 1}, /* secret, deferred server crypto, 700-byte pieces, feed */
    };
    fa_install();
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        engine_variant(&vars[i]);
    assert_int_equal(fa_live(0), 0);
    fa_restore();
    printf("engine: %d runs\n", g_engine_runs);
}

/* ========================================================================================== */
/* Codec and keys                                                                             */

static const pkm_field_t c_byte_elem = {.type = PKM_T_BYTE};
static const pkm_field_t c_fields[] = {
    {.name = "name", .type = PKM_T_STRING},
    {.name = "count", .type = PKM_T_UINT},
    {.name = "doc", .type = PKM_T_JSON},
    {.name = "n", .type = PKM_T_USHORT},
    {.name = "data", .type = PKM_T_ARRAY, .elem = &c_byte_elem, .len_field = PKM_LEN_FIELD(3)},
};
static const pkm_schema_t c_schema = {"FaultCodec", c_fields, 5};

/* One pass through the codec and the key loaders; 0 or the first error. */
static int codec_life(void)
{
    static const uint8_t bytes[5] = {1, 2, 3, 4, 5};
    const pkm_value_t v[5] = {PKM_V_STR("h\xC3\xA9llo"), PKM_V_U(123456),
                              PKM_V_STR("{\"a\":[1,2]}"), PKM_V_U(5), PKM_V_BYTES(bytes, 5)};
    pkm_registry_t *reg = pkm_registry_new();
    if (!reg) return PKM_ENOMEM;
    int r = pkm_registry_register(reg, 0x21, &c_schema);
    uint8_t *pkt = NULL, *content = NULL;
    size_t len = 0, clen = 0;
    uint32_t ch = 0;
    pkm_msg_t *m = NULL;
    pkm_key_t *k1 = NULL, *k2 = NULL;
    if (r == 0) r = pkm_registry_encode_alloc(reg, 0x21, v, 5, &pkt, &len);
    if (r == 0) r = pkm_schema_encode_alloc(&c_schema, v, 5, &content, &clen, &ch);
    if (r == 0) {
        assert_int_equal(len, PKM_HEADER_SIZE + clen);
        assert_memory_equal(pkt + PKM_HEADER_SIZE, content, clen);
        pkm_packet_t p;
        assert_int_equal(pkm_packet_header_read(pkt, PKM_DEFAULT_MAX_SIZE, &p), 0);
        p.content = pkt + PKM_HEADER_SIZE;
        assert_int_equal(p.hash, pkm_packet_hash(0x21, ch));
        r = pkm_registry_decode(reg, &p, &m);
    }
    if (r == 0) {
        assert_int_equal(pkm_msg_get(m, "count")->u64, 123456);
        assert_int_equal(pkm_msg_get(m, "name")->str.len, 6);
        assert_memory_equal(pkm_msg_get(m, "data")->bytes.ptr, bytes, 5);
    }
    if (r == 0) {
        uint8_t der[PKM_MAX_KEY_DER];
        int n = pkm_key_public_der(g_skey, der, sizeof der);
        assert_true(n > 0);
        r = pkm_key_from_der(der, (size_t)n, &k1);
    }
    if (r == 0) r = pkm_key_load_pem(g_skey_pem, &k2);
    if (r == 0) assert_int_equal(pkm_key_is_private(k2), 1);
    pkm_key_free(k1);
    pkm_key_free(k2);
    pkm_msg_free(m);
    pkm_bytes_free(content);
    pkm_bytes_free(pkt);
    pkm_registry_free(reg);
    return r;
}

static void codec_alloc_failures(void **state)
{
    (void)state;
    fa_install();
    long k;
    for (k = 1;; k++) {
        unsigned ep = fa_arm(k, 1, FA_ALL);
        int r = codec_life();
        long inj = fa_disarm();
        assert_int_equal(fa_live(ep), 0);
        if (inj == 0) {
            assert_int_equal(r, 0);
            break;
        }
        if (r != PKM_ENOMEM) fail_msg("codec: allocation %ld failed: %s", k, pkm_errname(r));
    }
    /* registry, packet, content, message, key + DER twice, the PEM file buffer */
    assert_true(k >= 8);
    fa_restore();
    printf("codec and keys: %ld runs\n", k);
}

/* ========================================================================================== */
/* The blocking conn API over a socketpair; the server side runs in a thread                  */

enum fault_kind { F_SHORT, F_EINTR, F_EAGAIN, F_RESET, F_KINDS };
static const char *const fault_names[F_KINDS] = {"short", "EINTR", "EAGAIN", "ECONNRESET"};

/* One side's I/O fault: while armed, the k-th I/O call (read, write or poll, counted together)
 * fails as `kind` says (the same faults as test_conn.c's):
 *   short:      read/write move at most 1 byte; poll is left alone;
 *   EINTR:      the call does nothing and fails with EINTR (poll too);
 *   EAGAIN:     read/write do nothing and fail with EAGAIN; poll returns at once claiming the
 *               socket is ready (a spurious wake-up);
 *   ECONNRESET: read/write do nothing and fail with ECONNRESET; poll is left alone.
 * The owner thread arms and counts; the main thread reads the results after a round. */
typedef struct inj {
    atomic_int enabled; /* this side takes part (the server arms itself only when enabled) */
    atomic_int phase;   /* PH_CHANNEL or PH_REKEY: where the owner arms */
    atomic_int k, kind;
    atomic_int armed, calls, hit;
    atomic_int round_calls, round_hit; /* the last round's, recorded when it ends */
} inj_t;

enum { PH_CHANNEL = 1, PH_REKEY = 2 };

static void inj_arm(inj_t *f)
{
    atomic_store(&f->calls, 0);
    atomic_store(&f->hit, 0);
    atomic_store(&f->armed, 1);
}

static void inj_disarm(inj_t *f)
{
    atomic_store(&f->armed, 0);
    atomic_store(&f->round_calls, atomic_load(&f->calls));
    atomic_store(&f->round_hit, atomic_load(&f->hit));
}

static int inj_now(inj_t *f)
{
    if (!atomic_load(&f->armed)) return 0;
    if (atomic_fetch_add(&f->calls, 1) + 1 != atomic_load(&f->k)) return 0;
    atomic_store(&f->hit, 1);
    return 1;
}

static ssize_t f_read(void *ctx, int fd, void *buf, size_t n)
{
    inj_t *f = ctx;
    if (inj_now(f)) {
        switch (atomic_load(&f->kind)) {
        case F_SHORT: return recv(fd, buf, n ? 1 : 0, 0);
        case F_EINTR: errno = EINTR; return -1;
        case F_EAGAIN: errno = EAGAIN; return -1;
        default: errno = ECONNRESET; return -1;
        }
    }
    return recv(fd, buf, n, 0);
}

static ssize_t f_write(void *ctx, int fd, const void *buf, size_t n)
{
    inj_t *f = ctx;
    if (inj_now(f)) {
        switch (atomic_load(&f->kind)) {
        case F_SHORT: return send(fd, buf, n ? 1 : 0, MSG_NOSIGNAL);
        case F_EINTR: errno = EINTR; return -1;
        case F_EAGAIN: errno = EAGAIN; return -1;
        default: errno = ECONNRESET; return -1;
        }
    }
    return send(fd, buf, n, MSG_NOSIGNAL);
}

static int f_poll(void *ctx, struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    inj_t *f = ctx;
    if (inj_now(f)) {
        int kind = atomic_load(&f->kind);
        if (kind == F_EINTR) {
            errno = EINTR;
            return -1;
        }
        if (kind == F_EAGAIN) {
            for (nfds_t i = 0; i < nfds; i++)
                fds[i].revents = fds[i].events;
            return (int)nfds;
        }
    }
    return poll(fds, nfds, timeout_ms);
}

/* The server side of a conn session, in a thread. Protocol (driven by the client):
 *   0x01 "go":          send the trigger 0x05, re-establish with SECRET2, send 0x06 "after";
 *   0x02 round start:   (arms the server's injection for the channel phase), no reply;
 *   0x03 round end:     (disarms it), answered with 0x03;
 *   anything else:      echoed.
 * Ends with 0 when the client closes (PKM_EEOF). */
typedef struct speer {
    int fd;
    int mark; /* counted by the allocator in FA_MARKED scope */
    inj_t *inj;
    struct pkm__io io;
    int hs_rc, rc;
    char msg[PKM_ERRMSG_SIZE];
    pthread_t th;
} speer_t;

static int speer_script(speer_t *p, pkm_conn_t *c)
{
    inj_t *f = p->inj && atomic_load(&p->inj->enabled) ? p->inj : NULL;
    for (;;) {
        pkm_packet_t pk;
        int r = pkm_conn_recv(c, &pk, g_wait);
        if (r == PKM_EEOF) return 0;
        if (r < 0) return r;
        switch (pk.id) {
        case 0x01: {
            static const uint8_t why[1] = {1};
            if ((r = pkm_conn_send(c, 0x05, hash_of(0x05, why, 1), why, 1, g_wait)) < 0) return r;
            int arm = f && atomic_load(&f->phase) == PH_REKEY;
            if (arm) inj_arm(f);
            r = pkm_conn_rekey(c, (const uint8_t *)SECRET2, strlen(SECRET2), g_wait);
            if (arm) inj_disarm(f);
            if (r < 0) return r;
            r = pkm_conn_send(c, 0x06, hash_of(0x06, (const uint8_t *)"after", 5), "after", 5,
                              g_wait);
            break;
        }
        case 0x02:
            if (f && atomic_load(&f->phase) == PH_CHANNEL) inj_arm(f);
            break;
        case 0x03:
            if (f && atomic_load(&f->phase) == PH_CHANNEL) inj_disarm(f);
            r = pkm_conn_send(c, 0x03, hash_of(0x03, NULL, 0), NULL, 0, g_wait);
            break;
        default: r = pkm_conn_send(c, pk.id, pk.hash, pk.content, pk.size, g_wait); break;
        }
        if (r < 0) return r;
    }
}

static void *speer_main(void *arg)
{
    speer_t *p = arg;
    fa_mark = p->mark;
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    cfg.engine.server_key = g_skey;
    cfg.engine.secret = (const uint8_t *)SECRET;
    cfg.engine.secret_len = strlen(SECRET);
    cfg.handshake_timeout_ms = g_wait;
    cfg.errbuf = p->msg;
    cfg.errbuf_size = sizeof p->msg;
    pkm_conn_t *c = NULL;
    p->hs_rc = pkm__conn_from_fd_io(p->fd, PKM_ROLE_SERVER, &cfg, p->inj ? &p->io : NULL, &c);
    if (c) {
        p->rc = speer_script(p, c);
        snprintf(p->msg, sizeof p->msg, "%s", pkm_conn_errmsg(c));
        pkm_conn_close(c);
    }
    fa_mark = 0;
    return NULL;
}

/* A socketpair with small buffers (so that big packets take many calls and partial writes), the
 * server thread started on sv[1]; returns the client's end. */
static int session_start(speer_t *p, int mark, inj_t *inj)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int buf = 8192;
    for (int i = 0; i < 2; i++) {
        setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
        setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    }
    memset(p, 0, sizeof *p);
    p->fd = sv[1];
    p->mark = mark;
    p->inj = inj;
    p->io = (struct pkm__io){f_read, f_write, f_poll, inj};
    assert_int_equal(pthread_create(&p->th, NULL, speer_main, p), 0);
    return sv[0];
}

static void session_join(speer_t *p)
{
    assert_int_equal(pthread_join(p->th, NULL), 0);
}

static int client_conn(int fd, const struct pkm__io *io, char *eb, pkm_conn_t **c)
{
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    cfg.engine.client_key = pkm_key_ref(g_ckey);
    cfg.engine.secret = (const uint8_t *)SECRET;
    cfg.engine.secret_len = strlen(SECRET);
    cfg.handshake_timeout_ms = g_wait;
    cfg.errbuf = eb;
    cfg.errbuf_size = PKM_ERRMSG_SIZE;
    return pkm__conn_from_fd_io(fd, PKM_ROLE_CLIENT, &cfg, io, c);
}

/* One packet echoed, checked. */
static int c_echo(pkm_conn_t *c, uint8_t id, const uint8_t *data, size_t n)
{
    uint32_t h = hash_of(id, data, n);
    int r = pkm_conn_send(c, id, h, data, n, g_wait);
    if (r < 0) return r;
    pkm_packet_t pk;
    if ((r = pkm_conn_recv(c, &pk, g_wait)) < 0) return r;
    assert_int_equal(pk.id, id);
    assert_int_equal(pk.hash, h);
    assert_int_equal(pk.size, n);
    if (n) assert_memory_equal(pk.content, data, n);
    return 0;
}

/* The client's side of a re-establishment round: "go", the trigger, rekey (the client's
 * injection armed around it when inj is given), "after", one echo. */
static int c_rekey_round(pkm_conn_t *c, inj_t *inj)
{
    int r = pkm_conn_send(c, 0x01, hash_of(0x01, (const uint8_t *)"go", 2), "go", 2, g_wait);
    if (r < 0) return r;
    pkm_packet_t pk;
    if ((r = pkm_conn_recv(c, &pk, g_wait)) < 0) return r;
    assert_int_equal(pk.id, 0x05);
    if (inj) inj_arm(inj);
    r = pkm_conn_rekey(c, (const uint8_t *)SECRET2, strlen(SECRET2), g_wait);
    if (inj) inj_disarm(inj);
    if (r < 0) return r;
    if ((r = pkm_conn_recv(c, &pk, g_wait)) < 0) return r;
    assert_int_equal(pk.id, 0x06);
    assert_int_equal(pk.size, 5);
    assert_memory_equal(pk.content, "after", 5);
    return c_echo(c, 0x07, g_data, 40);
}

/* Many packets in flight: a round start (0x02), PIPELINE packets sent back to back (the echoes
 * pile up meanwhile), then every echo taken and checked in order, then the round end (0x03) and
 * its answer. The client's injection (if any) is armed around the packets. */
#define PIPELINE 24
static int c_channel_round(pkm_conn_t *c, inj_t *inj)
{
    int r = pkm_conn_send(c, 0x02, hash_of(0x02, NULL, 0), NULL, 0, g_wait);
    if (r < 0) return r;
    if (inj) inj_arm(inj);
    for (size_t i = 0; i < PIPELINE && r >= 0; i++) {
        size_t n = k_sizes[i % NSIZES] > 30000 ? 30000 : k_sizes[i % NSIZES];
        uint8_t id = (uint8_t)(0x20 + i);
        r = pkm_conn_send(c, id, hash_of(id, g_data, n), g_data, n, g_wait);
    }
    for (size_t i = 0; i < PIPELINE && r >= 0; i++) {
        size_t n = k_sizes[i % NSIZES] > 30000 ? 30000 : k_sizes[i % NSIZES];
        pkm_packet_t pk;
        if ((r = pkm_conn_recv(c, &pk, g_wait)) < 0) break;
        assert_int_equal(pk.id, 0x20 + i);
        assert_int_equal(pk.size, n);
        assert_int_equal(pk.hash, hash_of(pk.id, g_data, n));
        if (n) assert_memory_equal(pk.content, g_data, n);
    }
    if (inj) inj_disarm(inj);
    if (r < 0) return r;
    if ((r = pkm_conn_send(c, 0x03, hash_of(0x03, NULL, 0), NULL, 0, g_wait)) < 0) return r;
    pkm_packet_t pk;
    if ((r = pkm_conn_recv(c, &pk, g_wait)) < 0) return r;
    assert_int_equal(pk.id, 0x03);
    return 0;
}

/* ---- allocation failures in the conn API ---- */

/* One client + server session with allocation k failing on one side (the thread marked). */
static void conn_alloc_side(int faulty_client, long *runs)
{
    long k;
    for (k = 1;; k++) {
        unsigned ep = fa_arm(k, 1, FA_MARKED);
        speer_t srv;
        int fd = session_start(&srv, !faulty_client, NULL);
        fa_mark = faulty_client;
        char eb[PKM_ERRMSG_SIZE];
        pkm_conn_t *c = NULL;
        int r = client_conn(fd, NULL, eb, &c);
        static const size_t sizes[3] = {10, 5000, 70000};
        for (int i = 0; i < 3 && r == 0; i++)
            r = c_echo(c, (uint8_t)(0x40 + i), g_data, sizes[i]);
        if (r == 0) r = c_rekey_round(c, NULL);
        pkm_conn_close(c);
        fa_mark = 0;
        session_join(&srv);
        long inj = fa_disarm();
        (*runs)++;
        int srv_rc = srv.hs_rc ? srv.hs_rc : srv.rc;
        if (inj == 0) {
            if (r != 0 || srv_rc != 0)
                fail_msg("conn run without a fault: client %s, server %s (%s)", pkm_errname(r),
                         pkm_errname(srv_rc), srv.msg);
            assert_int_equal(fa_live(ep), 0);
            break;
        }
        int mine = faulty_client ? r : srv_rc;
        if (mine != PKM_ENOMEM)
            fail_msg("conn: allocation %ld on the %s failed: %s (peer %s)", k,
                     faulty_client ? "client" : "server", pkm_errname(mine),
                     pkm_errname(faulty_client ? srv_rc : r));
        fa_expect_no_leak(ep, "conn", k);
    }
    assert_true(k > 6);
    printf("  conn, %s side: allocations 1..%ld failed in turn\n",
           faulty_client ? "client" : "server", k - 1);
}

/* Listener: its own allocations, and an accept whose connection cannot be allocated (the
 * listener stays usable and the next client is served). */
typedef struct lpeer {
    pkm_listener_t *l;
    int rc[2];
    char msg0[PKM_ERRMSG_SIZE]; /* the listener's sentence after the first accept */
    int script_rc;
    pthread_t th;
} lpeer_t;

static void *lpeer_main(void *arg)
{
    lpeer_t *p = arg;
    fa_mark = 1; /* the first accept's first allocation fails (armed by the main thread) */
    for (int i = 0; i < 2; i++) {
        pkm_conn_t *c = NULL;
        p->rc[i] = pkm_accept(p->l, &c);
        fa_mark = 0;
        if (i == 0) snprintf(p->msg0, sizeof p->msg0, "%s", pkm_listener_errmsg(p->l));
        if (c) {
            pkm_packet_t pk;
            int r = pkm_conn_recv(c, &pk, g_wait);
            if (r == 1) r = pkm_conn_send(c, pk.id, pk.hash, pk.content, pk.size, g_wait);
            p->script_rc = r;
            pkm_conn_close(c);
        }
    }
    return NULL;
}

static void listener_alloc(void)
{
    char eb[PKM_ERRMSG_SIZE];
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    cfg.engine.server_key = g_skey;
    cfg.engine.secret = (const uint8_t *)SECRET;
    cfg.engine.secret_len = strlen(SECRET);
    cfg.handshake_timeout_ms = g_wait;
    cfg.errbuf = eb;
    cfg.errbuf_size = sizeof eb;
    /* pkm_listen allocates the listener and its copy of the secret. */
    for (long k = 1; k <= 2; k++) {
        unsigned ep = fa_arm(k, 1, FA_ALL);
        pkm_listener_t *l = NULL;
        assert_int_equal(pkm_listen("127.0.0.1", 0, &cfg, &l), PKM_ENOMEM);
        assert_null(l);
        assert_string_equal(eb, pkm_strerror(PKM_ENOMEM));
        assert_int_equal(fa_disarm(), 1);
        assert_int_equal(fa_live(ep), 0);
    }
    pkm_listener_t *l = NULL;
    assert_int_equal(pkm_listen("127.0.0.1", 0, &cfg, &l), 0);
    unsigned ep = fa_arm(1, 1, FA_MARKED);
    lpeer_t p;
    memset(&p, 0, sizeof p);
    p.l = l;
    assert_int_equal(pthread_create(&p.th, NULL, lpeer_main, &p), 0);
    for (int i = 0; i < 2; i++) {
        pkm_conn_config_t cc;
        pkm_conn_config_init(&cc);
        cc.engine.client_key = pkm_key_ref(g_ckey);
        cc.engine.secret = (const uint8_t *)SECRET;
        cc.engine.secret_len = strlen(SECRET);
        cc.handshake_timeout_ms = g_wait;
        pkm_conn_t *c = NULL;
        int r = pkm_connect("127.0.0.1", pkm_listener_port(l), &cc, &c);
        if (i == 0) {
            assert_true(r < 0); /* the server dropped it: EOF during the handshake */
        } else {
            assert_int_equal(r, 0);
            assert_int_equal(c_echo(c, 0x44, g_data, 100), 0);
        }
        pkm_conn_close(c);
    }
    assert_int_equal(pthread_join(p.th, NULL), 0);
    assert_int_equal(fa_disarm(), 1);
    assert_int_equal(p.rc[0], PKM_ENOMEM);
    assert_string_equal(p.msg0, pkm_strerror(PKM_ENOMEM));
    assert_int_equal(p.rc[1], 0);
    assert_int_equal(p.script_rc, 0);
    pkm_listener_close(l);
    assert_int_equal(fa_live(ep), 0);
}

static void conn_alloc_failures(void **state)
{
    (void)state;
    fa_install();
    long runs = 0;
    conn_alloc_side(1, &runs);
    conn_alloc_side(0, &runs);
    listener_alloc();
    assert_int_equal(fa_live(0), 0);
    fa_restore();
    printf("conn: %ld runs\n", runs);
}

/* ========================================================================================== */
/* I/O faults in the established channel and in re-establishments                             */

typedef struct io_totals {
    long rounds, resets, sessions;
} io_totals_t;

static io_totals_t g_io;

/* Short counts, EINTR, EAGAIN: transparent. One session per (side, phase, kind); round r
 * injects at call r of that round's phase on the faulty side, until a round has fewer calls. */
static void io_transparent(int faulty_client, int phase, int kind)
{
    inj_t ci, si;
    memset(&ci, 0, sizeof ci);
    memset(&si, 0, sizeof si);
    inj_t *f = faulty_client ? &ci : &si;
    atomic_store(&f->enabled, 1);
    atomic_store(&f->phase, phase);
    atomic_store(&f->kind, kind);
    speer_t srv;
    int fd = session_start(&srv, 0, &si);
    struct pkm__io io = {f_read, f_write, f_poll, &ci};
    char eb[PKM_ERRMSG_SIZE];
    pkm_conn_t *c = NULL;
    assert_int_equal(client_conn(fd, &io, eb, &c), 0);
    g_io.sessions++;
    /* The number of calls varies with timing: stop after three rounds in a row that did not
     * reach their call. */
    int k, last_hit = 0;
    for (k = 1; k <= last_hit + 3; k++) {
        atomic_store(&f->k, k);
        inj_t *mine = faulty_client ? &ci : NULL;
        int r = phase == PH_CHANNEL ? c_channel_round(c, mine) : c_rekey_round(c, mine);
        g_io.rounds++;
        if (r != 0)
            fail_msg("%s fault at %s call %d on the %s: %s (%s)", fault_names[kind],
                     phase == PH_CHANNEL ? "channel" : "re-establishment", k,
                     faulty_client ? "client" : "server", pkm_errname(r), pkm_conn_errmsg(c));
        if (atomic_load(&f->round_hit)) last_hit = k;
    }
    k = last_hit + 1;
    /* A re-establishment takes 2 calls at least (write KeyShare + 0xFF, read the answer). */
    if (k <= 2)
        fail_msg("%s faults on the %s (%s): only %d calls", fault_names[kind],
                 faulty_client ? "client" : "server",
                 phase == PH_CHANNEL ? "channel" : "re-establishment", k - 1);
    pkm_conn_close(c);
    session_join(&srv);
    if (srv.rc != 0) fail_msg("server side ended with %s (%s)", pkm_errname(srv.rc), srv.msg);
    printf("  %s, %s on the %s: calls 1..%d faulted, one round each\n",
           phase == PH_CHANNEL ? "channel" : "re-establishment", fault_names[kind],
           faulty_client ? "client" : "server", k - 1);
}

/* ECONNRESET: one session per injection point. Returns whether the reset was injected. */
static int io_reset_once(int faulty_client, int phase, int k)
{
    inj_t ci, si;
    memset(&ci, 0, sizeof ci);
    memset(&si, 0, sizeof si);
    inj_t *f = faulty_client ? &ci : &si;
    atomic_store(&f->enabled, 1);
    atomic_store(&f->phase, phase);
    atomic_store(&f->kind, F_RESET);
    atomic_store(&f->k, k);
    speer_t srv;
    int fd = session_start(&srv, 0, &si);
    struct pkm__io io = {f_read, f_write, f_poll, &ci};
    char eb[PKM_ERRMSG_SIZE];
    pkm_conn_t *c = NULL;
    assert_int_equal(client_conn(fd, &io, eb, &c), 0);
    g_io.sessions++;
    inj_t *mine = faulty_client ? &ci : NULL;
    int r = phase == PH_CHANNEL ? c_channel_round(c, mine) : c_rekey_round(c, mine);
    if (r == 0) r = c_echo(c, 0x08, g_data, 20); /* still usable */
    char cmsg[PKM_ERRMSG_SIZE];
    snprintf(cmsg, sizeof cmsg, "%s", pkm_conn_errmsg(c));
    pkm_conn_close(c);
    session_join(&srv);
    int hit = atomic_load(&f->hit);
    int mine_rc = faulty_client ? r : srv.rc, other = faulty_client ? srv.rc : r;
    if (!hit) {
        if (r != 0 || srv.rc != 0)
            fail_msg("no reset injected, yet client %s / server %s", pkm_errname(r),
                     pkm_errname(srv.rc));
        return 0;
    }
    /* A clean PKM_ECONNRESET where it was injected with the errno's sentence, unless it hit a
     * poll (passed through: then everything succeeds); the other side ends with an error of its
     * own (the socket closed under it) or, if it was done, normally. */
    if (mine_rc == 0 && other == 0) return 1;
    if (mine_rc != PKM_ECONNRESET)
        fail_msg("reset at %s call %d on the %s: %s (peer %s)",
                 phase == PH_CHANNEL ? "channel" : "re-establishment", k,
                 faulty_client ? "client" : "server", pkm_errname(mine_rc), pkm_errname(other));
    const char *msg = faulty_client ? cmsg : srv.msg;
    if (!strstr(msg, strerror(ECONNRESET))) fail_msg("reset at call %d: sentence \"%s\"", k, msg);
    g_io.resets++;
    return 1;
}

static void io_faults_channel(void **state)
{
    (void)state;
    for (int side = 1; side >= 0; side--)
        for (int kind = F_SHORT; kind <= F_EAGAIN; kind++)
            io_transparent(side, PH_CHANNEL, kind);
    /* Resets: every call natively; every 5th under valgrind (each point is a new handshake). */
    int stride = t_under_valgrind() ? 5 : 1;
    for (int side = 1; side >= 0; side--) {
        int last_hit = 0; /* as above: until three points in a row are not reached */
        for (int k = 1; k <= last_hit + 3 * stride; k += stride)
            if (io_reset_once(side, PH_CHANNEL, k)) last_hit = k;
        assert_true(last_hit > 10);
        printf("  channel, ECONNRESET on the %s: calls 1..%d (every %d), one session each\n",
               side ? "client" : "server", last_hit, stride);
    }
    printf("channel I/O faults: %ld rounds, %ld sessions, %ld resets so far\n", g_io.rounds,
           g_io.sessions, g_io.resets);
}

static void io_faults_rekey(void **state)
{
    (void)state;
    for (int side = 1; side >= 0; side--)
        for (int kind = F_SHORT; kind <= F_EAGAIN; kind++)
            io_transparent(side, PH_REKEY, kind);
    for (int side = 1; side >= 0; side--) {
        int last_hit = 0;
        for (int k = 1; k <= last_hit + 3; k++)
            if (io_reset_once(side, PH_REKEY, k)) last_hit = k;
        assert_true(last_hit >= 2);
        printf("  re-establishment, ECONNRESET on the %s: calls 1..%d, one session each\n",
               side ? "client" : "server", last_hit);
    }
    printf("I/O faults: %ld rounds, %ld sessions, %ld resets in all\n", g_io.rounds, g_io.sessions,
           g_io.resets);
}

/* ========================================================================================== */
/* The libuv server in a thread, recording its callbacks                                      */

#define SX_MAX 512

typedef struct sx {
    pkm_server_t *srv;
    pthread_t th;
    int run_rc;
    pthread_mutex_t mu;
    int closes, connects, logs_oom, send_errs, last_send_err, rekey_errs;
    int close_err[SX_MAX];
    char close_step[SX_MAX][24];
} sx_t;

static void sx_on_connect(void *user, pkm_server_conn_t *conn)
{
    sx_t *f = user;
    (void)conn;
    pthread_mutex_lock(&f->mu);
    f->connects++;
    pthread_mutex_unlock(&f->mu);
}

/* Echo; a packet with Id 0x05 is echoed (the trigger) and then the secret re-established with
 * SECRET2. A failed send closes the connection (the application's choice: the echo is lost). */
static void sx_on_packet(void *user, pkm_server_conn_t *conn, const pkm_packet_t *pkt)
{
    sx_t *f = user;
    int r = pkm_server_send(conn, pkt->id, pkt->hash, pkt->content, pkt->size);
    if (r < 0) {
        pthread_mutex_lock(&f->mu);
        f->send_errs++;
        f->last_send_err = r;
        pthread_mutex_unlock(&f->mu);
        if (r != PKM_EQUEUE) pkm_server_conn_close(conn); /* EQUEUE: dropped already */
        return;
    }
    if (pkt->id == 0x05) {
        r = pkm_server_conn_rekey(conn, (const uint8_t *)SECRET2, strlen(SECRET2));
        if (r < 0) {
            pthread_mutex_lock(&f->mu);
            f->rekey_errs++;
            pthread_mutex_unlock(&f->mu);
        }
    }
}

static void sx_on_close(void *user, pkm_server_conn_t *conn, int err, const char *step)
{
    sx_t *f = user;
    (void)conn;
    pthread_mutex_lock(&f->mu);
    if (f->closes < SX_MAX) {
        f->close_err[f->closes] = err;
        snprintf(f->close_step[f->closes], sizeof f->close_step[0], "%s", step ? step : "");
    }
    f->closes++;
    pthread_mutex_unlock(&f->mu);
}

static void sx_on_log(void *user, int level, const char *msg)
{
    sx_t *f = user;
    if (strstr(msg, "out of memory") || strstr(msg, "cannot make an engine")) {
        pthread_mutex_lock(&f->mu);
        f->logs_oom++;
        pthread_mutex_unlock(&f->mu);
        return;
    }
    if (level <= PKM_LOG_WARN) fprintf(stderr, "server log: %s\n", msg);
}

static void *sx_thread(void *arg)
{
    sx_t *f = arg;
    f->run_rc = pkm_server_run(f->srv);
    return NULL;
}

static void sx_start(sx_t *f, size_t max_send_queue)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    pkm_server_config_t cfg;
    pkm_server_config_init(&cfg);
    cfg.host = "127.0.0.1";
    cfg.engine.server_key = g_skey;
    cfg.handshake_timeout_ms = (uint64_t)g_wait * 6;
    if (max_send_queue) cfg.engine.max_send_buffer = max_send_queue;
    cfg.on_connect = sx_on_connect;
    cfg.on_packet = sx_on_packet;
    cfg.on_close = sx_on_close;
    cfg.on_log = sx_on_log;
    cfg.user = f;
    assert_int_equal(pkm_server_new(&cfg, &f->srv), 0);
    assert_int_equal(pthread_create(&f->th, NULL, sx_thread, f), 0);
}

static void sx_stop(sx_t *f)
{
    pkm_server_stop(f->srv);
    assert_int_equal(pthread_join(f->th, NULL), 0);
    assert_int_equal(f->run_rc, 0);
    pkm_server_free(f->srv);
    pthread_mutex_destroy(&f->mu);
}

static int sx_get(sx_t *f, const int *field)
{
    pthread_mutex_lock(&f->mu);
    int v = *field;
    pthread_mutex_unlock(&f->mu);
    return v;
}

/* Waits until the server has closed n connections in all. */
static void sx_wait_closes(sx_t *f, int n)
{
    for (int i = 0; i < g_wait / 5; i++) {
        if (sx_get(f, &f->closes) >= n) return;
        tcl_sleep_ms(5);
    }
    fail_msg("the server closed %d connections, expected %d", sx_get(f, &f->closes), n);
}

static uint64_t sx_open(sx_t *f)
{
    pkm_server_stats_t st;
    pkm_server_stats(f->srv, &st);
    return st.conns_open;
}

/* Waits until the server's open connection count is n. */
static void sx_wait_open(sx_t *f, uint64_t n)
{
    for (int i = 0; i < g_wait / 5; i++) {
        if (sx_open(f) == n) return;
        tcl_sleep_ms(5);
    }
    fail_msg("the server has %llu connections open, expected %llu", (unsigned long long)sx_open(f),
             (unsigned long long)n);
}

/* ---- a blocking client: one engine over a blocking TCP socket ---- */

typedef struct bc {
    int fd;
    pkm_engine_t *e;
} bc_t;

static int raw_connect(uint16_t port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (rcvbuf) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int wait_fd(int fd, short ev)
{
    struct pollfd p = {fd, ev, 0};
    return poll(&p, 1, g_wait) == 1;
}

/* A close that sends RST (SO_LINGER 0), not FIN. */
static void rst_close(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* 1 when the server closed fd (EOF or reset) within g_wait; what it sends first is skipped. */
static int closed_by_peer(int fd)
{
    uint8_t buf[4096];
    for (;;) {
        if (!wait_fd(fd, POLLIN)) return 0;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) return 1;
        if (n < 0 && errno != EINTR) return 0;
    }
}

static int bc_open(uint16_t port, int rcvbuf, bc_t *c)
{
    c->e = NULL;
    c->fd = raw_connect(port, rcvbuf);
    if (c->fd < 0) return PKM_ECONNECT;
    pkm_engine_config_t ec;
    pkm_engine_config_init(&ec, PKM_ROLE_CLIENT);
    ec.client_key = pkm_key_ref(g_ckey);
    return pkm_engine_new(&ec, &c->e);
}

static int bc_flush(bc_t *c)
{
    size_t len;
    const uint8_t *p;
    while ((p = pkm_engine_send_buf(c->e, &len)) != NULL) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            return n < 0 && (errno == EPIPE || errno == ECONNRESET) ? PKM_ECONNRESET : PKM_EIO;
        pkm_engine_send_ack(c->e, (size_t)n);
    }
    return pkm_engine_state(c->e) == PKM_STATE_CLOSED ? pkm_engine_error(c->e) : 0;
}

/* Reads once into the engine. */
static int bc_read(bc_t *c)
{
    if (!wait_fd(c->fd, POLLIN)) return PKM_ETIMEOUT;
    size_t cap;
    uint8_t *p = pkm_engine_recv_buf(c->e, &cap);
    if (!p) return pkm_engine_error(c->e) ? pkm_engine_error(c->e) : PKM_EINTERNAL;
    ssize_t n = recv(c->fd, p, cap, 0);
    if (n < 0) return errno == ECONNRESET ? PKM_ECONNRESET : PKM_EIO;
    if (n == 0) {
        int r = pkm_engine_recv_eof(c->e);
        return r < 0 ? r : PKM_EEOF;
    }
    return pkm_engine_recv_ack(c->e, (size_t)n);
}

/* Runs a handshake (the first, or a re-establishment) to its end. */
static int bc_handshake(bc_t *c)
{
    for (;;) {
        int r = bc_flush(c);
        if (r < 0) return r;
        if (pkm_engine_state(c->e) == PKM_STATE_ESTABLISHED) return 0;
        if ((r = bc_read(c)) < 0) return r;
    }
}

static int bc_connect(uint16_t port, int rcvbuf, bc_t *c)
{
    int r = bc_open(port, rcvbuf, c);
    return r < 0 ? r : bc_handshake(c);
}

static int bc_send(bc_t *c, uint8_t id, const uint8_t *p, size_t n)
{
    int r = pkm_engine_queue_packet(c->e, id, hash_of(id, p, n), p, n);
    return r < 0 ? r : bc_flush(c);
}

static int bc_recv(bc_t *c, pkm_packet_t *pkt)
{
    for (;;) {
        int r = pkm_engine_next_packet(c->e, pkt);
        if (r != 0) return r;
        if ((r = bc_read(c)) < 0) return r;
    }
}

static int bc_echo(bc_t *c, uint8_t id, const uint8_t *p, size_t n)
{
    int r = bc_send(c, id, p, n);
    pkm_packet_t pk;
    if (r == 0) r = bc_recv(c, &pk);
    if (r < 0) return r;
    assert_int_equal(pk.id, id);
    assert_int_equal(pk.size, n);
    assert_int_equal(pk.hash, hash_of(id, p, n));
    if (n) assert_memory_equal(pk.content, p, n);
    return 0;
}

static void bc_close(bc_t *c)
{
    if (c->fd >= 0) close(c->fd);
    pkm_engine_free(c->e);
    c->fd = -1;
    c->e = NULL;
}

static void bc_reset(bc_t *c)
{
    if (c->fd >= 0) rst_close(c->fd);
    c->fd = -1;
    bc_close(c);
}

/* ---- allocation failures on the server ---- */

/* The victim's whole life: handshake, three echoes (the 600,000-byte one is more than the
 * server's socket takes at once: the rest goes out through an allocated write request), a
 * server-initiated re-establishment (Id 0x05), an echo under the new key. */
static int victim_life(uint16_t port, bc_t *v)
{
    static uint8_t big[600000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 13 + 5);
    int r = bc_connect(port, 0, v);
    if (r == 0) r = bc_echo(v, 0x10, g_data, 5);
    if (r == 0) r = bc_echo(v, 0x11, g_data, 3000);
    if (r == 0) r = bc_echo(v, 0x13, big, sizeof big);
    pkm_packet_t pk;
    if (r == 0) r = bc_send(v, 0x05, g_data, 1);
    if (r == 0) r = bc_recv(v, &pk);
    if (r < 0) return r;
    assert_int_equal(pk.id, 0x05);
    if ((r = pkm_engine_rekey(v->e, (const uint8_t *)SECRET2, strlen(SECRET2))) < 0) return r;
    if ((r = bc_handshake(v)) < 0) return r;
    return bc_echo(v, 0x12, g_data, 100);
}

static void server_alloc_failures(void **state)
{
    (void)state;
    fa_install();
    fa_mark = 1; /* this thread's allocations (the clients' engines) never fail */
    sx_t f;
    sx_start(&f, 0);
    uint16_t port = pkm_server_port(f.srv);
    bc_t by[2]; /* bystanders: established before, served after every fault */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(bc_connect(port, 0, &by[i]), 0);
        assert_int_equal(bc_echo(&by[i], 0x20, g_data, 64), 0);
    }
    int enomem_closes = 0, unadmitted = 0, send_fails = 0;
    long k;
    for (k = 1;; k++) {
        int closes0 = sx_get(&f, &f.closes), logs0 = sx_get(&f, &f.logs_oom);
        int sends0 = sx_get(&f, &f.send_errs);
        /* Counted: every thread but this one, i.e. the loop and the thread pool, during one
         * connection's whole life (the bystanders are idle meanwhile). */
        unsigned ep = fa_arm(k, 1, FA_UNMARKED);
        bc_t v;
        int r = victim_life(port, &v);
        bc_close(&v);
        /* The server is done with the victim: closed it (on_close), or never admitted it. */
        for (int i = 0; i < g_wait / 5; i++) {
            if (sx_get(&f, &f.closes) > closes0 || sx_get(&f, &f.logs_oom) > logs0) break;
            tcl_sleep_ms(5);
        }
        long inj = fa_disarm();
        int closes = sx_get(&f, &f.closes), logs = sx_get(&f, &f.logs_oom);
        if (inj == 0) {
            if (r != 0) fail_msg("victim without a fault: %s", pkm_errname(r));
            assert_int_equal(closes, closes0 + 1);
            assert_int_equal(f.close_err[closes0], PKM_EEOF);
            fa_expect_no_leak(ep, "server", k);
            break;
        }
        if (r == 0) fail_msg("server allocation %ld failed, yet the victim was served", k);
        if (closes == closes0 + 1 && f.close_err[closes0] == PKM_ENOMEM) {
            enomem_closes++; /* the usual case: on_close(PKM_ENOMEM), step named if any */
        } else if (closes == closes0 && logs == logs0 + 1) {
            unadmitted++; /* the connection or its engine could not be made: closed at once */
        } else if (closes == closes0 + 1 && f.close_err[closes0] == 0 &&
                   sx_get(&f, &f.send_errs) == sends0 + 1 && f.last_send_err == PKM_ENOMEM) {
            send_fails++; /* pkm_server_send said PKM_ENOMEM; the application closed it */
        } else {
            fail_msg("server allocation %ld: victim %s, closes %d -> %d (err %s, step '%s'), "
                     "oom logs %d -> %d",
                     k, pkm_errname(r), closes0, closes,
                     closes > closes0 ? pkm_errname(f.close_err[closes0]) : "-",
                     closes > closes0 ? f.close_step[closes0] : "-", logs0, logs);
        }
        fa_expect_no_leak(ep, "server", k);
        /* The fault cost only the victim. */
        for (int i = 0; i < 2; i++)
            assert_int_equal(bc_echo(&by[i], (uint8_t)(0x21 + i), g_data, 2000), 0);
        sx_wait_open(&f, 2);
    }
    assert_true(k > 8);
    assert_true(enomem_closes > 0 && unadmitted > 0);
    bc_t fresh;
    assert_int_equal(bc_connect(port, 0, &fresh), 0);
    assert_int_equal(bc_echo(&fresh, 0x30, g_data, 10), 0);
    bc_close(&fresh);
    for (int i = 0; i < 2; i++)
        bc_close(&by[i]);
    sx_wait_open(&f, 0);
    sx_stop(&f);
    fa_mark = 0;
    assert_int_equal(fa_live(0), 0);
    fa_restore();
    printf("server: %ld runs (%d closed with PKM_ENOMEM, %d not admitted, %d sends failed)\n", k,
           enomem_closes, unadmitted, send_fails);
}

/* A burst of failures while connections arrive: every one is still accepted and closed (none is
 * left in the backlog), and once memory is back the server serves again. */
static void server_oom_burst_at_accept(void **state)
{
    (void)state;
    fa_install();
    fa_mark = 1;
    sx_t f;
    sx_start(&f, 0);
    uint16_t port = pkm_server_port(f.srv);
    bc_t g;
    assert_int_equal(bc_connect(port, 0, &g), 0);
    unsigned ep = fa_arm(1, 1000000, FA_UNMARKED); /* every server allocation fails */
    /* Several at once, so that some arrive while the spare handle is still closing. */
    int fds[8];
    for (int i = 0; i < 8; i++)
        assert_true((fds[i] = raw_connect(port, 0)) >= 0);
    for (int i = 0; i < 8; i++) {
        if (!closed_by_peer(fds[i])) fail_msg("connection %d accepted during OOM not closed", i);
        close(fds[i]);
    }
    assert_true(fa_disarm() >= 8);
    fa_expect_no_leak(ep, "server burst", 1);
    assert_int_equal(sx_get(&f, &f.closes), 0); /* none was admitted: no callback */
    bc_t fresh;
    assert_int_equal(bc_connect(port, 0, &fresh), 0);
    assert_int_equal(bc_echo(&fresh, 0x31, g_data, 10), 0);
    assert_int_equal(bc_echo(&g, 0x32, g_data, 10), 0);
    bc_close(&fresh);
    bc_close(&g);
    sx_wait_open(&f, 0);
    sx_stop(&f);
    fa_mark = 0;
    assert_int_equal(fa_live(0), 0);
    fa_restore();
}

/* ---- misbehaving clients ---- */

typedef struct flood {
    uint16_t port;
    int established, dropped;
    size_t sent;
} flood_t;

/* A client that sends and never reads: the server's queue for it overflows and it is dropped. */
static void *flood_thread(void *arg)
{
    flood_t *fl = arg;
    bc_t c;
    if (bc_connect(fl->port, 4096, &c) != 0) {
        bc_close(&c);
        return NULL;
    }
    fl->established = 1;
    static uint8_t payload[16384];
    while (fl->sent < (64u << 20)) {
        if (pkm_engine_queue_packet(c.e, 0x50, 0, payload, sizeof payload) < 0) break;
        if (bc_flush(&c) < 0) {
            fl->dropped = 1;
            break;
        }
        fl->sent += sizeof payload;
    }
    bc_close(&c);
    return NULL;
}

/* Reads the whole ServerKey message from fd. */
static void read_server_key(int fd)
{
    uint8_t hdr[4], body[PKM_MAX_KEY_DER];
    size_t got = 0;
    while (got < 4) {
        assert_true(wait_fd(fd, POLLIN));
        ssize_t n = recv(fd, hdr + got, 4 - got, 0);
        assert_true(n > 0);
        got += (size_t)n;
    }
    size_t len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
    assert_true(len > 0 && len <= sizeof body);
    for (got = 0; got < len;) {
        assert_true(wait_fd(fd, POLLIN));
        ssize_t n = recv(fd, body + got, len - got, 0);
        assert_true(n > 0);
        got += (size_t)n;
    }
}

/* The close recorded i-th. */
static void expect_close(sx_t *f, int i, int err1, int err2, const char *step)
{
    pthread_mutex_lock(&f->mu);
    int err = f->close_err[i];
    char st[24];
    snprintf(st, sizeof st, "%s", f->close_step[i]);
    pthread_mutex_unlock(&f->mu);
    if (err != err1 && err != err2)
        fail_msg("close %d: %s, expected %s or %s", i, pkm_errname(err), pkm_errname(err1),
                 pkm_errname(err2));
    if (step && strcmp(st, step) != 0) fail_msg("close %d: step '%s', expected '%s'", i, st, step);
}

static void server_bad_clients(void **state)
{
    (void)state;
    sx_t f;
    sx_start(&f, 64 * 1024);
    uint16_t port = pkm_server_port(f.srv);
    bc_t g; /* the well-behaved client, served throughout */
    assert_int_equal(bc_connect(port, 0, &g), 0);
    assert_int_equal(bc_echo(&g, 0x60, g_data, 100), 0);
    int silent = raw_connect(port, 0); /* connected, never says a word: a live client too */
    assert_true(silent >= 0);
    int n = 0; /* closes expected so far */

    /* Garbage: a ClientKey whose 300 DER bytes are not a key; a length prefix out of range. */
    int fd = raw_connect(port, 0);
    uint8_t junk[304] = {0x00, 0x00, 0x01, 0x2C};
    for (size_t i = 4; i < sizeof junk; i++)
        junk[i] = (uint8_t)(i * 37 + 11);
    assert_int_equal(send(fd, junk, sizeof junk, MSG_NOSIGNAL), (ssize_t)sizeof junk);
    assert_true(closed_by_peer(fd));
    close(fd);
    sx_wait_closes(&f, ++n);
    expect_close(&f, n - 1, PKM_EKEY, PKM_EKEY, "ClientKey");
    fd = raw_connect(port, 0);
    assert_int_equal(send(fd, "\x7f\xff\xff\xffgarbage", 11, MSG_NOSIGNAL), 11);
    assert_true(closed_by_peer(fd));
    close(fd);
    sx_wait_closes(&f, ++n);
    expect_close(&f, n - 1, PKM_EKEYLEN, PKM_EKEYLEN, "ClientKey");
    assert_int_equal(bc_echo(&g, 0x61, g_data, 1000), 0);

    /* Reset in the middle of the ClientKey. */
    fd = raw_connect(port, 0);
    read_server_key(fd);
    uint8_t der[PKM_MAX_KEY_DER + 4];
    int dl = pkm_key_public_der(g_ckey, der + 4, PKM_MAX_KEY_DER);
    assert_true(dl > 100);
    der[0] = 0, der[1] = 0, der[2] = (uint8_t)(dl >> 8), der[3] = (uint8_t)dl;
    assert_int_equal(send(fd, der, 100, MSG_NOSIGNAL), 100);
    tcl_sleep_ms(20);
    rst_close(fd);
    sx_wait_closes(&f, ++n);
    expect_close(&f, n - 1, PKM_ECONNRESET, PKM_EHANDSHAKE, "ClientKey");

    /* Reset right after ClientKey + KeyShare: the server's work for it is on the thread pool. */
    bc_t h;
    assert_int_equal(bc_open(port, 0, &h), 0);
    while (pkm_engine_send_buf(h.e, &(size_t){0}) == NULL)
        assert_int_equal(bc_read(&h), 0);
    assert_int_equal(bc_flush(&h), 0);
    bc_reset(&h);
    sx_wait_closes(&f, ++n);
    expect_close(&f, n - 1, PKM_ECONNRESET, PKM_EHANDSHAKE, NULL);
    assert_true(f.close_step[n - 1][0] != '\0'); /* "KeyShare" or "confirmation (0xFF)" */
    assert_int_equal(bc_echo(&g, 0x62, g_data, 1000), 0);

    /* Reset in the middle of a packet. */
    assert_int_equal(bc_connect(port, 0, &h), 0);
    assert_int_equal(pkm_engine_queue_packet(h.e, 0x63, hash_of(0x63, g_data, 5000), g_data, 5000),
                     0);
    size_t len = 0;
    const uint8_t *p = pkm_engine_send_buf(h.e, &len);
    assert_int_equal(send(h.fd, p, len / 2, MSG_NOSIGNAL), (ssize_t)(len / 2));
    tcl_sleep_ms(20);
    bc_reset(&h);
    sx_wait_closes(&f, ++n);
    expect_close(&f, n - 1, PKM_ECONNRESET, PKM_EPROTO, "");

    /* Garbage inside the channel: a block whose padding is wrong. */
    assert_int_equal(bc_connect(port, 0, &h), 0);
    static const uint8_t bad_pad[16] = {0x64, 0, 0, 0, 0, 0, 0, 0, 0, 7, 7, 7, 7, 7, 7, 1};
    assert_int_equal(pkm__engine_queue_raw(h.e, bad_pad, sizeof bad_pad), 0);
    assert_int_equal(bc_flush(&h), 0);
    assert_true(closed_by_peer(h.fd));
    bc_close(&h);
    sx_wait_closes(&f, ++n);
    expect_close(&f, n - 1, PKM_EPADDING, PKM_EPADDING, "");

    /* A client that stops reading, while the good one keeps being served. */
    flood_t fl = {port, 0, 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, flood_thread, &fl), 0);
    for (int i = 0; i < 20; i++)
        assert_int_equal(bc_echo(&g, (uint8_t)(0x70 + i), g_data, 3000), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(fl.established);
    assert_true(fl.dropped);
    sx_wait_closes(&f, ++n);
    expect_close(&f, n - 1, PKM_EQUEUE, PKM_EQUEUE, "");

    /* Every misbehaving connection is gone; the two live clients remain. */
    sx_wait_open(&f, 2);
    assert_int_equal(bc_echo(&g, 0x65, g_data, 30000), 0); /* below the 64 KiB queue */
    bc_t fresh;
    assert_int_equal(bc_connect(port, 0, &fresh), 0);
    assert_int_equal(bc_echo(&fresh, 0x66, g_data, 17), 0);
    bc_close(&fresh);
    sx_wait_closes(&f, ++n);
    expect_close(&f, n - 1, PKM_EEOF, PKM_EEOF, "");
    sx_wait_open(&f, 2);
    close(silent);
    sx_wait_closes(&f, ++n);
    expect_close(&f, n - 1, PKM_EHANDSHAKE, PKM_ECONNRESET, "ClientKey");
    bc_close(&g);
    sx_wait_closes(&f, ++n);
    sx_wait_open(&f, 0);
    pkm_server_stats_t st;
    pkm_server_stats(f.srv, &st);
    assert_int_equal(st.handshakes_failed, 5); /* 2 garbage, 2 resets, the silent one */
    assert_int_equal(st.dropped_queue, 1);
    assert_int_equal(st.accepted, (uint64_t)n);
    sx_stop(&f);
}

/* argv[1], if given, selects tests by name (cmocka's filter: '*' wildcards). */
int main(int argc, char **argv)
{
    if (argc > 1) cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(allocator_hook_args),        cmocka_unit_test(engine_alloc_failures),
        cmocka_unit_test(codec_alloc_failures),       cmocka_unit_test(conn_alloc_failures),
        cmocka_unit_test(io_faults_channel),          cmocka_unit_test(io_faults_rekey),
        cmocka_unit_test(server_bad_clients),         cmocka_unit_test(server_alloc_failures),
        cmocka_unit_test(server_oom_burst_at_accept),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
