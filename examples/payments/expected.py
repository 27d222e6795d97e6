#!/usr/bin/env python3
"""Independent oracle for the `payments` example (dedup + running ledger).

Usage: python3 expected.py INPUT.csv OUT_LEDGER.csv [--ttl-minutes 60]

Reads the input the way the pipeline delivers it (one record per '\\n'-terminated
line, in delivery order) and writes the exact ledger the `dedup` operator must
emit, one line per accepted record, so a test can compare byte for byte.

Deliberately written without looking at the Rust operator; the rules are:

* A record is `idempotency_key,merchant,amount_cents,currency,created_ms,card,description`
  (exactly 7 comma-separated fields). amount_cents is digits only, created_ms
  is an optional '-' followed by digits, and the line must be valid UTF-8.
  Anything else is malformed: the operator rejects it, this script exits 2
  naming the line number (the bundled data has none).
* W = max(W, created_ms), updated with the current record first.
* Duplicate iff an earlier *accepted* record had the same key and its
  created_ms >= W - ttl_ms. Duplicates produce no output.
* Otherwise accept: seen[key] = created_ms, balance[merchant] += amount,
  count[merchant] += 1, emit `merchant,key,amount_cents,currency,balance,count`.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass

FIELDS = 7
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
    accepted: int = 0
    duplicates: int = 0


def split_lines(data: bytes) -> list[bytes]:
    """Split raw input into records: '\\n'-separated; a final '\\n' ends the
    last record rather than starting an empty one."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def dedup(lines: list[bytes], ttl_minutes: int = 60) -> tuple[list[str], Stats]:
    """Run the dedup/ledger rules over raw lines; return (output lines, stats).

    Raises MalformedRecord (1-based line number) on the first bad line.
    """
    ttl_ms = ttl_minutes * 60_000
    watermark: int | None = None
    seen: dict[str, int] = {}
    balance: dict[str, int] = {}
    count: dict[str, int] = {}
    out: list[str] = []
    stats = Stats()

    for lineno, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedRecord(lineno, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
        fields = text.split(",")
        if len(fields) != FIELDS:
            raise MalformedRecord(lineno, f"expected {FIELDS} fields, found {len(fields)}")
        key, merchant, amount_s, currency, created_s, _card, _description = fields
        if not _UINT.fullmatch(amount_s):
            raise MalformedRecord(lineno, f"amount_cents {amount_s!r} is not a non-negative integer")
        if not _INT.fullmatch(created_s):
            raise MalformedRecord(lineno, f"created_ms {created_s!r} is not an integer")
        amount = int(amount_s)
        created = int(created_s)
        stats.records += 1

        # Watermark first, including the current record.
        if watermark is None or created > watermark:
            watermark = created

        prev = seen.get(key)
        if prev is not None and prev >= watermark - ttl_ms:
            stats.duplicates += 1
            continue

        seen[key] = created
        bal = balance.get(merchant, 0) + amount
        cnt = count.get(merchant, 0) + 1
        balance[merchant] = bal
        count[merchant] = cnt
        stats.accepted += 1
        out.append(f"{merchant},{key},{amount},{currency},{bal},{cnt}")

    return out, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Expected output of the payments dedup operator.")
    ap.add_argument("input", help="input CSV (one record per line)")
    ap.add_argument("output", help="where to write the expected ledger")
    ap.add_argument("--ttl-minutes", type=int, default=60, help="dedup TTL in minutes (default 60)")
    args = ap.parse_args(argv)
    if args.ttl_minutes < 0:
        ap.error("--ttl-minutes must be >= 0")

    with open(args.input, "rb") as f:
        lines = split_lines(f.read())
    try:
        out, stats = dedup(lines, args.ttl_minutes)
    except MalformedRecord as e:
        print(f"expected.py: {args.input}: malformed record at line {e.lineno}: {e.reason}", file=sys.stderr)
        return 2

    with open(args.output, "wb") as f:
        f.write("".join(line + "\n" for line in out).encode("utf-8"))
    print(
        f"payments: {stats.records} records read, {stats.accepted} accepted, "
        f"{stats.duplicates} duplicates dropped",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
