/* SPDX-License-Identifier: MIT */
/* pkmcom: the libpkmcom command-line tool. main() dispatches to one cmd_* function per command;
 * this file also holds the helpers the commands share (tool.h). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include "tool.h"

/* ---- messages ---- */

TOOL_PRINTF(1, 0) static void vline(const char *fmt, va_list ap)
{
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    /* One line: a newline inside a message (e.g. from a file name) would split it. */
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fprintf(stderr, "pkmcom: %s\n", buf);
    fflush(stderr);
}

int tool_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vline(fmt, ap);
    va_end(ap);
    return status;
}

void tool_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vline(fmt, ap);
    va_end(ap);
}

int tool_usage_error(const char *cmd, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tool_fail(TOOL_EXIT_USAGE, "%s: %s (see pkmcom %s --help)", cmd, msg, cmd);
}

/* ---- options ---- */

int tool_is_help(const char *arg)
{
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

int tool_opt(const char *cmd, int argc, char **argv, int *i, const char *name, char shortc,
             const char **val)
{
    const char *a = argv[*i];
    size_t nl = strlen(name);
    int match = 0;
    if (a[0] == '-' && a[1] == '-' && strncmp(a + 2, name, nl) == 0) {
        if (a[2 + nl] == '=') {
            *val = a + 3 + nl;
            return 1;
        }
        match = a[2 + nl] == '\0';
    } else if (shortc && a[0] == '-' && a[1] == shortc && a[2] == '\0') {
        match = 1;
    }
    if (!match) return 0;
    if (*i + 1 >= argc) {
        tool_usage_error(cmd, "option --%s needs a value", name);
        return -1;
    }
    *i += 1;
    *val = argv[*i];
    return 1;
}

int tool_parse_magnitude(const char *s, uint64_t *out)
{
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!*s) return -1;
    uint64_t v = 0;
    int overflow = 0;
    for (; *s; s++) {
        int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = *s - 'a' + 10;
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = *s - 'A' + 10;
        else
            return -1;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            overflow = 1;
        else
            v = v * (uint64_t)base + (uint64_t)d;
    }
    if (overflow) return -2;
    *out = v;
    return 0;
}

int tool_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v;
    if (tool_parse_magnitude(s, &v) < 0 || v > max) return -1;
    *out = v;
    return 0;
}

int tool_parse_hostport(const char *s, int allow_zero, char host[TOOL_HOST_MAX], int *port)
{
    const char *colon, *hs;
    size_t hl;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') return -1;
        hs = s + 1;
        hl = (size_t)(close - hs);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return -1;
        hs = s;
        hl = (size_t)(colon - s);
        if (memchr(hs, ':', hl)) return -1; /* a bare IPv6 address needs brackets */
    }
    if (hl == 0 || hl >= TOOL_HOST_MAX) return -1;
    uint64_t p;
    if (tool_parse_u64(colon + 1, 65535, &p) < 0 || (p == 0 && !allow_zero)) return -1;
    for (size_t k = 0; k < hl; k++)
        if (isspace((unsigned char)hs[k]) || hs[k] == '[' || hs[k] == ']') return -1;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

void tool_format_hostport(const char *host, int port, char out[TOOL_HOSTPORT_MAX])
{
    char low[TOOL_HOST_MAX];
    size_t k = 0;
    for (; host[k] && k + 1 < sizeof low; k++)
        low[k] = (char)tolower((unsigned char)host[k]);
    low[k] = '\0';
    snprintf(out, TOOL_HOSTPORT_MAX, strchr(low, ':') ? "[%s]:%d" : "%s:%d", low, port);
}

/* Longest first line a password file may have (a password longer than this is not a typo). */
#define PASSWORD_LINE_MAX 4096

