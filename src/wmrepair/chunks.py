"""Chunk lists for the workflow's fan-out, the memory a chunk needs, and gathering the chunks' manifests.

Chunks are cut where the file names say, not by position (content-defined
chunking, as rsync and backup tools cut files): a boundary falls after a name
whose hash hits 1 in `chunk_size / 2`, once a chunk holds `chunk_size / 2`
names, and at `2 * chunk_size` at the latest. Adding or removing an image then
changes only the chunk it falls in, and a chunk is named by the hash of what it
lists (each name with its size and mtime), so Snakemake redoes just the chunks
whose images changed. Lists are JSON lines: a name with a newline or U+2028 is
one entry, not two.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from wmrepair.imageio import list_images

CHUNK_GLOB = "chunk_*.jsonl"


def _entries(input_dir: str | Path, pixels: bool = False) -> list[dict]:
    """One entry per image: name, size, mtime and, with `pixels`, its pixel count from the header."""
    from wmrepair.imageio import image_size

    root = Path(input_dir)
    out = []
    for rel in list_images(root):
        st = os.stat(root / rel)
        e = {"rel": str(rel), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
        if pixels:
            try:
                w, h = image_size(root / rel)
                e["pixels"] = w * h
            except Exception:
                e["pixels"] = 0  # the chunk job reports why it cannot be read
        out.append(e)
    return out


def listing_fingerprint(input_dir: str | Path) -> str:
    """A hash of the folder's image names, sizes and mtimes: a param that reruns `split_inputs` when it changes."""
    h = hashlib.sha256()
    for e in _entries(input_dir):
        h.update(json.dumps(e).encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def _name_hash(rel: str) -> int:
    return int.from_bytes(hashlib.blake2b(rel.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")


def cut(rels: list[str], chunk_size: int) -> Iterator[list[str]]:
    """Content-defined chunks of sorted names: sizes from chunk_size/2 to 2*chunk_size, about chunk_size on average."""
    if chunk_size <= 1:
        yield from ([r] for r in rels)
        return
    low, period = max(1, chunk_size // 2), max(1, chunk_size - chunk_size // 2)
    chunk: list[str] = []
    for rel in rels:
        chunk.append(rel)
        if len(chunk) >= 2 * chunk_size or (len(chunk) >= low and _name_hash(rel) % period == 0):
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def chunk_id(entries: list[dict]) -> str:
    blob = "".join(json.dumps(e) + "\n" for e in entries)
    return hashlib.sha256(blob.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def split_into_chunks(input_dir: str | Path, out_dir: str | Path, chunk_size: int) -> int:
    """Write `chunk_<id>.jsonl` files (one JSON object per image); returns how many."""
    entries = _entries(input_dir, pixels=True)
    if not entries:
        raise FileNotFoundError(f"no images under {input_dir}")
    by_rel = {e["rel"]: e for e in entries}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for names in cut([e["rel"] for e in entries], chunk_size):
        part = [by_rel[r] for r in names]
        text = "".join(json.dumps(e) + "\n" for e in part)  # ensure_ascii: U+2028 and newlines are escaped
        (out / f"chunk_{chunk_id(part)}.jsonl").write_text(text)
        n += 1
    return n


def read_entries(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().split("\n") if line.strip()]


def read_chunk(path: str | Path) -> list[Path]:
    return [Path(e["rel"]) for e in read_entries(path)]


def chunk_pixels(path: str | Path) -> list[int]:
    """The pixel count of each image of a chunk list, as `split_into_chunks` read it from the headers."""
    return [int(e.get("pixels", 0)) for e in read_entries(path)]


def gather_manifests(parts: list[str | Path], out: str | Path) -> dict[str, int]:
    """Concatenate chunk manifests (in chunk order) into one CSV; returns status counts.

    Manifests of chunks that no longer exist (their images were added, removed or
    changed) are removed from beside the current ones, with their profiles.
    """
    from wmrepair.manifest import MANIFEST_FIELDS, read_manifest, write_manifest

    parts = sorted(map(Path, parts))
    rows: list[dict] = []
    for p in parts:
        rows.extend(read_manifest(p).values())
    current = {p.name for p in parts}
    for p in {p.parent for p in parts}:
        for old in p.glob("chunk_*.csv"):
            if old.name not in current:
                old.unlink(missing_ok=True)
                old.with_name(old.name.replace(".csv", ".performance.json")).unlink(missing_ok=True)
    rows.sort(key=lambda r: r["input"])
    write_manifest([{k: r.get(k, "") for k in MANIFEST_FIELDS} for r in rows], out)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


T = TypeVar("T")


def group_by_pixels(items: Iterable[T], pixels: Callable[[T], int], group_size: int,
                    group_pixels: int) -> Iterator[list[T]]:
    """Consecutive items, at most `group_size` of them and `group_pixels` pixels together.

    An image over the budget forms a group of its own (`max_pixels` bounds it).
    """
    group: list[T] = []
    total = 0
    for it in items:
        n = pixels(it)
        if group and (len(group) >= group_size or total + n > group_pixels):
            yield group
            group, total = [], 0
        group.append(it)
        total += n
    if group:
        yield group


# Peak RSS of a repair process, measured on 12-MP photos (docs/DEVNOTES.md, "Repair memory"):
# about 800 MB of libraries and model, plus about 100 bytes per pixel of the largest group
# (decoded pixels, probabilities, masks, and every image of it inpainted at once).
BASE_MB, BYTES_PER_GROUP_PIXEL = 800, 100


def chunk_mem_mb(pixels: list[int], cfg: Any = None) -> int:
    """Memory (MB) a job repairing images of these pixel counts needs, by the engine's own grouping."""
    from wmrepair.config import repair_config

    if isinstance(cfg, dict) or cfg is None:
        cfg = repair_config(cfg)
    biggest = max((sum(g) for g in group_by_pixels(pixels, int, cfg.group_size, cfg.group_pixels)), default=0)
    return int(BASE_MB + BYTES_PER_GROUP_PIXEL * biggest / 2**20) + 1
