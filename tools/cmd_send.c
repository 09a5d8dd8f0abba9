/* SPDX-License-Identifier: MIT */
/* pkmcom send: build one packet from typed FIELDs (TYPE:VALUE) through the codec, connect with
 * the handshake (pinned or known_hosts trust), send it N times and print the replies. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <unistd.h>
#include <sys/socket.h>
#include <openssl/crypto.h>
#include "tool.h"

static const char send_help[] =
    "usage: pkmcom send HOST:PORT --id ID [FIELD...] [options]\n"
    "       pkmcom send HOST:PORT --packet NAME [FIELD=VALUE...] [options]\n"
    "       pkmcom send --dry-run (--id ID [FIELD...] | --packet NAME [FIELD=VALUE...])\n"
    "\n"
    "Connects to a PkmCom/TCP server, runs the handshake, sends the packet built from the\n"
    "FIELDs (N times), prints each packet received as one JSON line\n"
    "  {\"id\":16,\"hash\":123,\"size\":5,\"content\":\"<hex>\"}\n"
    "and exits 0 once the expected number of replies has arrived.\n"
    "\n"
    "  --id ID              packet id, 0..254 (decimal or 0x-hex; 255 is the handshake's)\n"
    "  --packet NAME        a Complete Definition packet, built from NAME=VALUE (below)\n"
    "  --password-file F    the server's password (alternative handshaking): the first\n"
    "                       line of F. Default: $PKMCOM_PASSWORD, if set\n"
    "  --password PW        the password on the command line: works, with a warning\n"
    "                       (other users can see a command line)\n"
    "  --pin FP             trust only the server key with this fingerprint (SHA256:...)\n"
    "  --known-hosts FILE   trust-on-first-use file (default: known_hosts in the\n"
    "                       configuration directory); not used with --pin\n"
    "  --strict             refuse a server that is not in known_hosts (no first use)\n"
    "  --count N            send the packet N times (default 1)\n"
    "  --expect N           replies to wait for (default: N of --count)\n"
    "  --timeout SECONDS    bound on connecting + handshake, and on waiting for the\n"
    "                       replies (default 10)\n"
    "  --bind ADDR          connect from this local address (numeric IPv4 or IPv6, e.g.\n"
    "                       127.0.0.2: the server, or a proxy, sees it as the source)\n"
    "  -v, --verbose        say which server key was seen and how it was trusted\n"
    "  --dry-run            connect to nothing: print the packet the FIELDs make as a\n"
    "                       JSON line (no HOST:PORT then)\n"
    "  -h, --help           this help\n"
    "\n"
    "A FIELD is TYPE:VALUE. The content is the FIELDs encoded in order as the APL types,\n"
    "and the Hash covers them as a schema with these fields would.\n"
    "  byte sbyte short ushort int uint long   decimal or 0x-hex (range checked)\n"
    "  float double                            decimal (or C hex float, inf); no NaN\n"
    "  bool                                    true, false, 1 or 0\n"
    "  string json lstring ljson               the text as given (UTF-8); json and ljson\n"
    "                                          must be one JSON object\n"
    "  version                                 MAJOR.MINOR, e.g. 1.0\n"
    "  uuid                                    canonical 8-4-4-4-12 hex\n"
    "  instant duration                        SECONDS,NANOS (or SECONDS)\n"
    "  bytes                                   a Byte Array, as hex (even length)\n"
    "\n";

/* (A second string: C11 compilers need support only 4095 characters in one.) */
static const char send_help_packet[] =
    "With --packet NAME (a Complete Definition packet: connect-request, connect-success,\n"
    "connect-failure, challenge-identity, challenge-response, reestablish-secret,\n"
    "keep-alive-clientbound, keep-alive-serverbound), the id and the schema are the spec's and\n"
    "each argument is FIELD=VALUE, FIELD a field's name (case, spaces and punctuation ignored;\n"
    "the end of one field's name is enough: Actions for Available Actions). VALUE is read by\n"
    "the field's type with the rules above; an Enum also takes its names (Reason=password), a\n"
    "Bitflag names or numbers joined by | (Actions=trade|irc). Every field must be given,\n"
    "except an array (give it once per element, e.g. Args={...} Args={...}) and the count\n"
    "of an array (Num. Args: counted when left out). Example:\n"
    "  pkmcom send HOST:PORT --packet connect-request PkmVersion=1.0 \\\n"
    "      'TrainerInfo={\"name\":\"Red\"}' SentryAccount=00000000-0000-0000-0000-000000000000\n"
    "\n"
    "Trust: with --pin the server's key must have that fingerprint. Otherwise known_hosts\n"
    "decides: by default the first contact with HOST:PORT records its fingerprint there\n"
    "(trust on first use, said on stderr); --strict refuses a HOST:PORT it does not list.\n"
    "A later different key is refused, naming both fingerprints and the line to edit; a\n"
    "malformed line for HOST:PORT is an error, never a first contact. Either way the\n"
    "handshake then makes the server prove it holds the private key of that fingerprint:\n"
    "a server that cannot (an impostor replaying the real server's public key) fails at\n"
    "the confirmation step, exit 1. A password should only be sent to a pinned or\n"
    "known server: it is not a password-authenticated exchange.\n";

/* ---- FIELD parsing ---- */

static const struct {
    const char *name;
    pkm_type_t type;
} field_types[] = {
    {"byte", PKM_T_BYTE},       {"sbyte", PKM_T_SBYTE},     {"short", PKM_T_SHORT},
    {"ushort", PKM_T_USHORT},   {"int", PKM_T_INT},         {"uint", PKM_T_UINT},
    {"long", PKM_T_LONG},       {"float", PKM_T_FLOAT},     {"double", PKM_T_DOUBLE},
    {"bool", PKM_T_BOOL},       {"string", PKM_T_STRING},   {"json", PKM_T_JSON},
    {"lstring", PKM_T_LSTRING}, {"ljson", PKM_T_LJSON},     {"version", PKM_T_VERSION},
    {"uuid", PKM_T_UUID},       {"instant", PKM_T_INSTANT}, {"duration", PKM_T_DURATION},
    {"bytes", PKM_T_ARRAY},
};
#define N_FIELD_TYPES (sizeof field_types / sizeof field_types[0])

static const pkm_field_t byte_elem = {.type = PKM_T_BYTE};

/* Seconds of an Instant/Duration: -31556889864401400 < s <= 31556889864401400. */
#define SECONDS_MIN (-31556889864401399LL)
#define SECONDS_MAX 31556889864401400LL

/* Parses an integer: optional '-', then decimal or 0x-hex. Returns 0, -1 (not a number) or
 * -2 (a number outside min..max). */
static int parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    int neg = 0;
    if (*s == '-') {
        neg = 1;
        s++;
    }
    uint64_t mag;
    int r = tool_parse_magnitude(s, &mag);
    if (r < 0) return r;
    int64_t v;
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1) return -2;
        v = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX) return -2;
        v = (int64_t)mag;
    }
    if (v < min || v > max) return -2;
    *out = v;
    return 0;
}

