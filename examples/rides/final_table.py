#!/usr/bin/env python3
"""Collapse the rides `main` output to its final table.

Usage: python3 final_table.py INPUT_MAIN.csv [--no-header]

The revenue operator emits running totals with replacement (upsert) semantics:
every row `zone,window_start,trips,revenue_cents` supersedes the previous row
for the same (zone, window_start). This keeps the last row per key and prints
them sorted by window_start, then zone, as CSV on stdout.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import sys


def final_table(lines: list[str]) -> list[tuple[int, int, int, int]]:
    """Last row per (zone, window_start), sorted by (window_start, zone)."""
    last: dict[tuple[int, int], tuple[int, int]] = {}
    for lineno, line in enumerate(lines, start=1):
        fields = line.split(",")
        if len(fields) != 4:
            raise ValueError(f"line {lineno}: expected 4 fields, found {len(fields)}")
        zone, window_start, trips, rev = (int(x) for x in fields)
        last[(zone, window_start)] = (trips, rev)
    rows = [(z, ws, t, r) for (z, ws), (t, r) in last.items()]
    rows.sort(key=lambda row: (row[1], row[0]))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Final (last-row-per-key) rides revenue table.")
    ap.add_argument("input", help="the main output of the rides pipeline (or of expected.py)")
    ap.add_argument("--no-header", action="store_true", help="omit the CSV header line")
    args = ap.parse_args(argv)

    with open(args.input, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    try:
        rows = final_table(lines)
    except ValueError as e:
        print(f"final_table.py: {args.input}: {e}", file=sys.stderr)
        return 2

    out = [] if args.no_header else ["zone,window_start,trips,revenue_cents"]
    out.extend(f"{z},{ws},{t},{r}" for z, ws, t, r in rows)
    sys.stdout.write("".join(line + "\n" for line in out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
