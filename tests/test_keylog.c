/* SPDX-License-Identifier: MIT */
/* Tests of the key log: the config callback, PKMCOM_KEYLOGFILE (mode 0600, line format, nothing
 * without the variable), the line parser, and the stream decoder reading captured transcripts. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "support.h"
#include "pkmcom/keylog.h"

#define MAXE 4

typedef struct {
    pkm_keylog_entry_t e[MAXE];
    int n;
} entries_t;

static void klog_cb(void *ctx, const pkm_keylog_entry_t *ent)
{
    entries_t *k = ctx;
    if (k->n < MAXE) k->e[k->n] = *ent;
    k->n++;
}

static pkm_engine_t *engine_with_cb(int client, entries_t *k, const char *secret)
{
    /* t_client/t_server build the engine; rebuild the config here to set the callback. */
    pkm_engine_config_t cfg;
    pkm_engine_config_init(&cfg, client ? PKM_ROLE_CLIENT : PKM_ROLE_SERVER);
    if (client)
        cfg.client_key = t_client_key(&t_shared_keys);
    else
        cfg.server_key = t_shared_keys.server_key;
    if (secret) {
        cfg.secret = (const uint8_t *)secret;
        cfg.secret_len = strlen(secret);
    }
    cfg.keylog_fn = k ? klog_cb : NULL;
    cfg.keylog_ctx = k;
    pkm_engine_t *e = NULL;
    assert_int_equal(pkm_engine_new(&cfg, &e), 0);
    return e;
}

static void send_pkt(pkm_engine_t *from, uint8_t id, const char *text)
{
    size_t n = strlen(text);
    assert_int_equal(pkm_engine_queue_packet(from, id, pkm_hashsum_bytes((const uint8_t *)text, n),
                                             (const uint8_t *)text, n),
                     0);
}

static void take_pkt(pkm_engine_t *to, uint8_t id)
{
    pkm_packet_t pkt;
    assert_int_equal(pkm_engine_next_packet(to, &pkt), 1);
    assert_int_equal(pkt.id, id);
}

/* Decodes a whole transcript of one direction; returns the packets (other than 0xFF) found. */
typedef struct {
    uint8_t id[16];
    char text[16][64];
    int n, keyshares, keyshares_found, confirms, opaque, errors;
} decoded_t;

/* After `switch_after` units (0: never), the decoder is given the key log `later`. */
static void decode2(const pkm_keylog_t *kl, int dir, const uint8_t *p, size_t n, size_t step,
                    decoded_t *out, int switch_after, const pkm_keylog_t *later);

static void decode(const pkm_keylog_t *kl, int dir, const uint8_t *p, size_t n, size_t step,
                   decoded_t *out)
{
    decode2(kl, dir, p, n, step, out, 0, NULL);
}

static void decode2(const pkm_keylog_t *kl, int dir, const uint8_t *p, size_t n, size_t step,
                    decoded_t *out, int switch_after, const pkm_keylog_t *later)
{
    int units = 0;
    memset(out, 0, sizeof *out);
    pkm_streamdec_t *d = NULL;
    assert_int_equal(pkm_streamdec_new(kl, dir, 0, &d), 0);
    size_t pos = 0, avail = 0;
    while (pos < n) {
        /* Bytes arrive `step` at a time (0: all at once), as TCP segments would. */
        avail = step ? (avail + step > n - pos ? n - pos : avail + step) : n - pos;
        size_t need = 0, len = pkm_streamdec_next_len(d, p + pos, avail, &need);
        if (len == 0 || len > avail) {
            assert_true(avail < n - pos); /* more bytes will tell */
            continue;
        }
        uint8_t *plain = malloc(len);
        assert_non_null(plain);
        pkm_unit_t u;
        assert_int_equal(pkm_streamdec_take(d, p + pos, len, plain, &u), 0);
        assert_int_equal(u.len, len);
        if (u.kind == PKM_UNIT_KEYSHARE) {
            assert_int_equal(u.rekey, out->keyshares > 0);
            out->keyshares++;
            if (u.entry) out->keyshares_found++;
        } else if (u.kind == PKM_UNIT_RECORD) {
            if (u.err) {
                out->errors++;
            } else if (u.pkt.id == PKM_HANDSHAKE_ID) {
                out->confirms++;
            } else if (out->n < 16) {
                out->id[out->n] = u.pkt.id;
                assert_true(u.pkt.size < 64);
                memcpy(out->text[out->n], u.pkt.content, u.pkt.size);
                if (u.pkt.id != 0x05)
                    assert_int_equal(u.pkt.hash, pkm_hashsum_bytes(u.pkt.content, u.pkt.size));
                out->n++;
            }
        } else if (u.kind == PKM_UNIT_OPAQUE) {
            out->opaque++;
        }
        free(plain);
        pos += len;
        avail -= len;
        if (++units == switch_after) pkm_streamdec_set_keylog(d, later);
    }
    pkm_streamdec_free(d);
}

