/* SPDX-License-Identifier: MIT */
/* Tests of the RSA-2048 key module: DER SubjectPublicKeyInfo layout and checks, the fingerprint
 * known answer, PEM files and their permissions, and the background key pool. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "support.h"
#include "support/clients.h"
#include "pkmcom/keys.h"
#include "keys_internal.h"

/* Fingerprint of tests/data/server_key.pem, computed with the openssl CLI, not with this code:
 *   openssl pkey -in tests/data/server_key.pem -pubout -outform DER \
 *     | openssl dgst -sha256 -binary | base64 | tr -d '='                                    */
#define SERVER_FP "SHA256:rikkmtK1VuNqvTFXRwTHwTAkCsHdIiJrfKW7Zw0zkDw"

/* The first 24 bytes of every RSA-2048 SubjectPublicKeyInfo whose modulus has its top bit set
 * (always, for exactly 2048 bits) and whose exponent is 65537, worked out by hand:
 *   RSAPublicKey = SEQUENCE { INTEGER n, INTEGER e }
 *     n: 256 bytes, top bit set, so a 00 byte is prepended: 257 = 0x101 -> 02 82 01 01 + 257 = 261
 *     e: 65537 = 01 00 01 -> 02 03 01 00 01 = 5
 *     content 266 = 0x10a -> 30 82 01 0a + 266 = 270
 *   subjectPublicKey BIT STRING: 00 (no unused bits) + 270 = 271 = 0x10f -> 03 82 01 0f 00 .. = 275
 *   AlgorithmIdentifier: OID rsaEncryption 1.2.840.113549.1.1.1 = 06 09 2a 86 48 86 f7 0d 01 01 01
 *     (11) + parameters NULL 05 00 (2) = 13 = 0x0d -> 30 0d .. = 15
 *   SubjectPublicKeyInfo: content 15 + 275 = 290 = 0x122 -> 30 82 01 22 .. = 294 bytes.        */
static const char SPKI_PREFIX[] = "30 82 01 22 30 0d 06 09 2a 86 48 86 f7 0d 01 01 01 05 00"
                                  " 03 82 01 0f 00";

/* State shared by the tests: one generated key (keygen is slow) and a scratch directory. */
static pkm_key_t *g_key;
static char g_dir[256];

/* Removes the (flat) scratch directory and everything in it. */
static void rm_scratch(void)
{
    DIR *d = opendir(g_dir);
    if (d == NULL) return;
    struct dirent *e;
    char p[600];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(g_dir);
}

static int group_setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/pkm_test_keys_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(g_dir) == NULL) return -1;
    return pkm_key_generate(&g_key) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    pkm_key_free(g_key);
    rm_scratch();
    return 0;
}

/* A path in the scratch directory. */
static const char *tpath(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", g_dir, name);
    return buf;
}

/* A path in tests/data. */
static const char *dpath(char *buf, size_t cap, const char *name)
{
    const char *src = getenv("PKM_SOURCE_DIR");
    snprintf(buf, cap, "%s/tests/data/%s", src ? src : ".", name);
    return buf;
}

/* Reads a file into a malloc'd buffer. */
static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t *buf = malloc(1 << 16);
    assert_non_null(buf);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

/* Writes bytes to path, then sets exactly `mode`. */
static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* Copies tests/data/<name> into the scratch directory with `mode`; returns the copy's path. */
static const char *copy_data(char *buf, size_t cap, const char *name, const char *as, mode_t mode)
{
    char src[512];
    size_t len;
    uint8_t *data = slurp(dpath(src, sizeof src, name), &len);
    assert_true(len > 0);
    tpath(buf, cap, as);
    write_file(buf, data, len, mode);
    free(data);
    return buf;
}

static mode_t file_mode(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

static void fingerprint_of(const pkm_key_t *k, char fp[PKM_FINGERPRINT_SIZE])
{
    assert_int_equal(pkm_key_fingerprint(k, fp), 0);
    assert_int_equal(strlen(fp), PKM_FINGERPRINT_SIZE - 1);
}

/* The modulus of the shared key. */
static BIGNUM *g_modulus(void)
{
    BIGNUM *n = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pkm__key_evp(g_key), OSSL_PKEY_PARAM_RSA_N, &n), 1);
    assert_int_equal(BN_num_bits(n), 2048);
    return n;
}

/* from_der on DER built from (n, e): the expected result. */
static void expect_ne_bn(const char *alg, const BIGNUM *n, const BIGNUM *e, int want)
{
    uint8_t der[1100];
    size_t len = t_spki_from_ne(alg, n, e, der, sizeof der);
    pkm_key_t *k = NULL;
    int rc = pkm_key_from_der(der, len, &k);
    if (rc != want)
        print_error("alg %s, e of %d bits, n of %d bits: got %s\n", alg, BN_num_bits(e),
                    BN_num_bits(n), pkm_errname(rc));
    assert_int_equal(rc, want);
    if (want == 0) {
        assert_non_null(k);
        assert_int_equal(pkm_key_is_private(k), 0);
    } else {
        assert_null(k);
    }
    pkm_key_free(k);
}

static void expect_ne(const char *alg, const BIGNUM *n, unsigned long e_word, int want)
{
    BIGNUM *e = BN_new();
    assert_non_null(e);
    assert_int_equal(BN_set_word(e, e_word), 1);
    expect_ne_bn(alg, n, e, want);
    BN_free(e);
}

/* ------------------------------------------------------------------------------------------ */

static void generate_der_layout(void **state)
{
    (void)state;
    assert_int_equal(pkm_key_is_private(g_key), 1);
    uint8_t der[PKM_MAX_KEY_DER];
    assert_int_equal(pkm_key_public_der(g_key, NULL, 0), 294);
    assert_int_equal(pkm_key_public_der(g_key, der, sizeof der), 294);
    uint8_t prefix[24];
    assert_int_equal(t_unhex(SPKI_PREFIX, prefix, sizeof prefix), 24);
    assert_memory_equal(der, prefix, 24);
    /* ... and the tail: the modulus, 02 03 01 00 01 (e = 65537). */
    static const uint8_t tail[5] = {0x02, 0x03, 0x01, 0x00, 0x01};
    assert_memory_equal(der + 289, tail, 5);
    /* after the prefix: 30 82 01 0a (RSAPublicKey), 02 82 01 01 (n), the 00 pad, and then the
     * modulus's first byte, whose top bit is set */
    assert_int_equal(der[24], 0x30);
    assert_int_equal(der[28], 0x02);
    assert_int_equal(der[32], 0x00);
    assert_true(der[33] >= 0x80);
    /* the internal accessor returns the same cached bytes */
    size_t ilen = 0;
    const uint8_t *ider = pkm__key_der(g_key, &ilen);
    assert_int_equal(ilen, 294);
    assert_memory_equal(ider, der, 294);
    assert_non_null(pkm__key_evp(g_key));
    /* buffer sizes */
    assert_int_equal(pkm_key_public_der(g_key, der, 293), PKM_ENOSPC);
    assert_int_equal(pkm_key_public_der(g_key, NULL, 10), PKM_EINVAL);
    assert_int_equal(pkm_key_public_der(NULL, der, sizeof der), PKM_EINVAL);
    assert_int_equal(pkm_key_generate(NULL), PKM_EINVAL);
}

