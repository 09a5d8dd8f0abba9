/* SPDX-License-Identifier: MIT */
/* The JSON packet line with the Complete Definition's fields by name (serve --print, dump):
 * pkm_describe_cmpl's text for each field, as JSON strings. */
#include "tool.h"

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

typedef struct {
    FILE *f;
    int n;
} fields_out_t;

static void print_field(void *ctx, size_t index, const char *name, const char *text)
{
    fields_out_t *o = ctx;
    (void)index;
    fputs(o->n++ ? "," : "", o->f);
    json_str(o->f, name);
    fputc(':', o->f);
    json_str(o->f, text);
}

int tool_print_cmpl_members(FILE *f, const pkm_packet_t *pkt)
{
    const pkm_cmpl_packet_t *cp = NULL;
    int r = pkm_describe_cmpl(pkt, NULL, NULL, &cp);
    if (r == 0 && cp) {
        fputs(",\"hash_ok\":true,\"name\":", f);
        json_str(f, cp->name);
        fputs(",\"fields\":{", f);
        fields_out_t o = {f, 0};
        (void)pkm_describe_cmpl(pkt, print_field, &o, NULL);
        fputc('}', f);
    } else if (r != PKM_EUNKNOWNID && cp) {
        fputs(r == PKM_EHASH ? ",\"hash_ok\":false,\"name\":" : ",\"name\":", f);
        json_str(f, cp->name);
        fputs(",\"error\":", f);
        json_str(f, pkm_strerror(r));
    }
    return r;
}

void tool_print_packet_named(FILE *f, const pkm_packet_t *pkt)
{
    fprintf(f, "{\"id\":%u,\"hash\":%lu,\"size\":%zu,\"content\":\"", (unsigned)pkt->id,
            (unsigned long)pkt->hash, pkt->size);
    for (size_t i = 0; i < pkt->size; i++)
        fprintf(f, "%02x", pkt->content[i]);
    fputc('"', f);
    (void)tool_print_cmpl_members(f, pkt);
    fputs("}\n", f);
    fflush(f);
}