/* One session with a secret, two packets each way, a re-establishment, one more each way. */
static void session(entries_t *kc, entries_t *ks, t_pump *p)
{
    pkm_engine_t *c = engine_with_cb(1, kc, "pw"), *s = engine_with_cb(0, ks, "pw");
    t_pump_init(p, c, s, 0);
    p->record = 1;
    t_pump_run(p);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    send_pkt(c, 0x20, "hello");
    send_pkt(s, 0x21, "world");
    t_pump_run(p);
    take_pkt(s, 0x20);
    take_pkt(c, 0x21);
    uint8_t reason = 0;
    assert_int_equal(pkm_engine_queue_packet(s, 0x05, pkm_packet_hash(0x05, 0), &reason, 1), 0);
    assert_int_equal(pkm_engine_rekey(s, NULL, 0), 0);
    t_pump_run(p);
    take_pkt(c, 0x05);
    assert_int_equal(pkm_engine_rekey(c, NULL, 0), 0);
    t_pump_run(p);
    assert_int_equal(pkm_engine_state(c), PKM_STATE_ESTABLISHED);
    assert_int_equal(pkm_engine_state(s), PKM_STATE_ESTABLISHED);
    send_pkt(c, 0x22, "after");
    send_pkt(s, 0x23, "rekey");
    t_pump_run(p);
    take_pkt(s, 0x22);
    take_pkt(c, 0x23);
    pkm_engine_free(c);
    pkm_engine_free(s);
}

