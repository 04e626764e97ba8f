"""Training datasets: from the memory-mapped cache (fast path) or from files (naive baseline).

Augmentation is per sample and seeded by (seed, epoch, index), so an epoch is
the same whatever the worker count, and a resumed run sees the same samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from wmrepair.cache import DatasetCache, Pair, mask_from_clean
from wmrepair.imageio import read_image, read_mask

# Pre-shrunk small-side sources (see `CachedDataset.set_side`) are held in RAM up to this size.
PRESHRINK_MAX_BYTES = 1 << 30


def augment(
    rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator, crop: int,
    scale_range: tuple[float, float] = (0.75, 1.5), jitter: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """Random scaled crop, horizontal flip and colour jitter; returns (crop x crop x 3, crop x crop)."""
    h, w = mask.shape
    s = rng.uniform(*scale_range)
    side = int(min(h, w, max(8, round(crop / s))))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    img = rgb[y : y + side, x : x + side]
    m = mask[y : y + side, x : x + side]
    if side != crop:
        img = cv2.resize(img, (crop, crop), interpolation=cv2.INTER_LINEAR)
        m = cv2.resize(m, (crop, crop), interpolation=cv2.INTER_NEAREST)
    if rng.random() < 0.5:
        img, m = img[:, ::-1], m[:, ::-1]
    img = np.ascontiguousarray(img)
    if jitter > 0:
        gain = 1 + rng.uniform(-jitter, jitter)  # contrast
        bias = rng.uniform(-jitter, jitter) * 128  # brightness
        sat = 1 + rng.uniform(-jitter, jitter)  # saturation: blend with the grey value
        # Both are linear in the pixel, so one 3x4 colour matrix applies them in a
        # single saturating C pass (4x faster than float numpy at 256 px).
        mat = np.full((3, 3), (1 - sat) * gain / 3, np.float32) + np.eye(3, dtype=np.float32) * sat * gain
        img = cv2.transform(img, np.hstack([mat, np.full((3, 1), 128 - 128 * gain + bias, np.float32)]))
    return img, np.ascontiguousarray(m)


def to_tensors(img: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 HWC + HW -> uint8 HWC + uint8 1HW, one copy each.

    Samples stay HWC: a batch (N, H, W, 3) permuted to NCHW *is* channels_last
    memory, so `to_input` gets channels_last for free (and float conversion
    happens once per batch, not per sample).
    """
    return torch.from_numpy(_owned_uint8(img)), torch.from_numpy(_owned_uint8(mask))[None]


def _owned_uint8(a: np.ndarray) -> np.ndarray:
    """`a` itself if it is a writable uint8 array (a fresh copy already), else a uint8 copy (memmap rows are read-only)."""
    return a if a.dtype == np.uint8 and a.flags.writeable else np.array(a, dtype=np.uint8)


