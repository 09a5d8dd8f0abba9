/* SPDX-License-Identifier: MIT */
/* The one validator of an engine configuration and of the conn.h calls' arguments: each refusal
 * is PKM_EINVAL with a sentence naming the field, the expected form and the value given. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "pkmcom/conn.h"
#include "config_internal.h"
#include "engine_internal.h"
#include "internal.h"

/* Writes the sentence (when there is a buffer) and returns PKM_EINVAL. */
__attribute__((format(printf, 3, 4))) static int refuse(char *buf, size_t n, const char *fmt, ...)
{
    if (buf && n) {
        va_list ap;
        va_start(ap, fmt);
        /* A sentence longer than the buffer is cut: the return value is deliberately ignored. */
        int w = vsnprintf(buf, n, fmt, ap);
        (void)w;
        va_end(ap);
    }
    return PKM_EINVAL;
}

/* The pin as given, quoted safely for a sentence: at most 60 characters, anything not printable
 * ASCII shown as '?'. */
static void quote(const char *s, char *out, size_t n)
{
    size_t i = 0;
    for (; s[i] && i < 60 && i + 1 < n; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[i] = '\0';
}

static int base64_char(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '+' || ch == '/';
}

/* "SHA256:" + 43 characters of the standard base64 alphabet (keys.h). */
static int pin_ok(const char *pin)
{
    size_t len = strnlen(pin, PKM_FINGERPRINT_SIZE);
    if (len != PKM_FINGERPRINT_SIZE - 1 || strncmp(pin, "SHA256:", 7) != 0) return 0;
    for (size_t i = 7; i < len; i++)
        if (!base64_char(pin[i])) return 0;
    return 1;
}

int pkm_engine_config_validate(const pkm_engine_config_t *cfg, char *errbuf, size_t errbuf_size)
{
    char *b = errbuf;
    size_t n = errbuf_size;
    if (b && n) b[0] = '\0';
    if (!cfg) return refuse(b, n, "the configuration is NULL (start from pkm_engine_config_init)");
    int client = cfg->role == PKM_ROLE_CLIENT;
    if (!client && cfg->role != PKM_ROLE_SERVER)
        return refuse(b, n, "role: expected PKM_ROLE_CLIENT (%d) or PKM_ROLE_SERVER (%d), got %d",
                      PKM_ROLE_CLIENT, PKM_ROLE_SERVER, cfg->role);
    if (client) {
        if (cfg->server_key)
            return refuse(b, n,
                          "server_key: must be NULL for a client (it is the server's own key "
                          "pair; a client names the server's key with pin_fingerprint)");
        if (cfg->client_key && !pkm_key_is_private(cfg->client_key))
            return refuse(b, n,
                          "client_key: expected a key pair (pkm_key_generate), got a public key");
    } else {
        if (!cfg->server_key)
            return refuse(b, n,
                          "server_key: required for a server (its RSA-2048 key pair, e.g. from "
                          "pkm_key_load_pem)");
        if (!pkm_key_is_private(cfg->server_key))
            return refuse(b, n,
                          "server_key: expected a key pair, got a public key (load the private "
                          "key file)");
        const char *field = cfg->client_key        ? "client_key"
                            : cfg->keypool         ? "keypool"
                            : cfg->pin_fingerprint ? "pin_fingerprint"
                                                   : NULL;
        if (field) return refuse(b, n, "%s: client only, must be NULL for a server", field);
    }
    if (cfg->pin_fingerprint && !pin_ok(cfg->pin_fingerprint)) {
        char got[64];
        quote(cfg->pin_fingerprint, got, sizeof got);
        return refuse(b, n,
                      "pin_fingerprint: expected \"SHA256:\" and 43 base64 characters (the "
                      "SHA-256 of the key's DER, as pkm_key_fingerprint writes it), got \"%s\"%s",
                      got, strlen(got) < strnlen(cfg->pin_fingerprint, 64) ? "..." : "");
    }
    if (cfg->max_packet_size == 0 || cfg->max_packet_size > INT32_MAX)
        return refuse(b, n, "max_packet_size: expected 1..%ld bytes, got %zu", (long)INT32_MAX,
                      cfg->max_packet_size);
    if (cfg->max_send_buffer == 0 || cfg->max_send_buffer > SIZE_MAX / 4)
        return refuse(b, n, "max_send_buffer: expected 1..%zu bytes, got %zu", SIZE_MAX / 4,
                      cfg->max_send_buffer);
    if (cfg->secret_len > PKM_MAX_SECRET)
        return refuse(b, n, "secret_len: at most %d bytes (PKM_MAX_SECRET), got %zu",
                      PKM_MAX_SECRET, cfg->secret_len);
    if (cfg->secret_len && !cfg->secret)
        return refuse(b, n, "secret: NULL with secret_len %zu", cfg->secret_len);
    return 0;
}

int pkm__engine_config_check(const pkm_engine_config_t *cfg)
{
    return pkm_engine_config_validate(cfg, NULL, 0);
}

int pkm_engine_config_check(const pkm_engine_config_t *cfg)
{
    return pkm_engine_config_validate(cfg, NULL, 0);
}

static int timeout_bad(const char *name, int64_t ms, char *b, size_t n)
{
    if (ms >= 0) return 0;
    return refuse(b, n, "%s: expected 0 (no bound) or a positive number of milliseconds, got %lld",
                  name, (long long)ms);
}

/* The checks of pkm__conn_config_check: 0 with *ec, or PKM_EINVAL with the sentence in why. */
static int conn_args_check(enum pkm__conn_call call, const char *host, int port_or_fd, int role,
                           const pkm_conn_config_t *cfg, const void *out, pkm_engine_config_t *ec,
                           char *why, size_t n)
{
    if (!cfg) return refuse(why, n, "cfg: required (start from pkm_conn_config_init)");
    if (!out) return refuse(why, n, "out: required (where the new object goes)");
    if (call == PKM__CALL_CONNECT) {
        if (!host)
            return refuse(why, n,
                          "host: required (a host name or a numeric IPv4 or IPv6 address), got "
                          "NULL");
        if (!host[0])
            return refuse(why, n,
                          "host: expected a host name or a numeric IPv4 or IPv6 address, got "
                          "\"\"");
        if (port_or_fd < 1 || port_or_fd > 65535)
            return refuse(why, n, "port: expected 1..65535, got %d", port_or_fd);
    }
    if (call == PKM__CALL_LISTEN && (port_or_fd < 0 || port_or_fd > 65535))
        return refuse(why, n, "port: expected 0 (an ephemeral port) or 1..65535, got %d",
                      port_or_fd);
    if (call == PKM__CALL_FROM_FD) {
        if (port_or_fd < 0)
            return refuse(why, n, "fd: expected a connected stream socket, got %d", port_or_fd);
        if (role != PKM_ROLE_CLIENT && role != PKM_ROLE_SERVER)
            return refuse(why, n,
                          "role: expected PKM_ROLE_CLIENT (%d) or PKM_ROLE_SERVER (%d), got %d",
                          PKM_ROLE_CLIENT, PKM_ROLE_SERVER, role);
    }
    PKM_GUARD(timeout_bad("handshake_timeout_ms", cfg->handshake_timeout_ms, why, n));
    PKM_GUARD(timeout_bad("connect_timeout_ms", cfg->connect_timeout_ms, why, n));
    PKM_GUARD(timeout_bad("idle_timeout_ms", cfg->idle_timeout_ms, why, n));
    *ec = cfg->engine;
    ec->role = role;
    ec->defer_crypto = 0; /* the blocking API does its RSA work inline */
    char inner[PKM_ERRMSG_SIZE];
    if (pkm_engine_config_validate(ec, inner, sizeof inner) < 0)
        return refuse(why, n, "engine.%s", inner);
    return 0;
}

int pkm__conn_config_check(enum pkm__conn_call call, const char *host, int port_or_fd, int role,
                           const pkm_conn_config_t *cfg, const void *out, pkm_engine_config_t *ec,
                           char *msg, size_t n)
{
    static const char *const names[] = {"pkm_connect", "pkm_listen", "pkm_conn_from_fd"};
    char why[PKM_ERRMSG_SIZE];
    why[0] = '\0';
    int r = conn_args_check(call, host, port_or_fd, role, cfg, out, ec, why, sizeof why);
    if (r < 0) refuse(msg, n, "%s: invalid argument: %s", names[call], why);
    return r;
}