static void callback_decrypts_capture(void **state)
{
    (void)state;
    entries_t kc = {0}, ks = {0};
    t_pump p;
    session(&kc, &ks, &p);
    assert_int_equal(kc.n, 2);
    assert_int_equal(ks.n, 2);
    /* Both sides log the same entries; the two derivations differ. */
    assert_memory_equal(&kc.e[0], &ks.e[0], sizeof kc.e[0]);
    assert_memory_equal(&kc.e[1], &ks.e[1], sizeof kc.e[1]);
    assert_memory_not_equal(kc.e[0].k_cs, kc.e[1].k_cs, 32);
    assert_memory_not_equal(kc.e[0].k_cs, kc.e[0].k_sc, 32);

    char text[2 * PKM_KEYLOG_LINE_SIZE + 64];
    char l0[PKM_KEYLOG_LINE_SIZE], l1[PKM_KEYLOG_LINE_SIZE];
    pkm_keylog_format(&kc.e[0], l0);
    pkm_keylog_format(&kc.e[1], l1);
    snprintf(text, sizeof text, "# comment\n\nOTHER_LABEL 00\n%s%s", l0, l1);
    pkm_keylog_t *kl = NULL;
    size_t bad = 9;
    assert_int_equal(pkm_keylog_parse(text, strlen(text), &kl, &bad), 0);
    assert_int_equal(bad, 0);
    assert_int_equal(pkm_keylog_count(kl), 2);

    /* The client's KeyShare IV is the last 16 bytes of its first 4+294+528 bytes. */
    assert_true(p.log_ab_len >= 4 + 294 + 528);
    assert_memory_equal(p.log_ab + 4 + 294 + 512, kc.e[0].client_iv, 16);

    static const size_t steps[] = {0, 1, 7, 100};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        decoded_t cs, sc;
        decode(kl, PKM_DIR_C2S, p.log_ab, p.log_ab_len, steps[i], &cs);
        decode(kl, PKM_DIR_S2C, p.log_ba, p.log_ba_len, steps[i], &sc);
        assert_int_equal(cs.keyshares, 2);
        assert_int_equal(cs.keyshares_found, 2);
        assert_int_equal(sc.keyshares, 2);
        assert_int_equal(sc.keyshares_found, 2);
        assert_int_equal(cs.confirms, 2);
        assert_int_equal(sc.confirms, 2);
        assert_int_equal(cs.opaque + sc.opaque, 0);
        assert_int_equal(cs.errors + sc.errors, 0);
        assert_int_equal(cs.n, 2);
        assert_int_equal(cs.id[0], 0x20);
        assert_string_equal(cs.text[0], "hello");
        assert_int_equal(cs.id[1], 0x22);
        assert_string_equal(cs.text[1], "after");
        assert_int_equal(sc.n, 3);
        assert_int_equal(sc.id[0], 0x21);
        assert_string_equal(sc.text[0], "world");
        assert_int_equal(sc.id[1], 0x05);
        assert_int_equal(sc.id[2], 0x23);
        assert_string_equal(sc.text[2], "rekey");
    }

    /* Without the second line the re-establishment is not followed: the client's new KeyShare
     * reads as a record with a bad header, and the rest is opaque. */
    pkm_keylog_t *kl1 = NULL;
    assert_int_equal(pkm_keylog_parse(l0, strlen(l0), &kl1, NULL), 0);
    decoded_t cs;
    decode(kl1, PKM_DIR_C2S, p.log_ab, p.log_ab_len, 0, &cs);
    /* (The KeyShare's first block read as a header has a Size within the limit with
     * probability 2^-12: then random bytes follow, so only what cannot happen is asserted.) */
    assert_true(cs.n >= 1);
    assert_string_equal(cs.text[0], "hello");
    for (int i = 1; i < cs.n && i < 16; i++)
        assert_string_not_equal(cs.text[i], "after");
    assert_true(cs.errors + cs.opaque > 0);
    /* The key log read again once the first session's line alone had been used (a live
     * capture): the re-establishment is followed. ClientKey, KeyShare, 0xFF, "hello" = 4 units. */
    decode2(kl1, PKM_DIR_C2S, p.log_ab, p.log_ab_len, 0, &cs, 4, kl);
    assert_int_equal(cs.n, 2);
    assert_string_equal(cs.text[1], "after");
    assert_int_equal(cs.keyshares_found, 2);
    /* Without a key log nothing is decrypted. */
    decode(NULL, PKM_DIR_S2C, p.log_ba, p.log_ba_len, 0, &cs);
    assert_int_equal(cs.n, 0);
    assert_int_equal(cs.keyshares_found, 0);
    assert_true(cs.opaque > 0);
    pkm_keylog_free(kl1);
    pkm_keylog_free(kl);
    t_pump_done(&p);
}

static int is_lower_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return 0;
    return 1;
}

static void env_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/pkm_keylog_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/keys.log", dir);

    /* Without the variable: no file. */
    unsetenv(PKM_KEYLOG_ENV);
    entries_t kc = {0}, ks = {0};
    t_pump p;
    session(&kc, &ks, &p);
    t_pump_done(&p);
    struct stat st;
    assert_int_equal(stat(path, &st), -1);

    /* With it: the file, mode 0600, two lines per engine (client and server both log). */
    umask(022);
    assert_int_equal(setenv(PKM_KEYLOG_ENV, path, 1), 0);
    memset(&kc, 0, sizeof kc);
    memset(&ks, 0, sizeof ks);
    session(&kc, &ks, &p);
    t_pump_done(&p);
    unsetenv(PKM_KEYLOG_ENV);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        assert_int_equal(strlen(line), PKM_KEYLOG_LINE_SIZE - 1);
        assert_memory_equal(line, "PKMCOM_KEYS_V2 ", 15);
        size_t off = 15;
        static const size_t w[4] = {32, 64, 64, 32};
        for (int i = 0; i < 4; i++) {
            assert_true(is_lower_hex(line + off, w[i]));
            off += w[i];
            assert_int_equal(line[off], i == 3 ? '\n' : ' ');
            off++;
        }
        pkm_keylog_entry_t e;
        assert_int_equal(pkm_keylog_parse_line(line, strlen(line), &e), 1);
        /* Lines come in the order the derivations completed; each is one of the two. */
        assert_true(memcmp(&e, &kc.e[0], sizeof e) == 0 || memcmp(&e, &kc.e[1], sizeof e) == 0);
        n++;
    }
    fclose(f);
    assert_int_equal(n, 4);
    unlink(path);
    rmdir(dir);
}

