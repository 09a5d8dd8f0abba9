#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Turns one benchmark run (the JSON lines of each bench program, the anchors) into
# bench/results.json, the generated parts of BENCHMARKS.md and bench/throughput.png (bench/run.sh).
"""Usage: report.py --outputs DIR --anchors FILE --build DIR --seconds S
                 [--results FILE --md FILE --png FILE | --partial FILE]

DIR holds one <program>.out per bench program run: its stdout, one JSON object per line.
Any malformed line, missing field, missing anchor or bad goal fails the run, naming the program.
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys

REQUIRED = {"name": str, "value": (int, float), "unit": str, "anchor": str,
            "anchor_value": (int, float)}
GOAL_TERM = re.compile(r"^\s*(value|ratio)\s*(>=|<=|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*$")
OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b,
       ">": lambda a, b: a > b, "<": lambda a, b: a < b}
PRETTY_OP = {">=": "≥", "<=": "≤", ">": ">", "<": "<"}
# Figure 1's naming convention (see bench/run.sh): the plot is drawn from these.
THROUGHPUT = re.compile(r"^throughput (\d+) B$")
THROUGHPUT_ONE = re.compile(r"^throughput (\d+) B, one thread$")

# The figures of the benchmark issues (1-6; 7: issue 13; 8: issue 14), for the status table. The
# goals are checked per figure line (its "goal"); this text only describes them.
FIGURES = [
    (1, "Channel throughput, one connection, 64 B to 1 MiB of content (per CPU second of the "
        "busiest thread, as `openssl speed` counts; the sender seals, a writer thread sends)",
     "`openssl speed -evp aes-256-cbc`, nearest block size",
     "≥ 85 % of the anchor for packets of 16 KiB and more"),
    (2, "Small packets: 32-byte-content packets per second, pipelined (per CPU second of the "
        "busier side)",
     "TLS 1.3 (AES-256-GCM, one record per message), same harness, interleaved",
     "≥ 1,000,000 packets/s and ahead of TLS"),
    (3, "Handshakes: server CPU time per handshake (server engine); handshakes/s, many clients",
     "2 × `openssl speed rsa2048` sign time",
     "≤ 1.2 × the floor (server engine)"),
    (4, "Connect latency on loopback, with the client key pool",
     "the same without the pool",
     "< 5 ms with the pool (median)"),
    (5, "Memory: heap and RSS per established idle connection, at 10,000",
     "heap of a bare established engine (no server), measured in the run",
     "≤ 16 KiB each"),
    (6, "hashsum over large Strings and Byte Arrays",
     "the plain h*31+b loop (and EVP AES-256-CBC decrypt)",
     "none set (done)"),
    (7, "Good client connect latency under a handshake flood (issue 13): `pkmcom serve`, a good "
        "client from 127.0.0.1, a flood from 127.0.0.2 in another process (64 at once, ClientKey "
        "+ KeyShare, no RSA), paced at 3 × the server's measured handshake capacity, then "
        "unpaced",
     "the same client's quiet p50 / p99, same run; the measured capacity",
     "p99 ≤ 4 × the quiet p99, no failed good connect, flood ≥ 2 × capacity (each flood)"),
    (8, "Server echo with 1,000 pipelining connections (load generator in another process): "
        "server CPU per echoed 32 B packet, and packets/s (wall clock, no goal); 1 loop and 2 "
        "loops (`loops`)",
     "plain-TCP libuv echo server (uv_read / uv_write) on as many loops, same load generator, "
     "same bytes; for 2 loops also pkm_server with 1 loop",
     "≤ 1.3 × the anchor's CPU per packet; 2 loops ≤ 1 loop per packet"),
    (9, "Memory a peer can pin (issue 13): `pkmcom serve --partial-deadline 2`, 40 connections "
        "each complete the handshake and send a 1 MiB packet less its last 16 bytes; the "
        "server's VmRSS before, at the peak and after the deadline closed them",
     "the server's VmRSS before (after a warm-up with one 1 MiB echo); the bytes pinned",
     "all 40 closed by the deadline, RSS back within 4 MiB of before"),
]
KNOWN_FIGURES = {n for n, _, _, _ in FIGURES}


def die(msg):
    sys.exit("report.py: " + msg)


def parse_goal(goal, where):
    terms = []
    for part in goal.split(" and "):
        m = GOAL_TERM.match(part)
        if not m:
            die(f"{where}: bad goal {goal!r} (want e.g. 'ratio >= 0.85' or "
                f"'value >= 1e6 and ratio > 1')")
        terms.append((m.group(1), m.group(2), float(m.group(3))))
    return terms


def load_figures(outdir):
    figures, names = [], set()
    for fn in sorted(os.listdir(outdir)):
        if not fn.endswith(".out"):
            continue
        prog = fn[:-4]
        with open(os.path.join(outdir, fn)) as fh:
            lines = [l for l in fh.read().splitlines() if l.strip()]
        if not lines:
            die(f"{prog} printed no figure")
        for i, line in enumerate(lines, 1):
            where = f"{prog} line {i}"
            try:
                obj = json.loads(line)
            except ValueError as e:
                die(f"{where}: not JSON ({e}): {line[:120]}")
            if not isinstance(obj, dict):
                die(f"{where}: not a JSON object")
            for k, t in REQUIRED.items():
                if not isinstance(obj.get(k), t) or isinstance(obj.get(k), bool):
                    die(f"{where}: missing or mistyped '{k}'")
            if not obj["name"] or not obj["anchor"]:
                die(f"{where}: empty name or anchor")
            if not math.isfinite(obj["value"]) or not (obj["anchor_value"] > 0):
                die(f"{where}: '{obj['name']}': value {obj['value']}, anchor value "
                    f"{obj['anchor_value']} (every figure needs a positive anchor)")
            if obj["name"] in names:
                die(f"{where}: figure name '{obj['name']}' used twice")
            names.add(obj["name"])
            fig = {k: obj[k] for k in ("name", "value", "unit", "anchor", "anchor_value")}
            fig["ratio"] = round(obj["value"] / obj["anchor_value"], 4)
            if "figure" in obj:
                if not isinstance(obj["figure"], int) or obj["figure"] not in KNOWN_FIGURES:
                    die(f"{where}: 'figure' must be one of {sorted(KNOWN_FIGURES)}")
                fig["figure"] = obj["figure"]
            if "goal" in obj:
                if not isinstance(obj["goal"], str):
                    die(f"{where}: 'goal' must be a string")
                fig["goal"] = obj["goal"]
                got = {"value": obj["value"], "ratio": obj["value"] / obj["anchor_value"]}
                fig["met"] = all(OPS[op](got[what], bound)
                                 for what, op, bound in parse_goal(obj["goal"], where))
            fig["program"] = prog
            figures.append(fig)
    return figures


def num(x):
    """A readable number: thousands separators, about four significant digits."""
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:,.1f}"
    if a >= 1:
        return f"{x:.3g}" if a < 10 else f"{x:.1f}"
    return f"{x:.3g}"


def ratio(r):
    return f"{r:#.3g}" if abs(r) < 1000 else num(r)


def pretty_goal(goal):
    return " and ".join(f"{w} {PRETTY_OP[op]} {num(b)}" for w, op, b in parse_goal(goal, "goal"))


def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine(build, anchors, seconds):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cc, build_type = "", ""
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as fh:
            for line in fh:
                if line.startswith("CMAKE_C_COMPILER:"):
                    cc = run([line.split("=", 1)[1].strip(), "--version"]).splitlines()[:1]
                    cc = cc[0] if cc else ""
                elif line.startswith("CMAKE_BUILD_TYPE:"):
                    build_type = line.split("=", 1)[1].strip()
    except OSError:
        pass
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = run(["git", "-C", root, "rev-parse", "--short", "HEAD"]) or "unknown"
    # The files a run writes do not count as changes to what was measured.
    if run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--", ".",
            ":!bench/results.json", ":!bench/anchors.json", ":!bench/throughput.png",
            ":!BENCHMARKS.md"]):
        commit += " (with uncommitted changes)"
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} cores online"),
        ("Kernel", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("OpenSSL", anchors.get("openssl", "?")),
        ("Compiler", f"{cc}, {build_type or '?'} build"),
        ("Commit", commit),
        ("Date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("Duration of the run", f"{seconds:.0f} s (anchors included)"),
    ]


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def machine_md(info, anchors):
    rows = [(k, v) for k, v in info]
    for block, mbs in anchors["aes-256-cbc"]["MB/s by block"].items():
        rows.append((f"`openssl speed -evp aes-256-cbc`, {int(block):,} B blocks",
                     f"{num(mbs)} MB/s"))
    rsa = anchors["rsa2048"]
    rows.append(("`openssl speed rsa2048`, sign (private key)",
                 f"{num(rsa['sign/s'])} /s ({rsa['sign s'] * 1e6:.1f} µs each)"))
    rows.append(("`openssl speed rsa2048`, verify", f"{num(rsa['verify/s'])} /s"))
    return md_table(["Machine and anchors", ""], rows)


def status_md(figures):
    rows = []
    for n, title, anchor, goal in FIGURES:
        mine = [f for f in figures if f.get("figure") == n]
        judged = [f for f in mine if "goal" in f]
        if judged:
            bad = [f["name"] for f in judged if not f["met"]]
            status = ("**met**" if not bad else
                      f"not met: {len(bad)} of {len(judged)} ({', '.join(bad)})")
        elif mine and n == 6:
            status = "measured"
        elif mine:
            status = "not yet measured (only reference figures: " + \
                     ", ".join(f["name"] for f in mine) + ")"
        else:
            status = "not yet measured"
        rows.append((n, title, anchor, goal, status))
    return md_table(["#", "Figure", "Anchor", "Goal", "Status"], rows)


def results_md(figures):
    parts = []
    for prog in sorted({f["program"] for f in figures}):
        rows = []
        for f in (f for f in figures if f["program"] == prog):
            met = "" if "goal" not in f else ("met" if f["met"] else "**not met**")
            rows.append((f["name"], f"{num(f['value'])} {f['unit']}", f["anchor"],
                         f"{num(f['anchor_value'])} {f['unit']}", ratio(f["ratio"]),
                         pretty_goal(f["goal"]) if "goal" in f else "", met))
        parts.append(f"`{prog}`\n\n" + md_table(
            ["Figure", "Value", "Anchor (same run)", "Anchor value", "Ratio", "Goal", "Met"],
            rows))
    return "\n\n".join(parts) if parts else "No figures."


def plot(figures, png, workdir):
    """Channel throughput by content size beside the anchor; False when there is nothing."""
    pts, one = [], {}
    for f in figures:
        m = THROUGHPUT.match(f["name"])
        if m:
            pts.append((int(m.group(1)), f["value"], f["anchor_value"]))
        m = THROUGHPUT_ONE.match(f["name"])
        if m:
            one[int(m.group(1))] = f["value"]
    if not pts:
        return False
    pts.sort()
    dat = os.path.join(workdir, "throughput.dat")
    with open(dat, "w") as fh:
        fh.write("# content_bytes channel_MB/s aes256cbc_MB/s one_thread_MB/s (NaN: not measured)\n")
        for size, v, a in pts:
            fh.write(f"{size} {v} {a} {one.get(size, 'NaN')}\n")
    ymax = max(max(v, a) for _, v, a in pts) * 1.15

    def label(n):
        for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
            if n >= size and n % size == 0:
                return f"{n // size} {unit}"
        return f"{n} B"
    one_plot = (f', \\\n     "{dat}" using 1:4 with linespoints lw 1 pt 4 '
                f'title "PkmCom channel, queueing and sending in one thread (no goal)"' if one else "")
    xtics = ", ".join(f'"{label(size)}" {size}' for size, _, _ in pts)
    script = f"""