/* The same for the unsigned range 0..max (max may exceed INT64_MAX: for no type here it does). */
static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    int64_t v;
    int r = parse_int(s, 0, (int64_t)max, &v);
    if (r == 0) *out = (uint64_t)v;
    return r;
}

static int parse_hex_n(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

static int parse_uuid(const char *s, pkm_uuid_t *u)
{
    /* xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx */
    static const size_t groups[5] = {8, 4, 4, 4, 12};
    if (strlen(s) != 36) return -1;
    uint64_t parts[5];
    const char *p = s;
    for (int g = 0; g < 5; g++) {
        if (parse_hex_n(p, groups[g], &parts[g]) < 0) return -1;
        p += groups[g];
        if (g < 4 && *p++ != '-') return -1;
    }
    u->msb = parts[0] << 32 | parts[1] << 16 | parts[2];
    u->lsb = parts[3] << 48 | parts[4];
    return 0;
}

/* Parses VALUE as a value of def's type (any type but ENUM, BITFLAG, STRUCT and arrays of other
 * than Byte): the TYPE:VALUE rules. A Byte Array's bytes are put in *owned (the caller frees it).
 * Returns 0, -1 with the reason in why, or -2 (out of memory). */
static int parse_value(const pkm_field_t *def, const char *v, pkm_value_t *val, uint8_t **owned,
                       char *why, size_t whycap)
{
#define BAD(...)                                                                                   \
    do {                                                                                           \
        snprintf(why, whycap, __VA_ARGS__);                                                        \
        return -1;                                                                                 \
    } while (0)
    int r;
    int64_t i64 = 0;
    uint64_t u64 = 0;
    switch (def->type) {
    case PKM_T_BYTE:
    case PKM_T_USHORT:
    case PKM_T_UINT: {
        uint64_t max = def->type == PKM_T_BYTE     ? 0xFF
                       : def->type == PKM_T_USHORT ? 0xFFFF
                                                   : 0xFFFFFFFF;
        r = parse_uint(v, max, &u64);
        if (r == -1) BAD("not a number (decimal or 0x-hex)");
        if (r == -2) BAD("value out of range 0..%llu", (unsigned long long)max);
        val->u64 = u64;
        break;
    }
    case PKM_T_SBYTE:
    case PKM_T_SHORT:
    case PKM_T_INT:
    case PKM_T_LONG: {
        int64_t lo = def->type == PKM_T_SBYTE   ? INT8_MIN
                     : def->type == PKM_T_SHORT ? INT16_MIN
                     : def->type == PKM_T_INT   ? INT32_MIN
                                                : INT64_MIN;
        int64_t hi = def->type == PKM_T_SBYTE   ? INT8_MAX
                     : def->type == PKM_T_SHORT ? INT16_MAX
                     : def->type == PKM_T_INT   ? INT32_MAX
                                                : INT64_MAX;
        r = parse_int(v, lo, hi, &i64);
        if (r == -1) BAD("not a number (decimal or 0x-hex)");
        if (r == -2) BAD("value out of range %lld..%lld", (long long)lo, (long long)hi);
        val->i64 = i64;
        break;
    }
    case PKM_T_FLOAT:
    case PKM_T_DOUBLE: {
        char *end;
        double d;
        if (!*v || *v == ' ' || *v == '\t' || *v == '\n') BAD("not a number");
        errno = 0;
        if (def->type == PKM_T_FLOAT)
            d = strtof(v, &end);
        else
            d = strtod(v, &end);
        if (*end) BAD("not a number");
        if (isnan(d)) BAD("NaN is not allowed (APL precondition)");
        if (errno == ERANGE && isinf(d))
            BAD("value out of range for a %s", def->type == PKM_T_FLOAT ? "float" : "double");
        if (def->type == PKM_T_FLOAT)
            val->f32 = (float)d;
        else
            val->f64 = d;
        break;
    }
    case PKM_T_BOOL:
        if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
            val->b = true;
        else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
            val->b = false;
        else
            BAD("expected true, false, 1 or 0");
        break;
    case PKM_T_STRING:
    case PKM_T_JSON:
    case PKM_T_LSTRING:
    case PKM_T_LJSON: val->str = (pkm_str_t){v, strlen(v)}; break;
    case PKM_T_VERSION: {
        const char *dot = strchr(v, '.');
        char major[24];
        if (!dot || (size_t)(dot - v) >= sizeof major) BAD("expected MAJOR.MINOR, e.g. 1.0");
        memcpy(major, v, (size_t)(dot - v));
        major[dot - v] = '\0';
        uint64_t ma = 0, mi = 0;
        int r1 = parse_uint(major, 256, &ma), r2 = parse_uint(dot + 1, 255, &mi);
        if (r1 == -1 || r2 == -1) BAD("expected MAJOR.MINOR, e.g. 1.0");
        if (r1 == -2 || r2 == -2 || ma < 1)
            BAD("version out of range (major 1..256, minor 0..255)");
        val->version = (pkm_version_t){(uint16_t)ma, (uint16_t)mi};
        break;
    }
    case PKM_T_UUID:
        if (parse_uuid(v, &val->uuid) < 0)
            BAD("expected a UUID in canonical form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx");
        break;
    case PKM_T_INSTANT:
    case PKM_T_DURATION: {
        const char *comma = strchr(v, ',');
        char secs[32];
        size_t sl = comma ? (size_t)(comma - v) : strlen(v);
        if (sl >= sizeof secs) BAD("seconds out of range %lld..%lld", SECONDS_MIN, SECONDS_MAX);
        memcpy(secs, v, sl);
        secs[sl] = '\0';
        r = parse_int(secs, SECONDS_MIN, SECONDS_MAX, &i64);
        if (r == -1) BAD("expected SECONDS,NANOS (decimal integers)");
        if (r == -2) BAD("seconds out of range %lld..%lld", SECONDS_MIN, SECONDS_MAX);
        int64_t ns = 0;
        if (comma) {
            const char *n = comma + 1;
            r = (*n == '-') ? -2 : parse_int(n, 0, 999999999, &ns);
            if (r == -1) BAD("expected SECONDS,NANOS (decimal integers)");
            if (r == -2) BAD("nanos out of range 0..999999999");
        }
        val->time = (pkm_time_t){i64, (int32_t)ns};
        break;
    }
    case PKM_T_ARRAY: {
        size_t n;
        r = tool_unhex(v, owned, &n);
        if (r == -2) return -2;
        if (r < 0) BAD("expected hex digits, an even number of them");
        if (n > INT32_MAX) BAD("too long");
        val->bytes = (pkm_bytes_t){*owned, n};
        break;
    }
    default: BAD("unsupported type");
    }
    return 0;
#undef BAD
}

/* What only the codec knows (UTF-8, JSON, String length, an enum's values, reserved bits):
 * encodes the field alone. Returns 0, -1 with the reason in why, or -2 (out of memory).
 * `hint`: suggest the long types for a String or Json that is too long. */
static int check_alone(const pkm_field_t *def, const pkm_value_t *val, int hint, char *why,
                       size_t whycap)
{
    pkm_schema_t one = {"FIELD", def, 1};
    size_t len;
    uint8_t *tmp = NULL;
    int r = pkm_schema_encode_alloc(&one, val, 1, &tmp, &len, NULL);
    pkm_bytes_free(tmp);
    int text = def->type == PKM_T_STRING || def->type == PKM_T_JSON;
    switch (r) {
    case 0: return 0;
    case PKM_EUTF8: snprintf(why, whycap, "not valid UTF-8"); break;
    case PKM_EJSON: snprintf(why, whycap, "not valid JSON (RFC 8259)"); break;
    case PKM_EJSON_NOTOBJ: snprintf(why, whycap, "not a JSON object ({...})"); break;
    case PKM_ETOOLONG:
        snprintf(why, whycap, "%s%s",
                 text ? "too long: at most 65535 bytes of Modified UTF-8" : "too long",
                 text && hint ? " (use lstring or ljson)" : "");
        break;
    case PKM_ENOMEM: return -2;
    default: snprintf(why, whycap, "%s", pkm_strerror(r)); break;
    }
    return -1;
}

/* One parsed FIELD: its schema field, its value and memory it owns (bytes). */
struct field {
    pkm_field_t def;
    pkm_value_t val;
    uint8_t *owned;
};

/* Parses FIELD number idx (1-based, for messages). Returns 0, or TOOL_EXIT_USAGE after printing
 * "pkmcom: field N (ARG): reason". */
static int parse_field(size_t idx, const char *arg, struct field *f)
{
    char shown[72];
    size_t al = strlen(arg);
    if (al > 60)
        snprintf(shown, sizeof shown, "%.57s...", arg);
    else
        snprintf(shown, sizeof shown, "%s", arg);
#define BAD(...)                                                                                   \
    do {                                                                                           \
        char why_[512];                                                                            \
        snprintf(why_, sizeof why_, __VA_ARGS__);                                                  \
        return tool_fail(TOOL_EXIT_USAGE, "field %zu (%s): %s", idx, shown, why_);                 \
    } while (0)

    memset(f, 0, sizeof *f);
    const char *colon = strchr(arg, ':');
    if (!colon) BAD("expected TYPE:VALUE");
    size_t tl = (size_t)(colon - arg);
    const char *v = colon + 1;
    size_t t;
    for (t = 0; t < N_FIELD_TYPES; t++)
        if (strlen(field_types[t].name) == tl && strncmp(field_types[t].name, arg, tl) == 0) break;
    if (t == N_FIELD_TYPES)
        BAD("unknown type '%.*s' (byte sbyte short ushort int uint long float double bool string "
            "json lstring ljson version uuid instant duration bytes)",
            (int)(tl > 20 ? 20 : tl), arg);
    f->def.type = field_types[t].type;
    f->def.name = field_types[t].name;

    char why[512];
    int r = parse_value(&f->def, v, &f->val, &f->owned, why, sizeof why);
    if (r == -2) return tool_fail(TOOL_EXIT_FAIL, "out of memory");
    if (r < 0) BAD("%s", why);
    if (f->def.type == PKM_T_ARRAY) {
        f->def.elem = &byte_elem;
        f->def.fixed_len = (uint32_t)f->val.bytes.len;
    }
    r = check_alone(&f->def, &f->val, 1, why, sizeof why);
    if (r == -2) return tool_fail(TOOL_EXIT_FAIL, "out of memory");
    if (r < 0) BAD("%s", why);
    return 0;
#undef BAD
}

/* ---- --packet NAME: a Complete Definition packet from NAME=VALUE arguments ---- */

static const char *type_name(pkm_type_t t)
{
    switch (t) {
    case PKM_T_BYTE: return "Byte";
    case PKM_T_SBYTE: return "Signed Byte";
    case PKM_T_SHORT: return "Short";
    case PKM_T_USHORT: return "Unsigned Short";
    case PKM_T_INT: return "Int";
    case PKM_T_UINT: return "Unsigned Int";
    case PKM_T_LONG: return "Long";
    case PKM_T_FLOAT: return "Float";
    case PKM_T_DOUBLE: return "Double";
    case PKM_T_BOOL: return "Boolean";
    case PKM_T_STRING: return "String";
    case PKM_T_JSON: return "Json";
    case PKM_T_LSTRING: return "Long String";
    case PKM_T_LJSON: return "Long Json";
    case PKM_T_VERSION: return "Version";
    case PKM_T_UUID: return "UUID";
    case PKM_T_INSTANT: return "Instant";
    case PKM_T_DURATION: return "Duration";
    case PKM_T_ENUM: return "Enum";
    case PKM_T_BITFLAG: return "Bitflag";
    case PKM_T_ARRAY: return "Array";
    case PKM_T_STRUCT: return "Structure";
    }
    return "?";
}

static int is_plain_byte_array(const pkm_field_t *f)
{
    return f->type == PKM_T_ARRAY && f->elem && f->elem->type == PKM_T_BYTE;
}

/* "A, B, C": the names of the schema's fields, or of field `field`'s symbols. */
static void list_fields(const pkm_schema_t *s, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->n_fields && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? ", " : "", s->fields[i].name);
}