static void parse_lines(void **state)
{
    (void)state;
    pkm_keylog_entry_t e, back;
    for (size_t i = 0; i < sizeof e; i++)
        ((uint8_t *)&e)[i] = (uint8_t)(i * 7 + 1);
    char l[PKM_KEYLOG_LINE_SIZE];
    pkm_keylog_format(&e, l);
    assert_int_equal(strlen(l), PKM_KEYLOG_LINE_SIZE - 1);
    assert_int_equal(pkm_keylog_parse_line(l, strlen(l), &back), 1);
    assert_memory_equal(&e, &back, sizeof e);
    assert_int_equal(pkm_keylog_parse_line("", 0, &back), 0);
    assert_int_equal(pkm_keylog_parse_line("# x\n", 4, &back), 0);
    assert_int_equal(pkm_keylog_parse_line("PKMCOM_KEYS_V3 00", 17, &back), 0);
    /* A V2 line one digit short, or with an extra word, or with a non-hex digit, is malformed. */
    char m[2 * PKM_KEYLOG_LINE_SIZE];
    memcpy(m, l, strlen(l) - 2);
    m[strlen(l) - 2] = '\n';
    assert_int_equal(pkm_keylog_parse_line(m, strlen(l) - 1, &back), PKM_EINVAL);
    snprintf(m, sizeof m, "%.*s x\n", (int)(strlen(l) - 1), l);
    assert_int_equal(pkm_keylog_parse_line(m, strlen(m), &back), PKM_EINVAL);
    memcpy(m, l, strlen(l) + 1);
    m[20] = 'g';
    assert_int_equal(pkm_keylog_parse_line(m, strlen(m), &back), PKM_EINVAL);
    /* Upper-case hex and CRLF are accepted. */
    memcpy(m, l, strlen(l) + 1);
    for (char *c = m + 15; *c; c++)
        if (*c >= 'a' && *c <= 'f') *c = (char)(*c - 'a' + 'A');
    memcpy(m + strlen(m) - 1, "\r\n", 3);
    assert_int_equal(pkm_keylog_parse_line(m, strlen(m), &back), 1);
    assert_memory_equal(&e, &back, sizeof e);
    /* find: by client IV for c2s, by iv ^ client_iv for s2c. */
    pkm_keylog_t *kl = NULL;
    size_t bad = 0;
    snprintf(m, sizeof m, "%sPKMCOM_KEYS_V2 zz\n", l);
    assert_int_equal(pkm_keylog_parse(m, strlen(m), &kl, &bad), 0);
    assert_int_equal(bad, 1);
    assert_int_equal(pkm_keylog_count(kl), 1);
    uint8_t siv[16];
    for (int i = 0; i < 16; i++)
        siv[i] = e.iv[i] ^ e.client_iv[i];
    assert_ptr_equal(pkm_keylog_find(kl, PKM_DIR_C2S, e.client_iv), pkm_keylog_get(kl, 0));
    assert_ptr_equal(pkm_keylog_find(kl, PKM_DIR_S2C, siv), pkm_keylog_get(kl, 0));
    assert_null(pkm_keylog_find(kl, PKM_DIR_S2C, e.client_iv));
    pkm_keylog_free(kl);
    assert_int_equal(pkm_keylog_load("/nonexistent/keys.log", &kl, NULL), PKM_EKEYFILE);
    assert_null(kl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_lines),
        cmocka_unit_test(callback_decrypts_capture),
        cmocka_unit_test(env_file),
    };
    return cmocka_run_group_tests(tests, t_keys_setup, t_keys_teardown);
}
