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


def test_harm_figures_on_known_images(tmp_path):
    """Five images with known truth: an unmarked copy, an unmarked image altered, a marked one
    repaired, a marked one made worse, a marked one missed (copied). The figures follow from the pixels alone."""
    from PIL import Image

    from wmrepair.evaluate import evaluate
    from wmrepair.repair import write_manifest

    rng = np.random.default_rng(0)
    dirs = {k: tmp_path / k for k in ("in", "out", "clean", "masks", "pred")}
    for d in dirs.values():
        d.mkdir()
    rows = []
    for name, marked, outcome in (("a", False, "copy"), ("b", False, "alter"), ("c", True, "fix"), ("d", True, "worse"),
                                  ("e", True, "copy")):
        clean = rng.integers(60, 200, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32), bool)
        if marked:
            mask[8:16, 4:28] = True
        wm = clean.copy()
        wm[mask] = 255
        out = {"copy": wm, "fix": clean, "alter": np.clip(wm.astype(int) + 20, 0, 255).astype(np.uint8),
               "worse": np.clip(wm.astype(int) - 60, 0, 255).astype(np.uint8)}[outcome]
        pred = mask.copy() if marked and outcome != "copy" else np.zeros_like(mask)
        if outcome == "alter":
            pred[0:4, 0:8] = True  # 32 false pixels on an unmarked image
        Image.fromarray(clean).save(dirs["clean"] / f"{name}.png")
        Image.fromarray(wm).save(dirs["in"] / f"{name}.png")
        Image.fromarray(out).save(dirs["out"] / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(dirs["masks"] / f"{name}.png")
        Image.fromarray(pred.astype(np.uint8) * 255).save(dirs["pred"] / f"{name}.png.mask.png")
        rows.append({"input": str(dirs["in"] / f"{name}.png"), "output": str(dirs["out"] / f"{name}.png"),
                     "status": "clean" if outcome == "copy" else "ok"})
    write_manifest(rows, tmp_path / "manifest.csv")
    m = evaluate(tmp_path / "manifest.csv", dirs["in"], dirs["clean"], dirs["masks"], dirs["pred"])
    assert (m["n_marked"], m["n_unmarked"]) == (3, 2)
    assert (m["clean_altered"], m["clean_altered_share"]) == (1, 0.5)
    assert (m["marked_worse"], m["marked_worse_share"]) == (1, pytest.approx(1 / 3))
    assert (m["marked_untouched"], m["marked_untouched_share"]) == (1, pytest.approx(1 / 3))  # 'e'
    assert m["false_mark_share"] == pytest.approx(32 / (2 * 8 * 24 + 32))  # the pixels predicted on 'b'
    assert m["mask_iou"] == pytest.approx(2 / 3)  # exact on 'c' and 'd', nothing found on 'e'
    assert m["worst_psnr_change_db"] < -1 and m["psnr_input"] < 100
    # PSNR/SSIM figures describe the marked images (an unmarked input's PSNR is capped at 100 dB).
    import pandas as pd

    evaluate(tmp_path / "manifest.csv", dirs["in"], dirs["clean"], dirs["masks"], dirs["pred"], tmp_path / "per.csv")
    per = pd.read_csv(tmp_path / "per.csv")
    marked = per[per["marked"]]
    assert m["psnr_input"] == pytest.approx(marked["psnr_input"].mean())
    assert m["psnr_gain_db"] == pytest.approx((marked["psnr_output"] - marked["psnr_input"]).mean())


@pytest.mark.parametrize("name", ["test", "dev"])
def test_real_photo_set_pairs_each_picture_marked_and_unmarked(tmp_path, name):
    from wmrepair import realphotos

    if realphotos.missing_packages(name):
        pytest.skip(f"Debian packages {' '.join(realphotos.missing_packages(name))} not installed (.ci/run installs them)")
    from PIL import Image

    from wmrepair.imageio import read_mask

    styles = realphotos.build(tmp_path, limit=4, name=name)
    assert sorted(set(styles.values())) == ["corner", "logo", "none", "tiled", "word"]
    for stem, style in styles.items():
        mask = read_mask(tmp_path / "masks" / f"{stem}.png")
        assert mask.any() == (style != "none"), stem
        with Image.open(tmp_path / "watermarked" / f"{stem}.jpg") as im:
            assert max(im.size) == realphotos.LONG_SIDE
    # Neither set's fonts are training's, and the two sets share no package, font or word.
    from wmrepair.synth import TRAIN_FONTS

    sets = realphotos.SETS
    assert not set(sets[name].fonts) & set(TRAIN_FONTS)
    assert not set(sets["dev"].packages) & set(sets["test"].packages)
    assert not set(sets["dev"].fonts) & set(sets["test"].fonts) and not set(sets["dev"].words) & set(sets["test"].words)
    if name == "dev" and not realphotos.missing_packages("test"):  # and no picture of one is in the other
        test_sigs = [realphotos._picture_info(p)[1] for p in realphotos.wallpapers("test")]
        for p in realphotos.wallpapers("dev"):
            assert not any(realphotos.same_picture(realphotos._picture_info(p)[1], t) for t in test_sigs), p