static void list_symbols(const pkm_cmpl_packet_t *p, size_t field, char *out, size_t cap)
{
    size_t n = 0, used = 0;
    const pkm_cmpl_symbol_t *sym = pkm_cmpl_symbols(p, field, &n);
    out[0] = '\0';
    for (size_t i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s (%llu)", i ? ", " : "", sym[i].name,
                                 (unsigned long long)sym[i].value);
}

/* The name without what pkm_cmpl_name_eq ignores, lower case, into out (cap bytes). */
static void normalise(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    for (; *name && n + 1 < cap; name++) {
        char c = *name;
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) out[n++] = c;
    }
    out[n] = '\0';
}

/* The field `name` names: its whole name (as pkm_cmpl_field matches it), else the end of
 * exactly one field's name ("Actions" for "Available Actions"). 1 with *idx, 0 for none, -1
 * when the end matches several fields. */
static int find_field(const pkm_schema_t *s, const char *name, size_t *idx)
{
    if (pkm_cmpl_field(s, name, idx)) return 1;
    char want[128], have[128];
    normalise(name, want, sizeof want);
    size_t wl = strlen(want), hits = 0;
    if (wl == 0) return 0;
    for (size_t i = 0; i < s->n_fields; i++) {
        normalise(s->fields[i].name, have, sizeof have);
        size_t hl = strlen(have);
        if (hl > wl && strcmp(have + hl - wl, want) == 0) {
            *idx = i;
            hits++;
        }
    }
    return hits == 1 ? 1 : hits ? -1 : 0;
}

