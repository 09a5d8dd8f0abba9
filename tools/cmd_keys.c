/* SPDX-License-Identifier: MIT */
/* pkmcom keygen and pkmcom fingerprint: make a server key file, print a key's SHA256 fingerprint
 * (WIRE-PROFILE section 6). */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include "tool.h"

static const char keygen_help[] =
    "usage: pkmcom keygen -o FILE [--force] [--public FILE]\n"
    "\n"
    "Makes a new RSA-2048 key pair (e = 65537) for a server and writes it to FILE as\n"
    "unencrypted PKCS#8 PEM with mode 0600. Prints the key's fingerprint on stdout.\n"
    "\n"
    "  -o, --output FILE   where to write the private key (required)\n"
    "  --force             replace FILE (and the --public FILE) if it exists\n"
    "  --public FILE       also write the public key (SubjectPublicKeyInfo PEM, mode 0644)\n"
    "  -h, --help          this help\n"
    "\n"
    "Files are written atomically: a new temporary file (created exclusively, mode\n"
    "0600) in the same directory, synced to disk, then renamed into place, so FILE is\n"
    "always either the old key or the whole new one. Without --force an existing FILE\n"
    "is never touched. Even with --force, a symbolic link is not followed nor replaced,\n"
    "and a file with more than one hard link is not replaced (its other names would\n"
    "keep the old key): both are refused.\n";

int tool_key_save_error(const char *path, const char *what, int rc, int err)
{
    if (rc != PKM_EKEYFILE || err == 0)
        return tool_fail(TOOL_EXIT_FAIL, "%s: cannot write the %s: %s", path, what,
                         pkm_strerror(rc));
    switch (err) {
    case EEXIST:
        return tool_fail(TOOL_EXIT_FAIL, "%s already exists (use --force to replace it)", path);
    case ELOOP:
        return tool_fail(TOOL_EXIT_FAIL,
                         "%s is a symbolic link: refusing to write the %s through it or to "
                         "replace it (give the real file's path)",
                         path, what);
    case EMLINK:
        return tool_fail(TOOL_EXIT_FAIL,
                         "%s has more than one hard link: refusing to replace it, its other names "
                         "would keep the old key",
                         path);
    default:
        return tool_fail(TOOL_EXIT_FAIL, "%s: cannot write the %s: %s", path, what, strerror(err));
    }
}

int cmd_keygen(int argc, char **argv)
{
    const char *out = NULL, *pub = NULL;
    int force = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r;
        if (tool_is_help(argv[i])) {
            fputs(keygen_help, stdout);
            return TOOL_EXIT_OK;
        }
        if ((r = tool_opt("keygen", argc, argv, &i, "output", 'o', &v)) != 0) {
            if (r < 0) return TOOL_EXIT_USAGE;
            out = v;
        } else if ((r = tool_opt("keygen", argc, argv, &i, "public", 0, &v)) != 0) {
            if (r < 0) return TOOL_EXIT_USAGE;
            pub = v;
        } else if (strcmp(argv[i], "--force") == 0) {
            force = 1;
        } else {
            return tool_usage_error("keygen", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!out || !*out) return tool_usage_error("keygen", "missing -o FILE");
    struct stat st;
    /* Early refusals, before the key is generated; the writes below check again, race-free. */
    if (!force && lstat(out, &st) == 0)
        return tool_fail(TOOL_EXIT_FAIL, "%s already exists (use --force to replace it)", out);
    if (pub && !force && lstat(pub, &st) == 0)
        return tool_fail(TOOL_EXIT_FAIL, "%s already exists (use --force to replace it)", pub);
    if (pub && strcmp(pub, out) == 0)
        return tool_usage_error("keygen", "--public names the same file as -o");
    unsigned flags = force ? 0 : PKM_KEY_SAVE_NOREPLACE;

    pkm_key_t *key = NULL;
    int rc = pkm_key_generate(&key);
    if (rc < 0) return tool_fail(TOOL_EXIT_FAIL, "key generation failed: %s", pkm_strerror(rc));
    errno = 0;
    rc = pkm_key_save_pem_flags(key, out, flags);
    if (rc < 0) {
        int err = errno;
        pkm_key_free(key);
        return tool_key_save_error(out, "key", rc, err);
    }
    if (pub) {
        errno = 0;
        rc = pkm_key_save_public_pem_flags(key, pub, flags);
        if (rc < 0) {
            int err = errno;
            pkm_key_free(key);
            return tool_key_save_error(pub, "public key", rc, err);
        }
    }
    char fp[PKM_FINGERPRINT_SIZE];
    pkm_key_fingerprint(key, fp);
    pkm_key_free(key);
    printf("%s\n", fp);
    fflush(stdout);
    tool_log("wrote a new RSA-2048 key to %s (mode 0600)%s%s", out, pub ? ", public key to " : "",
             pub ? pub : "");
    return TOOL_EXIT_OK;
}

static const char fingerprint_help[] =
    "usage: pkmcom fingerprint FILE\n"
    "\n"
    "Prints the fingerprint of the RSA-2048 key in FILE: \"SHA256:\" and the unpadded base64 of\n"
    "the SHA-256 of its DER SubjectPublicKeyInfo (as OpenSSH prints it). FILE holds a private\n"
    "key (PEM, PKCS#8 or traditional; mode 0600 or stricter) or a public key (PEM, or DER).\n"
    "\n"
    "  -h, --help   this help\n";

int cmd_fingerprint(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (tool_is_help(argv[i])) {
            fputs(fingerprint_help, stdout);
            return TOOL_EXIT_OK;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0')
            return tool_usage_error("fingerprint", "unknown option '%s'", argv[i]);
        if (path) return tool_usage_error("fingerprint", "takes one FILE");
        path = argv[i];
    }
    if (!path) return tool_usage_error("fingerprint", "missing FILE");
    pkm_key_t *key;
    int st = tool_load_key(path, &key);
    if (st) return st;
    char fp[PKM_FINGERPRINT_SIZE];
    pkm_key_fingerprint(key, fp);
    pkm_key_free(key);
    printf("%s\n", fp);
    return TOOL_EXIT_OK;
}
