/* SPDX-License-Identifier: MIT */
/* TLS 1.3 (OpenSSL libssl, TLS_AES_256_GCM_SHA384 only, self-signed RSA-2048 certificate made in
 * process) as a struct bench_proto for the loopback harness: the peer PkmCom has to beat. */
#ifndef PKM_BENCH_TLS_PEER_H
#define PKM_BENCH_TLS_PEER_H

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include "loopback.h"

/* Both contexts, made once by bench_tls_init and shared read-only by every connection. */
struct bench_tls {
    SSL_CTX *server;
    SSL_CTX *client;
};

static inline void bench_tls_free(struct bench_tls *t)
{
    SSL_CTX_free(t->server);
    SSL_CTX_free(t->client);
    t->server = t->client = NULL;
}

static inline int bench_tls_ctx_common(SSL_CTX *ctx)
{
    return SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) == 1 &&
           SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1 &&
           SSL_CTX_set_ciphersuites(ctx, "TLS_AES_256_GCM_SHA384") == 1;
}

/* A fresh RSA-2048 key, a self-signed certificate for it, a server context serving them (no
 * session tickets) and a client context trusting exactly that certificate. 0, or -1. */
static inline int bench_tls_init(struct bench_tls *t)
{
    int ok = 0;
    EVP_PKEY *key = EVP_RSA_gen(2048);
    X509 *cert = X509_new();
    t->server = SSL_CTX_new(TLS_server_method());
    t->client = SSL_CTX_new(TLS_client_method());
    if (key && cert && t->server && t->client && X509_set_version(cert, 2) &&
        ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) &&
        X509_gmtime_adj(X509_getm_notBefore(cert), -60) &&
        X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600) && X509_set_pubkey(cert, key) &&
        X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                                   (const unsigned char *)"pkmcom-bench", -1, -1, 0) &&
        X509_set_issuer_name(cert, X509_get_subject_name(cert)) &&
        X509_sign(cert, key, EVP_sha256()) > 0 && bench_tls_ctx_common(t->server) &&
        bench_tls_ctx_common(t->client) && SSL_CTX_use_certificate(t->server, cert) == 1 &&
        SSL_CTX_use_PrivateKey(t->server, key) == 1 && SSL_CTX_check_private_key(t->server) == 1 &&
        SSL_CTX_set_num_tickets(t->server, 0) == 1 &&
        X509_STORE_add_cert(SSL_CTX_get_cert_store(t->client), cert) == 1) {
        SSL_CTX_set_verify(t->client, SSL_VERIFY_PEER, NULL);
        /* Let the receiver pull whole batches from its memory BIO, as a tuned server would. */
        SSL_CTX_set_read_ahead(t->server, 1);
        ok = 1;
    }
    X509_free(cert);
    EVP_PKEY_free(key);
    if (!ok) {
        ERR_print_errors_fp(stderr);
        bench_tls_free(t);
        return -1;
    }
    return 0;
}

/* One side: an SSL over two memory BIOs, so that the harness, not libssl, does the socket I/O
 * (records are encrypted into wbio; received bytes are written into rbio). */
struct bench_tls_side {
    SSL *ssl;
    BIO *rbio, *wbio;
    uint8_t buf[16384];
};

static inline void bench_tls_close(void *p)
{
    struct bench_tls_side *s = p;
    if (!s) return;
    SSL_free(s->ssl); /* frees both BIOs */
    free(s);
}

/* Drives the handshake over fd: flush what libssl wrote, read when it wants more. */
static inline void *bench_tls_open(SSL_CTX *ctx, int fd, int server)
{
    struct bench_tls_side *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->ssl = SSL_new(ctx);
    s->rbio = BIO_new(BIO_s_mem());
    s->wbio = BIO_new(BIO_s_mem());
    if (!s->ssl || !s->rbio || !s->wbio) {
        BIO_free(s->rbio);
        BIO_free(s->wbio);
        SSL_free(s->ssl);
        free(s);
        return NULL;
    }
    BIO_set_mem_eof_return(s->rbio, -1); /* empty means "want read", not EOF */
    SSL_set_bio(s->ssl, s->rbio, s->wbio);
    if (server)
        SSL_set_accept_state(s->ssl);
    else
        SSL_set_connect_state(s->ssl);
    for (;;) {
        int r = SSL_do_handshake(s->ssl);
        char *out;
        long n = BIO_get_mem_data(s->wbio, &out);
        if (n > 0) {
            if (bench_write_all(fd, (const uint8_t *)out, (size_t)n) != 0) break;
            (void)BIO_reset(s->wbio);
        }
        if (r == 1) {
            const char *suite = SSL_CIPHER_get_name(SSL_get_current_cipher(s->ssl));
            if (SSL_version(s->ssl) != TLS1_3_VERSION || strcmp(suite, "TLS_AES_256_GCM_SHA384") ||
                (!server && SSL_get_verify_result(s->ssl) != X509_V_OK)) {
                fprintf(stderr, "tls: negotiated %s %s, verify %ld\n", SSL_get_version(s->ssl),
                        suite, SSL_get_verify_result(s->ssl));
                break;
            }
            return s;
        }
        if (SSL_get_error(s->ssl, r) != SSL_ERROR_WANT_READ) break;
        ssize_t got = read(fd, s->buf, sizeof s->buf);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0 || BIO_write(s->rbio, s->buf, (int)got) != (int)got) break;
    }
    fprintf(stderr, "tls: %s handshake failed\n", server ? "server" : "client");
    ERR_print_errors_fp(stderr);
    bench_tls_close(s);
    return NULL;
}

static inline void *bench_tls_client_open(void *cfg, int fd)
{
    return bench_tls_open(((struct bench_tls *)cfg)->client, fd, 0);
}

static inline void *bench_tls_server_open(void *cfg, int fd)
{
    return bench_tls_open(((struct bench_tls *)cfg)->server, fd, 1);
}

/* One SSL_write per message: one record for content up to 16 KiB. */
static inline int bench_tls_send(void *p, const uint8_t *msg, size_t len)
{
    struct bench_tls_side *s = p;
    size_t done = 0;
    return SSL_write_ex(s->ssl, msg, len, &done) == 1 && done == len ? 0 : -1;
}

static inline size_t bench_tls_pending(void *p, const uint8_t **wire)
{
    struct bench_tls_side *s = p;
    char *out;
    long n = BIO_get_mem_data(s->wbio, &out);
    *wire = (const uint8_t *)out;
    return n > 0 ? (size_t)n : 0;
}

static inline void bench_tls_written(void *p)
{
    (void)BIO_reset(((struct bench_tls_side *)p)->wbio);
}

static inline int bench_tls_feed(void *p, const uint8_t *wire, size_t n, struct bench_sink *sink)
{
    struct bench_tls_side *s = p;
    if (BIO_write(s->rbio, wire, (int)n) != (int)n) return -1;
    for (;;) {
        size_t got = 0;
        if (SSL_read_ex(s->ssl, s->buf, sizeof s->buf, &got) == 1) {
            bench_sink_data(sink, s->buf, got);
            continue;
        }
        if (SSL_get_error(s->ssl, 0) == SSL_ERROR_WANT_READ) return 0;
        ERR_print_errors_fp(stderr);
        return -1;
    }
}

static const struct bench_proto bench_tls_proto = {
    "TLS 1.3",      bench_tls_client_open, bench_tls_server_open,
    bench_tls_send, bench_tls_pending,     bench_tls_written,
    bench_tls_feed, bench_tls_close,       bench_tls_close,
    NULL, /* one-thread mode only */
};

#endif