/* One number or symbol of an Enum / Bitflag field (field index `field` of p, or SIZE_MAX for an
 * array element, which has no symbols). 0, -1 (why), -2. */
static int parse_symbolic(const pkm_cmpl_packet_t *p, size_t field, const pkm_field_t *def,
                          const char *v, uint64_t *out, char *why, size_t whycap)
{
    const pkm_cmpl_symbol_t *sym = field == SIZE_MAX ? NULL : pkm_cmpl_symbol_by_name(p, field, v);
    if (sym) {
        *out = sym->value;
        return 0;
    }
    pkm_field_t base = {.type = def->base};
    pkm_value_t val;
    uint8_t *owned = NULL;
    int r = parse_value(&base, v, &val, &owned, why, whycap);
    free(owned);
    if (r == -1) {
        char names[400];
        list_symbols(p, field, names, sizeof names);
        if (names[0]) snprintf(why, whycap, "'%s' is neither a number nor one of %s", v, names);
    }
    if (r == 0) *out = val.u64; /* the bit pattern: a non-negative number reads the same */
    return r;
}

/* VALUE for field def (index `field` of p's schema; SIZE_MAX for an array element). */
static int parse_named(const pkm_cmpl_packet_t *p, size_t field, const pkm_field_t *def,
                       const char *v, pkm_value_t *val, uint8_t **owned, char *why, size_t whycap)
{
    int r;
    memset(val, 0, sizeof *val);
    switch (def->type) {
    case PKM_T_ENUM: {
        uint64_t x;
        if ((r = parse_symbolic(p, field, def, v, &x, why, whycap)) < 0) return r;
        int known = 0;
        for (size_t i = 0; i < def->n_enum_values; i++)
            if ((uint64_t)def->enum_values[i] == x) known = 1;
        if (!known) {
            char names[400];
            list_symbols(p, field, names, sizeof names);
            snprintf(why, whycap, "%llu is not a value of this enum%s%s", (unsigned long long)x,
                     names[0] ? ": " : "", names);
            return -1;
        }
        val->u64 = x;
        break;
    }
    case PKM_T_BITFLAG: {
        if (def->base == PKM_T_UUID) {
            snprintf(why, whycap, "a UUID bitflag cannot be given by name");
            return -1;
        }
        uint64_t bits = 0;
        const char *t = v;
        for (;;) {
            const char *bar = strchr(t, '|');
            size_t tl = bar ? (size_t)(bar - t) : strlen(t);
            char tok[128];
            if (tl == 0 || tl >= sizeof tok) {
                snprintf(why, whycap, "expected bit names or numbers separated by |");
                return -1;
            }
            memcpy(tok, t, tl);
            tok[tl] = '\0';
            uint64_t x;
            if ((r = parse_symbolic(p, field, def, tok, &x, why, whycap)) < 0) return r;
            bits |= x;
            if (!bar) break;
            t = bar + 1;
        }
        if (bits & def->reserved_mask) {
            snprintf(why, whycap, "reserved bits 0x%llX set (they must be 0)",
                     (unsigned long long)(bits & def->reserved_mask));
            return -1;
        }
        val->u64 = bits;
        break;
    }
    case PKM_T_STRUCT: snprintf(why, whycap, "a Structure cannot be given as one value"); return -1;
    case PKM_T_ARRAY:
        if (!is_plain_byte_array(def)) {
            snprintf(why, whycap, "an array of %s: give the field once per element",
                     type_name(def->elem ? def->elem->type : PKM_T_BYTE));
            return -1;
        }
        if ((r = parse_value(def, v, val, owned, why, whycap)) < 0) return r; /* hex */
        break;
    default:
        if ((r = parse_value(def, v, val, owned, why, whycap)) < 0) return r;
        break;
    }
    return check_alone(def, val, 0, why, whycap);
}

/* The packet built from NAME=VALUE arguments: its values and what they own. */
struct named {
    const pkm_cmpl_packet_t *pkt;
    pkm_value_t *vals;  /* one per field of the schema */
    pkm_value_t *items; /* the elements of its arrays (at most one per argument) */
    uint8_t **owned;    /* Byte Array buffers (at most one per argument) */
    size_t n_owned;
};

static void named_free(struct named *nm)
{
    for (size_t i = 0; i < nm->n_owned; i++)
        free(nm->owned[i]);
    free(nm->owned);
    free(nm->items);
    free(nm->vals);
    memset(nm, 0, sizeof *nm);
}

/* Builds --packet NAME's content from args[n] ("Field=VALUE"). Every field must be given once,
 * except an array field (given once per element; none = empty) and an array's length field
 * (filled from the element count when not given). Returns 0 or an exit status (message said). */