static void der_round_trip(void **state)
{
    (void)state;
    uint8_t der[PKM_MAX_KEY_DER], der2[PKM_MAX_KEY_DER];
    int len = pkm_key_public_der(g_key, der, sizeof der);
    assert_int_equal(len, 294);
    pkm_key_t *pub = NULL;
    assert_int_equal(pkm_key_from_der(der, (size_t)len, &pub), 0);
    assert_int_equal(pkm_key_is_private(pub), 0);
    assert_int_equal(pkm_key_public_der(pub, der2, sizeof der2), 294);
    assert_memory_equal(der, der2, 294);
    char a[PKM_FINGERPRINT_SIZE], b[PKM_FINGERPRINT_SIZE];
    fingerprint_of(g_key, a);
    fingerprint_of(pub, b);
    assert_string_equal(a, b);
    /* a public key cannot be saved as a private one */
    char p[512];
    assert_int_equal(pkm_key_save_pem(pub, tpath(p, sizeof p, "pub_as_priv.pem")), PKM_EINVAL);
    assert_int_equal(access(p, F_OK), -1);
    pkm_key_free(pub);
}

static void fingerprint_known_answer(void **state)
{
    (void)state;
    char p[512], fp[PKM_FINGERPRINT_SIZE];
    pkm_key_t *k = NULL;

    /* public PEM, straight from tests/data (its mode does not matter) */
    assert_int_equal(pkm_key_load_pem(dpath(p, sizeof p, "server_key.pub.pem"), &k), 0);
    assert_int_equal(pkm_key_is_private(k), 0);
    fingerprint_of(k, fp);
    assert_string_equal(fp, SERVER_FP);
    /* its DER is byte for byte what `openssl pkey -pubout -outform DER` wrote */
    size_t flen;
    uint8_t *fder = slurp(dpath(p, sizeof p, "server_key.pub.der"), &flen);
    assert_int_equal(flen, 294);
    uint8_t der[PKM_MAX_KEY_DER];
    assert_int_equal(pkm_key_public_der(k, der, sizeof der), 294);
    assert_memory_equal(der, fder, 294);
    pkm_key_free(k);

    /* the same key from that DER */
    assert_int_equal(pkm_key_from_der(fder, flen, &k), 0);
    fingerprint_of(k, fp);
    assert_string_equal(fp, SERVER_FP);
    pkm_key_free(k);
    free(fder);

    /* the private key, PKCS#8 and traditional, copied with mode 0600 */
    const char *names[2] = {"server_key.pem", "server_key_traditional.pem"};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pkm_key_load_pem(copy_data(p, sizeof p, names[i], names[i], 0600), &k), 0);
        assert_int_equal(pkm_key_is_private(k), 1);
        fingerprint_of(k, fp);
        assert_string_equal(fp, SERVER_FP);
        pkm_key_free(k);
    }
    assert_int_equal(pkm_key_fingerprint(NULL, fp), PKM_EINVAL);
}

static void save_load_round_trip(void **state)
{
    (void)state;
    char p[512], a[PKM_FINGERPRINT_SIZE], b[PKM_FINGERPRINT_SIZE];
    fingerprint_of(g_key, a);
    assert_int_equal(pkm_key_save_pem(g_key, tpath(p, sizeof p, "saved.pem")), 0);
    assert_int_equal(file_mode(p), 0600);
    pkm_key_t *k = NULL;
    assert_int_equal(pkm_key_load_pem(p, &k), 0);
    assert_int_equal(pkm_key_is_private(k), 1);
    fingerprint_of(k, b);
    assert_string_equal(a, b);
    pkm_key_free(k);
    /* it is PKCS#8: the first line is -----BEGIN PRIVATE KEY----- */
    size_t len;
    uint8_t *text = slurp(p, &len);
    assert_true(len > 28);
    assert_memory_equal(text, "-----BEGIN PRIVATE KEY-----\n", 28);
    free(text);

    /* public PEM: mode 0644, loads as a public key with the same fingerprint */
    assert_int_equal(pkm_key_save_public_pem(g_key, tpath(p, sizeof p, "saved.pub.pem")), 0);
    assert_int_equal(file_mode(p), 0644);
    assert_int_equal(pkm_key_load_pem(p, &k), 0);
    assert_int_equal(pkm_key_is_private(k), 0);
    fingerprint_of(k, b);
    assert_string_equal(a, b);
    /* a public key can write its public PEM too */
    assert_int_equal(pkm_key_save_public_pem(k, tpath(p, sizeof p, "saved2.pub.pem")), 0);
    pkm_key_free(k);
}

static void save_tightens_existing_file(void **state)
{
    (void)state;
    char p[512], a[PKM_FINGERPRINT_SIZE], b[PKM_FINGERPRINT_SIZE];
    tpath(p, sizeof p, "existing.pem");
    /* longer than the key PEM, so that truncation is visible too */
    char junk[4000];
    memset(junk, '~', sizeof junk); /* not a PEM or base64 character */
    write_file(p, junk, sizeof junk, 0644);
    assert_int_equal(file_mode(p), 0644);
    assert_int_equal(pkm_key_save_pem(g_key, p), 0);
    assert_int_equal(file_mode(p), 0600);
    pkm_key_t *k = NULL;
    assert_int_equal(pkm_key_load_pem(p, &k), 0);
    fingerprint_of(g_key, a);
    fingerprint_of(k, b);
    assert_string_equal(a, b);
    pkm_key_free(k);
    size_t len;
    uint8_t *text = slurp(p, &len);
    assert_true(len < 2000);
    assert_null(memchr(text, '~', len));
    free(text);
}

