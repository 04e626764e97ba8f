"""Dataset cache: decode + resize once into memory-mapped uint8 shards.

Layout under `<cache>/store/`: `images_NNN.npy` (cap, S, S, 3), `masks_NNN.npy`
(cap, S, S) created with `np.lib.format.open_memmap`, and `state.json` mapping
each source key to (shard, row, sha256, mtime, size). An update re-reads only
files whose size/mtime changed, rewrites only rows whose content hash changed,
frees rows of removed files and fills new files into free rows first. Epochs
then read rows from the memmap: no decoding, no per-worker Python copies.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from wmrepair.imageio import IMAGE_EXTS, list_images, read_image, read_mask

STATE = "state.json"
VERSION = 1


@dataclass
class Pair:
    key: str  # relative path of the watermarked image
    image: Path
    mask: Path | None = None  # ground-truth mask ...
    clean: Path | None = None  # ... or the clean image the mask is derived from


def find_pairs(root: str | Path) -> list[Pair]:
    """Training pairs under `root`: `watermarked/` with `masks/` (preferred) or `clean/`.

    Files match by relative path without extension, so `a/x.jpg` pairs with `a/x.png`.
    """
    root = Path(root)
    wm_dir = root / "watermarked"
    if not wm_dir.is_dir():
        raise FileNotFoundError(f"{root} has no 'watermarked/' folder (expected watermarked/ + masks/ or clean/)")
    masks = _by_stem(root / "masks")
    cleans = _by_stem(root / "clean")
    if not masks and not cleans:
        raise FileNotFoundError(f"{root} has neither 'masks/' nor 'clean/' images to learn from")
    pairs, missing = [], []
    for rel in list_images(wm_dir):
        stem = str(rel.with_suffix(""))
        m, c = masks.get(stem), cleans.get(stem)
        if m is None and c is None:
            missing.append(str(rel))
            continue
        pairs.append(Pair(str(rel), wm_dir / rel, m, None if m else c))
    if missing:
        raise FileNotFoundError(f"{len(missing)} watermarked images have no mask or clean image, e.g. {missing[0]}")
    return pairs


def _by_stem(d: Path) -> dict[str, Path]:
    if not d.is_dir():
        return {}
    return {str(rel.with_suffix("")): d / rel for rel in list_images(d)}


def mask_from_clean(watermarked: np.ndarray, clean: np.ndarray, threshold: int = 12) -> np.ndarray:
    """Pixels where the watermarked image differs visibly from the clean one."""
    if watermarked.shape != clean.shape:
        raise ValueError(f"watermarked {watermarked.shape} and clean {clean.shape} differ in size")
    diff = np.abs(watermarked.astype(np.int16) - clean.astype(np.int16)).max(axis=-1)
    return diff > threshold


def _file_sha(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _fit(rgb: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize the short side to `size`, centre-crop to a square (aspect kept)."""
    h, w = mask.shape
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    if (nh, nw) != (h, w):
        rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((nw, nh), Image.BILINEAR)) > 127
    y, x = (nh - size) // 2, (nw - size) // 2
    return rgb[y : y + size, x : x + size], mask[y : y + size, x : x + size]


