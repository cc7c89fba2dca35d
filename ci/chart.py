#!/usr/bin/env python3
"""SVG bar chart of a ci/compare.sh results file: per workload, one bar per
allocator, each the allocator's median over poolmalloc's median.

    python3 ci/chart.py RESULTS [OUT.svg] [--metric secs|peak_rss_kib|end_rss_kib]

The default metric is time (`secs`); OUT defaults to RESULTS with `.svg`.
The SVG is written by hand (Python standard library only). Bars taller than
the axis are cut at the top and keep their true value as label.
"""

import argparse
import os
import sys
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_table import BASELINE, header, ordered_allocators, ratio, read_runs, summarize  # noqa: E402

COLORS = {"system": "#8c8c8c", "jemalloc": "#e07b39", "mimalloc": "#3b7dd8", "poolmalloc": "#3aa655"}
OTHER_COLOR = "#a05fb5"
TITLES = {
    "secs": "Time relative to poolmalloc (median; above 1: poolmalloc faster)",
    "peak_rss_kib": "Peak RSS relative to poolmalloc (median; above 1: poolmalloc smaller)",
    "end_rss_kib": "End RSS relative to poolmalloc (median; above 1: poolmalloc smaller)",
}
# Ratios above this are cut, so one outlier does not flatten every other bar.
MAX_AXIS = 4.0


def nice_step(top):
    for step in (0.25, 0.5, 1.0):
        if top / step <= 8:
            return step
    return 2.0


def chart(table, metric, subtitle):
    allocators = []
    for by_alloc in table.values():
        for a in ordered_allocators(by_alloc):
            if a not in allocators:
                allocators.append(a)
    values = {w: {a: ratio(by_alloc, a, metric) for a in allocators} for w, by_alloc in table.items()}
    finite = [r for row in values.values() for r in row.values() if r is not None]
    top = max([1.0] + [min(r, MAX_AXIS) for r in finite]) * 1.1
    step = nice_step(top)
    top = step * -(-top // step)

    bar_w, bar_gap, group_gap = 16, 2, 28
    group_w = len(allocators) * (bar_w + bar_gap) - bar_gap
    left, right, top_margin, bottom = 56, 96, 70, 30
    plot_h = 300
    plot_right = left + len(table) * (group_w + group_gap)
    width = plot_right + right
    height = top_margin + plot_h + bottom

    def y(v):
        return top_margin + plot_h - plot_h * min(v, top) / top

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14" font-weight="bold">{escape(TITLES.get(metric, metric))}</text>',
        f'<text x="{left}" y="34" fill="#555">{escape(subtitle)}</text>',
    ]
    # Legend.
    x = left
    for a in allocators:
        out.append(f'<rect x="{x}" y="44" width="10" height="10" fill="{COLORS.get(a, OTHER_COLOR)}"/>')
        out.append(f'<text x="{x + 14}" y="53">{escape(a)}</text>')
        x += 24 + 7 * len(a)
    # Axis, grid and the poolmalloc = 1 line.
    tick = 0.0
    while tick <= top + 1e-9:
        out.append(f'<line x1="{left}" x2="{plot_right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
        tick += step
    out.append(f'<line x1="{left}" x2="{left}" y1="{top_margin}" y2="{top_margin + plot_h}" stroke="#333"/>')
    out.append(
        f'<line x1="{left}" x2="{plot_right}" y1="{y(1):.1f}" y2="{y(1):.1f}" '
        'stroke="#333" stroke-dasharray="4 3"/>'
    )
    out.append(f'<text x="{plot_right + 6}" y="{y(1) + 4:.1f}" fill="#333">{BASELINE} = 1</text>')
    # Bars.
    for i, (workload, row) in enumerate(values.items()):
        gx = left + group_gap / 2 + i * (group_w + group_gap)
        for j, a in enumerate(allocators):
            bx = gx + j * (bar_w + bar_gap)
            cx = bx + bar_w / 2
            r = row[a]
            if r is None:
                out.append(f'<text x="{cx:.1f}" y="{y(0) - 4:.1f}" text-anchor="middle" fill="#c00">x</text>')
                continue
            color = COLORS.get(a, OTHER_COLOR)
            out.append(
                f'<rect x="{bx:.1f}" y="{y(r):.1f}" width="{bar_w}" height="{y(0) - y(r):.1f}" fill="{color}">'
                f"<title>{escape(workload)} {escape(a)}: {r:.2f}x</title></rect>"
            )
            label = f"{r:.2f}" + ("\u2191" if r > top else "")
            ly = y(r) - 4 if r <= top else y(top) + 4
            anchor = "start" if r <= top else "end"
            fill = "#222" if r <= top else "white"
            out.append(
                f'<text transform="translate({cx + 3.5:.1f},{ly:.1f}) rotate(-90)" text-anchor="{anchor}" '
                f'font-size="9" fill="{fill}">{label}</text>'
            )
        out.append(
            f'<text x="{gx + group_w / 2:.1f}" y="{top_margin + plot_h + 16}" text-anchor="middle">'
            f"{escape(workload)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("out", nargs="?")
    parser.add_argument("--metric", default="secs", choices=sorted(TITLES))
    args = parser.parse_args()
    out = args.out or os.path.splitext(args.results)[0] + ".svg"
    table = summarize(read_runs(args.results))
    lines = header(args.results)
    subtitle = "; ".join(line for line in lines if line.startswith(("machine:", "rounds=")))
    with open(out, "w", encoding="utf-8") as f:
        f.write(chart(table, args.metric, subtitle))
    print(f"chart: {out}")


if __name__ == "__main__":
    main()