int tool_read_password_file(const char *path, char **out)
{
    /* read(2) into our own buffer, not stdio: a FILE's buffer would be freed holding the
     * password, unwiped. A FIFO works too (--password-file <(pass show x)). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return tool_fail(TOOL_EXIT_FAIL, "%s: %s", path, strerror(errno));
    char buf[PASSWORD_LINE_MAX + 1];
    size_t len = 0;
    int err = 0;
    while (len < sizeof buf && !memchr(buf, '\n', len)) {
        ssize_t r = read(fd, buf + len, sizeof buf - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) err = errno;
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    char *nl = memchr(buf, '\n', len);
    size_t n = nl ? (size_t)(nl - buf) : len;
    int st = 0;
    if (err)
        st = tool_fail(TOOL_EXIT_FAIL, "%s: %s", path, strerror(err));
    else if (!nl && len == sizeof buf)
        st = tool_fail(TOOL_EXIT_FAIL, "%s: the first line is longer than %d bytes", path,
                       PASSWORD_LINE_MAX);
    else if (len == 0)
        st = tool_fail(TOOL_EXIT_FAIL, "%s: the password file is empty", path);
    while (st == 0 && n > 0 && buf[n - 1] == '\r')
        n--;
    if (st == 0 && memchr(buf, '\0', n))
        st = tool_fail(TOOL_EXIT_FAIL, "%s: the password contains a NUL byte", path);
    char *s = NULL;
    if (st == 0) {
        /* An exact-size copy, so that the wipe in tool_secret_free covers it all. */
        s = malloc(n + 1);
        if (s) {
            memcpy(s, buf, n);
            s[n] = '\0';
        } else {
            st = tool_fail(TOOL_EXIT_FAIL, "out of memory");
        }
    }
    OPENSSL_cleanse(buf, sizeof buf);
    if (st == 0) *out = s;
    return st;
}

void tool_secret_free(char *s)
{
    if (!s) return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

/* A copy of s in a new buffer (tool_secret_free), and s itself wiped in place. */
static int take_secret(char *s, char **out)
{
    size_t n = strlen(s);
    char *c = malloc(n + 1);
    if (c) memcpy(c, s, n + 1);
    OPENSSL_cleanse(s, n);
    if (!c) return tool_fail(TOOL_EXIT_FAIL, "out of memory");
    *out = c;
    return 0;
}

int tool_get_password(const char *cmd, char *arg, const char *file, char **out)
{
    *out = NULL;
    if (arg && file) return tool_usage_error(cmd, "give --password or --password-file, not both");
    if (file) return tool_read_password_file(file, out);
    if (arg) {
        tool_log("warning: --password puts the password where other users of this machine can "
                 "see it (the process list, shell history); use --password-file FILE or the "
                 "environment variable " TOOL_PASSWORD_ENV);
        return take_secret(arg, out);
    }
    char *env = getenv(TOOL_PASSWORD_ENV);
    if (!env || !*env) return 0;
    /* Wiped and removed from our environment: /proc/PID/environ and child processes no longer
     * show it. */
    int st = take_secret(env, out);
    unsetenv(TOOL_PASSWORD_ENV);
    return st;
}

/* ---- output ---- */

void tool_hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int tool_unhex(const char *s, uint8_t **out, size_t *n)
{
    size_t len = strlen(s);
    *out = NULL;
    *n = 0;
    if (len % 2) return -1;
    for (size_t i = 0; i < len; i++)
        if (hexval(s[i]) < 0) return -1;
    if (len == 0) return 0;
    uint8_t *b = malloc(len / 2);
    if (!b) return -2;
    for (size_t i = 0; i < len / 2; i++)
        b[i] = (uint8_t)(hexval(s[2 * i]) << 4 | hexval(s[2 * i + 1]));
    *out = b;
    *n = len / 2;
    return 0;
}

void tool_print_packet(FILE *f, const pkm_packet_t *pkt)
{
    fprintf(f, "{\"id\":%u,\"hash\":%lu,\"size\":%zu,\"content\":\"", (unsigned)pkt->id,
            (unsigned long)pkt->hash, pkt->size);
    char chunk[2 * 512 + 1];
    for (size_t off = 0; off < pkt->size; off += 512) {
        size_t k = pkt->size - off < 512 ? pkt->size - off : 512;
        tool_hex(pkt->content + off, k, chunk);
        fputs(chunk, f);
    }
    fputs("\"}\n", f);
    fflush(f);
}

double tool_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- files ---- */

/* mkdir -p, the last component with mode 0700. */
static int make_dirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int r = mkdir(path, 0700);
        int err = errno;
        *p = '/';
        if (r != 0 && err != EEXIST) {
            errno = err;
            return -1;
        }
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST) return -1;
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

