"""Training datasets: from the memory-mapped cache (fast path) or from files (naive baseline).

Augmentation is per sample and seeded by (seed, epoch, index), so an epoch is
the same whatever the worker count, and a resumed run sees the same samples.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from wmrepair.cache import DatasetCache, Pair, mask_from_clean
from wmrepair.imageio import read_image, read_mask


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
    if jitter > 0:
        f = img.astype(np.float32)
        gain = 1 + rng.uniform(-jitter, jitter)  # contrast
        bias = rng.uniform(-jitter, jitter) * 128  # brightness
        grey = f.mean(axis=-1, keepdims=True)
        sat = 1 + rng.uniform(-jitter, jitter)
        f = grey + (f - grey) * sat
        f = (f - 128) * gain + 128 + bias
        img = np.clip(f, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img), np.ascontiguousarray(m)


def to_tensors(img: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 HWC + HW -> uint8 HWC + uint8 1HW, one copy each.

    Samples stay HWC: a batch (N, H, W, 3) permuted to NCHW *is* channels_last
    memory, so `to_input` gets channels_last for free (and float conversion
    happens once per batch, not per sample).
    """
    img = np.array(img, dtype=np.uint8, copy=not img.flags.writeable)  # memmap rows are read-only
    return torch.from_numpy(img), torch.from_numpy(mask.astype(np.uint8))[None]


class _Seeded(Dataset):
    def __init__(self, crop: int | None, augment: bool, seed: int, scale_range: tuple[float, float]) -> None:
        self.crop = crop
        self.augment = augment
        self.seed = seed
        self.scale_range = scale_range
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _sample(self, rgb: np.ndarray, mask: np.ndarray, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            rgb, mask = augment(rgb, mask, rng, self.crop or mask.shape[0], self.scale_range)
        elif self.crop and self.crop != mask.shape[0]:
            rgb = cv2.resize(np.asarray(rgb), (self.crop, self.crop), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(np.asarray(mask, np.uint8), (self.crop, self.crop), interpolation=cv2.INTER_NEAREST)
        return to_tensors(np.asarray(rgb), np.asarray(mask))


class CachedDataset(_Seeded):
    """Reads rows straight from the cache's memmaps; workers share pages, not copies."""

    def __init__(self, cache_root: str | Path, size: int, keys: list[str] | None = None, crop: int | None = None,
                 augment: bool = True, seed: int = 0, scale_range: tuple[float, float] = (0.75, 1.5),
                 release_every: int = 256) -> None:
        super().__init__(crop, augment, seed, scale_range)
        self.cache = DatasetCache(cache_root, size=size)
        self.locs = self.cache.locations(keys)
        if not self.locs:
            raise ValueError(f"cache at {cache_root} is empty")
        self.release_every = release_every
        self._reads = 0

    def __len__(self) -> int:
        return len(self.locs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, mask = self.cache.get(*self.locs[index])
        out = self._sample(rgb, mask, index)  # copies: the memmap pages may go now
        self._reads += 1
        if self.release_every and self._reads % self.release_every == 0:
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
