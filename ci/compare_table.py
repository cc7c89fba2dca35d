#!/usr/bin/env python3
"""Markdown table of medians from a ci/compare.sh results file.

    python3 ci/compare_table.py target/compare/results.txt

The results file has one run per line, `key=value` fields separated by
spaces (see compare/src/lib.rs); lines starting with `#` are comments.
Ratios are to poolmalloc's median: above 1 means poolmalloc was faster
(time) or smaller (RSS). The middle half of the times (25th to 75th
percentile) shows how far runs spread: on this machine some workloads
are bimodal, and a gap between medians inside that spread means little.
Python 3 standard library only; ci/chart.py imports the parsing from here.
"""

import statistics
import sys

ALLOCATORS = ["system", "jemalloc", "mimalloc", "poolmalloc"]
BASELINE = "poolmalloc"
METRICS = [
    "secs", "peak_rss_kib", "end_rss_kib", "rss10_kib", "rss100_kib", "freed_rss_kib",
    "user_secs", "sys_secs", "minflt",
]


def read_runs(path):
    """Every run line of the file as a dict of its fields (values as strings)."""
    runs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            if "workload" in fields and "alloc" in fields:
                runs.append(fields)
    return runs


def summarize(runs):
    """{workload: {alloc: summary}} in first-seen workload order.

    A summary holds the median of each metric over successful runs, the run
    and failure counts, and the set of `check` values seen."""
    grouped = {}
    for run in runs:
        grouped.setdefault(run["workload"], {}).setdefault(run["alloc"], []).append(run)
    table = {}
    for workload, by_alloc in grouped.items():
        table[workload] = {}
        for alloc, alloc_runs in by_alloc.items():
            ok = [r for r in alloc_runs if r.get("status", "ok") == "ok"]
            summary = {"runs": len(ok), "failed": len(alloc_runs) - len(ok), "checks": {r.get("check") for r in ok}}
            for metric in METRICS:
                values = [float(r[metric]) for r in ok if metric in r]
                if values:
                    summary[metric] = statistics.median(values)
            times = [float(r["secs"]) for r in ok if "secs" in r]
            if len(times) >= 2:
                quartiles = statistics.quantiles(times, n=4)
                summary["secs_middle_half"] = (quartiles[0], quartiles[2])
            table[workload][alloc] = summary
    return table


def ordered_allocators(by_alloc):
    """Known allocators in the usual order, then any others."""
    return [a for a in ALLOCATORS if a in by_alloc] + sorted(a for a in by_alloc if a not in ALLOCATORS)


def ratio(by_alloc, alloc, metric):
    """`alloc`'s median of `metric` over the baseline's, or None."""
    base = by_alloc.get(BASELINE, {}).get(metric)
    value = by_alloc.get(alloc, {}).get(metric)
    if base is None or value is None or base <= 0:
        return None
    return value / base


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}x"


def fmt_mib(kib):
    return "n/a" if kib is None else f"{kib / 1024:.1f}"


def note(workload, summary, check_mismatch):
    parts = []
    if workload == "idle" and "end_rss_kib" in summary:
        parts.append(f"RSS after 2 s idle {fmt_mib(summary['end_rss_kib'])} MiB")
        if "freed_rss_kib" in summary:
            parts.append(f"right after free {fmt_mib(summary['freed_rss_kib'])} MiB")
    if workload == "churn" and "rss10_kib" in summary and "rss100_kib" in summary:
        growth = summary["rss100_kib"] - summary["rss10_kib"]
        parts.append(f"RSS growth 10%->100% of threads {growth / 1024:+.1f} MiB")
    if summary["failed"]:
        parts.append(f"**{summary['failed']} run(s) failed**")
    if check_mismatch:
        parts.append("**check differs from other allocators**")
    return "; ".join(parts)


def markdown(table):
    lines = [
        "| workload | allocator | runs | time (s) | middle half (s) | time / poolmalloc | peak RSS (MiB) "
        "| peak / poolmalloc | user / sys CPU (s) | minor faults | notes |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for workload, by_alloc in table.items():
        all_checks = set().union(*(s["checks"] for s in by_alloc.values()))
        for alloc in ordered_allocators(by_alloc):
            s = by_alloc[alloc]
            secs = "n/a" if "secs" not in s else f"{s['secs']:.3f}"
            middle = "n/a" if "secs_middle_half" not in s else "{:.3f}-{:.3f}".format(*s["secs_middle_half"])
            cpu = "n/a" if "user_secs" not in s else f"{s['user_secs']:.2f} / {s['sys_secs']:.2f}"
            faults = "n/a" if "minflt" not in s else f"{s['minflt']:.0f}"
            lines.append(
                f"| {workload} | {alloc} | {s['runs']} | {secs} | {middle} | {fmt_ratio(ratio(by_alloc, alloc, 'secs'))} "
                f"| {fmt_mib(s.get('peak_rss_kib'))} | {fmt_ratio(ratio(by_alloc, alloc, 'peak_rss_kib'))} "
                f"| {cpu} | {faults} | {note(workload, s, len(all_checks) > 1)} |"
            )
    return "\n".join(lines)


def header(path):
    """The file's comment lines (machine, versions, settings), without stderr excerpts."""
    with open(path, encoding="utf-8") as f:
        return [line[1:].strip() for line in f if line.startswith("#") and not line.startswith("# stderr:")]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: compare_table.py RESULTS_FILE")
    path = sys.argv[1]
    for line in header(path):
        print(f"- {line}")
    print("- medians over the rounds; ratios are to poolmalloc (above 1: poolmalloc faster or smaller)")
    print()
    print(markdown(summarize(read_runs(path))))


if __name__ == "__main__":
    main()
