import hashlib

import numpy as np
from PIL import Image, ImageDraw

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
        if mask.any():
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

    checkers = [s for s in range(24) if np.random.default_rng(s).integers(6) == 3]  # its first draw: the kind
    assert len(checkers) >= 3
    assert all(edges(s, 0.25) > edges(s, 1.0) for s in checkers)
    assert sum(edges(s, 0.25) for s in checkers) > 3 * sum(edges(s, 1.0) for s in checkers)


def test_negatives_carry_no_mark_and_scene_elements_belong_to_the_picture(tmp_path):
    """A negative's mask is empty and its watermarked file is its clean picture (lossless ones equal);
    hard negatives (signs, outlined shapes, highlights) change the clean picture, never the mask."""
    cfg = SynthConfig(seed=2, n_train=40, n_val=1, n_test=8, negative_fraction=0.5, scene_fraction=1.0)
    synthesize(tmp_path, cfg, progress=False)
    negatives = 0
    for split in ("train", "test"):
        for rel in list_images(tmp_path / split / "masks"):
            mask = read_mask(tmp_path / split / "masks" / rel)
            wm_path = next((tmp_path / split / "watermarked").glob(f"{rel.with_suffix('')}.*"))
            if not mask.any():
                negatives += 1
                if wm_path.suffix == ".png":
                    clean = np.asarray(Image.open(tmp_path / split / "clean" / rel))
                    assert np.array_equal(np.asarray(Image.open(wm_path).convert("RGB")), clean)
    assert 12 <= negatives <= 36  # about half of 48

    from wmrepair.synth import add_scene_elements

    rng = np.random.default_rng(5)
    img = make_background(rng, 200, 300)
    out = add_scene_elements(img, rng, ["DejaVuSans-Bold.ttf"], ["SIGN"])
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)


def test_scene_structures_change_the_pictures_never_the_masks(tmp_path):
    """structure_fraction: fronds, planks and leaves are drawn into the clean pictures (hard negatives),
    so the same seed gives other pictures and the very same masks."""
    base = SynthConfig(seed=4, n_train=12, n_val=1, n_test=4, structure_fraction=0.0)
    synthesize(tmp_path / "off", base, progress=False)
    synthesize(tmp_path / "on", SynthConfig(**{**base.__dict__, "structure_fraction": 1.0}), progress=False)
    for split in ("train", "test"):
        assert _digest(tmp_path / "on" / split / "masks") == _digest(tmp_path / "off" / split / "masks")
        changed = [rel for rel in list_images(tmp_path / "on" / split / "clean")
                   if (tmp_path / "on" / split / "clean" / rel).read_bytes()
                   != (tmp_path / "off" / split / "clean" / rel).read_bytes()]
        assert len(changed) == len(list_images(tmp_path / "on" / split / "clean"))

    from wmrepair.synth import STRUCTURES

    img = np.full((200, 300, 3), 128, np.uint8)
    for name, draw in STRUCTURES.items():
        im = Image.fromarray(img)
        draw(ImageDraw.Draw(im), np.random.default_rng(1), *im.size)
        assert (np.asarray(im) != img).any(axis=-1).mean() > 0.005, name  # each kind draws something


def test_own_backgrounds_are_used_for_training_not_for_test(tmp_path):
    """data.backgrounds_dir: the user's clean pictures become training backgrounds (marked and negative)."""
    own = tmp_path / "own"
    (own / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((300, 400, 3), (10, 20, 230), np.uint8)).save(own / ("sub" if i else "") / f"b{i}.jpg")
    cfg = SynthConfig(seed=0, n_train=30, n_val=1, n_test=6, scene_fraction=0.0)
    meta = synthesize(tmp_path / "d", cfg, progress=False, backgrounds_dir=own)
    assert meta["backgrounds_dir"] == str(own)

    def blue(split):
        n = 0
        for rel in list_images(tmp_path / "d" / split / "clean"):
            c = np.asarray(Image.open(tmp_path / "d" / split / "clean" / rel)).astype(int)
            n += int(c[..., 2].mean() - c[..., :2].mean() > 120)  # the user's deep blue
        return n
    assert blue("train") >= 5 and blue("test") == 0


def test_artwork_changes_the_pictures_never_the_masks(tmp_path):
    """artwork_fraction: titles, emblems, icons and light art are printed into the clean pictures (hard
    negatives, mask 0) from their own random streams, so masks and the other draws stay as they were."""
    base = SynthConfig(seed=4, n_train=8, n_val=1, n_test=2, artwork_fraction=0.0)
    synthesize(tmp_path / "off", base, progress=False)
    synthesize(tmp_path / "on", SynthConfig(**{**base.__dict__, "artwork_fraction": 1.0}), progress=False)
    for split in ("train", "test"):
        assert _digest(tmp_path / "on" / split / "masks") == _digest(tmp_path / "off" / split / "masks")
        clean = list_images(tmp_path / "on" / split / "clean")
        assert all((tmp_path / "on" / split / "clean" / rel).read_bytes()
                   != (tmp_path / "off" / split / "clean" / rel).read_bytes() for rel in clean)

    from wmrepair.synth import ARTWORK, TRAIN_FONTS

    img = np.full((200, 300, 3), 128, np.uint8)
    for name, draw in ARTWORK.items():
        im = Image.fromarray(img)
        draw(im, np.random.default_rng(1), TRAIN_FONTS)
        assert (np.asarray(im) != img).any(axis=-1).mean() > 0.002, name  # each kind draws something
