import os

import numpy as np
import pytest
import torch
from PIL import Image

from wmrepair.cache import DatasetCache, build_cache, find_pairs, mask_from_clean
from wmrepair.data import CachedDataset, FileDataset


def _pair(root, name, seed, ext=".png", size=(40, 30)):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    mask = (rng.random((size[1], size[0])) > 0.7).astype(np.uint8) * 255
    (root / "watermarked").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(root / "watermarked" / f"{name}{ext}")
    Image.fromarray(mask).save(root / "masks" / f"{name}.png")


def test_cache_invalidates_only_what_it_must(tmp_path):
    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    for i in range(5):
        _pair(data, f"im{i}", i)
    cache, counts = build_cache(data, cache_dir, size=32)
    assert counts == {"reused": 0, "written": 5, "removed": 0, "rehashed": 0}
    assert build_cache(data, cache_dir, size=32)[1]["written"] == 0  # nothing changed

    _pair(data, "im2", 99)  # change one
    assert build_cache(data, cache_dir, size=32)[1] == {"reused": 4, "written": 1, "removed": 0, "rehashed": 0}

    p = data / "watermarked" / "im1.png"  # touch without change: re-hashed, not re-decoded
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    assert build_cache(data, cache_dir, size=32)[1] == {"reused": 5, "written": 0, "removed": 0, "rehashed": 1}

    (data / "watermarked" / "im0.png").unlink()
    (data / "masks" / "im0.png").unlink()
    assert build_cache(data, cache_dir, size=32)[1]["removed"] == 1
    _pair(data, "new", 7)
    c, counts = build_cache(data, cache_dir, size=32)
    assert counts["written"] == 1
    assert c.state["free"] == []  # the removed row was reused
    assert len(c.keys()) == 5

    # Cached content equals decode + resize of the source.
    img, mask = c.get(*c.locations(["im2.png"])[0])
    ref = FileDataset(find_pairs(data), size=32, augment=False)
    k = [p.key for p in ref.pairs].index("im2.png")
    r_img, r_mask = ref.load(k)
    assert np.array_equal(img, r_img) and np.array_equal(mask, r_mask.astype(np.uint8))
    # ... and both datasets hand the trainer the same tensors.
    cached = CachedDataset(cache_dir, 32, keys=["im2.png"], augment=False)[0]
    for a, b in zip(cached, ref[k], strict=True):
        assert a.dtype == b.dtype == torch.uint8 and torch.equal(a, b)


def test_dataset_reads_memmap_and_is_seeded(tmp_path):
    for i in range(4):
        _pair(tmp_path / "d", f"x{i}", i, size=(64, 64))
    build_cache(tmp_path / "d", tmp_path / "c", size=64)
    ds = CachedDataset(tmp_path / "c", 64, crop=32, augment=True, seed=5)
    assert isinstance(ds.cache._shard("images", 0), np.memmap)
    a = ds[1]
    b = CachedDataset(tmp_path / "c", 64, crop=32, augment=True, seed=5)[1]
    assert a[0].shape == (32, 32, 3) and a[1].shape == (1, 32, 32)  # HWC: channels_last for free
    assert (a[0] == b[0]).all()
    ds.set_epoch(1)
    assert not (ds[1][0] == a[0]).all()  # a new epoch, new augmentation


def test_progressive_side_shrinks_samples_and_keeps_masks_binary(tmp_path):
    _pair(tmp_path / "d", "x0", 0, size=(64, 64))
    build_cache(tmp_path / "d", tmp_path / "c", size=64)
    ds = CachedDataset(tmp_path / "c", 64, augment=False)
    full_img, full_mask = ds[0]
    ds.set_side(32)
    img, mask = ds[0]
    assert img.shape == (32, 32, 3) and mask.shape == (1, 32, 32)
    assert set(mask.unique().tolist()) <= {0, 1}
    # Area averaging: a small pixel is mark where at least half of its 2x2 block was.
    blocks = full_mask[0].reshape(32, 2, 32, 2).float().mean((1, 3))
    assert torch.equal(mask[0].bool(), blocks >= 0.5)
    assert (img.float() - full_img.reshape(32, 2, 32, 2, 3).float().mean((1, 3))).abs().max() <= 1
    ds.set_side(None)
    assert torch.equal(ds[0][0], full_img)


