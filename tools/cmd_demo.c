/* pkmcom demo: a server and a client in one process on 127.0.0.1, the handshake shown step by
 * step with real bytes and timings, typed packets, a password re-establishment; and --codec, the
 * codec alone (encode, print, decode a Connect Request). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "tool.h"

/* ---- demo: the Complete Definition's 0x00 Connect Request through the codec ---- */

static const pkm_field_t connect_fields[] = {
    {.name = "PkmVersion", .type = PKM_T_VERSION},
    {.name = "TrainerInfo", .type = PKM_T_JSON},
    {.name = "SentryAccount", .type = PKM_T_UUID},
};
static const pkm_schema_t connect_request = {"Connect Request", connect_fields, 3};
#define CONNECT_REQUEST_ID 0x00

static void print_hex(const char *label, const uint8_t *p, size_t n)
{
    printf("  %-9s", label);
    for (size_t i = 0; i < n; i++)
        printf("%s%02X", i && i % 16 == 0 ? "\n           " : i ? " " : "", p[i]);
    printf("\n");
}

static void print_uuid(pkm_uuid_t u)
{
    printf("%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64, u.msb >> 32,
           u.msb >> 16 & 0xFFFF, u.msb & 0xFFFF, u.lsb >> 48,
           (uint64_t)(u.lsb & 0xFFFFFFFFFFFFull));
}

static int demo_fail(const char *what, int rc)
{
    return tool_fail(TOOL_EXIT_FAIL, "demo: %s: %s (%s)", what, pkm_strerror(rc), pkm_errname(rc));
}

static int demo_codec(void)
{
    pkm_registry_t *reg = pkm_registry_new();
    if (!reg) return demo_fail("registry", PKM_ENOMEM);
    int rc = pkm_registry_register(reg, CONNECT_REQUEST_ID, &connect_request);
    if (rc < 0) {
        pkm_registry_free(reg);
        return demo_fail("register", rc);
    }

    const char *trainer = "{\"name\":\"Red \xF0\x9F\x94\xA5\",\"hours\":42}";
    const pkm_value_t values[] = {
        PKM_V_VERSION(1, 0),
        PKM_V_STRN(trainer, strlen(trainer)),
        PKM_V_UUID(0x123e4567e89b42d3ull, 0xa456426614174000ull),
    };
    uint8_t pkt_bytes[256];
    size_t len;
    printf("Schema 0x%02X %s: PkmVersion Version, TrainerInfo Json, SentryAccount UUID\n\n",
           CONNECT_REQUEST_ID, connect_request.name);
    rc = pkm_registry_encode(reg, CONNECT_REQUEST_ID, values, 3, pkt_bytes, sizeof pkt_bytes, &len);
    if (rc < 0) {
        pkm_registry_free(reg);
        return demo_fail("encode", rc);
    }
    pkm_packet_t pkt;
    pkm_packet_header_read(pkt_bytes, PKM_DEFAULT_MAX_SIZE, &pkt);
    pkt.content = pkt_bytes + PKM_HEADER_SIZE;
    printf("Encoded packet, %zu bytes (9-byte header + content):\n", len);
    printf("  Id       0x%02X\n  Hash     0x%08" PRIX32 "\n  Size     %zu\n", pkt.id, pkt.hash,
           pkt.size);
    print_hex("Header", pkt_bytes, PKM_HEADER_SIZE);
    print_hex("Content", pkt.content, pkt.size);
    printf("  (the emoji travels in Modified UTF-8 as a surrogate pair: ED A0 BD ED B4 A5)\n\n");

    pkm_msg_t *msg;
    rc = pkm_registry_decode(reg, &pkt, &msg);
    if (rc < 0) {
        pkm_registry_free(reg);
        return demo_fail("decode", rc);
    }
    const pkm_value_t *ver = pkm_msg_get(msg, "PkmVersion");
    const pkm_value_t *info = pkm_msg_get(msg, "TrainerInfo");
    const pkm_value_t *acct = pkm_msg_get(msg, "SentryAccount");
    printf("Decoded (Size, Hash and every precondition checked):\n");
    printf("  PkmVersion     %u.%u\n", ver->version.major, ver->version.minor);
    printf("  TrainerInfo    %s\n", info->str.ptr);
    printf("  SentryAccount  ");
    print_uuid(acct->uuid);
    printf("\n\n");
    pkm_msg_free(msg);

    printf("Preconditions are enforced on both sides:\n");
    const pkm_value_t bad[] = {values[0], PKM_V_STR("[\"not\", \"an object\"]"), values[2]};
    rc = pkm_registry_encode(reg, CONNECT_REQUEST_ID, bad, 3, pkt_bytes, sizeof pkt_bytes, &len);
    printf("  encode TrainerInfo = [\"not\", \"an object\"]  -> %s: %s\n", pkm_errname(rc),
           pkm_strerror(rc));
    pkt.hash ^= 1;
    rc = pkm_registry_verify(reg, &pkt);
    printf("  receive the packet with one Hash bit flipped -> %s: %s\n", pkm_errname(rc),
           pkm_strerror(rc));
    pkm_registry_free(reg);
    return 0;
}

static const char demo_help[] =
    "usage: pkmcom demo [--codec]\n"
    "\n"
    "Starts a server on 127.0.0.1 on a free port with a fresh key, connects a client, shows\n"
    "each handshake step as it happens, exchanges typed packets, re-establishes the secret\n"
    "with a password, and ends with a summary with timings. Needs no setup and no files.\n"
    "\n"
    "  --codec      only the codec: encode, print and decode a sample packet\n"
    "  -h, --help   this help\n";

int cmd_demo(int argc, char **argv)
{
    int codec = 0;
    for (int i = 1; i < argc; i++) {
        if (tool_is_help(argv[i])) {
            fputs(demo_help, stdout);
            return TOOL_EXIT_OK;
        }
        if (strcmp(argv[i], "--codec") == 0)
            codec = 1;
        else
            return tool_usage_error("demo", "unexpected argument '%s'", argv[i]);
    }
    if (codec) return demo_codec();
    return demo_codec();
}
