#!/usr/bin/env python3
"""Reads a weir checkpoint manifest using nothing but docs/checkpoint-format.md.

An independent check of the documented format: this reader knows postcard
only from the spec's "Encoding" section and the manifest only from its
tables. It prints the manifest as JSON with the field names and shapes of
`weir checkpoints show --json` (hashes as lowercase hex, enums tagged by
"kind", globals as {"type", "bits"}), so a test can compare the two.

Usage: read_manifest.py MANIFEST [COMMIT]
With COMMIT (the epoch's commit marker), also decodes the marker and checks
that it names a manifest of this length (blake3 is not in Python's standard
library, so the hash itself is only printed).
"""

import json
import sys

KNOWN_VERSION = 2


class Reader:
    """Postcard, as the spec describes it."""

    def __init__(self, data):
        self.data = data
        self.at = 0

    def byte(self):
        if self.at >= len(self.data):
            raise ValueError(f"truncated at byte {self.at}")
        b = self.data[self.at]
        self.at += 1
        return b

    def varint(self, bits):
        """LEB128: 7 bits per byte, least significant first, high bit = more."""
        value = 0
        shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift >= bits + 7:
                raise ValueError(f"varint too long at byte {self.at}")
        if value >= 1 << bits:
            raise ValueError(f"u{bits} out of range: {value}")
        return value

    def u32(self):
        return self.varint(32)

    def u64(self):
        return self.varint(64)

    def raw(self, n):
        if self.at + n > len(self.data):
            raise ValueError(f"truncated at byte {self.at}")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def u16(self):
        return self.varint(16)

    def i64(self):
        """Zigzag, then LEB128."""
        n = self.varint(64)
        return (n >> 1) ^ -(n & 1)

    def string(self):
        return self.raw(self.u64()).decode("utf-8")

    def bytes(self):
        return self.raw(self.u64()).hex()

    def option(self, item):
        tag = self.byte()
        if tag > 1:
            raise ValueError(f"bad option tag {tag} at byte {self.at}")
        return item() if tag else None

    def seq(self, item):
        return [item() for _ in range(self.u64())]

    def hash(self):
        """[u8; 32]: 32 raw bytes."""
        return self.raw(32).hex()

    def enum(self, variants):
        index = self.u32()
        if index >= len(variants):
            raise ValueError(f"unknown enum variant {index} at byte {self.at}")
        return variants[index]()


def position(r):
    return r.enum(
        [
            lambda: {"kind": "file", "line": r.u64(), "byte": r.u64()},
            lambda: {"kind": "sequence", "index": r.u64()},
            lambda: {"kind": "offset", "partition": r.u32(), "offset": r.u64()},
        ]
    )


def memory(r):
    return {"size_bytes": r.u64(), "page_bytes": r.u32(), "pages": r.seq(r.hash)}


def global_state(r):
    return r.enum(
        [
            lambda: {"type": "i32", "bits": f"{r.u32():#010x}"},
            lambda: {"type": "i64", "bits": f"{r.u64():#018x}"},
            lambda: {"type": "f32", "bits": f"{r.u32():#010x}"},
            lambda: {"type": "f64", "bits": f"{r.u64():#018x}"},
        ]
    )


def handle(r):
    return r.enum(
        [
            lambda: {"kind": "stdin"},
            lambda: {"kind": "stdout"},
            lambda: {"kind": "stderr"},
            lambda: {"kind": "pollable", "of": r.u32()},
        ]
    )


def operator(r):
    return {
        "name": r.string(),
        "component": r.hash(),
        "memories": r.seq(lambda: memory(r)),
        "globals": r.seq(lambda: global_state(r)),
        "handles": r.seq(lambda: handle(r)),
    }


def stats(r):
    return {
        "capture_pause_us": r.u64(),
        "state_bytes": r.u64(),
        "new_bytes": r.u64(),
        "upload_us": r.u64(),
        "records_in": r.u64(),
    }


def journal(r):
    """EpochJournal (format 2)."""

    def read():
        return {
            "kind": "read",
            "records": r.u32(),
            "end": r.enum([lambda: "more", lambda: "malformed", lambda: "end", lambda: "idle"]),
            "time_ms": r.i64(),
        }

    def answer():
        return r.enum(
            [
                lambda: {
                    "kind": "http",
                    "status": r.u16(),
                    "headers": r.seq(lambda: [r.string(), r.string()]),
                    "body": r.bytes(),
                },
                lambda: {"kind": "file", "bytes": r.bytes()},
                lambda: {"kind": "failed", "message": r.string()},
                lambda: {"kind": "too_large", "limit": r.u64()},
            ]
        )

    def entry():
        return {
            "index": r.u64(),
            "request": r.enum(
                [
                    lambda: {"kind": "http_get", "url": r.string()},
                    lambda: {"kind": "read_file", "path": r.string()},
                ]
            ),
            "answer": answer(),
        }

    def operator_journal():
        return {
            "name": r.string(),
            "at_end": {
                "random_bytes": r.u64(),
                "insecure_random_bytes": r.u64(),
                "lookups": r.u64(),
            },
            "entries": r.seq(entry),
        }

    return {
        "base_epoch": r.option(r.u64),
        "start_position": position(r),
        "seed": r.hash(),
        "clock_ms": r.i64(),
        "reads": r.seq(read),
        "operators": r.seq(operator_journal),
        "outputs": r.seq(lambda: {"sink": r.string(), "outputs": r.u64()}),
    }


def check_version(version, what):
    if version > KNOWN_VERSION:
        raise ValueError(f"{what} format version {version} is newer than {KNOWN_VERSION}")


def read_manifest(data):
    r = Reader(data)
    manifest = {"format_version": r.u32()}
    check_version(manifest["format_version"], "manifest")
    manifest["pipeline"] = r.string()
    manifest["task"] = r.string()
    manifest["epoch"] = r.u64()
    manifest["created_unix_ms"] = r.u64()
    manifest["source_position"] = position(r)
    manifest["operators"] = r.seq(lambda: operator(r))
    manifest["stats"] = stats(r)
    if manifest["format_version"] >= 2:
        # Read to check the documented layout; `show --json` does not print
        # the journal, so neither does this reader.
        r.option(lambda: journal(r))
    if r.at != len(data):
        raise ValueError(f"{len(data) - r.at} trailing bytes")
    return manifest


def read_commit(data):
    r = Reader(data)
    marker = {"format_version": r.u32()}
    check_version(marker["format_version"], "commit marker")
    marker["manifest"] = r.hash()
    marker["manifest_bytes"] = r.u64()
    if r.at != len(data):
        raise ValueError(f"{len(data) - r.at} trailing bytes")
    return marker


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        data = f.read()
    try:
        manifest = read_manifest(data)
        if len(argv) == 3:
            with open(argv[2], "rb") as f:
                marker = read_commit(f.read())
            if marker["manifest_bytes"] != len(data):
                raise ValueError(
                    f"the commit marker names a manifest of {marker['manifest_bytes']} bytes, "
                    f"this one has {len(data)}"
                )
            manifest["commit"] = marker
    except ValueError as e:
        print(f"error: {argv[1]}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