static void save_refuses_symlink_and_bad_paths(void **state)
{
    (void)state;
    char target[512], link[512], p[512];
    tpath(target, sizeof target, "symlink_target");
    write_file(target, "keep", 4, 0644);
    tpath(link, sizeof link, "symlink.pem");
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(pkm_key_save_pem(g_key, link), PKM_EKEYFILE);
    assert_int_equal(pkm_key_save_public_pem(g_key, link), PKM_EKEYFILE);
    /* the target is untouched */
    size_t len;
    uint8_t *text = slurp(target, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(text, "keep", 4);
    free(text);
    assert_int_equal(file_mode(target), 0644);
    /* a directory that does not exist, and a directory */
    assert_int_equal(pkm_key_save_pem(g_key, tpath(p, sizeof p, "no/such/dir.pem")), PKM_EKEYFILE);
    assert_int_equal(pkm_key_save_pem(g_key, g_dir), PKM_EKEYFILE);
    assert_int_equal(pkm_key_save_pem(NULL, p), PKM_EINVAL);
    assert_int_equal(pkm_key_save_pem(g_key, NULL), PKM_EINVAL);
}

/* No "<name>.tmp-..." file is left in the scratch directory. */
static void assert_no_temp_files(void)
{
    DIR *d = opendir(g_dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".tmp-") != NULL) fail_msg("temporary file left: %s", e->d_name);
    }
    closedir(d);
}

/* The write is a rename of a new file: a descriptor open on the old file still reads the old
 * bytes (an in-place write would have changed them), the inode is new, and no temporary file is
 * left; the new file has exactly mode 0600 even under a umask that would allow more. */
static void save_replaces_atomically(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "atomic.pem");
    write_file(p, "old key bytes", 13, 0600);
    struct stat before, after;
    assert_int_equal(stat(p, &before), 0);
    int old = open(p, O_RDONLY);
    assert_true(old >= 0);
    mode_t um = umask(0);
    int rc = pkm_key_save_pem(g_key, p);
    umask(um);
    assert_int_equal(rc, 0);
    char buf[32] = {0};
    assert_int_equal(pread(old, buf, sizeof buf, 0), 13);
    assert_memory_equal(buf, "old key bytes", 13);
    close(old);
    assert_int_equal(stat(p, &after), 0);
    assert_true(after.st_ino != before.st_ino);
    assert_int_equal(file_mode(p), 0600);
    pkm_key_t *k = NULL;
    assert_int_equal(pkm_key_load_pem(p, &k), 0);
    pkm_key_free(k);
    assert_no_temp_files();
}

/* PKM_KEY_SAVE_NOREPLACE: an existing file is never touched (EEXIST), a new one is created. */
static void save_noreplace(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "noreplace.pem");
    write_file(p, "keep", 4, 0644);
    errno = 0;
    assert_int_equal(pkm_key_save_pem_flags(g_key, p, PKM_KEY_SAVE_NOREPLACE), PKM_EKEYFILE);
    assert_int_equal(errno, EEXIST);
    errno = 0;
    assert_int_equal(pkm_key_save_public_pem_flags(g_key, p, PKM_KEY_SAVE_NOREPLACE), PKM_EKEYFILE);
    assert_int_equal(errno, EEXIST);
    size_t len;
    uint8_t *text = slurp(p, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(text, "keep", 4);
    free(text);
    assert_int_equal(file_mode(p), 0644);
    /* a path where nothing is: written */
    assert_int_equal(
        pkm_key_save_pem_flags(g_key, tpath(p, sizeof p, "fresh.pem"), PKM_KEY_SAVE_NOREPLACE), 0);
    assert_int_equal(file_mode(p), 0600);
    assert_int_equal(pkm_key_save_public_pem_flags(g_key, tpath(p, sizeof p, "fresh.pub.pem"),
                                                   PKM_KEY_SAVE_NOREPLACE),
                     0);
    assert_int_equal(file_mode(p), 0644);
    /* unknown flags */
    assert_int_equal(pkm_key_save_pem_flags(g_key, tpath(p, sizeof p, "flags.pem"), 0x80),
                     PKM_EINVAL);
    assert_int_equal(access(p, F_OK), -1);
    assert_no_temp_files();
}

/* A key file with a second hard link is not replaced (EMLINK): both names keep their bytes. A
 * symbolic link is refused with ELOOP, a directory with EISDIR, a FIFO with EINVAL. */
static void save_refuses_links_with_errno(void **state)
{
    (void)state;
    char p[512], q[512];
    tpath(p, sizeof p, "linked.pem");
    tpath(q, sizeof q, "linked2.pem");
    write_file(p, "keep", 4, 0600);
    assert_int_equal(link(p, q), 0);
    errno = 0;
    assert_int_equal(pkm_key_save_pem(g_key, p), PKM_EKEYFILE);
    assert_int_equal(errno, EMLINK);
    errno = 0;
    assert_int_equal(pkm_key_save_public_pem(g_key, q), PKM_EKEYFILE);
    assert_int_equal(errno, EMLINK);
    for (int i = 0; i < 2; i++) {
        size_t len;
        uint8_t *text = slurp(i ? q : p, &len);
        assert_int_equal(len, 4);
        assert_memory_equal(text, "keep", 4);
        free(text);
    }
    /* once the second name is gone, the file is replaced */
    assert_int_equal(unlink(q), 0);
    assert_int_equal(pkm_key_save_pem(g_key, p), 0);

    tpath(q, sizeof q, "sym.pem");
    assert_int_equal(symlink(p, q), 0);
    errno = 0;
    assert_int_equal(pkm_key_save_pem(g_key, q), PKM_EKEYFILE);
    assert_int_equal(errno, ELOOP);
    errno = 0;
    assert_int_equal(pkm_key_save_pem_flags(g_key, q, PKM_KEY_SAVE_NOREPLACE), PKM_EKEYFILE);
    assert_int_equal(errno, ELOOP);
    struct stat st;
    assert_int_equal(lstat(q, &st), 0);
    assert_true(S_ISLNK(st.st_mode)); /* the link itself is not replaced either */
    errno = 0;
    assert_int_equal(pkm_key_save_pem(g_key, g_dir), PKM_EKEYFILE);
    assert_int_equal(errno, EISDIR);
    assert_int_equal(mkfifo(tpath(q, sizeof q, "fifo2.pem"), 0600), 0);
    errno = 0;
    assert_int_equal(pkm_key_save_pem(g_key, q), PKM_EKEYFILE);
    assert_int_equal(errno, EINVAL);
    /* a missing directory: the system's reason, and nothing left behind */
    errno = 0;
    assert_int_equal(pkm_key_save_pem(g_key, tpath(q, sizeof q, "none/k.pem")), PKM_EKEYFILE);
    assert_int_equal(errno, ENOENT);
    assert_no_temp_files();
}