set terminal pngcairo size 900,540 font ",11"
set output "{png}"
set title "PkmCom channel throughput by content size (one connection, loopback)"
set xlabel "content bytes per packet"
set ylabel "MB/s (10^6 bytes/s)"
set logscale x 2
set xtics ({xtics})
set xrange [{pts[0][0] / 1.5}:{pts[-1][0] * 1.5}]
set yrange [0:{ymax}]
set grid
set key bottom right
plot "{dat}" using 1:3 with linespoints lw 2 pt 6 title "openssl speed -evp aes-256-cbc (cipher limit)", \\
     "{dat}" using 1:($3*0.85) with lines dt 2 lw 1 title "85 % of the cipher limit (goal from 16 KiB)", \\
     "{dat}" using 1:2 with linespoints lw 2 pt 7 title "PkmCom channel (writer thread), content per CPU second of the busiest thread"{one_plot}
"""
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        die("gnuplot failed:\n" + r.stderr)
    return True


def replace_block(text, key, body, path):
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        die(f"{path}: markers {begin} ... {end} missing")
    return text[:i + len(begin)] + "\n" + body.strip("\n") + "\n" + text[j:]


def write_results(path, figures):
    with open(path, "w") as fh:
        fh.write("[\n")
        fh.write(",\n".join("  " + json.dumps(f, ensure_ascii=False) for f in figures))
        fh.write("\n]\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--outputs", required=True)
    ap.add_argument("--anchors", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--seconds", type=float, default=0)
    ap.add_argument("--results")
    ap.add_argument("--md")
    ap.add_argument("--png")
    ap.add_argument("--partial")
    a = ap.parse_args()

    with open(a.anchors) as fh:
        anchors = json.load(fh)
    figures = load_figures(a.outputs)

    if a.partial:
        write_results(a.partial, figures)
        print(results_md(figures))
        return

    write_results(a.results, figures)
    png_rel = os.path.relpath(a.png, os.path.dirname(os.path.abspath(a.md)))
    if plot(figures, os.path.abspath(a.png), a.outputs):
        plot_md = (f"![Channel throughput by content size beside AES-256-CBC]({png_rel})\n\n"
                   f"Data: the `throughput <N> B` figures of `{os.path.basename(a.results)}`.")
    else:
        if os.path.exists(a.png):
            os.remove(a.png)  # a plot of an older run would lie
        plot_md = ("No plot yet: this run has no channel throughput figures "
                   "(`throughput <N> B`, from `bench_channel`).")
    with open(a.md) as fh:
        text = fh.read()
    text = replace_block(text, "machine", machine_md(machine(a.build, anchors, a.seconds),
                                                     anchors), a.md)
    text = replace_block(text, "status", status_md(figures), a.md)
    text = replace_block(text, "results", results_md(figures), a.md)
    text = replace_block(text, "plot", plot_md, a.md)
    with open(a.md, "w") as fh:
        fh.write(text)
    print(status_md(figures))


if __name__ == "__main__":
    main()
