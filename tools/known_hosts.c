/* pkmcom's known_hosts file: trust on first use, as ssh does. One server per line,
 * "host:port SHA256:...", '#' comments and blank lines allowed. */
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

int kh_lookup(const char *file, const char *hostport, char fp[PKM_FINGERPRINT_SIZE], int *line)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        if (errno == ENOENT) return 0;
        tool_fail(TOOL_EXIT_FAIL, "%s: %s", file, strerror(errno));
        return -1;
    }
    char buf[1024];
    int lineno = 0, found = 0;
    while (!found && fgets(buf, sizeof buf, f)) {
        lineno++;
        size_t len = strlen(buf);
        if (len == sizeof buf - 1 && buf[len - 1] != '\n') { /* overlong: skip the rest */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n') {
            }
            tool_log("warning: %s:%d: line too long, ignored", file, lineno);
            continue;
        }
        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
                       buf[len - 1] == '\t'))
            buf[--len] = '\0';
        char *p = buf;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#') continue;
        char *sep = strpbrk(p, " \t");
        if (!sep) {
            tool_log("warning: %s:%d: malformed line, ignored", file, lineno);
            continue;
        }
        *sep = '\0';
        char *key = sep + 1;
        while (*key == ' ' || *key == '\t')
            key++;
        if (!fp_wellformed(key, strlen(key))) {
            tool_log("warning: %s:%d: malformed fingerprint, line ignored", file, lineno);
            continue;
        }
        if (strcmp(p, hostport) != 0) continue;
        memcpy(fp, key, PKM_FINGERPRINT_SIZE);
        *line = lineno;
        found = 1;
    }
    int err = ferror(f);
    fclose(f);
    if (!found && err) {
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