static void load_permissions(void **state)
{
    (void)state;
    char p[512];
    pkm_key_t *k = NULL;
    static const mode_t bad[] = {0640, 0604, 0660, 0644, 0601, 0610, 0666, 0777};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        copy_data(p, sizeof p, "server_key.pem", "perm.pem", bad[i]);
        assert_int_equal(file_mode(p), bad[i]);
        assert_int_equal(pkm_key_load_pem(p, &k), PKM_EKEYPERM);
        assert_null(k);
    }
    /* the traditional format is a private key too */
    copy_data(p, sizeof p, "server_key_traditional.pem", "perm_trad.pem", 0640);
    assert_int_equal(pkm_key_load_pem(p, &k), PKM_EKEYPERM);
    /* owner-only modes are fine */
    static const mode_t good[] = {0600, 0400, 0700};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        copy_data(p, sizeof p, "server_key.pem", "perm_ok.pem", good[i]);
        assert_int_equal(pkm_key_load_pem(p, &k), 0);
        pkm_key_free(k);
        k = NULL;
    }
    /* a public key file loads whatever its mode */
    copy_data(p, sizeof p, "server_key.pub.pem", "pub_world.pem", 0666);
    assert_int_equal(pkm_key_load_pem(p, &k), 0);
    assert_int_equal(pkm_key_is_private(k), 0);
    pkm_key_free(k);
}

static void load_errors(void **state)
{
    (void)state;
    char p[512];
    pkm_key_t *k = (pkm_key_t *)&k; /* must be reset to NULL on failure */
    assert_int_equal(pkm_key_load_pem(tpath(p, sizeof p, "missing.pem"), &k), PKM_EKEYFILE);
    assert_null(k);
    assert_int_equal(pkm_key_load_pem(g_dir, &k), PKM_EKEYFILE); /* a directory */
    assert_int_equal(pkm_key_load_pem(NULL, &k), PKM_EINVAL);
    assert_int_equal(pkm_key_load_pem(p, NULL), PKM_EINVAL);
    /* an unreadable file (unless we are root, who reads anything) */
    if (geteuid() != 0) {
        write_file(tpath(p, sizeof p, "unreadable.pem"), "x", 1, 0000);
        assert_int_equal(pkm_key_load_pem(p, &k), PKM_EKEYFILE);
    }
    /* Readable files whose content is not a usable key: PKM_EKEY (the file was read fine). */
    static const char garbage[] = "this is not a PEM file\n";
    write_file(tpath(p, sizeof p, "garbage.pem"), garbage, sizeof garbage - 1, 0600);
    assert_int_equal(pkm_key_load_pem(p, &k), PKM_EKEY);
    write_file(tpath(p, sizeof p, "empty.pem"), "", 0, 0600);
    assert_int_equal(pkm_key_load_pem(p, &k), PKM_EKEY);
    static const char badb64[] = "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n";
    write_file(tpath(p, sizeof p, "badb64.pem"), badb64, sizeof badb64 - 1, 0600);
    assert_int_equal(pkm_key_load_pem(p, &k), PKM_EKEY);
    static const char badder[] = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    write_file(tpath(p, sizeof p, "badder.pem"), badder, sizeof badder - 1, 0600);
    assert_int_equal(pkm_key_load_pem(p, &k), PKM_EKEY);
    /* an encrypted private key: no passphrase support, and no prompt */
    copy_data(p, sizeof p, "server_key_encrypted.pem", "enc.pem", 0600);
    assert_int_equal(pkm_key_load_pem(p, &k), PKM_EKEY);
    /* a valid RSA-1024 private key, and an EC key */
    copy_data(p, sizeof p, "rsa1024_key.pem", "rsa1024.pem", 0600);
    assert_int_equal(pkm_key_load_pem(p, &k), PKM_EKEY);
    /* RSA-2048 private keys (mode 0600) and public keys with e = 3 and e = 2^16 + 3: they parse,
     * but no PkmCom peer would accept them (wire profile 2), so they are refused here */
    static const unsigned long bad_e[] = {3, 65539};
    for (size_t i = 0; i < 2; i++) {
        EVP_PKEY *pk = NULL;
        BIGNUM *e = BN_new();
        EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_RSA, NULL);
        assert_non_null(e);
        assert_non_null(kc);
        assert_int_equal(BN_set_word(e, bad_e[i]), 1);
        assert_int_equal(EVP_PKEY_keygen_init(kc), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_keygen_bits(kc, 2048), 1);
        assert_int_equal(EVP_PKEY_CTX_set1_rsa_keygen_pubexp(kc, e), 1);
        assert_int_equal(EVP_PKEY_keygen(kc, &pk), 1);
        for (int pub = 0; pub < 2; pub++) {
            BIO *mem = BIO_new(BIO_s_mem());
            assert_non_null(mem);
            assert_int_equal(pub ? PEM_write_bio_PUBKEY(mem, pk)
                                 : PEM_write_bio_PrivateKey(mem, pk, NULL, NULL, 0, NULL, NULL),
                             1);
            char *text = NULL;
            long tl = BIO_get_mem_data(mem, &text);
            assert_true(tl > 0);
            write_file(tpath(p, sizeof p, "odd_e.pem"), text, (size_t)tl, 0600);
            BIO_free(mem);
            assert_int_equal(pkm_key_load_pem(p, &k), PKM_EKEY);
            assert_null(k);
        }
        EVP_PKEY_free(pk);
        EVP_PKEY_CTX_free(kc);
        BN_free(e);
    }
    /* over 64 KiB: refused without parsing */
    char *big = malloc(70000);
    assert_non_null(big);
    memset(big, 'A', 70000);
    write_file(tpath(p, sizeof p, "big.pem"), big, 70000, 0600);
    free(big);
    assert_int_equal(pkm_key_load_pem(p, &k), PKM_EKEY);
    assert_null(k);
}

static void fifo_is_not_a_key_file(void **state)
{
    (void)state;
    /* A FIFO with no writer (or reader) would block a plain open(): refused at once. */
    char p[512];
    assert_int_equal(mkfifo(tpath(p, sizeof p, "fifo.pem"), 0600), 0);
    pkm_key_t *k = NULL;
    assert_int_equal(pkm_key_load_pem(p, &k), PKM_EKEYFILE);
    assert_null(k);
    assert_int_equal(pkm_key_save_pem(g_key, p), PKM_EKEYFILE);
    assert_int_equal(pkm_key_save_public_pem(g_key, p), PKM_EKEYFILE);
}