class DatasetCache:
    """Memory-mapped cache of (image, mask) pairs at a fixed square size."""

    def __init__(self, root: str | Path, size: int = 256, shard_capacity: int = 256) -> None:
        self.root = Path(root)
        self.store = self.root / "store"
        self.size = size
        self.shard_capacity = shard_capacity
        self.state = self._load_state()
        self._maps: dict[tuple[str, int], np.memmap] = {}

    def __getstate__(self) -> dict:
        # DataLoader workers get the state, not pickled memmap contents: each
        # worker re-opens the shards and shares the OS page cache.
        d = self.__dict__.copy()
        d["_maps"] = {}
        return d

    # ---- state -----------------------------------------------------------
    def _load_state(self) -> dict:
        p = self.store / STATE
        if p.exists():
            st = json.loads(p.read_text())
            if st.get("version") == VERSION and st.get("size") == self.size and st.get("capacity") == self.shard_capacity:
                return st
        return {"version": VERSION, "size": self.size, "capacity": self.shard_capacity,
                "shards": 0, "free": [], "entries": {}}

    def _save_state(self) -> None:
        tmp = self.store / (STATE + ".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.store / STATE)

    def _shard(self, kind: str, k: int, mode: str = "r") -> np.memmap:
        key = (kind, k)
        if mode != "r" or key not in self._maps:
            path = self.store / f"{kind}_{k:03d}.npy"
            if mode == "w+":
                shape = (self.shard_capacity, self.size, self.size) + ((3,) if kind == "images" else ())
                m = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
            else:
                m = np.load(path, mmap_mode=mode)
            if mode != "r":
                return m
            self._maps[key] = m
        return self._maps[key]

    # ---- update ------------------------------------------------------------
    def update(self, pairs: list[Pair], progress: bool = True) -> dict[str, int]:
        """Bring the cache in line with `pairs`; returns counts of reused/written/removed rows."""
        self.store.mkdir(parents=True, exist_ok=True)
        if not (self.store / STATE).exists():  # fresh or incompatible: drop old shards
            for f in self.store.glob("*.npy"):
                f.unlink()
        entries: dict = self.state["entries"]
        wanted = {p.key: p for p in pairs}
        removed = [k for k in entries if k not in wanted]
        for k in removed:
            e = entries.pop(k)
            self.state["free"].append([e["shard"], e["row"]])
        counts = {"reused": 0, "written": 0, "removed": len(removed), "rehashed": 0}
        todo: list[tuple[Pair, list[Path], list[int], str | None]] = []
        for p in pairs:
            srcs = [p.image] + [x for x in (p.mask, p.clean) if x is not None]
            stat = [s.stat() for s in srcs]
            sig = [[st.st_size, st.st_mtime_ns] for st in stat]
            e = entries.get(p.key)
            if e is not None and e["sig"] == sig:
                counts["reused"] += 1
                continue
            sha = _file_sha(srcs)
            if e is not None and e["sha"] == sha:  # touched but identical content
                e["sig"] = sig
                counts["rehashed"] += 1
                counts["reused"] += 1
                continue
            todo.append((p, srcs, sig, sha))
        writers: dict[tuple[str, int], np.memmap] = {}

        def writer(kind: str, k: int) -> np.memmap:
            if (kind, k) not in writers:
                exists = (self.store / f"{kind}_{k:03d}.npy").exists()
                writers[(kind, k)] = self._shard(kind, k, "r+" if exists else "w+")
            return writers[(kind, k)]

        for p, _srcs, sig, sha in tqdm(todo, desc="cache", unit="img", disable=not progress or not todo):
            e = entries.get(p.key)
            if e is None:
                if self.state["free"]:
                    shard, row = self.state["free"].pop(0)
                else:
                    n_rows = len(entries) + len(self.state["free"])
                    shard, row = divmod(n_rows, self.shard_capacity)
                    self.state["shards"] = max(self.state["shards"], shard + 1)
                e = {"shard": shard, "row": row}
            rgb = read_image(p.image).rgb
            if p.mask is not None:
                mask = read_mask(p.mask)
            else:
                mask = mask_from_clean(rgb, read_image(p.clean).rgb)
            if mask.shape != rgb.shape[:2]:
                raise ValueError(f"{p.key}: mask size {mask.shape} differs from image {rgb.shape[:2]}")
            orig = list(rgb.shape[:2])
            rgb, mask = _fit(rgb, mask, self.size)
            writer("images", e["shard"])[e["row"]] = rgb
            writer("masks", e["shard"])[e["row"]] = mask.astype(np.uint8)
            e.update(sha=sha, sig=sig, orig_size=orig)
            entries[p.key] = e
            counts["written"] += 1
        for m in writers.values():
            m.flush()
        self._maps.clear()
        self._save_state()
        return counts

    # ---- reading -----------------------------------------------------------
    def keys(self) -> list[str]:
        return sorted(self.state["entries"])

    def locations(self, keys: list[str] | None = None) -> list[tuple[int, int]]:
        ents = self.state["entries"]
        return [(ents[k]["shard"], ents[k]["row"]) for k in (keys or self.keys())]

    def get(self, shard: int, row: int | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask) of one row as memmap views, or of a list of rows as one gathered copy each."""
        return self._shard("images", shard)[row], self._shard("masks", shard)[row]

    def release(self) -> None:
        """Drop this process's mapped pages (they stay in the OS page cache).

        Pages touched through a memmap count in RSS until unmapped; releasing
        them every few hundred samples keeps RSS flat however large the dataset.
        """
        import mmap

        for m in self._maps.values():
            mm = getattr(m, "_mmap", None)
            if mm is not None and hasattr(mm, "madvise"):
                mm.madvise(mmap.MADV_DONTNEED)

    def write_index(self, path: str | Path, extra: dict | None = None) -> dict:
        """The declared output: what is cached, with content hashes (for the workflow)."""
        ents = self.state["entries"]
        index = {
            "size": self.size, "store": str(self.store.resolve()), "count": len(ents),
            "content_hash": hashlib.sha256("".join(ents[k]["sha"] for k in self.keys()).encode()).hexdigest(),
            "entries": {k: {"shard": ents[k]["shard"], "row": ents[k]["row"], "sha256": ents[k]["sha"],
                            "orig_size": ents[k]["orig_size"]} for k in self.keys()},
            **(extra or {}),
        }
        Path(path).write_text(json.dumps(index, indent=1))
        return index


def build_cache(data_root: str | Path, cache_root: str | Path, size: int = 256, progress: bool = True) -> tuple[DatasetCache, dict]:
    cache = DatasetCache(cache_root, size=size)
    counts = cache.update(find_pairs(data_root), progress=progress)
    return cache, counts


__all__ = ["DatasetCache", "Pair", "build_cache", "find_pairs", "mask_from_clean", "IMAGE_EXTS"]
