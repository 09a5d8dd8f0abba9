/* pkm_strerror() and pkm_errname(): a sentence and a symbolic name for every PKM_E* code. */
#include "pkmcom/common.h"

struct pkm_errinfo {
    int code;
    const char *name;
    const char *text;
};

static const struct pkm_errinfo errors[] = {
    {PKM_OK, "PKM_OK", "success"},
    {PKM_EINVAL, "PKM_EINVAL", "invalid argument"},
    {PKM_ENOMEM, "PKM_ENOMEM", "out of memory"},
    {PKM_ETRUNC, "PKM_ETRUNC", "input ends before the value is complete"},
    {PKM_ENOSPC, "PKM_ENOSPC", "output buffer too small"},
    {PKM_ESTATE, "PKM_ESTATE", "operation not valid in the current state"},
    {PKM_EINTERNAL, "PKM_EINTERNAL", "internal error in libpkmcom (a bug: please report it)"},
    {PKM_EBOOL, "PKM_EBOOL", "Boolean field is neither 0 nor 1"},
    {PKM_EENUM, "PKM_EENUM", "Enum field holds a value its schema does not declare"},
    {PKM_EBITFLAG, "PKM_EBITFLAG", "Bitflag field has a reserved bit set"},
    {PKM_ENAN, "PKM_ENAN", "Float or Double field is NaN"},
    {PKM_ENANOS, "PKM_ENANOS", "Instant or Duration nanos outside 0..999999999"},
    {PKM_ESECONDS, "PKM_ESECONDS",
     "Instant or Duration seconds outside (-31556889864401400, 31556889864401400]"},
    {PKM_ENEGLEN, "PKM_ENEGLEN", "negative length or packet Size"},
    {PKM_EMUTF8_NUL, "PKM_EMUTF8_NUL", "Modified UTF-8 string contains a raw NUL byte"},
    {PKM_EMUTF8_BYTE, "PKM_EMUTF8_BYTE", "Modified UTF-8 string contains a byte 0xF0-0xFF"},
    {PKM_EMUTF8_CONT, "PKM_EMUTF8_CONT",
     "Modified UTF-8 string has a continuation byte without a lead byte"},
    {PKM_EMUTF8_TRUNC, "PKM_EMUTF8_TRUNC",
     "Modified UTF-8 string ends inside a multi-byte character"},
    {PKM_EUTF8, "PKM_EUTF8", "text is not valid UTF-8"},
    {PKM_EJSON, "PKM_EJSON", "Json field is not valid JSON"},
    {PKM_EJSON_NOTOBJ, "PKM_EJSON_NOTOBJ", "Json field is not a single JSON object"},
    {PKM_ETOOLONG, "PKM_ETOOLONG",
     "string or array too long for its length prefix or length field"},
    {PKM_EARRLEN, "PKM_EARRLEN", "array length does not match the field that gives it"},
    {PKM_ESIZE, "PKM_ESIZE", "packet Size does not match its content"},
    {PKM_EHASH, "PKM_EHASH", "packet Hash does not match its content"},
    {PKM_EUNKNOWNID, "PKM_EUNKNOWNID", "no schema registered for this packet id"},
    {PKM_ETOOBIG, "PKM_ETOOBIG", "packet Size exceeds the configured maximum"},
    {PKM_ESCHEMA, "PKM_ESCHEMA", "malformed packet schema"},
    {PKM_EVERSION, "PKM_EVERSION", "Version out of range (major 1..256, minor 0..255)"},
    {PKM_ETYPE, "PKM_ETYPE", "value does not match the field type"},
    {PKM_ERANGE, "PKM_ERANGE", "number out of range for the field type"},
    {PKM_EKEYLEN, "PKM_EKEYLEN", "public key length outside 1..1024 bytes"},
    {PKM_EKEY, "PKM_EKEY",
     "not an RSA-2048 key with public exponent 65537 (in canonical DER, for a received key)"},
    {PKM_EKEYPERM, "PKM_EKEYPERM",
     "private key file is readable by group or others (chmod 600 it)"},
    {PKM_EKEYFILE, "PKM_EKEYFILE", "key file cannot be read or written"},
    {PKM_ECRYPTO, "PKM_ECRYPTO", "cryptographic library failure"},
    {PKM_ERANDOM, "PKM_ERANDOM", "random number generator failure"},
    {PKM_EHANDSHAKE, "PKM_EHANDSHAKE",
     "handshake failed: wrong secret, or not the server you expected"},
    {PKM_EPIN, "PKM_EPIN", "server key does not match the pinned fingerprint"},
    {PKM_EPADDING, "PKM_EPADDING", "bad padding in an encrypted packet"},
    {PKM_EPROTO, "PKM_EPROTO", "protocol violation by the peer"},
    {PKM_ECLOSED, "PKM_ECLOSED", "connection is closed"},
    {PKM_EEOF, "PKM_EEOF", "connection closed by the peer"},
    {PKM_ETIMEOUT, "PKM_ETIMEOUT", "operation timed out"},
    {PKM_EAGAIN, "PKM_EAGAIN", "no data yet: try again later"},
    {PKM_EIO, "PKM_EIO", "socket I/O error"},
    {PKM_ERESOLVE, "PKM_ERESOLVE", "host name could not be resolved"},
    {PKM_ECONNECT, "PKM_ECONNECT", "could not connect to the server"},
    {PKM_EQUEUE, "PKM_EQUEUE", "send queue is full"},
    {PKM_ECONNRESET, "PKM_ECONNRESET", "connection reset by the peer"},
    {PKM_EKNOWNHOST, "PKM_EKNOWNHOST",
     "server key differs from the one recorded in known_hosts: possible impersonation"},
    {PKM_ENOPROOF, "PKM_ENOPROOF",
     "the server could not prove it holds its key (the pinned one, if pinned), or the secret "
     "differs: an impostor, a wrong secret, or a server that speaks only wire profile 1"},
};

static const struct pkm_errinfo *lookup(int err)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == err) return &errors[i];
    return NULL;
}

const char *pkm_strerror(int err)
{
    const struct pkm_errinfo *e = lookup(err);
    return e ? e->text : "unknown libpkmcom error";
}

const char *pkm_errname(int err)
{
    const struct pkm_errinfo *e = lookup(err);
    return e ? e->name : "PKM_E?";
}
