/* SPDX-License-Identifier: MIT */
/* pkm_schema_last_error(): what the last failed schema.h call on this thread met, where (packet
 * id, schema, field path, content offset), kept in thread-local storage. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "schema_err.h"

static _Thread_local struct {
    int err; /* 0: no failure recorded */
    int id;  /* -1: unknown */
    const char *schema;
    size_t offset;
    char path[128];
    char note[96];
    char msg[384];
} t_last;

void pkm__serr_reset(void)
{
    t_last.err = 0;
    t_last.id = -1;
    t_last.schema = NULL;
    t_last.offset = PKM__SERR_NO_OFFSET;
    t_last.path[0] = t_last.note[0] = '\0';
}

static void record(int err, size_t offset)
{
    if (t_last.err) return;
    t_last.err = err;
    t_last.offset = offset;
}

/* Puts comp in front of the path ("a" + "b" = "a.b", "a" + "[2]" = "a[2]"); dropped when the path
 * would not fit. */
static void prefix(const char *comp)
{
    size_t cl = strlen(comp), pl = strlen(t_last.path);
    int dot = pl && t_last.path[0] != '[';
    if (cl + (size_t)dot + pl + 1 > sizeof t_last.path) return;
    memmove(t_last.path + cl + (size_t)dot, t_last.path, pl + 1);
    memcpy(t_last.path, comp, cl);
    if (dot) t_last.path[cl] = '.';
}

int pkm__serr_field(int err, const char *name, size_t i, size_t offset)
{
    char comp[64];
    record(err, offset);
    if (name)
        snprintf(comp, sizeof comp, "%.60s", name);
    else
        snprintf(comp, sizeof comp, "#%zu", i);
    prefix(comp);
    return err;
}

int pkm__serr_elem(int err, size_t j, size_t offset)
{
    char comp[32];
    record(err, offset);
    snprintf(comp, sizeof comp, "[%zu]", j);
    prefix(comp);
    return err;
}

int pkm__serr_note(int err, size_t offset, const char *fmt, ...)
{
    if (t_last.err) return err;
    record(err, offset);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t_last.note, sizeof t_last.note, fmt, ap); /* cut when too long */
    (void)n;
    va_end(ap);
    return err;
}

int pkm__serr_top(int err, int id, const pkm_schema_t *s)
{
    if (err >= 0) return err;
    record(err, PKM__SERR_NO_OFFSET);
    if (id >= 0) t_last.id = id;
    if (s && !t_last.schema) t_last.schema = s->name;
    return err;
}

const char *pkm_schema_last_error(void)
{
    if (!t_last.err) return "";
    char *m = t_last.msg;
    size_t cap = sizeof t_last.msg, used = 0;
    int w;
#define PUT(...)                                                                                   \
    do {                                                                                           \
        w = snprintf(m + used, cap - used, __VA_ARGS__);                                           \
        if (w > 0) used = (size_t)w < cap - used ? used + (size_t)w : cap - 1;                     \
    } while (0)
    PUT("packet");
    if (t_last.id >= 0) PUT(" 0x%02X", (unsigned)t_last.id);
    if (t_last.schema) PUT(" (%.64s)", t_last.schema);
    if (t_last.path[0]) PUT(" field '%s'", t_last.path);
    if (t_last.offset != PKM__SERR_NO_OFFSET) PUT(" at offset %zu", t_last.offset);
    PUT(": %s", pkm_strerror(t_last.err));
    if (t_last.note[0]) PUT(" (%s)", t_last.note);
#undef PUT
    return m;
}
