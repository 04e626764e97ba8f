"""Chunk lists for the workflow's fan-out, and gathering the chunks' manifests back into one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from wmrepair.imageio import atomic_write_bytes, list_images
from wmrepair.repair import MANIFEST_FIELDS


def split_into_chunks(input_dir: str | Path, out_dir: str | Path, chunk_size: int) -> int:
    """Write `chunk_NNNN.txt` files of at most `chunk_size` relative paths; returns how many."""
    rels = list_images(input_dir)
    if not rels:
        raise FileNotFoundError(f"no images (jpg, png, webp, bmp, tif) under {input_dir}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for n, start in enumerate(range(0, len(rels), chunk_size), start=1):
        lines = "\n".join(str(r) for r in rels[start : start + chunk_size]) + "\n"
        (out / f"chunk_{n - 1:04d}.txt").write_text(lines)
    return n


def read_chunk(path: str | Path) -> list[Path]:
    return [Path(line) for line in Path(path).read_text().splitlines() if line.strip()]


def gather_manifests(parts: list[str | Path], out: str | Path) -> dict[str, int]:
    """Concatenate chunk manifests (in chunk order) into one CSV; returns status counts."""
    frames = [pd.read_csv(p, keep_default_na=False, dtype=str) for p in sorted(map(str, parts))]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MANIFEST_FIELDS)
    atomic_write_bytes(Path(out), df.to_csv(index=False).encode())
    return df["status"].value_counts().to_dict()
