"""Structuring elements shared by the repair engine and collection mode."""

from __future__ import annotations

import functools

import cv2
import numpy as np


@functools.lru_cache(maxsize=16)
def disc(radius: int) -> np.ndarray:
    """The elliptic structuring element of `radius` px (built once per radius, read-only)."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    k.setflags(write=False)  # shared by every caller
    return k
