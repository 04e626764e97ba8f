import numpy as np
import pytest
import torch
from conftest import make_image

from wmrepair.optimization import OptimizationConfig
from wmrepair.predict import OptimizedWatermarkPredictor, PredictConfig, ramp_window, tile_starts


def test_tile_starts_cover_with_overlap():
    for length, tile, ov in [(1000, 256, 32), (256, 256, 32), (300, 256, 32), (100, 256, 0)]:
        s = tile_starts(length, tile, ov)
        assert s[0] == 0 and s[-1] == max(0, length - tile)
        assert all(b - a <= tile - ov for a, b in zip(s, s[1:]))


def test_ramp_window_is_positive_and_flat_inside():
    w = ramp_window(64, 8)
    assert w.min() > 0 and w[32, 32] == 1.0 and w[0, 0] < w[4, 4]


def test_large_photo_processed_by_tiles_at_native_resolution(colour_detector):
    img = make_image(3000, 4000, seed=1)
    p = OptimizedWatermarkPredictor(colour_detector, OptimizationConfig(), PredictConfig(max_side=0))
    assert p.tiles_for((3000, 4000)) > 50  # native resolution: cut into many tiles
    prob = p.predict_proba([img])[0]
    assert prob.shape == (3000, 4000)
    truth = (img == (255, 0, 0)).all(-1)
    assert ((prob > 0.5) == truth).mean() > 0.999  # blending leaves no seams
    assert p.batcher.stats.items == p.tiles_run


def test_default_scales_large_images_down_and_back(colour_detector):
    img = make_image(3000, 4000, seed=2)
    p = OptimizedWatermarkPredictor(colour_detector, OptimizationConfig(), PredictConfig(max_side=512))
    prob = p.predict_proba([img])[0]
    assert prob.shape == (3000, 4000)
    truth = (img == (255, 0, 0)).all(-1)
    inter = ((prob > 0.5) & truth).sum() / ((prob > 0.5) | truth).sum()
    assert inter > 0.9


def test_mixed_sizes_batched_together_and_match_single(colour_detector):
    imgs = [make_image(h, w, seed=i) for i, (h, w) in enumerate([(240, 320), (100, 90), (480, 640), (37, 300)])]
    p = OptimizedWatermarkPredictor(colour_detector, OptimizationConfig(), PredictConfig())
    together = p.predict_proba(imgs)
    alone = [p.predict_proba([im])[0] for im in imgs]
    for a, b, im in zip(together, alone, imgs):
        assert a.shape == im.shape[:2]
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_unet_predictor_naive_vs_optimised_agree(tiny_model_file):
    img = make_image(200, 300, seed=3)
    naive = OptimizedWatermarkPredictor(tiny_model_file, OptimizationConfig(), optimized=False)
    fast = OptimizedWatermarkPredictor(tiny_model_file, OptimizationConfig(), optimized=True)
    a, b = naive.predict_proba([img])[0], fast.predict_proba([img])[0]
    tol = 0.05 if fast.amp_dtype else 1e-4  # bf16 rounding where autocast is on
    assert np.abs(a - b).max() < tol


def test_oom_during_detection_backs_off(colour_detector):
    calls = {"n": 0}

    class Flaky(torch.nn.Module):
        multiple = 1

        def forward(self, x):
            calls["n"] += 1
            if x.shape[0] > 2:
                raise RuntimeError("CUDA out of memory (simulated)")
            return colour_detector(x)

    p = OptimizedWatermarkPredictor(Flaky(), OptimizationConfig.from_dict({"batch": {"initial_batch_size": 8}}))
    imgs = [make_image(240, 320, seed=i) for i in range(6)]
    probs = p.predict_proba(imgs)
    assert len(probs) == 6 and p.batcher.stats.ooms >= 1 and p.batcher.batch_size <= 2
    assert all(((pr > 0.5) == (im == (255, 0, 0)).all(-1)).mean() > 0.99 for pr, im in zip(probs, imgs))