def test_progressive_side_shrinks_sources_once_like_shrinking_each_sample(tmp_path, monkeypatch):
    """Pre-shrunk sources (the fast path) give what shrinking each augmented sample gives."""
    import wmrepair.data as data_mod

    for i in range(3):
        _pair(tmp_path / "d", f"x{i}", i, size=(64, 64))
    build_cache(tmp_path / "d", tmp_path / "c", size=64)

    def samples(crop, scale_range=(0.75, 1.5)):
        ds = CachedDataset(tmp_path / "c", 64, crop=crop, augment=True, seed=3, scale_range=scale_range)
        ds.set_epoch(2)
        ds.set_side(16)
        return ds, [ds[i] for i in range(3)]

    cropped, got = samples(32)  # crops of half the image: sources shrink by 16 / 32
    assert cropped._small is not None and cropped._small[0].shape == (3, 32, 32, 3)
    assert [s[0].shape for s in got] == [(16, 16, 3)] * 3
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, samples(32)[1]))  # deterministic
    cropped.set_side(None)
    assert cropped._small is None and cropped[0][0].shape == (32, 32, 3)

    fast, got = samples(None, (1.0, 1.0))  # whole images, no zoom: as the default config trains
    monkeypatch.setattr(data_mod, "PRESHRINK_MAX_BYTES", 0)  # too big to hold: shrink each sample
    slow, want = samples(None, (1.0, 1.0))
    assert fast._small is not None and slow._small is None
    for (img, mask), (ref_img, ref_mask) in zip(got, want):
        # The same flip and colour jitter before or after a 4x area shrink: equal up to rounding
        # and where the jitter saturates (often, on this uniform noise: a few grey levels).
        assert torch.equal(mask, ref_mask)
        assert (img.float() - ref_img.float()).abs().mean() < 3


def test_pairs_from_clean_and_errors(tmp_path):
    (tmp_path / "watermarked").mkdir()
    (tmp_path / "clean").mkdir()
    clean = np.full((20, 20, 3), 100, np.uint8)
    wm = clean.copy()
    wm[5:10, 5:15] = 250
    Image.fromarray(wm).save(tmp_path / "watermarked" / "a.png")
    Image.fromarray(clean).save(tmp_path / "clean" / "a.png")
    pairs = find_pairs(tmp_path)
    assert pairs[0].clean is not None and pairs[0].mask is None
    m = mask_from_clean(wm, clean)
    assert m.sum() == 50
    Image.fromarray(wm).save(tmp_path / "watermarked" / "orphan.png")
    with pytest.raises(FileNotFoundError, match="no mask or clean"):
        find_pairs(tmp_path)
    with pytest.raises(FileNotFoundError, match="watermarked"):
        find_pairs(tmp_path / "nope")
    assert DatasetCache(tmp_path / "empty", size=8).keys() == []


def test_batched_gather_equals_per_item_reads(tmp_path):
    for i in range(6):
        _pair(tmp_path / "d", f"x{i}", i, size=(48, 48))
    # Shards of 4 rows: a batch spans two shards and arrives out of row order.
    DatasetCache(tmp_path / "c", size=48, shard_capacity=4).update(find_pairs(tmp_path / "d"), progress=False)
    for augment in (False, True):
        cache = DatasetCache(tmp_path / "c", size=48, shard_capacity=4)
        ds = CachedDataset(cache, 48, crop=32 if augment else None, augment=augment, seed=3)
        assert len({shard for shard, _ in ds.locs}) == 2
        order = [5, 0, 3, 4]
        for idx, (img, mask) in zip(order, ds.__getitems__(order), strict=True):
            ref_img, ref_mask = ds[idx]
            assert torch.equal(img, ref_img) and torch.equal(mask, ref_mask)
