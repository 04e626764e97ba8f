"""The ONNX Runtime backend: masks agree with torch, the export is cached per model, missing
providers fall back saying why."""

import logging
import shutil

import numpy as np
import pytest

from wmrepair import onnxrt
from wmrepair.optimization import OptimizationConfig, adapt_to_hardware

needs_ort = pytest.mark.skipif(not onnxrt.available(), reason="onnxruntime not installed (pip install onnxruntime)")


@pytest.fixture()
def detector(tmp_path):
    from wmrepair.shipped import shipped_model

    path = tmp_path / "model.pt"
    shutil.copy(shipped_model(), path)
    shutil.copy(shipped_model().with_suffix(".json"), path.with_suffix(".json"))
    return path


def _images(n=4):
    from wmrepair.synth import TEST_FONTS, TEST_WORDS, add_watermark, make_background

    rng = np.random.default_rng(5)
    sizes = [(256, 192), (320, 320)]
    return [add_watermark(make_background(rng, *sizes[i % 2]), rng, TEST_WORDS, TEST_FONTS, (0.5, 0.7))[0]
            for i in range(n)]


def _predictor(model, backend, **kw):
    from wmrepair.predict import OptimizedWatermarkPredictor

    opt = OptimizationConfig.from_level("balanced")
    opt.model.backend = backend
    opt.model.int8 = opt.model.mixed_precision = False  # fp32 on both sides
    return OptimizedWatermarkPredictor(model, opt, **kw)


@needs_ort
def test_onnxruntime_masks_agree_with_torch_and_the_export_is_reused(detector, caplog):
    images = _images()
    ref = _predictor(detector, "torch").predict_proba(images)
    with caplog.at_level(logging.INFO, logger="wmrepair.onnxrt"):
        got = _predictor(detector, "onnxruntime").predict_proba(images)
    assert "ONNX export written" in caplog.text
    exports = sorted(detector.parent.glob("model.*.onnx"))
    assert len(exports) == 1  # beside the model, named by its sha256
    stamp = exports[0].stat().st_mtime_ns
    for a, b in zip(ref, got):
        m1, m2 = a > 0.5, b > 0.5
        assert m1.any()  # the shipped detector finds the marks: the comparison means something
        assert (m1 & m2).sum() / (m1 | m2).sum() >= 0.99
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wmrepair.onnxrt"):
        p = _predictor(detector, "onnxruntime")
    assert "ONNX export reused" in caplog.text and "written" not in caplog.text
    assert exports[0].stat().st_mtime_ns == stamp
    assert "CPUExecutionProvider" in p._fwd.providers


@needs_ort
def test_a_changed_model_exports_anew(detector):
    import torch

    from wmrepair.checkpoints import load, save_model
    from wmrepair.model import build_model

    _predictor(detector, "onnxruntime")
    ck = load(detector)
    model = build_model(ck["meta"]["model"])
    model.load_state_dict(ck["state_dict"])
    with torch.no_grad():
        next(model.parameters()).mul_(0.5)
    detector.with_suffix(".json").unlink()
    save_model(model, detector)
    _predictor(detector, "onnxruntime")
    assert len(list(detector.parent.glob("model.*.onnx"))) == 2


@needs_ort
def test_use_tensorrt_without_tensorrt_says_why_it_fell_back():
    opt = OptimizationConfig.from_level("balanced")
    opt.model.use_tensorrt = True
    eff = adapt_to_hardware(opt)
    if "TensorrtExecutionProvider" in onnxrt.providers_available():
        pytest.skip("this onnxruntime has TensorRT: nothing to fall back from")
    assert not eff.model.use_tensorrt and eff.model.backend == "onnxruntime"
    assert any("use_tensorrt off" in d and "TensorRT provider" in d for d in eff.decisions)


def test_backend_onnxruntime_without_onnxruntime_runs_torch(monkeypatch):
    # A fake of the missing package (it is installed here): available() answers False.
    monkeypatch.setattr(onnxrt, "available", lambda: False)
    opt = OptimizationConfig.from_level("balanced")
    opt.model.backend = "onnxruntime"
    eff = adapt_to_hardware(opt)
    assert eff.model.backend == "torch"
    assert any("onnxruntime is not installed" in d for d in eff.decisions)


@needs_ort
def test_bench_predict_has_onnxruntime_rows_beside_torch(detector, tmp_path, monkeypatch):
    from wmrepair.bench import bench_predict

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = bench_predict(tmp_path / "out", quick=True, model_path=str(detector))
    for row in ("naive", "balanced", "onnxruntime"):
        assert res[row]["images_per_s"] > 0
    assert res["onnxruntime"]["mask_iou_vs_naive"] >= 0.99
    assert np.isfinite(res["onnxruntime"]["ratio_vs_naive"])