def test_int8_model_tracks_fp32_and_is_used_at_aggressive():
    import numpy as np

    from wmrepair.model import UNet, UNetConfig
    from wmrepair.quantize import Int8UNet, calibration_images, quantize_int8

    torch.manual_seed(0)
    m = UNet(UNetConfig(base_channels=8, depth=2))
    calib = calibration_images(8, side=64)
    with torch.no_grad():  # BN running statistics from watermark-like images
        for _ in range(5):
            m(calib)
    m.eval()
    q = quantize_int8(m, calib)
    assert any(type(mod).__module__.startswith("torch.ao.nn.quantized") for mod in q.modules())  # int8 convs
    x = calibration_images(4, side=64, seed=7)
    with torch.no_grad():
        ref, out = m(x), q(x)
    assert out.shape == ref.shape
    assert np.corrcoef(ref.flatten().numpy(), out.flatten().numpy())[0, 1] > 0.95
    p = OptimizedWatermarkPredictor(m, OptimizationConfig.from_level("aggressive"))
    assert p.int8 and isinstance(p._fwd, Int8UNet)
    img = (x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert p.predict_proba([img])[0].shape == (64, 64)


def test_scale_tta_passes_per_image_size():
    p = OptimizedWatermarkPredictor(torch.nn.Identity(), OptimizationConfig(),
                                    PredictConfig(max_side=384, scales=(0.917, 1.0, 1.083)))
    assert p.sides_for((1200, 1600)) == [352, 384, 416]
    assert p.sides_for((360, 400)) == [352, 384, 0]  # 416 >= the image's long side: native
    assert p.sides_for((240, 320)) == [0]  # small images: one native pass, no extra cost
    assert p.tiles_for((1200, 1600)) == 3  # one tile per pass
    native = OptimizedWatermarkPredictor(torch.nn.Identity(), OptimizationConfig(), PredictConfig(max_side=0, scales=(0.5, 1)))
    assert native.sides_for((3000, 4000)) == [0]  # max_side 0: native resolution only


def test_scale_tta_averages_the_passes(colour_detector):
    img = make_image(1200, 1600, seed=4)
    sides = {352: 0.917, 384: 1.0, 416: 1.083}
    single = [OptimizedWatermarkPredictor(colour_detector, OptimizationConfig(), PredictConfig(max_side=s, scales=(1.0,))).predict_proba([img])[0]
              for s in sides]
    multi = OptimizedWatermarkPredictor(colour_detector, OptimizationConfig(),
                                        PredictConfig(max_side=384, scales=tuple(sides.values())))
    small = make_image(200, 300, seed=5)
    both = multi.predict_proba([img, small])
    np.testing.assert_allclose(both[0], np.mean(single, 0), atol=1e-5)
    np.testing.assert_allclose(both[1], multi.predict_proba([small])[0], atol=1e-5)
    assert multi.tiles_run == 3 + 1 + 1  # three passes for the large image, one for the small, then one again
    truth = (img == (255, 0, 0)).all(-1)
    assert ((both[0] > 0.5) & truth).sum() / ((both[0] > 0.5) | truth).sum() > 0.9


def test_scale_factors_are_checked():
    for bad in [(), (0.0, 1.0), (1.0, 5.0)]:
        with pytest.raises(ValueError, match="predict.scales"):
            PredictConfig(scales=bad)


def test_the_margin_pass_finds_a_small_line_the_gate_would_leave(colour_detector):
    """An image below `gate` keeps only its margin bands, and only where they are sure."""
    img = make_image(600, 1000, seed=6)  # a red box in the middle, outside the bands
    img[560:566, 700:760] = (255, 0, 0)  # a thin line in the bottom margin: 360 px
    truth_line = np.zeros(img.shape[:2], bool)
    truth_line[560:566, 700:760] = True

    def gated(**kw: object) -> np.ndarray:
        cfg = PredictConfig(gate=0.9999, **kw)  # the red scores 0.99966: below the gate
        return OptimizedWatermarkPredictor(colour_detector, OptimizationConfig(), cfg).gated_proba([img])[0] > 0.5

    found = gated()
    assert (found & truth_line).sum() > 0.8 * truth_line.sum()  # the line is found...
    assert not found[:500].any()  # ...and nothing else: the middle box stays below the gate
    assert not gated(margin_band=0).any()  # no margin pass: the gate leaves the image
    assert not gated(margin_pixels=10_000).any()  # a band with too few sure pixels is left too
    assert not gated(margin_confidence=0.9999).any()
    with_gate = OptimizedWatermarkPredictor(colour_detector, OptimizationConfig(), PredictConfig(gate=0.99))
    plain = with_gate.predict_proba([img])[0]
    kept = plain.copy()
    both = with_gate.gated_proba([img], [plain])[0] > 0.5
    assert both[200:260].any() and both[560:566].any()  # above the gate: the whole map, margins included
    np.testing.assert_array_equal(plain, kept)  # the plain map given is not written into
