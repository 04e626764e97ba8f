"""Tiled marks: the grid found from a partial mask, the missed copies marked, nothing else touched."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from wmrepair.tiles import complete_tiles, find_lattice

H, W = 360, 480


def test_the_grid_is_found_from_the_copies_detected(grid):
    full, copies = grid
    rng = np.random.default_rng(0)
    seen = np.any([c for c in copies if rng.random() < 0.75], axis=0)  # the dev photos: 70-90 % found
    lat = find_lattice(seen)
    assert lat is not None
    # Every copy of a brick grid is a whole-number combination of the two vectors found.
    basis = np.array([lat.t1, lat.t2]).T
    a = np.radians(30.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])  # PIL's anticlockwise turn, on (dy, dx)
    for v in ((0, 96), (40, 48)):  # the grid's own vectors before the turn, (dy, dx)
        k = np.linalg.solve(basis, rot @ np.array(v, float))
        assert np.allclose(k, np.round(k), atol=0.05), (v, k)


def test_missed_copies_are_marked_and_nothing_else(grid):
    full, copies = grid
    rng = np.random.default_rng(1)
    seen = np.any([c for c in copies if rng.random() < 0.75], axis=0)
    out = complete_tiles(seen, 0.5)
    iou = lambda m: (m & full).sum() / (m | full).sum()  # noqa: E731
    assert iou(seen) < 0.85
    assert iou(out) > 0.85, (iou(seen), iou(out))  # 0.89: copies rasterise a pixel apart here and there
    assert (out & ~full).sum() < 0.05 * full.sum()  # the copies' own pixels, not a smear round them
    assert (out >= seen).all()  # never takes a detected pixel away


@pytest.mark.parametrize("kind", ["word", "blobs", "empty"])
def test_what_is_not_a_grid_is_left_as_it_is(kind):
    mask = np.zeros((H, W), bool)
    if kind == "word":  # one big word, its letters one group
        img = Image.new("L", (W, H), 0)
        ImageDraw.Draw(img).text((40, 150), "SAMPLE SAMPLE", fill=255, font=ImageFont.load_default(48))
        mask = np.asarray(img) > 127
    elif kind == "blobs":  # scattered false alarms of several sizes
        rng = np.random.default_rng(2)
        for _ in range(12):
            y, x, s = rng.integers(0, H - 30), rng.integers(0, W - 30), rng.integers(3, 25)
            mask[y:y + s, x:x + rng.integers(3, 25)] = True
    assert find_lattice(mask) is None
    assert complete_tiles(mask, 0.5) is mask
