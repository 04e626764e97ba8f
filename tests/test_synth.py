import hashlib

import numpy as np
from PIL import Image

from wmrepair.imageio import list_images, read_mask
from wmrepair.synth import SynthConfig, _procedural, add_watermark, make_background, synthesize


def _digest(root):
    h = hashlib.sha256()
    for rel in list_images(root):
        h.update(str(rel).encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()


def test_synth_is_deterministic_and_complete(tmp_path):
    cfg = SynthConfig(seed=3, n_train=6, n_val=2, n_test=4, test_sizes=[(320, 240), (1100, 800)])
    synthesize(tmp_path / "a", cfg, progress=False, workers=1)
    synthesize(tmp_path / "b", cfg, progress=False, workers=3)  # threads: the same files
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    for split, n in (("train", 6), ("val", 2), ("test", 4)):
        for sub in ("watermarked", "clean", "masks"):
            assert len(list_images(tmp_path / "a" / split / sub)) == n
    test = tmp_path / "a" / "test" / "watermarked"
    sizes = {Image.open(test / r).size for r in list_images(test)}
    assert (1100, 800) in sizes and (320, 240) in sizes  # mixed, some > 1000 px
    other = SynthConfig(seed=4, n_train=6, n_val=2, n_test=4, test_sizes=cfg.test_sizes)
    synthesize(tmp_path / "c", other, progress=False)
    assert _digest(tmp_path / "c") != _digest(tmp_path / "a")


def test_mask_matches_blend(tmp_path):
    cfg = SynthConfig(seed=1, n_train=8, n_val=1, n_test=1)
    synthesize(tmp_path, cfg, progress=False)
    fracs = []
    for rel in list_images(tmp_path / "train" / "masks"):
        stem = rel.with_suffix("")
        mask = read_mask(tmp_path / "train" / "masks" / rel)
        clean = np.asarray(Image.open(tmp_path / "train" / "clean" / rel))
        wm_path = next((tmp_path / "train" / "watermarked").glob(f"{stem}.*"))
        wm = np.asarray(Image.open(wm_path).convert("RGB")).astype(int)
        diff = np.abs(wm - clean.astype(int)).max(-1)
        fracs.append(mask.mean())
        if wm_path.suffix == ".png":  # lossless: outside the mask pixels differ by rounding only
            assert diff[~mask].max() <= 26  # alpha < 0.1 of at most 255 contrast
        assert diff[mask].mean() > 10  # inside, the mark is visible
    assert 0.002 < np.mean(fracs) < 0.6


def test_blend_formula():
    rng = np.random.default_rng(0)
    img = make_background(rng, 200, 300)
    wm, alpha = add_watermark(img, rng, ["TEST"], ["DejaVuSans-Bold.ttf"], (0.5, 0.5))
    assert wm.shape == img.shape and alpha.max() <= 0.5 + 1e-6 and (alpha >= 0.1).any()
    untouched = alpha == 0
    assert np.array_equal(wm[untouched], img[untouched])


def test_dev_split_is_test_sized_and_leaves_the_other_splits_alone(tmp_path):
    cfg = SynthConfig(seed=3, n_train=2, n_val=1, n_test=2, test_sizes=[(320, 240), (480, 360)])
    synthesize(tmp_path / "a", cfg, progress=False)
    synthesize(tmp_path / "b", SynthConfig(**{**cfg.__dict__, "n_dev": 2}), progress=False)
    assert not (tmp_path / "a" / "dev").exists()
    for split in ("train", "val", "test"):
        assert _digest(tmp_path / "a" / split) == _digest(tmp_path / "b" / split)
    dev = tmp_path / "b" / "dev" / "watermarked"
    assert {Image.open(dev / r).size for r in list_images(dev)} == {(320, 240), (480, 360)}


def test_fine_detail_shrinks_procedural_textures():
    def edges(seed, detail):  # strong steps along one row: more of them = finer checker cells / stripes
        row = _procedural(np.random.default_rng(seed), 256, 256, detail)[128, :, 0].astype(int)
        return np.count_nonzero(np.abs(np.diff(row)) > 25)

    checkers = [s for s in range(12) if np.random.default_rng(s).integers(4) == 3]  # its first draw: the kind
    assert len(checkers) >= 3
    assert all(edges(s, 0.25) > edges(s, 1.0) for s in checkers)
    assert sum(edges(s, 0.25) for s in checkers) > 3 * sum(edges(s, 1.0) for s in checkers)