static void der_length_bounds(void **state)
{
    (void)state;
    uint8_t buf[1100];
    memset(buf, 0x30, sizeof buf);
    pkm_key_t *k = (pkm_key_t *)&k;
    assert_int_equal(pkm_key_from_der(buf, 0, &k), PKM_EKEYLEN);
    assert_null(k);
    assert_int_equal(pkm_key_from_der(buf, 1025, &k), PKM_EKEYLEN);
    assert_int_equal(pkm_key_from_der(buf, SIZE_MAX, &k), PKM_EKEYLEN);
    assert_int_equal(pkm_key_from_der(buf, 1, &k), PKM_EKEY);
    assert_int_equal(pkm_key_from_der(buf, 1024, &k), PKM_EKEY);
    assert_int_equal(pkm_key_from_der(buf, 294, NULL), PKM_EINVAL);
    assert_int_equal(pkm_key_from_der(NULL, 294, &k), PKM_EINVAL);
}

static void der_garbage(void **state)
{
    (void)state;
    t_rng r;
    t_rng_seed(&r, 0x6b657973);
    uint8_t buf[1024];
    for (int i = 0; i < 500; i++) {
        size_t len = 1 + (size_t)(t_rng_next(&r) % 1024);
        t_rng_bytes(&r, buf, len);
        if (i % 2) memcpy(buf, "\x30\x82\x01\x22", 4 < len ? 4 : len); /* a plausible start */
        pkm_key_t *k = NULL;
        assert_int_equal(pkm_key_from_der(buf, len, &k), PKM_EKEY);
        assert_null(k);
    }
    /* the valid DER with single bytes flipped in the structure (not inside n) */
    uint8_t der[PKM_MAX_KEY_DER];
    assert_int_equal(pkm_key_public_der(g_key, der, sizeof der), 294);
    static const size_t at[] = {0, 1, 2, 3, 4, 5, 6, 7, 10, 17, 18, 19, 20, 22, 23, 24, 26, 27};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        uint8_t m[294];
        memcpy(m, der, 294);
        m[at[i]] ^= 0x01;
        pkm_key_t *k = NULL;
        int rc = pkm_key_from_der(m, 294, &k);
        if (rc != PKM_EKEY) print_error("flip at %zu: %s\n", at[i], pkm_errname(rc));
        assert_int_equal(rc, PKM_EKEY);
    }
}

static void der_truncated_and_trailing(void **state)
{
    (void)state;
    uint8_t der[PKM_MAX_KEY_DER];
    assert_int_equal(pkm_key_public_der(g_key, der, sizeof der), 294);
    for (size_t len = 1; len < 294; len++) {
        pkm_key_t *k = NULL;
        assert_int_equal(pkm_key_from_der(der, len, &k), PKM_EKEY);
        assert_null(k);
    }
    pkm_key_t *k = NULL;
    der[294] = 0x00;
    assert_int_equal(pkm_key_from_der(der, 295, &k), PKM_EKEY);
    der[294] = 0x30;
    der[295] = 0x00;
    assert_int_equal(pkm_key_from_der(der, 296, &k), PKM_EKEY); /* an empty SEQUENCE after it */
    assert_int_equal(pkm_key_from_der(der, 294, &k), 0);
    pkm_key_free(k);
}

static void der_wrong_key_types(void **state)
{
    (void)state;
    /* Made with the openssl CLI:
     *   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 | openssl pkey -pubout
     *     -outform DER                                                     (ec_p256.pub.der)
     *   -algorithm RSA-PSS -pkeyopt rsa_keygen_bits:2048                   (rsa_pss2048.pub.der)
     *   -algorithm RSA -pkeyopt rsa_keygen_bits:1024 / 4096                (rsa1024/4096.pub.der)
     *   -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -pkeyopt rsa_keygen_pubexp:3
     *                                                                      (rsa2048_e3.pub.der) */
    static const struct {
        const char *file;
        size_t len;
        int want;
    } cases[] = {
        {"ec_p256.pub.der", 91, PKM_EKEY},     {"rsa_pss2048.pub.der", 292, PKM_EKEY},
        {"rsa1024.pub.der", 162, PKM_EKEY},    {"rsa4096.pub.der", 550, PKM_EKEY},
        {"rsa2048_e3.pub.der", 292, PKM_EKEY}, /* e = 3: wire profile 2 wants 65537 */
        {"server_key.pub.der", 294, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char p[512];
        size_t len;
        uint8_t *der = slurp(dpath(p, sizeof p, cases[i].file), &len);
        assert_int_equal(len, cases[i].len);
        pkm_key_t *k = NULL;
        int rc = pkm_key_from_der(der, len, &k);
        if (rc != cases[i].want) print_error("%s: %s\n", cases[i].file, pkm_errname(rc));
        assert_int_equal(rc, cases[i].want);
        if (rc == 0) {
            /* accepted keys keep their exact DER (these are canonical) */
            uint8_t out[PKM_MAX_KEY_DER];
            assert_int_equal(pkm_key_public_der(k, out, sizeof out), (int)len);
            assert_memory_equal(out, der, len);
        }
        pkm_key_free(k);
        free(der);
    }
}

static void der_exponents_and_sizes(void **state)
{
    (void)state;
    BIGNUM *n = g_modulus();
    expect_ne("RSA", n, 65537, 0);
    /* Wire profile 2: 65537 and no other exponent, odd or not */
    expect_ne("RSA", n, 3, PKM_EKEY);
    expect_ne("RSA", n, 5, PKM_EKEY);
    expect_ne("RSA", n, 65535, PKM_EKEY);
    expect_ne("RSA", n, 65539, PKM_EKEY); /* 2^16 + 3 */
    expect_ne("RSA", n, 0x1000001, PKM_EKEY);
    expect_ne("RSA", n, 65536, PKM_EKEY); /* even */
    expect_ne("RSA", n, 4, PKM_EKEY);
    expect_ne("RSA", n, 2, PKM_EKEY);
    expect_ne("RSA", n, 1, PKM_EKEY); /* odd but < 3 */
    expect_ne("RSA-PSS", n, 65537, PKM_EKEY);
    /* n - 2 (odd, as n is, and below n) is refused like n and n + 2 */
    BIGNUM *e = BN_dup(n);
    assert_non_null(e);
    assert_int_equal(BN_sub_word(e, 2), 1);
    expect_ne_bn("RSA", n, e, PKM_EKEY);
    expect_ne_bn("RSA", n, n, PKM_EKEY);
    assert_int_equal(BN_add_word(e, 4), 1);
    expect_ne_bn("RSA", n, e, PKM_EKEY);
    BN_free(e);

    /* moduli of 2047 and 2049 bits, built from n (odd, as a modulus is) */
    BIGNUM *m = BN_new();
    assert_non_null(m);
    assert_int_equal(BN_rshift1(m, n), 1);
    assert_int_equal(BN_set_bit(m, 0), 1);
    assert_int_equal(BN_num_bits(m), 2047);
    expect_ne("RSA", m, 65537, PKM_EKEY);
    assert_int_equal(BN_lshift1(m, n), 1);
    assert_int_equal(BN_set_bit(m, 0), 1);
    assert_int_equal(BN_num_bits(m), 2049);
    expect_ne("RSA", m, 65537, PKM_EKEY);
    BN_free(m);
    BN_free(n);
}

/* Writes a DER length. */
static size_t der_len(uint8_t *p, size_t len)
{
    if (len < 0x80) {
        p[0] = (uint8_t)len;
        return 1;
    }
    if (len < 0x100) {
        p[0] = 0x81;
        p[1] = (uint8_t)len;
        return 2;
    }
    p[0] = 0x82;
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    return 3;
}

/* Writes tag, length, content; returns the total. */
static size_t der_tlv(uint8_t *p, uint8_t tag, const uint8_t *c, size_t clen)
{
    p[0] = tag;
    size_t h = 1 + der_len(p + 1, clen);
    memmove(p + h, c, clen);
    return h + clen;
}

/* How hand_spki departs from the canonical encoding. */
enum { H_CANON = 0, H_NO_PARAMS = 1, H_OCTET_PARAMS = 2, H_LONG_LEN = 4 };

/* A SubjectPublicKeyInfo built by hand around the INTEGER contents n and e, taken as given
 * (so that a negative modulus can be written), with the departures in `how`. */
static size_t hand_spki(const uint8_t *n, size_t nlen, const uint8_t *e, size_t elen, int how,
                        uint8_t *out)
{
    uint8_t ints[600], rsapub[600], bits[600], body[700];
    size_t a = der_tlv(ints, 0x02, n, nlen);
    if (how & H_LONG_LEN) { /* e's length in the long form: BER, not DER */
        assert_true(elen < 0x80);
        ints[a] = 0x02;
        ints[a + 1] = 0x81;
        ints[a + 2] = (uint8_t)elen;
        memcpy(ints + a + 3, e, elen);
        a += 3 + elen;
    } else {
        a += der_tlv(ints + a, 0x02, e, elen);
    }
    size_t r = der_tlv(rsapub + 1, 0x30, ints, a) + 1;
    rsapub[0] = 0x00; /* no unused bits */
    /* AlgorithmIdentifier { OID rsaEncryption, parameters NULL / absent / empty OCTET STRING } */
    static const uint8_t oid[11] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                    0xf7, 0x0d, 0x01, 0x01, 0x01};
    uint8_t alg_body[13], algid[15];
    memcpy(alg_body, oid, 11);
    size_t al = 11;
    if (!(how & H_NO_PARAMS)) {
        alg_body[11] = (how & H_OCTET_PARAMS) ? 0x04 : 0x05;
        alg_body[12] = 0x00;
        al = 13;
    }
    size_t g = der_tlv(algid, 0x30, alg_body, al);
    size_t b = der_tlv(bits, 0x03, rsapub, r);
    memcpy(body, algid, g);
    memcpy(body + g, bits, b);
    return der_tlv(out, 0x30, body, g + b);
}

