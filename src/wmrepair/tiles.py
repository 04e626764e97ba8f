"""Tiled marks: find the grid a detected mask repeats on, and mark the copies the detector missed.

A tiled mark is one unit (a word, a logo) pasted on a 2-D lattice across the whole picture. The
detector finds the copies over plain ground and misses some over busy or similar-coloured ground;
on the real-photo dev set those misses are most of the mask pixels it loses. Because every copy
is the same shape, the copies it found say where the others are:

1. `find_lattice`: the mask's autocorrelation between *different* groups of pixels (a group: pixels
   within a few px of each other, i.e. one copy), so a word's own repeated letters do not count.
   A tiled mask has strong peaks at the lattice vectors; a single word, logo or corner line has
   none (it is one group), and scattered false alarms have only weak ones.
2. `complete_tiles`: every pixel votes with its copies at the lattice vectors up to `REACH` steps
   away; a pixel that at least `share` of its copies mark is marked too.

The repair's refinement then keeps, of the pixels added, only those inpainting actually changes the
mark's way, so a copy over ground where it is invisible costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIDE = 768  # the autocorrelation runs at most at this long side (peaks are refined at full size)
JOIN = 3  # px at that side: pixels this close are one group (one copy of the unit)
MIN_GROUPS = 6  # fewer copies than this is not a grid
PEAK_FLOOR = 0.35  # a lattice peak: at least this share of the marked pixels recur at that shift
STRONG = 0.8  # the basis comes from peaks at least this share of the strongest (weaker: partial overlaps)
MIN_ANGLE = 25.0  # degrees between the two lattice vectors
REACH = 2  # lattice steps each way a pixel's copies are looked for
VOTE_PIXELS = 4_000_000  # voting runs at a scale of at most this many pixels (memory, time)
REFINE_SIDE = 1536  # vectors are refined on the mask's centre of at most this side (the grid is the same everywhere)


@dataclass(frozen=True)
class Lattice:
    """Two lattice vectors (dy, dx) in full-size pixels."""

    t1: tuple[float, float]
    t2: tuple[float, float]


def _autocorr(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    f = np.fft.rfft2(a, shape)
    return np.fft.irfft2(f * np.conj(f), shape)


def _parabola(a: float, b: float, c: float) -> float:
    """Offset of the vertex of the parabola through (-1, a), (0, b), (1, c) from 0."""
    d = a - 2 * b + c
    return 0.0 if d >= 0 else float(np.clip(0.5 * (a - c) / d, -0.5, 0.5))


def _groups(m: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(number of groups, labels, stats): pixels within JOIN px of each other are one group."""
    k = np.ones((2 * JOIN + 1, 2 * JOIN + 1), np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate((m > 0).astype(np.uint8), k), connectivity=8)
    return n - 1, labels, stats


