/* SPDX-License-Identifier: MIT */
/* pkmcom tool: what the subcommands share (exit codes, error lines, options, addresses, hex,
 * JSON packet lines, the configuration directory, key loading, known_hosts, TCP connect). */
#ifndef PKMCOM_TOOL_H
#define PKMCOM_TOOL_H

#include <stdarg.h>
#include <stdio.h>
#include "pkmcom/pkmcom.h"

/* Exit statuses: 0 success, 1 runtime failure (connection, handshake, I/O), 2 usage error. */
#define TOOL_EXIT_OK      0
#define TOOL_EXIT_FAIL    1
#define TOOL_EXIT_USAGE   2
#define TOOL_HOST_MAX     256
#define TOOL_HOSTPORT_MAX (TOOL_HOST_MAX + 16)
#define TOOL_PATH_MAX     4096

#if defined(__GNUC__)
#define TOOL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TOOL_PRINTF(f, a)
#endif

/* ---- subcommands (argv[0] is the command's name) ---- */
int cmd_keygen(int argc, char **argv);
int cmd_fingerprint(int argc, char **argv);
int cmd_send(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_dump(int argc, char **argv);

/* ---- messages ---- */

/* Prints "pkmcom: <message>\n" to stderr as one line and returns status. */
int tool_fail(int status, const char *fmt, ...) TOOL_PRINTF(2, 3);
/* The same for log lines (status-free). */
void tool_log(const char *fmt, ...) TOOL_PRINTF(1, 2);
/* "pkmcom: <cmd>: <message>; see pkmcom <cmd> --help" and TOOL_EXIT_USAGE. */
int tool_usage_error(const char *cmd, const char *fmt, ...) TOOL_PRINTF(2, 3);

/* ---- options ---- */

/* 1 if arg is -h or --help. */
int tool_is_help(const char *arg);
/* Matches argv[*i] against the option --name (or -c when shortc is not 0), with its value either
 * in the next argument or after '=' (--name=VALUE). Returns 1 and sets *val (advancing *i past a
 * separate value), 0 if argv[*i] is another argument, or -1 when the value is missing (the usage
 * error is printed). */
int tool_opt(const char *cmd, int argc, char **argv, int *i, const char *name, char shortc,
             const char **val);
/* Parses an unsigned number in decimal or 0x-hex (no sign) into *out. Returns 0, -1 (not a
 * number) or -2 (more than 64 bits). */
int tool_parse_magnitude(const char *s, uint64_t *out);

/* A number in decimal or 0x-hex (no sign, no space), at most max. 0 or -1. */
int tool_parse_u64(const char *s, uint64_t max, uint64_t *out);

/* Splits "HOST:PORT" or "[IPV6]:PORT". port 1..65535, or 0 too when allow_zero. Returns 0 or -1
 * (nothing printed). The host must fit TOOL_HOST_MAX. */
int tool_parse_hostport(const char *s, int allow_zero, char host[TOOL_HOST_MAX], int *port);
/* Formats host:port back, with brackets around an IPv6 address, host lowercased (the known_hosts
 * key). */
void tool_format_hostport(const char *host, int port, char out[TOOL_HOSTPORT_MAX]);

/* Reads a password from the first line of a file (without the line end) into a new string the
 * caller frees with tool_secret_free. Returns 0 or an exit status (message printed). */
int tool_read_password_file(const char *path, char **out);
void tool_secret_free(char *s);

/* The environment variable that holds a password for send and serve. */
#define TOOL_PASSWORD_ENV "PKMCOM_PASSWORD"

/* The password a command was given, in order: --password PW (arg: its argv string, which is then
 * wiped in place so the process list no longer shows it; a warning is printed, as the command
 * line is visible to other users), --password-file FILE (first line), else $PKMCOM_PASSWORD
 * (copied, wiped in place and unset; empty counts as unset). Both arg and file: a usage error.
 * *out is a new string (tool_secret_free) or NULL for no password. Returns 0 or an exit status
 * (message printed). */
int tool_get_password(const char *cmd, char *arg, const char *file, char **out);

/* ---- output ---- */

/* Lowercase hex of n bytes into out (2n + 1 chars). */
void tool_hex(const uint8_t *p, size_t n, char *out);
/* Parses hex (even length, either case) into a new buffer (*out, free(); NULL for n = 0). 0, or
 * -1 for odd length / a non-hex character, -2 out of memory. */
int tool_unhex(const char *s, uint8_t **out, size_t *n);
/* One JSON line {"id":16,"hash":123,"size":5,"content":"<hex>"} for a packet, flushed. */
void tool_print_packet(FILE *f, const pkm_packet_t *pkt);
/* tools/print_cmpl.c: the same line, plus for a Complete Definition packet (0x00-0x07)
 * "hash_ok", "name" and "fields" (each field's text by name), or "error" when its content does
 * not decode; and those members alone (pkm_describe_cmpl's result returned). */
void tool_print_packet_named(FILE *f, const pkm_packet_t *pkt);
int tool_print_cmpl_members(FILE *f, const pkm_packet_t *pkt);

/* Monotonic milliseconds. */
double tool_now_ms(void);

/* ---- files ---- */

/* The configuration directory ($PKMCOM_HOME, else $XDG_CONFIG_HOME/pkmcom, else
 * ~/.config/pkmcom), created with mode 0700 when missing. Returns 0 or an exit status (message
 * printed). */
int tool_config_dir(char *out, size_t cap);
/* dir + "/" + name. 0 or an exit status. */
int tool_config_file(const char *name, char *out, size_t cap);

/* Loads a key file (PEM private or public key, or a DER SubjectPublicKeyInfo). Returns 0, or an
 * exit status after printing one line that names the file and the reason. */
int tool_load_key(const char *path, pkm_key_t **out);
/* Prints why pkm_key_save_pem_flags (or the public one) failed with rc and errno err, naming
 * path and what ("key", "public key"): already exists, a symbolic link, more hard links, or the
 * system's reason. Returns TOOL_EXIT_FAIL. */
int tool_key_save_error(const char *path, const char *what, int rc, int err);

/* ---- known_hosts (known_hosts.c): lines "host:port SHA256:..." ---- */

/* 1 if s is a fingerprint as pkm_key_fingerprint writes it ("SHA256:" + 43 base64 chars). */
int tool_fp_wellformed(const char *s);

/* Looks hostport up. Returns 1 with the recorded fingerprint in fp and its line number in *line,
 * 0 when not recorded (or the file does not exist), or -1 (message printed) when the file cannot
 * be read, or when it fails closed: a malformed line for hostport (its fingerprint is not
 * SHA256:+43 base64 characters, or missing, or the line is too long), or two lines for hostport
 * with different fingerprints. A malformed line for another host is skipped with a warning. */
int kh_lookup(const char *file, const char *hostport, char fp[PKM_FINGERPRINT_SIZE], int *line);
/* Appends "hostport fp" (creating the file with mode 0600). Returns 0 or TOOL_EXIT_FAIL (message
 * printed). */
int kh_add(const char *file, const char *hostport, const char *fp);

#endif
