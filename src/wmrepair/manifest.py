"""The repair manifest: one row per input, the record a rerun resumes from.

A row says what happened to an input (`status`: ok = repaired, clean = nothing
detected and copied byte for byte, failed = see `error`) and which files it
describes (sizes and mtimes), so that a rerun can tell a finished repair from a
zero-byte, truncated or foreign file. Rows are appended as images finish and
the whole file is rewritten at the end of a run.
"""

from __future__ import annotations

import csv
import os
import threading
from pathlib import Path
from typing import Any

from wmrepair.files import atomic_write_bytes

# A row per input. `status`: ok (repaired), clean (nothing detected: copied byte for byte),
# failed (see `error`). The *_bytes / *_mtime_ns columns record which files the row
# describes, so that a rerun can tell a finished repair from anything else.
MANIFEST_FIELDS = ["input", "output", "status", "error", "mask_fraction", "iterations", "seconds", "width", "height",
                   "mask", "input_bytes", "input_mtime_ns", "output_bytes", "output_mtime_ns", "method"]
STATUSES = ("ok", "clean", "failed", "skipped")  # skipped: written by earlier versions


def new_row(src: Path, out: Path, mask: Path | None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(MANIFEST_FIELDS, "")
    row.update(input=str(src), output=str(out), mask=str(mask) if mask else "", iterations=0, seconds=0.0)
    return row


def _stat_matches(path: str, size: Any, mtime_ns: Any) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return str(st.st_size) == str(size) and str(st.st_mtime_ns) == str(mtime_ns)


def is_done(prev: dict[str, Any], row: dict[str, Any]) -> bool:
    """`prev` (a manifest row) still describes a finished repair of `row`'s input: nothing to redo.

    Done means: it ended ok or clean, the input is the same file (size and
    mtime), the output is the very file that run wrote, and the mask exists when
    masks are asked for. A zero-byte or truncated output, one written by
    anything else, or a missing mask is redone.
    """
    if prev.get("status") not in ("ok", "clean") or prev.get("output") != row["output"]:
        return False
    if not _stat_matches(row["input"], prev.get("input_bytes"), prev.get("input_mtime_ns")):
        return False
    if not _stat_matches(row["output"], prev.get("output_bytes"), prev.get("output_mtime_ns")):
        return False
    if row["mask"]:
        if prev.get("mask") != row["mask"]:
            return False
        try:
            return os.stat(row["mask"]).st_size > 0
        except OSError:
            return False
    return True


def _csv_text(rows: list[dict[str, Any]], header: bool) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, extrasaction="ignore", lineterminator="\n")
    if header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # file names need not be valid UTF-8


def write_manifest(rows: list[dict[str, Any]], path: str | Path) -> None:
    atomic_write_bytes(Path(path), _encode(_csv_text(rows, header=True)))


def read_manifest(path: str | Path) -> dict[str, dict[str, Any]]:
    """Rows of an earlier manifest by input path; the last row of an input wins; a torn last line is ignored."""
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for r in rows:
        if None in r.values() or None in r or r.get("status") not in STATUSES:
            continue  # a line cut short by a kill, or not a manifest row
        out[r["input"]] = {k: r.get(k, "") for k in MANIFEST_FIELDS}
    return out


class ManifestWriter:
    """The manifest as the run goes: earlier rows first, each finished image appended and flushed.

    A kill loses at most the images in flight; `close` rewrites it whole, in input order.
    """

    def __init__(self, path: Path, first_rows: list[dict[str, Any]]) -> None:
        self.path = path
        write_manifest(first_rows, path)
        self.f = open(path, "ab")  # noqa: SIM115 - appended to for the life of the run
        self._lock = threading.Lock()  # rows come from the detecting and the inpainting thread

    def append(self, row: dict[str, Any]) -> None:
        data = _encode(_csv_text([row], header=False))
        with self._lock:
            self.f.write(data)
            self.f.flush()

    def close(self, rows: list[dict[str, Any]]) -> None:
        self.f.close()
        write_manifest(rows, self.path)