static int build_named(const char *name, const char **args, size_t n, struct named *nm,
                       uint8_t **content, size_t *size, uint32_t *chash)
{
    memset(nm, 0, sizeof *nm);
    const pkm_cmpl_packet_t *p = pkm_cmpl_by_name(name);
    if (!p) {
        const pkm_cmpl_registry_t *reg = pkm_cmpl_registry();
        char names[600];
        size_t used = 0;
        names[0] = '\0';
        for (size_t i = 0; i < reg->n_packets && used < sizeof names; i++)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s\"%s\"", i ? ", " : "",
                                     reg->packets[i].name);
        return tool_usage_error(
            "send", "--packet: no Complete Definition packet is named '%s' (%s)", name, names);
    }
    if (!p->schema)
        return tool_usage_error("send",
                                "--packet: the spec does not define the content of 0x%02X %s, so "
                                "it cannot be built by field names (use --id and TYPE:VALUE)",
                                p->id, p->name);
    const pkm_schema_t *s = p->schema;
    nm->pkt = p;
    size_t *field_of = calloc(n ? n : 1, sizeof *field_of);
    nm->vals = calloc(s->n_fields ? s->n_fields : 1, sizeof *nm->vals);
    nm->items = calloc(n ? n : 1, sizeof *nm->items);
    nm->owned = calloc(n ? n : 1, sizeof *nm->owned);
    int *given = calloc(s->n_fields ? s->n_fields : 1, sizeof *given);
    if (!field_of || !nm->vals || !nm->items || !nm->owned || !given) {
        free(field_of);
        free(given);
        named_free(nm);
        return tool_fail(TOOL_EXIT_FAIL, "out of memory");
    }
    int status = TOOL_EXIT_OK;
    char list[600], why[512];
    list_fields(s, list, sizeof list);
    /* Which field each argument names. */
    for (size_t k = 0; k < n && status == TOOL_EXIT_OK; k++) {
        const char *eq = strchr(args[k], '=');
        char fname[128];
        size_t fl = eq ? (size_t)(eq - args[k]) : 0;
        if (!eq || fl == 0 || fl >= sizeof fname) {
            status =
                tool_usage_error("send", "'%.60s': expected FIELD=VALUE with --packet (%s: %s)",
                                 args[k], p->name, list);
            break;
        }
        memcpy(fname, args[k], fl);
        fname[fl] = '\0';
        size_t idx;
        int found = find_field(s, fname, &idx);
        if (found == 0) {
            status = tool_usage_error("send", "%s has no field '%s' (its fields: %s)", p->name,
                                      fname, list);
            break;
        }
        if (found < 0) {
            status = tool_usage_error("send",
                                      "'%s' names several fields of %s (%s): give more of "
                                      "the name",
                                      fname, p->name, list);
            break;
        }
        const pkm_field_t *f = &s->fields[idx];
        if (given[idx] && !(f->type == PKM_T_ARRAY && !is_plain_byte_array(f))) {
            status = tool_usage_error("send", "field '%s' of %s is given twice", f->name, p->name);
            break;
        }
        given[idx]++;
        field_of[k] = idx;
    }
    /* The values, field by field (an array's elements in the order given). */
    size_t n_items = 0;
    for (size_t i = 0; i < s->n_fields && status == TOOL_EXIT_OK; i++) {
        const pkm_field_t *f = &s->fields[i];
        int elements = f->type == PKM_T_ARRAY && !is_plain_byte_array(f);
        size_t first = n_items;
        for (size_t k = 0; k < n && status == TOOL_EXIT_OK; k++) {
            if (field_of[k] != i) continue;
            const char *v = strchr(args[k], '=') + 1;
            pkm_value_t *dst = elements ? &nm->items[n_items++] : &nm->vals[i];
            int r = parse_named(p, elements ? SIZE_MAX : i, elements ? f->elem : f, v, dst,
                                &nm->owned[nm->n_owned], why, sizeof why);
            if (nm->owned[nm->n_owned]) nm->n_owned++;
            if (r == -2) status = tool_fail(TOOL_EXIT_FAIL, "out of memory");
            if (r == -1)
                status = tool_fail(TOOL_EXIT_USAGE, "field '%s' of %s (%.60s): %s", f->name,
                                   p->name, args[k], why);
        }
        if (elements) nm->vals[i].array = (pkm_array_t){nm->items + first, n_items - first};
    }
    /* Length fields: filled from their array, or checked against it. */
    for (size_t i = 0; i < s->n_fields && status == TOOL_EXIT_OK; i++) {
        const pkm_field_t *f = &s->fields[i];
        if (f->type != PKM_T_ARRAY || !f->len_field) continue;
        size_t L = f->len_field - 1;
        size_t count = is_plain_byte_array(f) ? nm->vals[i].bytes.len : nm->vals[i].array.n;
        if (!given[L]) {
            nm->vals[L].u64 = count;
            given[L] = 1;
        } else if (nm->vals[L].u64 != count) {
            status = tool_fail(TOOL_EXIT_USAGE,
                               "field '%s' of %s is %llu but '%s' has %zu element(s) (leave '%s' "
                               "out: it is counted)",
                               s->fields[L].name, p->name, (unsigned long long)nm->vals[L].u64,
                               f->name, count, s->fields[L].name);
        }
    }
    for (size_t i = 0; i < s->n_fields && status == TOOL_EXIT_OK; i++) {
        const pkm_field_t *f = &s->fields[i];
        if (given[i] || (f->type == PKM_T_ARRAY && !is_plain_byte_array(f))) continue;
        status = tool_usage_error("send", "missing field '%s' (%s) of %s (its fields: %s)", f->name,
                                  type_name(f->type), p->name, list);
    }
    if (status == TOOL_EXIT_OK) {
        int rc = pkm_schema_encode_alloc(s, nm->vals, s->n_fields, content, size, chash);
        if (rc < 0)
            status = tool_fail(rc == PKM_ENOMEM ? TOOL_EXIT_FAIL : TOOL_EXIT_USAGE,
                               "cannot encode %s: %s", p->name, pkm_strerror(rc));
    }
    free(field_of);
    free(given);
    if (status != TOOL_EXIT_OK) named_free(nm);
    return status;
}

/* ---- the connection ---- */

static int remaining_ms(double deadline)
{
    double left = deadline - tool_now_ms();
    return left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left + 1;
}

struct send_opts {
    char host[TOOL_HOST_MAX];
    int port;
    char hostport[TOOL_HOSTPORT_MAX];
    int id;
    char *password; /* --password's argv string (wiped once copied) */
    const char *password_file, *pin, *known_hosts;
    const char *packet; /* --packet NAME, or NULL */
    const char *bind;   /* --bind ADDR, or NULL */
    uint64_t count, expect, timeout_s;
    int expect_set, verbose, dry_run, strict;
};

/* The trust decision on the server's key, made by check_server() (the engine's check_peer hook)
 * before any byte is sent to the server or any RSA work is done for it. */
struct trust {
    const struct send_opts *o;
    const char *khfile, *password;
    char fp[PKM_FINGERPRINT_SIZE]; /* the key the server offered */
    char known[PKM_FINGERPRINT_SIZE];
    int seen;          /* the server's key was parsed (and fp set) */
    int first_contact; /* known_hosts did not list HOST:PORT: record it once established */
    int khline;        /* the known_hosts line that matched */
    enum { T_OK, T_PIN, T_CHANGED, T_UNKNOWN, T_KHERR } refused;
};

static int check_server(void *ctx, const uint8_t *der, size_t der_len, const char *fingerprint)
{
    struct trust *t = ctx;
    const struct send_opts *o = t->o;
    (void)der;
    (void)der_len;
    snprintf(t->fp, sizeof t->fp, "%s", fingerprint);
    t->seen = 1;
    if (o->pin) {
        if (!pkm_fingerprint_equal(fingerprint, o->pin)) t->refused = T_PIN;
        return t->refused ? PKM_EPIN : 0;
    }
    int r = kh_lookup(t->khfile, o->hostport, t->known, &t->khline);
    if (r < 0)
        t->refused = T_KHERR; /* said by kh_lookup */
    else if (r == 1 && !pkm_fingerprint_equal(fingerprint, t->known))
        t->refused = T_CHANGED;
    else if (r == 0 && o->strict)
        t->refused = T_UNKNOWN;
    if (t->refused) return PKM_EPIN;
    t->first_contact = r == 0;
    /* WIRE-PROFILE section 6: the password is not a PAKE; a server not verified yet that gets
     * the password-derived 0xFF can guess the password offline. Trust on first use stays
     * automatic, but not silent about that. */
    if (t->first_contact && t->password && *t->password)
        tool_log("warning: first contact with %s: the password goes to a server whose key %s "
                 "nothing has verified yet, and a false server could guess it offline; check "
                 "that fingerprint out of band, or pin it (--pin)",
                 o->hostport, fingerprint);
    return 0;
}