class _Seeded(Dataset):
    def __init__(self, crop: int | None, augment: bool, seed: int, scale_range: tuple[float, float]) -> None:
        self.crop = crop
        self.augment = augment
        self.seed = seed
        self.scale_range = scale_range
        self.epoch = 0
        self.side: int | None = None  # shrink samples to this side (see `set_side`)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_side(self, side: int | None) -> None:
        """Shrink samples larger than `side` to `side` x `side` after augmentation (None: as cropped).

        For progressive resizing; see `TrainConfig.progressive_fraction`.
        """
        self.side = side

    def _sample(self, rgb: np.ndarray, mask: np.ndarray, index: int,
                crop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One sample; `crop` overrides `self.crop` (for sources already shrunk to the small side)."""
        crop = crop or self.crop
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            rgb, mask = augment(rgb, mask, rng, crop or mask.shape[0], self.scale_range)
        elif crop and crop != mask.shape[0]:
            rgb = cv2.resize(np.asarray(rgb), (crop, crop), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(np.asarray(mask, np.uint8), (crop, crop), interpolation=cv2.INTER_NEAREST)
        if self.side and self.side < mask.shape[0]:
            rgb, mask = shrink(rgb, mask, self.side)
        return to_tensors(np.asarray(rgb), np.asarray(mask))


def shrink(rgb: np.ndarray, mask: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize to `side` x `side` by area averaging.

    The image shrinks like a large photo shrunk for detection, and a mask pixel
    stays mark where at least half of what it covers was.
    """
    return (cv2.resize(np.asarray(rgb), (side, side), interpolation=cv2.INTER_AREA),
            cv2.resize(np.asarray(mask, np.uint8), (side, side), interpolation=cv2.INTER_AREA))


class CachedDataset(_Seeded):
    """Reads rows straight from the cache's memmaps; workers share pages, not copies."""

    def __init__(self, cache_root: str | Path | DatasetCache, size: int, keys: list[str] | None = None,
                 crop: int | None = None, augment: bool = True, seed: int = 0,
                 scale_range: tuple[float, float] = (0.75, 1.5), release_every: int = 256) -> None:
        super().__init__(crop, augment, seed, scale_range)
        self.cache = cache_root if isinstance(cache_root, DatasetCache) else DatasetCache(cache_root, size=size)
        self.locs = self.cache.locations(keys)
        if not self.locs:
            raise ValueError(f"cache at {cache_root} is empty")
        self.release_every = release_every
        self._reads = 0
        self._small: tuple[np.ndarray, np.ndarray] | None = None  # every source shrunk for `side`

    def set_side(self, side: int | None) -> None:
        """As `_Seeded.set_side`, but every source is shrunk once, before augmentation.

        Shrinking each sample after augmentation cost more than the small side saved:
        256 -> 96 by area averaging is no whole-number factor (cv2's slow path), 0.42 s
        of a 96-px epoch's 2.1 s on 2 cores; from pre-shrunk sources it is 0.05 s.
        Sources shrink by side / crop, so a crop of them covers what a full crop did.
        One array each (600 images at 128 px: 39 MB), shared by forked workers.
        """
        full = self.crop or self.cache.size
        if side == self.side:
            return
        self.side, self._small = side, None
        if not side or side >= full:
            return
        src = round(self.cache.size * side / full)
        if len(self.locs) * src * src * 4 > PRESHRINK_MAX_BYTES:
            return  # a huge dataset: shrink per sample rather than hold it all in RAM
        imgs = np.empty((len(self.locs), src, src, 3), np.uint8)
        masks = np.empty((len(self.locs), src, src), np.uint8)
        for start in range(0, len(self.locs), 256):  # bounded gathers
            for j, rgb, m in self._gather(list(range(start, min(start + 256, len(self.locs))))):
                imgs[start + j], masks[start + j] = shrink(rgb, m, src)
        self.cache.release()
        self._small = imgs, masks

    def _gather(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(position in `indices`, image, mask), with one fancy-indexed memmap gather per shard.

        One gather copies the rows out of the memmap in a single C loop, instead of
        a Python round trip and a copy per sample; the rows are views of that copy,
        so the memmap pages may go right after.
        """
        by_shard: dict[int, list[int]] = {}
        for j, i in enumerate(indices):
            by_shard.setdefault(self.locs[i][0], []).append(j)
        for shard, js in by_shard.items():
            rgbs, masks = self.cache.get(shard, [self.locs[indices[j]][1] for j in js])
            yield from zip(js, rgbs, masks, strict=True)

    def __len__(self) -> int:
        return len(self.locs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A whole batch (the DataLoader calls this per batch): see `_gather`."""
        if self._small is not None:
            imgs, masks = self._small
            return [self._sample(imgs[i], masks[i], i, crop=self.side) for i in indices]
        out: list[tuple[torch.Tensor, torch.Tensor]] = [None] * len(indices)  # type: ignore[list-item]
        for j, rgb, mask in self._gather(indices):
            out[j] = self._sample(rgb, mask, indices[j])
        before, self._reads = self._reads, self._reads + len(indices)
        if self.release_every and self._reads // self.release_every > before // self.release_every:
            self.cache.release()
        return out


class FileDataset(_Seeded):
    """The naive baseline: decode (and resize) every file on every access."""

    def __init__(self, pairs: list[Pair], size: int, crop: int | None = None, augment: bool = True,
                 seed: int = 0, scale_range: tuple[float, float] = (0.75, 1.5)) -> None:
        super().__init__(crop, augment, seed, scale_range)
        self.pairs = pairs
        self.size = size

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from wmrepair.cache import _fit

        p = self.pairs[index]
        rgb = read_image(p.image).rgb
        mask = read_mask(p.mask) if p.mask is not None else mask_from_clean(rgb, read_image(p.clean).rgb)
        return _fit(rgb, mask, self.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sample(*self.load(index), index)


class InMemoryDataset(FileDataset):
    """Naive 'hold decoded images in RAM' baseline (a list of arrays), for memory comparisons."""

    def __init__(self, pairs: list[Pair], size: int, **kw) -> None:
        super().__init__(pairs, size, **kw)
        self.items = [self.load(i) for i in range(len(pairs))]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sample(*self.items[index], index)
