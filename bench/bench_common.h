/* SPDX-License-Identifier: MIT */
/* Shared by the benchmark programs: monotonic and CPU clocks, the anchors of this run (from
 * bench/anchors.sh), and the one-line JSON result format bench/run.sh collects. */
#ifndef PKM_BENCH_COMMON_H
#define PKM_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline double bench_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One figure beside its anchor, measured in the same run.
 * figure: the number of the figure (listed in bench/report.py's FIGURES), 0 for none.
 * goal:   NULL, or conditions joined by " and ", each "value|ratio OP number" with OP one of
 *         >= <= > <, e.g. "ratio >= 0.85" or "value >= 1e6 and ratio > 1". bench/run.sh marks
 *         the figure met / not met from it. ratio is always value / anchor_value. */
struct bench_figure {
    const char *name;
    double value;
    const char *unit;
    const char *anchor;
    double anchor_value;
    int figure;
    const char *goal;
};

/* Prints the figure as one JSON line on stdout (the only thing a bench program prints there). */
static inline void bench_emit(const struct bench_figure *f)
{
    double ratio = f->anchor_value != 0 ? f->value / f->anchor_value : 0.0;
    json_t *o =
        json_pack("{s:s, s:f, s:s, s:s, s:f, s:f}", "name", f->name, "value", f->value, "unit",
                  f->unit, "anchor", f->anchor, "anchor_value", f->anchor_value, "ratio", ratio);
    if (!o) {
        fprintf(stderr, "bench: cannot encode figure '%s'\n", f->name);
        exit(1);
    }
    if (f->figure > 0) json_object_set_new(o, "figure", json_integer(f->figure));
    if (f->goal) json_object_set_new(o, "goal", json_string(f->goal));
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(o);
    if (!line) exit(1);
    printf("%s\n", line);
    fflush(stdout);
    free(line);
}

/* The short form, for figures with neither issue number nor goal. */
static inline void bench_report(const char *name, double value, const char *unit,
                                const char *anchor, double anchor_value)
{
    struct bench_figure f = {name, value, unit, anchor, anchor_value, 0, NULL};
    bench_emit(&f);
}

/* ---- Anchors ----------------------------------------------------------------------------------
 * bench/run.sh measures the anchors once per run with bench/anchors.sh and names the file in
 * PKM_BENCH_ANCHORS. A bench program started by hand without it measures the anchor it needs
 * itself with `openssl speed` (one second each). */

/* Runs an `openssl speed -mr` command; returns the last number of its first line starting with
 * prefix ("+F:" for a cipher, "+F2:" for RSA: the field index picks the column), or -1. */
static inline double bench_openssl_speed(const char *cmd, const char *prefix, int field)
{
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[512];
    double v = -1;
    while (fgets(line, sizeof line, p)) {
        if (strncmp(line, prefix, strlen(prefix)) != 0 || v >= 0) continue;
        char *s = line;
        for (int i = 0; i < field && s; i++) {
            s = strchr(s, ':');
            if (s) s++;
        }
        if (s) v = strtod(s, NULL);
    }
    if (pclose(p) != 0) return -1;
    return v;
}

static inline json_t *bench_anchors_load(void)
{
    const char *path = getenv("PKM_BENCH_ANCHORS");
    if (!path || !*path) return NULL;
    json_error_t err;
    json_t *a = json_load_file(path, 0, &err);
    if (!a) {
        fprintf(stderr, "bench: cannot read anchors %s: %s (line %d)\n", path, err.text, err.line);
        exit(1);
    }
    return a;
}

/* `openssl speed -evp aes-256-cbc` in MB/s (10^6 bytes/s) at the measured block size nearest to
 * bytes (by ratio; ties go to the larger block), which is stored in *block. */
static inline double bench_anchor_aes_cbc(size_t bytes, size_t *block)
{
    json_t *a = bench_anchors_load();
    double mbs = -1;
    if (a) {
        json_t *by = json_object_get(json_object_get(a, "aes-256-cbc"), "MB/s by block");
        const char *k;
        json_t *v;
        double best = 0;
        *block = 0;
        json_object_foreach(by, k, v)
        {
            size_t b = strtoul(k, NULL, 10);
            if (b == 0 || !json_is_number(v)) continue;
            /* distance by ratio: max(b/bytes, bytes/b) >= 1 */
            double d = b > bytes ? (double)b / (double)bytes : (double)bytes / (double)b;
            if (*block == 0 || d < best || (d == best && b > *block)) {
                best = d;
                *block = b;
                mbs = json_number_value(v);
            }
        }
        json_decref(a);
    } else {
        char cmd[160];
        snprintf(cmd, sizeof cmd,
                 "openssl speed -mr -seconds 1 -bytes %zu -evp aes-256-cbc 2>/dev/null", bytes);
        double bps = bench_openssl_speed(cmd, "+F:", 3);
        *block = bytes;
        mbs = bps > 0 ? bps / 1e6 : -1;
    }
    if (!(mbs > 0)) {
        fprintf(stderr, "bench: no AES-256-CBC anchor for %zu bytes\n", bytes);
        exit(1);
    }
    return mbs;
}

/* Seconds per RSA-2048 private-key operation (`openssl speed rsa2048`, sign). */
static inline double bench_anchor_rsa2048_sign(void)
{
    json_t *a = bench_anchors_load();
    double s = -1;
    if (a) {
        s = json_number_value(json_object_get(json_object_get(a, "rsa2048"), "sign s"));
        json_decref(a);
    } else {
        double per_s =
            bench_openssl_speed("openssl speed -mr -seconds 1 rsa2048 2>/dev/null", "+F2:", 3);
        s = per_s > 0 ? 1.0 / per_s : -1;
    }
    if (!(s > 0)) {
        fprintf(stderr, "bench: no RSA-2048 sign anchor\n");
        exit(1);
    }
    return s;
}

#endif