/* pkm_connect failed with rc (err: its sentence): says why, in the tool's words. */
static int connect_failed(const struct trust *t, int rc, const char *err)
{
    const struct send_opts *o = t->o;
    switch (t->refused) {
    case T_PIN:
        return tool_fail(TOOL_EXIT_FAIL,
                         "%s: the server's key %s does not match the pinned fingerprint %s: "
                         "refusing to connect",
                         o->hostport, t->fp, o->pin);
    case T_CHANGED:
        return tool_fail(TOOL_EXIT_FAIL,
                         "WARNING: THE SERVER KEY OF %s HAS CHANGED: %s line %d records %s but "
                         "the server now offers %s. Someone may be impersonating the server; "
                         "refusing to connect. If the key was replaced on purpose, delete that "
                         "line (or pass --pin %s)",
                         o->hostport, t->khfile, t->khline, t->known, t->fp, t->fp);
    case T_UNKNOWN:
        return tool_fail(TOOL_EXIT_FAIL,
                         "%s is not in %s and --strict refuses unknown servers; the server "
                         "offers the key %s: if that is its key (check out of band), connect "
                         "once with --pin %s, or add the line \"%s %s\" to %s",
                         o->hostport, t->khfile, t->fp, t->fp, o->hostport, t->fp, t->khfile);
    case T_KHERR: return TOOL_EXIT_FAIL;
    case T_OK: break;
    }
    if (rc == PKM_ECONNECT || rc == PKM_ERESOLVE) return tool_fail(TOOL_EXIT_FAIL, "%s", err);
    if (!t->seen) {
        /* The handshake failed at the server's first message. */
        if (rc == PKM_EHANDSHAKE || rc == PKM_ECONNRESET)
            return tool_fail(TOOL_EXIT_FAIL,
                             "%s: the server closed the connection before sending its key "
                             "(connection limit reached?)",
                             o->hostport);
        if (rc == PKM_ETIMEOUT)
            return tool_fail(TOOL_EXIT_FAIL,
                             "%s: the server sent no key in time (not a PkmCom/TCP server?)",
                             o->hostport);
        if (rc == PKM_EKEYLEN || rc == PKM_EKEY)
            return tool_fail(TOOL_EXIT_FAIL, "%s: not a PkmCom/TCP server: its ServerKey is %s",
                             o->hostport, rc == PKM_EKEYLEN ? "of a bad length" : "refused");
    }
    /* Step 5 failed: the answer did not decrypt (PKM_ENOPROOF), or the server closed instead
     * of answering (what a real server does on a wrong password). */
    if (rc == PKM_ENOPROOF || (rc == PKM_EHANDSHAKE && strstr(err, "confirmation")))
        return tool_fail(TOOL_EXIT_FAIL,
                         "%s: the server could not prove it holds its key %s (%s): the "
                         "handshake failed at its confirmation (0xFF)%s: a wrong password, an "
                         "impostor showing that server's public key, or a server that speaks "
                         "only wire profile 1",
                         o->hostport, t->fp,
                         o->pin             ? "pinned"
                         : t->first_contact ? "first contact: not recorded"
                                            : "as known_hosts records",
                         rc == PKM_EHANDSHAKE ? ", the server closed the connection"
                                              : ", its answer did not decrypt");
    return tool_fail(TOOL_EXIT_FAIL, "%s: %s", o->hostport, err);
}

/* --bind: a TCP socket bound to o->bind (port 0: the kernel's choice) and connected to
 * o->host:o->port within timeout_ms, for pkm_conn_from_fd(). Returns the fd, or -1 with the
 * reason in err. Only addresses of the bound address's family are tried. */
static int connect_from(const struct send_opts *o, int timeout_ms, char *err, size_t errcap)
{
    struct addrinfo hints, *src = NULL, *dst = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
    int g = getaddrinfo(o->bind, "0", &hints, &src);
    if (g != 0) {
        snprintf(err, errcap, "--bind %s: not a numeric address (%s)", o->bind, gai_strerror(g));
        return -1;
    }
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = src->ai_family;
    g = getaddrinfo(o->host, port, &hints, &dst);
    if (g != 0) {
        snprintf(err, errcap, "%s: cannot resolve it as %s (the family of --bind): %s", o->hostport,
                 src->ai_family == AF_INET6 ? "IPv6" : "IPv4", gai_strerror(g));
        freeaddrinfo(src);
        return -1;
    }
    double deadline = tool_now_ms() + timeout_ms;
    int fd = -1;
    snprintf(err, errcap, "%s: no address to connect to", o->hostport);
    for (struct addrinfo *a = dst; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            snprintf(err, errcap, "%s: socket: %s", o->hostport, strerror(errno));
            continue;
        }
        if (bind(fd, src->ai_addr, src->ai_addrlen) != 0) {
            snprintf(err, errcap, "--bind %s: %s", o->bind, strerror(errno));
            close(fd);
            fd = -1;
            break; /* the same for every destination */
        }
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            snprintf(err, errcap, "%s: fcntl: %s", o->hostport, strerror(errno));
            close(fd);
            fd = -1;
            continue;
        }
        int rc = connect(fd, a->ai_addr, a->ai_addrlen), e = rc == 0 ? 0 : errno;
        if (rc != 0 && e == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int left = remaining_ms(deadline);
            do
                rc = poll(&p, 1, left);
            while (rc < 0 && errno == EINTR);
            socklen_t len = sizeof e;
            if (rc == 0)
                e = ETIMEDOUT;
            else if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0)
                e = errno;
        }
        if (e != 0) {
            snprintf(err, errcap, "%s: cannot connect from %s: %s", o->hostport, o->bind,
                     strerror(e));
            close(fd);
            fd = -1;
            if (e == ETIMEDOUT) break;
        }
    }
    freeaddrinfo(src);
    freeaddrinfo(dst);
    return fd;
}