def _between_groups(m: np.ndarray, labels: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Autocorrelation of `m` counting only pairs of pixels in different groups, zero lag at the centre."""
    h, w = m.shape
    shape = (2 * h, 2 * w)
    s = _autocorr(m, shape)
    for g in range(1, len(stats)):
        x0, y0, bw, bh = stats[g, :4]
        own = np.where(labels[y0:y0 + bh, x0:x0 + bw] == g, m[y0:y0 + bh, x0:x0 + bw], 0)
        sg = _autocorr(own, (2 * bh, 2 * bw))
        dys, dxs = np.r_[0:bh, -bh + 1:0], np.r_[0:bw, -bw + 1:0]  # the lags sg holds, in its own layout
        s[np.ix_(dys % shape[0], dxs % shape[1])] -= sg[np.ix_(dys % (2 * bh), dxs % (2 * bw))]
    return np.fft.fftshift(s)


def _overlap(m: np.ndarray, dy: int, dx: int) -> float:
    """Mean of m(x)·m(x + d) over the pixels where both lie in the image."""
    h, w = m.shape
    a = m[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    b = m[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
    return float((a * b).sum()) / max(1, a.size)


def _refine(m: np.ndarray, t: np.ndarray, win: int) -> tuple[float, float]:
    """The shift within `win` px of `t` where the full-size mask best overlaps itself, to a sub-pixel."""
    cy, cx = (int(round(v)) for v in t)
    grid = np.array([[_overlap(m, cy + oy, cx + ox) for ox in range(-win, win + 1)] for oy in range(-win, win + 1)])
    iy, ix = np.unravel_index(int(grid.argmax()), grid.shape)
    fy = _parabola(grid[iy - 1, ix], grid[iy, ix], grid[iy + 1, ix]) if 0 < iy < 2 * win else 0.0
    fx = _parabola(grid[iy, ix - 1], grid[iy, ix], grid[iy, ix + 1]) if 0 < ix < 2 * win else 0.0
    return cy + iy - win + fy, cx + ix - win + fx


def find_lattice(mask: np.ndarray) -> Lattice | None:
    """The 2-D lattice a detected mask repeats on, or None where it is not a grid of copies."""
    h, w = mask.shape
    scale = min(1.0, SIDE / max(h, w))
    m = mask.astype(np.float32)
    small = cv2.resize(m, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else m
    hh, ww = small.shape
    total = float((small * small).sum())
    if total == 0:
        return None
    groups, labels, stats = _groups(small)
    if groups < MIN_GROUPS:  # most masks: decided before any FFT
        return None
    s = _between_groups(small, labels, stats)
    dy = np.arange(-hh, hh)[:, None]
    dx = np.arange(-ww, ww)[None, :]
    pairs = np.clip(hh - np.abs(dy), 0, None) * np.clip(ww - np.abs(dx), 0, None)
    # Per overlapping pixel, against the zero lag per pixel: 1 where every marked pixel recurs at
    # that shift; only shifts that leave at least a quarter of the picture overlapping.
    inside = (np.abs(dy) <= hh // 2) & (np.abs(dx) <= ww // 2)
    r = np.where(inside, s / np.maximum(pairs, 1), 0.0) / (total / (hh * ww))
    r = r.astype(np.float32)
    peaks = np.argwhere((r >= cv2.dilate(r, np.ones((5, 5), np.uint8))) & (r >= PEAK_FLOOR))
    if len(peaks) == 0:
        return None
    vals = r[peaks[:, 0], peaks[:, 1]]
    keep = vals >= STRONG * vals.max()
    peaks, vals = peaks[keep], vals[keep]
    vecs = (peaks - [hh, ww]).astype(np.float64)
    order = np.argsort(np.hypot(vecs[:, 0], vecs[:, 1]))
    vecs, vals = vecs[order], vals[order]
    t1 = vecs[0]
    cos = np.abs(vecs @ t1) / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(t1))
    others = np.flatnonzero(cos < np.cos(np.radians(MIN_ANGLE)))
    if len(others) == 0:
        return None  # one direction only: a row of copies, or a line's own structure
    t2 = vecs[others[0]]
    y0, x0 = max(0, (h - REFINE_SIDE) // 2), max(0, (w - REFINE_SIDE) // 2)
    m = m[y0:y0 + REFINE_SIDE, x0:x0 + REFINE_SIDE]
    per_pixel = float((m * m).mean())
    if per_pixel == 0:
        return None
    # The sub-pixel peak at the small scale is within a pixel or so of the full-size one.
    t1, t2 = (np.array(_refine(m, t / scale, 3)) for t in (t1, t2))
    strength = [float(vals[0]), float(vals[others[0]])]
    # A brick grid (rows offset by half a step) seen through a partial mask can give two vectors of
    # twice its cell: a half-way shift that recurs as strongly is then the grid's own vector.
    for _ in range(2):
        for guess, other in ((t1 / 2, t2), (t2 / 2, t1), ((t1 + t2) / 2, t1), ((t1 - t2) / 2, t1)):
            half = np.array(_refine(m, guess, 1))
            r_half = _overlap(m, *np.round(half).astype(int)) / per_pixel
            if np.hypot(*half) >= 2 * JOIN / scale and r_half >= STRONG * min(strength):
                t1, t2 = sorted((half, other), key=lambda t: float(np.hypot(*t)))
                strength = [r_half, min(strength)]
                break
        else:
            break
    return Lattice(tuple(t1), tuple(t2))


def _inside(p: np.ndarray, n: int) -> np.ndarray:
    """How much of a bilinear sample at positions `p` falls inside 0..n-1 (the warp's zero border):
    the share of each copy that lies in the picture, one axis at a time (a shift is separable)."""
    return np.clip(np.minimum(p + 1, n - p), 0, 1)


def complete_tiles(mask: np.ndarray, share: float, lattice: Lattice | None = None) -> np.ndarray:
    """`mask` plus every pixel that at least `share` of its lattice copies (up to REACH steps) mark.

    Returns `mask` itself where it is not a grid of copies.
    """
    lat = lattice or find_lattice(mask)
    if lat is None:
        return mask
    h, w = mask.shape
    scale = min(1.0, float(np.sqrt(VOTE_PIXELS / (h * w))))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    m = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) if scale < 1 else mask.astype(np.float32)
    votes, seen = np.zeros_like(m), np.zeros_like(m)
    t1, t2 = np.array(lat.t1) * scale, np.array(lat.t2) * scale
    ys, xs = np.arange(size[1], dtype=np.float32), np.arange(size[0], dtype=np.float32)
    for i in range(-REACH, REACH + 1):
        for j in range(-REACH, REACH + 1):
            if i == j == 0:
                continue
            dy, dx = i * t1 + j * t2
            to = np.float32([[1, 0, dx], [0, 1, dy]])  # sample each pixel's copy at x + shift
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            votes += cv2.warpAffine(m, to, size, flags=flags, borderValue=0)
            seen += np.outer(_inside(ys + dy, size[1]), _inside(xs + dx, size[0]))
    # At least 3 copies inside the picture: at an edge, one or two copies are too few to vote.
    fill = (votes >= share * np.maximum(seen, 1e-6)) & (seen >= 2.5)
    if scale < 1:
        fill = cv2.resize(fill.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return mask | fill