static void der_by_hand(void **state)
{
    (void)state;
    BIGNUM *bn = g_modulus();
    uint8_t n[257];
    n[0] = 0x00;
    assert_int_equal(BN_bn2bin(bn, n + 1), 256);
    BN_free(bn);
    static const uint8_t e65537[3] = {0x01, 0x00, 0x01};
    uint8_t spki[700], der[PKM_MAX_KEY_DER];
    /* Built independently of OpenSSL's encoder, the SPKI is identical to the key's. */
    size_t len = hand_spki(n, 257, e65537, 3, H_CANON, spki);
    assert_int_equal(len, 294);
    assert_int_equal(pkm_key_public_der(g_key, der, sizeof der), 294);
    assert_memory_equal(spki, der, 294);
    pkm_key_t *k = NULL;
    assert_int_equal(pkm_key_from_der(spki, len, &k), 0);
    pkm_key_free(k);
    k = NULL;
    /* Without its 00 pad, the modulus INTEGER is negative: rejected. */
    len = hand_spki(n + 1, 256, e65537, 3, H_CANON, spki);
    assert_int_equal(len, 293);
    assert_int_equal(pkm_key_from_der(spki, len, &k), PKM_EKEY);
    /* A negative exponent (-65537 = FE FF FF): rejected. */
    static const uint8_t eneg[3] = {0xfe, 0xff, 0xff};
    len = hand_spki(n, 257, eneg, 3, H_CANON, spki);
    assert_int_equal(pkm_key_from_der(spki, len, &k), PKM_EKEY);
    /* Exponent 0 and an empty exponent: rejected. */
    static const uint8_t ezero[1] = {0x00}, epad[4] = {0x00, 0x01, 0x00, 0x01};
    len = hand_spki(n, 257, ezero, 1, H_CANON, spki);
    assert_int_equal(pkm_key_from_der(spki, len, &k), PKM_EKEY);
    len = hand_spki(n, 257, ezero, 0, H_CANON, spki);
    assert_int_equal(pkm_key_from_der(spki, len, &k), PKM_EKEY);
    /* The same key in non-canonical encodings, every one of which d2i_PUBKEY alone accepts in
     * full (OpenSSL 3.0; asserted, so the refusal is this library's): absent AlgorithmIdentifier
     * parameters, an empty OCTET STRING instead of NULL, a long-form length, and a padded
     * exponent. Each is refused: one key, one encoding, one fingerprint. (OpenSSL 3.0 also
     * accepts the negative and zero values above; the library's checks refuse them.) */
    static const int how[4] = {H_NO_PARAMS, H_OCTET_PARAMS, H_LONG_LEN, H_CANON};
    for (int i = 0; i < 4; i++) {
        len = hand_spki(n, 257, how[i] == H_CANON ? epad : e65537, how[i] == H_CANON ? 4 : 3,
                        how[i], spki);
        const unsigned char *p = spki;
        EVP_PKEY *raw = d2i_PUBKEY(NULL, &p, (long)len);
        assert_non_null(raw);
        assert_ptr_equal(p, spki + len);
        EVP_PKEY_free(raw);
        assert_int_equal(pkm_key_from_der(spki, len, &k), PKM_EKEY);
    }
    assert_null(k);
}

