#!/usr/bin/env python3
"""Markdown table of the compare/ micro benches from criterion's estimates.

    python3 ci/micro_table.py [criterion-dir]     (default target/criterion)

For every benchmark group and input, the median time of each allocator and
its ratio to poolmalloc's (above 1.00x: slower than poolmalloc). The
fastest allocator of each row is in bold."""
import json
import os
import sys

ALLOCATORS = ["poolmalloc", "system", "jemalloc", "mimalloc"]


def median(path):
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def human(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} us"
    return f"{ns:.2f} ns"


def rows(root):
    # Layouts: group/alloc/input/new and group/alloc/new (no input).
    for group in sorted(os.listdir(root)):
        gdir = os.path.join(root, group)
        if not os.path.isdir(gdir) or group == "report":
            continue
        results = {}
        for alloc in ALLOCATORS:
            adir = os.path.join(gdir, alloc)
            if not os.path.isdir(adir):
                continue
            direct = os.path.join(adir, "new", "estimates.json")
            if os.path.exists(direct):
                results.setdefault("", {})[alloc] = median(direct)
            for inp in os.listdir(adir):
                est = os.path.join(adir, inp, "new", "estimates.json")
                if os.path.exists(est):
                    results.setdefault(inp, {})[alloc] = median(est)
        # Groups named after an operation with allocators inside (realloc/kind/alloc).
        for sub in sorted(os.listdir(gdir)):
            sdir = os.path.join(gdir, sub)
            if sub in ALLOCATORS or sub == "report" or not os.path.isdir(sdir):
                continue
            for alloc in ALLOCATORS:
                est = os.path.join(sdir, alloc, "new", "estimates.json")
                if os.path.exists(est):
                    results.setdefault(sub, {})[alloc] = median(est)
        key = lambda k: (0, int(k)) if k.isdigit() else (1, k)
        for inp in sorted(results, key=key):
            yield group, inp, results[inp]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    print("| bench | input | " + " | ".join(ALLOCATORS) + " |")
    print("|---|---|" + "---|" * len(ALLOCATORS))
    for group, inp, res in rows(root):
        base = res.get("poolmalloc")
        fastest = min(res, key=res.get)
        cells = []
        for alloc in ALLOCATORS:
            if alloc not in res:
                cells.append("")
                continue
            cell = human(res[alloc])
            if alloc == fastest:
                cell = f"**{cell}**"
            if alloc != "poolmalloc" and base:
                cell += f" ({res[alloc] / base:.2f}x)"
            cells.append(cell)
        print(f"| {group} | {inp} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
