"""Bootstrap intervals of the reported metrics, on known per-image values."""

import numpy as np
import pytest

from wmrepair.evaluate import bootstrap_ci, pooled_iou


def test_pooled_iou_known_counts():
    counts = np.array([[2, 1, 1], [6, 0, 0]])  # [tp, fp, fn] per image
    assert pooled_iou(counts) == pytest.approx(8 / 10)
    assert pooled_iou(np.zeros((2, 3), int)) == 1.0  # nothing to find, nothing found
    batch = np.stack([counts, counts[[0, 0]]])  # two resamples at once
    assert pooled_iou(batch) == pytest.approx([0.8, 0.5])


def test_interval_collapses_for_identical_images():
    lo, hi = bootstrap_ci(np.array([[3, 1, 0]] * 10), pooled_iou)
    assert lo == pytest.approx(0.75) and hi == pytest.approx(0.75)


def test_interval_brackets_the_pooled_figure_and_one_large_image_widens_it():
    small = np.array([[90, 5, 5]] * 20)  # IoU 0.9 each
    ci = bootstrap_ci(small, pooled_iou)
    with_big = np.vstack([small, [[100, 50, 850]]])  # one big mark found at IoU 0.1
    lo, hi = bootstrap_ci(with_big, pooled_iou)
    assert lo < pooled_iou(with_big) < hi
    assert hi - lo > 0.3 and ci[1] - ci[0] < 1e-9
    assert bootstrap_ci(with_big, pooled_iou) == (lo, hi)  # seeded: the same figures every run


def test_interval_of_a_mean_and_too_few_images():
    g = np.array([1.0, 2.0, 3.0, 10.0])
    lo, hi = bootstrap_ci(g, lambda x: x.mean(axis=-1))
    assert 1.0 <= lo < g.mean() < hi <= 10.0
    assert bootstrap_ci(np.array([5.0]), lambda x: x.mean(axis=-1)) is None
