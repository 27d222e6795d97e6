"""Hand-computed cases for the example oracles (stdlib unittest only).

Run from the repo root:
    python3 -m unittest discover -s examples -p 'test_*.py'
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.dont_write_bytecode = True  # keep examples/ free of __pycache__

HERE = Path(__file__).resolve().parent
PAYMENTS = HERE / "payments" / "expected.py"
RIDES = HERE / "rides" / "expected.py"
FINAL_TABLE = HERE / "rides" / "final_table.py"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


payments = _load("weir_example_payments_expected", PAYMENTS)
rides = _load("weir_example_rides_expected", RIDES)
final_table = _load("weir_example_rides_final_table", FINAL_TABLE)

MIN = 60_000
HOUR = 60 * MIN


def pay(key: str, merchant: str, amount: int | str, created: int | str, currency: str = "EUR") -> bytes:
    return f"{key},{merchant},{amount},{currency},{created},card-0001,order-{key}-x".encode()


def ride(rid: str, zone: int | str, pickup: int | str, fare: int | str, tip: int | str) -> bytes:
    dropoff = int(pickup) + 15 * MIN if str(pickup).lstrip("-").isdigit() else pickup
    return f"{rid},{zone},{pickup},{dropoff},{fare},{tip}".encode()


class PaymentsTest(unittest.TestCase):
    def run_dedup(self, lines, ttl=60):
        return payments.dedup(lines, ttl)

    def test_duplicate_within_ttl_dropped(self):
        p1 = pay("pay-1", "m-A", 100, 1_000_000)
        lines = [
            p1,
            pay("pay-2", "m-B", 250, 1_060_000, "USD"),
            p1,  # identical re-delivery one minute later: dropped
            pay("pay-3", "m-A", 50, 1_100_000),
            p1,  # and again: still dropped
        ]
        out, stats = self.run_dedup(lines)
        self.assertEqual(
            out,
            [
                "m-A,pay-1,100,EUR,100,1",
                "m-B,pay-2,250,USD,250,1",
                "m-A,pay-3,50,EUR,150,2",
            ],
        )
        self.assertEqual((stats.records, stats.accepted, stats.duplicates), (5, 3, 2))

    def test_redelivery_after_ttl_accepted_again(self):
        lines = [
            pay("pay-1", "m-A", 100, 0),
            pay("pay-9", "m-B", 7, HOUR),  # W = 3_600_000
            pay("pay-1", "m-A", 100, 0),  # W - ttl = 0, seen 0 >= 0: duplicate (boundary)
            pay("pay-8", "m-B", 3, HOUR + 1),  # W = 3_600_001
            pay("pay-1", "m-A", 100, 0),  # W - ttl = 1, seen 0 < 1: accepted again
            pay("pay-1", "m-A", 100, 0),  # seen[pay-1] = 0 again, still < 1: accepted again
        ]
        out, stats = self.run_dedup(lines)
        self.assertEqual(
            out,
            [
                "m-A,pay-1,100,EUR,100,1",
                "m-B,pay-9,7,EUR,7,1",
                "m-B,pay-8,3,EUR,10,2",
                "m-A,pay-1,100,EUR,200,2",
                "m-A,pay-1,100,EUR,300,3",
            ],
        )
        self.assertEqual((stats.records, stats.accepted, stats.duplicates), (6, 5, 1))

    def test_watermark_includes_current_record_and_seen_overwrites(self):
        lines = [
            pay("pay-1", "m-A", 10, 0),
            # Same key, far newer created_ms: W jumps to 3_600_001 *before* the check,
            # so the earlier acceptance (created 0) is already outside the TTL.
            pay("pay-1", "m-A", 10, HOUR + 1),
            # seen[pay-1] is now 3_600_001 (overwritten), so an old copy is a duplicate.
            pay("pay-1", "m-A", 10, 0),
        ]
        out, stats = self.run_dedup(lines)
        self.assertEqual(out, ["m-A,pay-1,10,EUR,10,1", "m-A,pay-1,10,EUR,20,2"])
        self.assertEqual(stats.duplicates, 1)

    def test_balances_per_merchant(self):
        lines = [
            pay("k1", "merchant-001", 1000, 10),
            pay("k2", "merchant-002", 1, 20),
            pay("k3", "merchant-001", 234, 30),
            pay("k1", "merchant-001", 1000, 10),  # dup
            pay("k4", "merchant-003", 0, 40),
            pay("k5", "merchant-002", 99, 50),
            pay("k6", "merchant-001", 5, 25),  # out of order, not a duplicate
        ]
        out, _ = self.run_dedup(lines)
        self.assertEqual(
            out,
            [
                "merchant-001,k1,1000,EUR,1000,1",
                "merchant-002,k2,1,EUR,1,1",
                "merchant-001,k3,234,EUR,1234,2",
                "merchant-003,k4,0,EUR,0,1",
                "merchant-002,k5,99,EUR,100,2",
                "merchant-001,k6,5,EUR,1239,3",
            ],
        )

    def test_ttl_zero(self):
        # ttl 0: duplicate iff the earlier acceptance's created_ms >= W.
        lines = [
            pay("a", "m", 1, 100),
            pay("a", "m", 1, 100),  # W = 100, seen 100 >= 100: duplicate
            pay("b", "m", 1, 101),  # W = 101
            pay("a", "m", 1, 100),  # seen 100 < 101: accepted
        ]
        out, stats = self.run_dedup(lines, ttl=0)
        self.assertEqual(out, ["m,a,1,EUR,1,1", "m,b,1,EUR,2,2", "m,a,1,EUR,3,3"])
        self.assertEqual(stats.duplicates, 1)

    def test_negative_created_ms_and_unicode_description(self):
        lines = [
            "pay-x,m-Ü,5,EUR,-5,card-1,caf\u00e9 \u2615".encode(),
            "pay-x,m-Ü,5,EUR,-5,card-1,caf\u00e9 \u2615".encode(),
        ]
        out, stats = self.run_dedup(lines)
        self.assertEqual(out, ["m-Ü,pay-x,5,EUR,5,1"])
        self.assertEqual(stats.duplicates, 1)

    def test_malformed_lines_name_the_line(self):
        good = pay("k1", "m", 1, 1)
        bad_cases = {
            "too few fields": b"k2,m,1,EUR,1,card",
            "too many fields": b"k2,m,1,EUR,1,card,desc,extra",
            "empty line": b"",
            "negative amount": pay("k2", "m", "-5", 1),
            "decimal amount": pay("k2", "m", "1.50", 1),
            "empty amount": pay("k2", "m", "", 1),
            "plus created": pay("k2", "m", 1, "+5"),
            "float created": pay("k2", "m", 1, "1e3"),
            "lone minus created": pay("k2", "m", 1, "-"),
            "space in amount": pay("k2", "m", " 1", 1),
            "non-ascii digit": pay("k2", "m", "\u0661", 1),
            "not utf-8": b"k2,m,1,EUR,1,card,\xff\xfe",
        }
        for name, bad in bad_cases.items():
            with self.subTest(name):
                with self.assertRaises(payments.MalformedRecord) as ctx:
                    self.run_dedup([good, good, bad, good])
                self.assertEqual(ctx.exception.lineno, 3)

    def test_cli_bytes_summary_and_exit_codes(self):
        with tempfile.TemporaryDirectory() as tmp:
            inp, out = Path(tmp, "in.csv"), Path(tmp, "ledger.csv")
            p1 = pay("pay-1", "m-A", 100, 0)
            # No trailing newline on the last line: still one record.
            inp.write_bytes(b"\n".join([p1, p1, pay("pay-2", "m-A", 1, 1)]))
            r = subprocess.run(
                [sys.executable, str(PAYMENTS), str(inp), str(out), "--ttl-minutes", "60"],
                capture_output=True, text=True,
            )
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(out.read_bytes(), b"m-A,pay-1,100,EUR,100,1\nm-A,pay-2,1,EUR,101,2\n")
            self.assertIn("3 records read, 2 accepted, 1 duplicates dropped", r.stderr)

            inp.write_bytes(p1 + b"\n" + b"garbage\n")
            r = subprocess.run([sys.executable, str(PAYMENTS), str(inp), str(out)], capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("line 2", r.stderr)


class RidesTest(unittest.TestCase):
    def run_revenue(self, lines, window=60, lateness=10):
        return rides.revenue(lines, window, lateness)

    def test_windows_lateness_and_boundary(self):
        # window 60 min, lateness 10 min: window [0, 3_600_000) closes for good
        # once W >= 0 + 3_600_000 + 600_000 = 4_200_000.
        r9 = ride("r9", 2, 0, 111, 0)
        lines = [
            ride("r1", 1, 0, 1000, 200),
            ride("r2", 2, 1_800_000, 500, 0),
            ride("r3", 1, 3_000_000, 700, 100),
            ride("r4", 1, 4_000_000, 300, 0),  # W = 4_000_000, window 3_600_000
            ride("r5", 2, 3_599_999, 40, 2),  # out of order but within lateness
            ride("r6", 3, 4_199_999, 10, 0),  # W = 4_199_999
            ride("r7", 1, 100, 5, 5),  # 4_200_000 > 4_199_999: still on time
            ride("r8", 1, 4_200_000, 1, 1),  # W = 4_200_000
            r9,  # 4_200_000 <= 4_200_000: late, exactly at the boundary
        ]
        main, late, stats = self.run_revenue(lines)
        self.assertEqual(
            main,
            [
                "1,0,1,1200",
                "2,0,1,500",
                "1,0,2,2000",
                "1,3600000,1,300",
                "2,0,2,542",
                "3,3600000,1,10",
                "1,0,3,2010",
                "1,3600000,2,302",
            ],
        )
        self.assertEqual(late, [r9])
        self.assertEqual((stats.records, stats.late, stats.windows), (9, 1, 4))

    def test_late_record_written_unchanged_and_not_counted(self):
        odd = "r-\u00e9,7,60000,-1,0100,0".encode()  # leading zero, odd dropoff: copied verbatim
        lines = [
            ride("a", 7, 3 * HOUR, 1, 0),  # W = 10_800_000
            odd,  # window [0, 1h) closed at 4_200_000: late
            ride("b", 7, 3 * HOUR + 1, 2, 0),
        ]
        main, late, stats = self.run_revenue(lines)
        self.assertEqual(main, ["7,10800000,1,1", "7,10800000,2,3"])
        self.assertEqual(late, [odd])
        self.assertEqual(stats.windows, 1)

    def test_negative_pickup_floor(self):
        lines = [
            ride("n3", 5, -HOUR - 1, 30, 0),  # W = -3_600_001; floor -> -7_200_000
            ride("n1", 5, -1, 10, 0),  # W = -1; floor(-1 / 3.6e6) = -1 -> -3_600_000
            ride("n2", 5, -HOUR, 20, 0),  # exactly on the boundary -> -3_600_000
            ride("n4", 0, 0, 1, 0),  # W = 0
            ride("n5", 5, -HOUR - 2, 4, 0),  # -7_200_000 + 4_200_000 = -3_000_000 <= 0: late
            ride("n6", 5, -5, 1, 1),  # -3_600_000 + 4_200_000 = 600_000 > 0: on time
        ]
        main, late, stats = self.run_revenue(lines)
        self.assertEqual(
            main,
            [
                "5,-7200000,1,30",
                "5,-3600000,1,10",
                "5,-3600000,2,30",
                "0,0,1,1",
                "5,-3600000,3,32",
            ],
        )
        self.assertEqual(late, [lines[4]])
        self.assertEqual(stats.windows, 3)

    def test_negative_window_closed_by_later_watermark(self):
        # Same ride as n3 above, but after W = -1 its window (end + lateness
        # = -3_000_000) is already closed.
        lines = [ride("n1", 5, -1, 10, 0), ride("n3", 5, -HOUR - 1, 30, 0)]
        main, late, _ = self.run_revenue(lines)
        self.assertEqual(main, ["5,-3600000,1,10"])
        self.assertEqual(late, [lines[1]])

    def test_other_window_and_lateness(self):
        # 15 min windows, no lateness: a window closes as soon as W reaches its end.
        lines = [
            ride("a", 1, 0, 1, 0),
            ride("b", 1, 15 * MIN, 1, 0),  # W = 900_000 = end of window 0
            ride("c", 1, 14 * MIN, 1, 0),  # late
        ]
        main, late, _ = self.run_revenue(lines, window=15, lateness=0)
        self.assertEqual(main, ["1,0,1,1", "1,900000,1,1"])
        self.assertEqual(late, [lines[2]])

    def test_malformed_lines_name_the_line(self):
        good = ride("g", 1, 0, 1, 1)
        bad_cases = {
            "five fields": b"r,1,0,0,1",
            "seven fields": b"r,1,0,0,1,1,1",
            "negative zone": b"r,-1,0,0,1,1",
            "negative fare": b"r,1,0,0,-1,1",
            "negative tip": b"r,1,0,0,1,-1",
            "decimal pickup": b"r,1,0.5,0,1,1",
            "bad dropoff": b"r,1,0,x,1,1",
            "carriage return": b"r,1,0,0,1,1\r",
            "not utf-8": b"r\xff,1,0,0,1,1",
        }
        for name, bad in bad_cases.items():
            with self.subTest(name):
                with self.assertRaises(rides.MalformedRecord) as ctx:
                    self.run_revenue([good, bad])
                self.assertEqual(ctx.exception.lineno, 2)

    def test_cli_and_final_table(self):
        with tempfile.TemporaryDirectory() as tmp:
            inp = Path(tmp, "in.csv")
            out_main, out_late = Path(tmp, "main.csv"), Path(tmp, "late.csv")
            late_line = ride("r4", 1, 0, 9, 9)
            inp.write_bytes(
                b"".join(
                    line + b"\n"
                    for line in [
                        ride("r1", 2, HOUR + 5, 100, 10),
                        ride("r2", 1, HOUR + 6, 200, 0),
                        ride("r3", 2, 2 * HOUR + 10 * MIN, 50, 0),  # W = 7_800_000
                        late_line,  # window 0 closed at 4_200_000
                        ride("r5", 2, HOUR + 7, 1, 0),  # window 1h closes at 7_800_000 <= W: late
                        ride("r6", 2, 2 * HOUR + 1, 5, 5),
                    ]
                )
            )
            r = subprocess.run(
                [sys.executable, str(RIDES), str(inp), str(out_main), str(out_late),
                 "--window-minutes", "60", "--allowed-lateness-minutes", "10"],
                capture_output=True, text=True,
            )
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(
                out_main.read_bytes(),
                b"2,3600000,1,110\n1,3600000,1,200\n2,7200000,1,50\n2,7200000,2,60\n",
            )
            self.assertEqual(out_late.read_bytes(), late_line + b"\n" + ride("r5", 2, HOUR + 7, 1, 0) + b"\n")
            self.assertIn("6 records, 3 windows, 2 late records", r.stderr)

            r = subprocess.run([sys.executable, str(FINAL_TABLE), str(out_main)], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(
                r.stdout,
                "zone,window_start,trips,revenue_cents\n"
                "1,3600000,1,200\n2,3600000,1,110\n2,7200000,2,60\n",
            )

    def test_final_table_replacement(self):
        rows = final_table.final_table(["3,0,1,5", "1,3600000,1,7", "3,0,2,9", "2,0,1,1", "1,3600000,4,40"])
        self.assertEqual(rows, [(2, 0, 1, 1), (3, 0, 2, 9), (1, 3600000, 4, 40)])


if __name__ == "__main__":
    unittest.main()