static void fingerprint_equality(void **state)
{
    (void)state;
    char a[PKM_FINGERPRINT_SIZE], b[PKM_FINGERPRINT_SIZE];
    fingerprint_of(g_key, a);
    memcpy(b, a, sizeof a);
    assert_int_equal(pkm_fingerprint_equal(a, b), 1);
    assert_int_equal(pkm_fingerprint_equal(SERVER_FP, SERVER_FP), 1);
    assert_int_equal(pkm_fingerprint_equal(a, SERVER_FP), 0); /* a fresh key is not the fixture */
    b[PKM_FINGERPRINT_SIZE - 2] ^= 1;                         /* last character */
    assert_int_equal(pkm_fingerprint_equal(a, b), 0);
    memcpy(b, a, sizeof a);
    b[7] ^= 1; /* first character after the prefix */
    assert_int_equal(pkm_fingerprint_equal(a, b), 0);
    memcpy(b, a, sizeof a);
    b[PKM_FINGERPRINT_SIZE - 2] = '\0'; /* a prefix of a is not a */
    assert_int_equal(pkm_fingerprint_equal(a, b), 0);
    assert_int_equal(pkm_fingerprint_equal(b, a), 0);
    assert_int_equal(pkm_fingerprint_equal("", ""), 1);
    assert_int_equal(pkm_fingerprint_equal("", a), 0);
    assert_int_equal(pkm_fingerprint_equal(NULL, a), 0);
    assert_int_equal(pkm_fingerprint_equal(a, NULL), 0);
    /* the format: "SHA256:" and 43 characters of the standard base64 alphabet, no padding */
    assert_memory_equal(a, "SHA256:", 7);
    for (int i = 7; i < PKM_FINGERPRINT_SIZE - 1; i++)
        assert_non_null(
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", a[i]));
}

static void pool_fills_and_hands_out_distinct_keys(void **state)
{
    (void)state;
    pkm_keypool_t *pool = NULL;
    assert_int_equal(pkm_keypool_new(0, &pool), PKM_EINVAL);
    assert_int_equal(pkm_keypool_new(1025, &pool), PKM_EINVAL);
    assert_int_equal(pkm_keypool_new(2, NULL), PKM_EINVAL);
    assert_int_equal(pkm_keypool_new(2, &pool), 0);
    /* Bounded poll (not a timing assertion): the pool reaches 2 and stays there. The bound is
     * generous (120 s) because under valgrind one RSA-2048 key generation takes many seconds. */
    for (int i = 0; i < 12000 && pkm_keypool_ready(pool) < 2; i++)
        tcl_sleep_ms(10);
    assert_int_equal(pkm_keypool_ready(pool), 2);
    pkm_key_t *k[3] = {NULL, NULL, NULL};
    char fp[3][PKM_FINGERPRINT_SIZE];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pkm_keypool_take(pool, &k[i]), 0);
        assert_non_null(k[i]);
        assert_int_equal(pkm_key_is_private(k[i]), 1);
        assert_int_equal(pkm_key_public_der(k[i], NULL, 0), 294);
        fingerprint_of(k[i], fp[i]);
    }
    assert_string_not_equal(fp[0], fp[1]);
    assert_string_not_equal(fp[0], fp[2]);
    assert_string_not_equal(fp[1], fp[2]);
    assert_true(pkm_keypool_ready(pool) <= 2);
    /* Free the pool with keys outstanding (and a generation probably in progress) ... */
    pkm_keypool_free(pool);
    /* ... the taken keys are still the caller's and still usable. */
    for (int i = 0; i < 3; i++) {
        char again[PKM_FINGERPRINT_SIZE];
        fingerprint_of(k[i], again);
        assert_string_equal(again, fp[i]);
        pkm_key_free(k[i]);
    }
    assert_int_equal(pkm_keypool_take(NULL, &k[0]), PKM_EINVAL);
    assert_int_equal(pkm_keypool_ready(NULL), 0);
    pkm_keypool_free(NULL);
    pkm_key_free(NULL);
}

static void pool_freed_at_once(void **state)
{
    (void)state;
    /* Freed while its first key is being generated: waits for it, frees it, no leak. */
    pkm_keypool_t *pool = NULL;
    assert_int_equal(pkm_keypool_new(1, &pool), 0);
    pkm_keypool_free(pool);
    /* Freed once full, with ready keys in it. */
    assert_int_equal(pkm_keypool_new(1, &pool), 0);
    for (int i = 0; i < 12000 && pkm_keypool_ready(pool) < 1; i++)
        tcl_sleep_ms(10);
    assert_int_equal(pkm_keypool_ready(pool), 1);
    pkm_keypool_free(pool);
}

/* An allocator hook that fails the n-th allocation (1-based) and counts the rest. */
static long g_alloc_count, g_alloc_fail_at;
static void *failing_malloc(size_t n)
{
    if (++g_alloc_count == g_alloc_fail_at) return NULL;
    return malloc(n);
}
static void *failing_realloc(void *p, size_t n)
{
    if (++g_alloc_count == g_alloc_fail_at) return NULL;
    return realloc(p, n);
}

static void allocation_failures(void **state)
{
    (void)state;
    char priv[512], pub[512];
    copy_data(priv, sizeof priv, "server_key.pem", "alloc.pem", 0600);
    dpath(pub, sizeof pub, "server_key.pub.pem");
    uint8_t der[PKM_MAX_KEY_DER];
    assert_int_equal(pkm_key_public_der(g_key, der, sizeof der), 294);
    /* For each operation, fail its 1st, 2nd, ... library allocation until it no longer reaches
     * the failing one: every run returns PKM_ENOMEM with *out NULL, or succeeds; ASan's leak
     * checker sees every path. */
    for (int op = 0; op < 4; op++) {
        int failures = 0;
        for (long at = 1;; at++) {
            g_alloc_count = 0;
            g_alloc_fail_at = at;
            assert_int_equal(pkm_set_allocator(failing_malloc, failing_realloc, free), 0);
            void *obj = (void *)&obj;
            int rc;
            switch (op) {
            case 0: rc = pkm_key_from_der(der, 294, (pkm_key_t **)&obj); break;
            case 1: rc = pkm_key_load_pem(priv, (pkm_key_t **)&obj); break;
            case 2: rc = pkm_key_load_pem(pub, (pkm_key_t **)&obj); break;
            default: rc = pkm_keypool_new(1, (pkm_keypool_t **)&obj); break;
            }
            long used = g_alloc_count;
            assert_int_equal(pkm_set_allocator(NULL, NULL, NULL), 0);
            if (rc == 0) {
                assert_true(used < at); /* it succeeded only without the failure */
                if (op == 3)
                    pkm_keypool_free(obj);
                else
                    pkm_key_free(obj);
                break;
            }
            assert_int_equal(rc, PKM_ENOMEM);
            assert_null(obj);
            failures++;
        }
        assert_true(failures >= 2); /* each makes at least two allocations of its own */
    }
}