int tool_config_dir(char *out, size_t cap)
{
    const char *home = getenv("PKMCOM_HOME");
    const char *xdg = getenv("XDG_CONFIG_HOME");
    int n;
    if (home && *home) {
        n = snprintf(out, cap, "%s", home);
    } else if (xdg && xdg[0] == '/') {
        n = snprintf(out, cap, "%s/pkmcom", xdg);
    } else {
        const char *h = getenv("HOME");
        if (!h || !*h) {
            struct passwd *pw = getpwuid(getuid());
            h = pw ? pw->pw_dir : NULL;
        }
        if (!h || !*h)
            return tool_fail(TOOL_EXIT_FAIL, "cannot find the home directory: set PKMCOM_HOME");
        n = snprintf(out, cap, "%s/.config/pkmcom", h);
    }
    if (n < 0 || (size_t)n >= cap) return tool_fail(TOOL_EXIT_FAIL, "configuration path too long");
    while (n > 1 && out[n - 1] == '/')
        out[--n] = '\0';
    if (make_dirs(out) != 0)
        return tool_fail(TOOL_EXIT_FAIL, "cannot create the configuration directory %s: %s", out,
                         strerror(errno));
    return 0;
}

int tool_config_file(const char *name, char *out, size_t cap)
{
    char dir[TOOL_PATH_MAX];
    int st = tool_config_dir(dir, sizeof dir);
    if (st) return st;
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) return tool_fail(TOOL_EXIT_FAIL, "configuration path too long");
    return 0;
}

int tool_load_key(const char *path, pkm_key_t **out)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return tool_fail(TOOL_EXIT_FAIL, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return tool_fail(TOOL_EXIT_FAIL, "%s: not a regular file", path);
    FILE *f = fopen(path, "rb");
    if (!f) return tool_fail(TOOL_EXIT_FAIL, "%s: %s", path, strerror(errno));
    uint8_t der[PKM_MAX_KEY_DER + 1];
    size_t n = fread(der, 1, sizeof der, f);
    fclose(f);
    if (n > 0 && der[0] == 0x30) { /* a DER SEQUENCE: a SubjectPublicKeyInfo file */
        int rc = pkm_key_from_der(der, n, out);
        if (rc < 0)
            return tool_fail(TOOL_EXIT_FAIL, "%s: not a DER RSA-2048 public key: %s", path,
                             pkm_strerror(rc));
        return 0;
    }
    char why[PKM_ERRMSG_SIZE];
    int rc = pkm_key_load_pem_errbuf(path, out, why, sizeof why);
    switch (rc) {
    case 0: return 0;
    case PKM_EKEYPERM:
        return tool_fail(TOOL_EXIT_FAIL,
                         "%s: private key file is accessible by group or others (mode %04o): "
                         "run chmod 600 on it",
                         path, (unsigned)(st.st_mode & 07777));
    case PKM_EKEY:
        return tool_fail(TOOL_EXIT_FAIL,
                         "%s: no usable key: not an unencrypted RSA-2048 key in PEM form", path);
    case PKM_EKEYFILE: return tool_fail(TOOL_EXIT_FAIL, "%s", why); /* path, errno's text */
    default: return tool_fail(TOOL_EXIT_FAIL, "%s: %s", path, pkm_strerror(rc));
    }
}

/* ---- dispatch ---- */

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"keygen", cmd_keygen, "make a new RSA-2048 server key (PEM, mode 0600)"},
    {"fingerprint", cmd_fingerprint, "print the SHA256 fingerprint of a key file"},
    {"serve", cmd_serve, "run a PkmCom/TCP server (echo, or relay between clients)"},
    {"send", cmd_send, "connect, send a packet built from typed fields, print the replies"},
    {"demo", cmd_demo, "a server and a client in one process: the handshake step by step"},
    {"dump", cmd_dump, "decrypt a capture (pcap) with a key log: one JSON line per packet"},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pkmcom <command> [arguments]\n"
            "       pkmcom <command> --help\n"
            "       pkmcom --help | --version\n\n"
            "PkmCom/TCP from the command line (libpkmcom %s).\n\ncommands:\n",
            pkm_version());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nExit status: 0 success, 1 failure (connection, handshake, I/O), 2 usage error.\n"
               "Files live in $PKMCOM_HOME, else $XDG_CONFIG_HOME/pkmcom, else "
               "~/.config/pkmcom.\nSee pkmcom(1).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return TOOL_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (tool_is_help(cmd) || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return TOOL_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("pkmcom %s\n", pkm_version());
        return TOOL_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    return tool_fail(TOOL_EXIT_USAGE, "unknown command '%s' (see pkmcom --help)", cmd);
}
