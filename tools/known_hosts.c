/* SPDX-License-Identifier: MIT */
/* pkmcom's known_hosts file: trust on first use, as ssh does, failing closed on a damaged entry.
 * One server per line, "host:port SHA256:...", '#' comments and blank lines allowed. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include "tool.h"

/* A fingerprint as pkm_key_fingerprint writes it: "SHA256:" + 43 base64 characters. */
static int fp_wellformed(const char *s, size_t n)
{
    if (n != PKM_FINGERPRINT_SIZE - 1 || strncmp(s, "SHA256:", 7) != 0) return 0;
    for (size_t i = 7; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return 0;
    }
    return 1;
}

int tool_fp_wellformed(const char *s)
{
    return s && fp_wellformed(s, strlen(s));
}

/* 1 if the line (already trimmed of leading blanks) starts with the field hostport, followed by
 * a blank or the end. */
static int names_host(const char *p, const char *hostport)
{
    size_t n = strlen(hostport);
    return strncmp(p, hostport, n) == 0 && (p[n] == '\0' || p[n] == ' ' || p[n] == '\t');
}

int kh_lookup(const char *file, const char *hostport, char fp[PKM_FINGERPRINT_SIZE], int *line)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        if (errno == ENOENT) return 0;
        tool_fail(TOOL_EXIT_FAIL, "%s: %s", file, strerror(errno));
        return -1;
    }
    char buf[1024];
    int lineno = 0, found = 0, bad = 0;
    while (!bad && fgets(buf, sizeof buf, f)) {
        lineno++;
        size_t len = strlen(buf);
        char *p = buf;
        while (*p == ' ' || *p == '\t')
            p++;
        if (len == sizeof buf - 1 && buf[len - 1] != '\n') { /* overlong: skip the rest */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n') {
            }
            if (names_host(p, hostport)) {
                tool_fail(TOOL_EXIT_FAIL,
                          "%s line %d: the entry for %s is too long to be valid: refusing to "
                          "connect (fix or delete that line)",
                          file, lineno, hostport);
                bad = 1;
            } else {
                tool_log("warning: %s line %d: line too long, ignored", file, lineno);
            }
            continue;
        }
        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
                       buf[len - 1] == '\t'))
            buf[--len] = '\0';
        if (*p == '\0' || *p == '#') continue;
        char *sep = strpbrk(p, " \t");
        char *key = sep ? sep + 1 : p + strlen(p);
        if (sep) *sep = '\0';
        while (*key == ' ' || *key == '\t')
            key++;
        int host_match = strcmp(p, hostport) == 0;
        if (!fp_wellformed(key, strlen(key))) {
            if (host_match) {
                /* Fail closed: a damaged entry for this host must not turn into a first contact
                 * that records whatever key the server now shows. */
                tool_fail(TOOL_EXIT_FAIL,
                          "%s line %d: the entry for %s is malformed (expected \"%s SHA256:...\", "
                          "43 base64 characters after SHA256:): refusing to connect (fix or "
                          "delete that line)",
                          file, lineno, hostport, hostport);
                bad = 1;
            } else {
                tool_log("warning: %s line %d: malformed line, ignored", file, lineno);
            }
            continue;
        }
        if (!host_match) continue;
        if (found && strcmp(fp, key) != 0) {
            tool_fail(TOOL_EXIT_FAIL,
                      "%s lines %d and %d record different keys for %s (%s and %s): refusing to "
                      "connect (delete the wrong line)",
                      file, *line, lineno, hostport, fp, key);
            bad = 1;
            continue;
        }
        if (!found) {
            memcpy(fp, key, PKM_FINGERPRINT_SIZE);
            *line = lineno;
            found = 1;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (bad) return -1;
    if (err) {
        tool_fail(TOOL_EXIT_FAIL, "%s: read error", file);
        return -1;
    }
    return found;
}

int kh_add(const char *file, const char *hostport, const char *fp)
{
    int fd = open(file, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return tool_fail(TOOL_EXIT_FAIL, "%s: cannot record the server: %s", file, strerror(errno));
    char line[TOOL_HOSTPORT_MAX + PKM_FINGERPRINT_SIZE + 4];
    /* Start on a fresh line if the file does not end with one. */
    off_t end = lseek(fd, 0, SEEK_END);
    const char *lead = "";
    if (end > 0) {
        char last = '\n';
        if (pread(fd, &last, 1, end - 1) == 1 && last != '\n') lead = "\n";
    }
    int n = snprintf(line, sizeof line, "%s%s %s\n", lead, hostport, fp);
    ssize_t w = n > 0 && (size_t)n < sizeof line ? write(fd, line, (size_t)n) : -1;
    int err = errno;
    if (close(fd) != 0 && w >= 0) {
        w = -1;
        err = errno;
    }
    if (w != n)
        return tool_fail(TOOL_EXIT_FAIL, "%s: cannot record the server: %s", file,
                         w < 0 ? strerror(err) : "short write");
    return 0;
}
