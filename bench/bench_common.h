/* Shared by the benchmark programs: a monotonic clock and the one-line JSON result format that
 * bench/run.sh collects into bench/results.json and BENCHMARKS.md. */
#ifndef PKM_BENCH_COMMON_H
#define PKM_BENCH_COMMON_H

#include <stdio.h>
#include <time.h>

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

/* One figure beside its anchor, measured in the same run: ratio = value / anchor_value. */
static inline void bench_report(const char *name, double value, const char *unit,
                                const char *anchor, double anchor_value)
{
    printf("{\"name\":\"%s\",\"value\":%.6g,\"unit\":\"%s\",\"anchor\":\"%s\","
           "\"anchor_value\":%.6g,\"ratio\":%.4f}\n",
           name, value, unit, anchor, anchor_value, anchor_value != 0 ? value / anchor_value : 0.0);
    fflush(stdout);
}

#endif
