#!/usr/bin/env python3
"""Independent oracle for the `rides` example (hourly revenue per zone).

Usage: python3 expected.py INPUT.csv OUT_MAIN.csv OUT_LATE.csv
                           [--window-minutes 60] [--allowed-lateness-minutes 10]

Reads the input the way the pipeline delivers it (one record per '\\n'-terminated
line, in delivery order) and writes the exact output the `revenue` operator must
emit on its `main` and `late` sinks, so a test can compare byte for byte.

Deliberately written without looking at the Rust operator; the rules are:

* A record is `ride_id,zone,pickup_ms,dropoff_ms,fare_cents,tip_cents`
  (exactly 6 comma-separated fields). zone, fare_cents and tip_cents are
  digits only; pickup_ms and dropoff_ms are an optional '-' then digits; the
  line must be valid UTF-8. Anything else is malformed: this script exits 2
  naming the line number (the bundled data has none).
* window_start = floor(pickup_ms / window_ms) * window_ms (floor, also for
  negative pickup_ms).
* W = max(W, pickup_ms), updated with the current record first.
* If window_start + window_ms + lateness_ms <= W the record is late: the
  original line goes to OUT_LATE unchanged and nothing else happens.
* Otherwise totals[(zone, window_start)] += (1, fare + tip) and OUT_MAIN gets
  `zone,window_start,trips,revenue_cents` -- a running total; the latest row
  per (zone, window_start) replaces the earlier ones.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass

FIELDS = 6
_UINT = re.compile(r"[0-9]+")
_INT = re.compile(r"-?[0-9]+")


class MalformedRecord(Exception):
    """A line the operator would reject."""

    def __init__(self, lineno: int, reason: str) -> None:
        super().__init__(f"line {lineno}: {reason}")
        self.lineno = lineno
        self.reason = reason


@dataclass
class Stats:
    records: int = 0
    on_time: int = 0
    late: int = 0
    windows: int = 0


def split_lines(data: bytes) -> list[bytes]:
    """Split raw input into records: '\\n'-separated; a final '\\n' ends the
    last record rather than starting an empty one."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def revenue(
    lines: list[bytes], window_minutes: int = 60, lateness_minutes: int = 10
) -> tuple[list[str], list[bytes], Stats]:
    """Run the windowed-revenue rules over raw lines.

    Returns (main output lines, late lines as the original bytes, stats).
    Raises MalformedRecord (1-based line number) on the first bad line.
    """
    window_ms = window_minutes * 60_000
    lateness_ms = lateness_minutes * 60_000
    watermark: int | None = None
    totals: dict[tuple[int, int], tuple[int, int]] = {}
    main_out: list[str] = []
    late_out: list[bytes] = []
    stats = Stats()

    for lineno, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedRecord(lineno, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
        fields = text.split(",")
        if len(fields) != FIELDS:
            raise MalformedRecord(lineno, f"expected {FIELDS} fields, found {len(fields)}")
        _ride_id, zone_s, pickup_s, dropoff_s, fare_s, tip_s = fields
        for name, value, pattern, what in (
            ("zone", zone_s, _UINT, "a non-negative integer"),
            ("pickup_ms", pickup_s, _INT, "an integer"),
            ("dropoff_ms", dropoff_s, _INT, "an integer"),
            ("fare_cents", fare_s, _UINT, "a non-negative integer"),
            ("tip_cents", tip_s, _UINT, "a non-negative integer"),
        ):
            if not pattern.fullmatch(value):
                raise MalformedRecord(lineno, f"{name} {value!r} is not {what}")
        zone = int(zone_s)
        pickup = int(pickup_s)
        stats.records += 1

        # Watermark first, including the current record.
        if watermark is None or pickup > watermark:
            watermark = pickup

        window_start = (pickup // window_ms) * window_ms
        if window_start + window_ms + lateness_ms <= watermark:
            stats.late += 1
            late_out.append(raw)
            continue

        key = (zone, window_start)
        trips, rev = totals.get(key, (0, 0))
        trips += 1
        rev += int(fare_s) + int(tip_s)
        totals[key] = (trips, rev)
        stats.on_time += 1
        main_out.append(f"{zone},{window_start},{trips},{rev}")

    stats.windows = len(totals)
    return main_out, late_out, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Expected output of the rides revenue operator.")
    ap.add_argument("input", help="input CSV (one record per line)")
    ap.add_argument("out_main", help="where to write the expected main (revenue) output")
    ap.add_argument("out_late", help="where to write the expected late-records output")
    ap.add_argument("--window-minutes", type=int, default=60, help="tumbling window size (default 60)")
    ap.add_argument(
        "--allowed-lateness-minutes", type=int, default=10, help="allowed lateness (default 10)"
    )
    args = ap.parse_args(argv)
    if args.window_minutes <= 0:
        ap.error("--window-minutes must be > 0")
    if args.allowed_lateness_minutes < 0:
        ap.error("--allowed-lateness-minutes must be >= 0")

    with open(args.input, "rb") as f:
        lines = split_lines(f.read())
    try:
        main_out, late_out, stats = revenue(lines, args.window_minutes, args.allowed_lateness_minutes)
    except MalformedRecord as e:
        print(f"expected.py: {args.input}: malformed record at line {e.lineno}: {e.reason}", file=sys.stderr)
        return 2

    with open(args.out_main, "wb") as f:
        f.write("".join(line + "\n" for line in main_out).encode("utf-8"))
    with open(args.out_late, "wb") as f:
        f.write(b"".join(line + b"\n" for line in late_out))
    print(
        f"rides: {stats.records} records, {stats.windows} windows, {stats.late} late records",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