/* A thread taking two keys from a shared pool and writing their fingerprints. */
struct taker {
    pkm_keypool_t *pool;
    char fp[2][PKM_FINGERPRINT_SIZE];
    int rc;
};

static void *taker_main(void *arg)
{
    struct taker *t = arg;
    t->rc = 0;
    for (int i = 0; i < 2 && t->rc == 0; i++) {
        pkm_key_t *k = NULL;
        t->rc = pkm_keypool_take(t->pool, &k);
        if (t->rc == 0) t->rc = pkm_key_fingerprint(k, t->fp[i]);
        pkm_key_free(k);
    }
    return NULL;
}

static void pool_concurrent_takers(void **state)
{
    (void)state;
    pkm_keypool_t *pool = NULL;
    assert_int_equal(pkm_keypool_new(4, &pool), 0);
    for (int i = 0; i < 12000 && pkm_keypool_ready(pool) < 4; i++)
        tcl_sleep_ms(10);
    assert_int_equal(pkm_keypool_ready(pool), 4);
    struct taker t[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        t[i].pool = pool;
        t[i].rc = -1;
        assert_int_equal(pthread_create(&th[i], NULL, taker_main, &t[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(t[i].rc, 0);
    }
    pkm_keypool_free(pool);
    /* six keys, six different fingerprints: no key was handed out twice */
    for (int a = 0; a < 6; a++)
        for (int b = a + 1; b < 6; b++)
            assert_string_not_equal(t[a / 2].fp[a % 2], t[b / 2].fp[b % 2]);
}

static void pool_after_fork(void **state)
{
    (void)state;
    pkm_keypool_t *pool = NULL;
    assert_int_equal(pkm_keypool_new(2, &pool), 0);
    for (int i = 0; i < 12000 && pkm_keypool_ready(pool) < 2; i++)
        tcl_sleep_ms(10);
    assert_int_equal(pkm_keypool_ready(pool), 2);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The child: none of the parent's ready keys; a fresh one is generated. */
        close(fds[0]);
        pkm_key_t *k = NULL;
        char fp[PKM_FINGERPRINT_SIZE] = {0};
        int ok = pkm_keypool_ready(pool) == 0 && pkm_keypool_take(pool, &k) == 0 &&
                 pkm_key_fingerprint(k, fp) == 0;
        pkm_key_free(k);
        pkm_keypool_free(pool);
        fp[PKM_FINGERPRINT_SIZE - 1] = ok ? 'Y' : 'N'; /* the verdict, in place of the NUL */
        ssize_t w = write(fds[1], fp, sizeof fp);
        _exit(ok && w == (ssize_t)sizeof fp ? 0 : 1);
    }
    close(fds[1]);
    char child_fp[PKM_FINGERPRINT_SIZE];
    size_t got = 0;
    while (got < sizeof child_fp) {
        ssize_t r = read(fds[0], child_fp + got, sizeof child_fp - got);
        if (r < 0 && errno == EINTR) continue;
        assert_true(r > 0);
        got += (size_t)r;
    }
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(child_fp[PKM_FINGERPRINT_SIZE - 1], 'Y');
    child_fp[PKM_FINGERPRINT_SIZE - 1] = '\0';
    /* Under valgrind a forked child always ends with valgrind's error status (99, the suite's
     * --error-exitcode): its leak check counts as lost the parent's pool thread's OpenSSL state,
     * reachable only from a thread the child does not have. Its verdict came through the pipe. */
    const char *vg = getenv("PKM_VALGRIND");
    if (!(vg && strcmp(vg, "1") == 0 && WEXITSTATUS(status) == 99))
        assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(strlen(child_fp), PKM_FINGERPRINT_SIZE - 1);
    /* The parent still holds both ready keys, and neither is the child's. */
    assert_int_equal(pkm_keypool_ready(pool), 2);
    for (int i = 0; i < 2; i++) {
        pkm_key_t *k = NULL;
        char fp[PKM_FINGERPRINT_SIZE];
        assert_int_equal(pkm_keypool_take(pool, &k), 0);
        fingerprint_of(k, fp);
        assert_string_not_equal(fp, child_fp);
        pkm_key_free(k);
    }
    pkm_keypool_free(pool);
}

/* A reference keeps the key alive after its creator frees it; the last free releases it
 * (ASan/valgrind would report the leak or the use after free if the count were wrong). */
static void key_ref_counts(void **state)
{
    (void)state;
    pkm_key_t *k = NULL;
    uint8_t der[PKM_MAX_KEY_DER];
    assert_int_equal(pkm_key_public_der(g_key, der, sizeof der), 294);
    assert_int_equal(pkm_key_from_der(der, 294, &k), 0);
    assert_ptr_equal(pkm_key_ref(k), k);
    assert_ptr_equal(pkm_key_ref(k), k);
    pkm_key_free(k);
    pkm_key_free(k);
    char fp[PKM_FINGERPRINT_SIZE];
    assert_int_equal(pkm_key_fingerprint(k, fp), 0); /* still alive: one reference left */
    pkm_key_free(k);
    assert_null(pkm_key_ref(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generate_der_layout),
        cmocka_unit_test(der_round_trip),
        cmocka_unit_test(fingerprint_known_answer),
        cmocka_unit_test(save_load_round_trip),
        cmocka_unit_test(save_tightens_existing_file),
        cmocka_unit_test(save_refuses_symlink_and_bad_paths),
        cmocka_unit_test(save_replaces_atomically),
        cmocka_unit_test(save_noreplace),
        cmocka_unit_test(save_refuses_links_with_errno),
        cmocka_unit_test(load_permissions),
        cmocka_unit_test(load_errors),
        cmocka_unit_test(fifo_is_not_a_key_file),
        cmocka_unit_test(der_length_bounds),
        cmocka_unit_test(der_garbage),
        cmocka_unit_test(der_truncated_and_trailing),
        cmocka_unit_test(der_wrong_key_types),
        cmocka_unit_test(der_exponents_and_sizes),
        cmocka_unit_test(der_by_hand),
        cmocka_unit_test(fingerprint_equality),
        cmocka_unit_test(pool_fills_and_hands_out_distinct_keys),
        cmocka_unit_test(pool_freed_at_once),
        cmocka_unit_test(pool_concurrent_takers),
        cmocka_unit_test(pool_after_fork),
        cmocka_unit_test(allocation_failures),
        cmocka_unit_test(key_ref_counts),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
