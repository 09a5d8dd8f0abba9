/* pkmcom: the libpkmcom command-line tool. main() only dispatches; each subcommand is one
 * cmd_* function. For now: `demo` (a codec demonstration), --help and --version. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "pkmcom/pkmcom.h"

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
    fprintf(stderr, "pkmcom demo: %s: %s (%s)\n", what, pkm_strerror(rc), pkm_errname(rc));
    return 1;
}

static int cmd_demo(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "pkmcom demo: takes no arguments\n");
        return 2;
    }
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

/* ---- dispatch ---- */

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"demo", cmd_demo, "encode, print and decode a sample packet (codec demonstration)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: pkmcom <command> [arguments]\n       pkmcom --help | --version\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("pkmcom %s\n", pkm_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "pkmcom: unknown command '%s' (see pkmcom --help)\n", cmd);
    return 2;
}