static int run_send(const struct send_opts *o, const char *password, uint32_t hash,
                    const uint8_t *content, size_t size)
{
    double deadline = tool_now_ms() + (double)o->timeout_s * 1000.0;
    char err[512], khfile[TOOL_PATH_MAX];
    if (!o->pin) {
        if (o->known_hosts) {
            snprintf(khfile, sizeof khfile, "%s", o->known_hosts);
        } else {
            int st = tool_config_file("known_hosts", khfile, sizeof khfile);
            if (st) return st;
        }
    }

    struct trust t = {.o = o, .khfile = khfile, .password = password};
    pkm_conn_config_t cfg;
    pkm_conn_config_init(&cfg);
    cfg.engine.check_peer = check_server;
    cfg.engine.check_peer_ctx = &t;
    if (password) {
        cfg.engine.secret = (const uint8_t *)password;
        cfg.engine.secret_len = strlen(password);
    }
    cfg.connect_timeout_ms = remaining_ms(deadline);
    cfg.handshake_timeout_ms = remaining_ms(deadline);
    cfg.errbuf = err;
    cfg.errbuf_size = sizeof err;
    pkm_conn_t *c = NULL;
    int rc;
    if (o->bind) {
        int fd = connect_from(o, remaining_ms(deadline), err, sizeof err);
        if (fd < 0) return tool_fail(TOOL_EXIT_FAIL, "%s", err);
        cfg.handshake_timeout_ms = remaining_ms(deadline);
        rc = pkm_conn_from_fd(fd, PKM_ROLE_CLIENT, &cfg, &c);
    } else {
        rc = pkm_connect(o->host, o->port, &cfg, &c);
    }
    if (rc < 0) return connect_failed(&t, rc, err);
    const char *fp = t.fp;
    int first_contact = t.first_contact, khline = t.khline;

    if (first_contact) {
        if (kh_add(khfile, o->hostport, fp) == 0)
            tool_log("first contact with %s: recorded its key %s in %s", o->hostport, fp, khfile);
    } else if (o->verbose) {
        if (o->pin)
            tool_log("connected to %s: key %s matches the pin", o->hostport, fp);
        else
            tool_log("connected to %s: key %s matches %s line %d", o->hostport, fp, khfile, khline);
    }

    /* Send, printing replies as they come (so a long run never fills the buffers). */
    uint64_t got = 0;
    pkm_packet_t pkt;
    int status = TOOL_EXIT_OK;
    double reply_deadline = tool_now_ms() + (double)o->timeout_s * 1000.0;
    /* Flow control: while replies are expected, at most about 256 KiB of packets are in flight,
     * so a server never queues more for us than we read (it would drop us). */
    uint64_t window = (256u << 10) / ((uint64_t)size + PKM_HEADER_SIZE + 16);
    if (window == 0) window = 1;
    for (uint64_t k = 0; k < o->count && status == TOOL_EXIT_OK; k++) {
        while (got < o->expect && k - got >= window && status == TOOL_EXIT_OK) {
            rc = pkm_conn_recv(c, &pkt, remaining_ms(reply_deadline));
            if (rc == 1) {
                tool_print_packet(stdout, &pkt);
                got++;
            } else if (rc != PKM_EAGAIN || tool_now_ms() >= reply_deadline) {
                status = tool_fail(
                    TOOL_EXIT_FAIL, "%s: %s (after %llu of %llu replies)", o->hostport,
                    rc == PKM_EAGAIN ? "timed out waiting for replies" : pkm_conn_errmsg(c),
                    (unsigned long long)got, (unsigned long long)o->expect);
            }
        }
        if (status != TOOL_EXIT_OK) break;
        rc = pkm_conn_send(c, (uint8_t)o->id, hash, content, size, remaining_ms(reply_deadline));
        if (rc == PKM_EAGAIN || rc == PKM_EQUEUE) {
            status =
                tool_fail(TOOL_EXIT_FAIL, "%s: timed out sending packet %llu of %llu", o->hostport,
                          (unsigned long long)k + 1, (unsigned long long)o->count);
            break;
        }
        if (rc < 0) {
            status = tool_fail(TOOL_EXIT_FAIL, "%s: %s", o->hostport, pkm_conn_errmsg(c));
            break;
        }
        /* Every packet that has arrived is printed, also beyond --expect (so none piles up). */
        while ((rc = pkm_conn_recv(c, &pkt, 0)) == 1) {
            tool_print_packet(stdout, &pkt);
            got++;
        }
        if (rc < 0 && rc != PKM_EAGAIN && (got < o->expect || rc != PKM_EEOF)) {
            status = tool_fail(TOOL_EXIT_FAIL, "%s: %s (after %llu of %llu replies)", o->hostport,
                               pkm_conn_errmsg(c), (unsigned long long)got,
                               (unsigned long long)o->expect);
        }
    }
    while (status == TOOL_EXIT_OK && got < o->expect) {
        rc = pkm_conn_recv(c, &pkt, remaining_ms(reply_deadline));
        if (rc == 1) {
            tool_print_packet(stdout, &pkt);
            got++;
        } else if (rc == PKM_EAGAIN) {
            if (tool_now_ms() < reply_deadline) continue;
            status = tool_fail(TOOL_EXIT_FAIL,
                               "%s: timed out after %llu s waiting for replies: got %llu of %llu",
                               o->hostport, (unsigned long long)o->timeout_s,
                               (unsigned long long)got, (unsigned long long)o->expect);
        } else if (rc == PKM_EEOF) {
            status = tool_fail(TOOL_EXIT_FAIL,
                               "%s: the server closed the connection after %llu of %llu replies",
                               o->hostport, (unsigned long long)got, (unsigned long long)o->expect);
        } else {
            status = tool_fail(TOOL_EXIT_FAIL, "%s: %s (after %llu of %llu replies)", o->hostport,
                               pkm_conn_errmsg(c), (unsigned long long)got,
                               (unsigned long long)o->expect);
        }
    }
    if (status == TOOL_EXIT_OK && o->expect == 0) {
        rc = pkm_conn_flush(c, remaining_ms(reply_deadline));
        if (rc < 0)
            status = tool_fail(TOOL_EXIT_FAIL, "%s: %s", o->hostport,
                               rc == PKM_EAGAIN ? "timed out sending" : pkm_conn_errmsg(c));
    }
    pkm_conn_close(c);
    return status;
}

int cmd_send(int argc, char **argv)
{
    struct send_opts o;
    memset(&o, 0, sizeof o);
    o.id = -1;
    o.count = 1;
    o.timeout_s = 10;
    const char *target = NULL;
    const char **fieldargs = calloc((size_t)argc, sizeof *fieldargs);
    size_t nfields = 0;
    if (!fieldargs) return tool_fail(TOOL_EXIT_FAIL, "out of memory");
    int only_fields = 0;
    int status = TOOL_EXIT_OK;
    for (int i = 1; i < argc && status == TOOL_EXIT_OK; i++) {
        const char *a = argv[i], *v;
        int r = 0;
        if (only_fields || a[0] != '-' || a[1] == '\0') {
            if (!target)
                target = a;
            else
                fieldargs[nfields++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_fields = 1;
            continue;
        }
        if (tool_is_help(a)) {
            fputs(send_help, stdout);
            fputs(send_help_packet, stdout);
            free(fieldargs);
            return TOOL_EXIT_OK;
        }
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            o.verbose = 1;
            continue;
        }
        if (strcmp(a, "--dry-run") == 0) {
            o.dry_run = 1;
            continue;
        }
        if (strcmp(a, "--strict") == 0) {
            o.strict = 1;
            continue;
        }
        uint64_t n;
        if ((r = tool_opt("send", argc, argv, &i, "id", 0, &v)) > 0) {
            if (tool_parse_u64(v, 255, &n) < 0)
                status = tool_usage_error("send", "--id: expected 0..254, got '%s'", v);
            else if (n == PKM_HANDSHAKE_ID)
                status = tool_usage_error("send", "--id: 255 (0xFF) is the handshake packet");
            o.id = (int)n;
        } else if (r == 0 && (r = tool_opt("send", argc, argv, &i, "packet", 0, &v)) > 0) {
            o.packet = v;
        } else if (r == 0 && (r = tool_opt("send", argc, argv, &i, "password", 0, &v)) > 0) {
            o.password = (char *)v; /* argv strings are writable: wiped once copied */
        } else if (r == 0 && (r = tool_opt("send", argc, argv, &i, "password-file", 0, &v)) > 0) {
            o.password_file = v;
        } else if (r == 0 && (r = tool_opt("send", argc, argv, &i, "pin", 0, &v)) > 0) {
            if (!tool_fp_wellformed(v))
                status = tool_usage_error("send", "--pin: expected SHA256: and 43 base64 "
                                                  "characters, as pkmcom fingerprint prints");
            o.pin = v;
        } else if (r == 0 && (r = tool_opt("send", argc, argv, &i, "known-hosts", 0, &v)) > 0) {
            o.known_hosts = v;
        } else if (r == 0 && (r = tool_opt("send", argc, argv, &i, "count", 0, &v)) > 0) {
            if (tool_parse_u64(v, 100000000, &o.count) < 0)
                status = tool_usage_error("send", "--count: expected 0..100000000, got '%s'", v);
        } else if (r == 0 && (r = tool_opt("send", argc, argv, &i, "expect", 0, &v)) > 0) {
            if (tool_parse_u64(v, 100000000, &o.expect) < 0)
                status = tool_usage_error("send", "--expect: expected 0..100000000, got '%s'", v);
            o.expect_set = 1;
        } else if (r == 0 && (r = tool_opt("send", argc, argv, &i, "bind", 0, &v)) > 0) {
            o.bind = v;
        } else if (r == 0 && (r = tool_opt("send", argc, argv, &i, "timeout", 0, &v)) > 0) {
            if (tool_parse_u64(v, 86400, &o.timeout_s) < 0 || o.timeout_s == 0)
                status =
                    tool_usage_error("send", "--timeout: expected 1..86400 seconds, got '%s'", v);
        } else if (r == 0) {
            status = tool_usage_error("send", "unknown option '%s'", a);
        }
        if (r < 0) status = TOOL_EXIT_USAGE;
    }
    if (o.dry_run && target) { /* no HOST:PORT with --dry-run: the first was a FIELD */
        memmove(fieldargs + 1, fieldargs, nfields * sizeof *fieldargs);
        fieldargs[0] = target;
        nfields++;
        target = NULL;
    }
    if (status == TOOL_EXIT_OK && !target && !o.dry_run)
        status = tool_usage_error("send", "missing HOST:PORT");
    if (status == TOOL_EXIT_OK && target && tool_parse_hostport(target, 0, o.host, &o.port) < 0)
        status =
            tool_usage_error("send", "bad address '%s': expected HOST:PORT or [IPV6]:PORT", target);
    if (status == TOOL_EXIT_OK && o.packet && o.id >= 0)
        status = tool_usage_error("send", "--id is not used with --packet (the packet has its id)");
    if (status == TOOL_EXIT_OK && o.id < 0 && !o.packet)
        status = tool_usage_error("send", "missing --id ID (or --packet NAME)");
    if (status == TOOL_EXIT_OK && o.pin && o.known_hosts)
        status = tool_usage_error("send", "--known-hosts is not used with --pin");
    if (status == TOOL_EXIT_OK && o.pin && o.strict)
        status = tool_usage_error("send", "--strict is about known_hosts, not used with --pin");
    if (!o.expect_set) o.expect = o.count;

    uint8_t *content = NULL;
    size_t size = 0;
    uint32_t chash = 0;
    struct named nm = {0};
    if (status == TOOL_EXIT_OK && o.packet) {
        status = build_named(o.packet, fieldargs, nfields, &nm, &content, &size, &chash);
        if (status == TOOL_EXIT_OK) o.id = nm.pkt->id;
        if (status == TOOL_EXIT_OK && !o.dry_run && !(nm.pkt->dir & PKM_CMPL_SERVERBOUND))
            tool_log("warning: 0x%02X %s is %s: a server does not expect it from a client",
                     nm.pkt->id, nm.pkt->name, pkm_cmpl_dir_name(nm.pkt->dir));
        nfields = 0; /* they were NAME=VALUEs */
    }
    struct field *fields = NULL;
    if (status == TOOL_EXIT_OK && nfields) {
        fields = calloc(nfields, sizeof *fields);
        if (!fields) status = tool_fail(TOOL_EXIT_FAIL, "out of memory");
    }
    for (size_t k = 0; status == TOOL_EXIT_OK && k < nfields; k++)
        status = parse_field(k + 1, fieldargs[k], &fields[k]);

    /* The packet: one synthetic schema with the FIELDs' types, encoded by the codec. */
    pkm_field_t *defs = NULL;
    pkm_value_t *vals = NULL;
    if (status == TOOL_EXIT_OK && !o.packet) {
        defs = calloc(nfields ? nfields : 1, sizeof *defs);
        vals = calloc(nfields ? nfields : 1, sizeof *vals);
        if (!defs || !vals) status = tool_fail(TOOL_EXIT_FAIL, "out of memory");
    }
    if (status == TOOL_EXIT_OK && !o.packet) {
        for (size_t k = 0; k < nfields; k++) {
            defs[k] = fields[k].def;
            vals[k] = fields[k].val;
        }
        pkm_schema_t schema = {"pkmcom send", defs, nfields};
        int rc = pkm_schema_encode_alloc(&schema, vals, nfields, &content, &size, &chash);
        if (rc < 0)
            status = tool_fail(rc == PKM_ENOMEM ? TOOL_EXIT_FAIL : TOOL_EXIT_USAGE,
                               "cannot encode the packet: %s", pkm_strerror(rc));
    }

    char *pwbuf = NULL;
    if (status == TOOL_EXIT_OK && !o.dry_run)
        status = tool_get_password("send", o.password, o.password_file, &pwbuf);
    else if (o.password)
        OPENSSL_cleanse(o.password, strlen(o.password));
    if (status == TOOL_EXIT_OK && o.dry_run) {
        pkm_packet_t pkt = {(uint8_t)o.id, pkm_packet_hash((uint8_t)o.id, chash), content, size};
        tool_print_packet(stdout, &pkt);
    } else if (status == TOOL_EXIT_OK) {
        tool_format_hostport(o.host, o.port, o.hostport);
        status = run_send(&o, pwbuf, pkm_packet_hash((uint8_t)o.id, chash), content, size);
    }
    tool_secret_free(pwbuf);
    named_free(&nm);
    pkm_bytes_free(content);
    free(defs);
    free(vals);
    for (size_t k = 0; fields && k < nfields; k++)
        free(fields[k].owned);
    free(fields);
    free(fieldargs);
    return status;
}
