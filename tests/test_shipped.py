"""The detector shipped in the package: loadable with weights_only, matching its card, finding marks,
inside a built wheel, and used wherever no model is named."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from wmrepair import shipped
from wmrepair.checkpoints import sha256_file

ROOT = shipped.SHIPPED_MODEL.parents[3]


def test_the_shipped_file_loads_weights_only_and_matches_its_card():
    path = shipped.shipped_model()
    ck = torch.load(path, map_location="cpu", weights_only=True)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == sha256_file(path) and card["bytes"] == path.stat().st_size
    assert path.stat().st_size <= 10 * 2**20
    floats = {k: v for k, v in ck["state_dict"].items() if v.is_floating_point()}
    assert all(torch.isfinite(v).all() for v in floats.values())
    assert sorted(k for k, v in floats.items() if v.dtype != torch.float16) == card["float32_tensors"]
    assert len(card["float32_tensors"]) <= 2  # only what fp16 cannot hold
    assert card["model"] == ck["meta"]["model"]
    for key in ("data", "train", "code", "hardware", "train_wall_time_s", "config_hash"):
        assert card[key] is not None, key
    assert {"val", "synthetic_test", "real_photos"} <= set(card["metrics"])
    assert card["train"]["init"] != "pretrained"  # not fine-tuned from itself
    command = card["made_by"].split()
    assert command.count("--configfile") == 1, card["made_by"]  # Snakemake keeps only the last of repeated flags
    overlays = command[command.index("--configfile") + 1:]
    assert overlays and all((ROOT / f).is_file() for f in overlays), card["made_by"]


def test_the_shipped_detector_finds_a_mark_and_leaves_a_plain_picture():
    from wmrepair.predict import OptimizedWatermarkPredictor
    from wmrepair.synth import TEST_FONTS, TEST_WORDS, add_watermark, make_background

    pred = OptimizedWatermarkPredictor()  # no path: the shipped detector
    rng = np.random.default_rng(3)
    hits = []
    for _ in range(4):
        img, alpha = add_watermark(make_background(rng, 320, 400), rng, TEST_WORDS, TEST_FONTS, (0.6, 0.8))
        r = pred.predict(img)
        truth = alpha > 0.05
        hits.append((r["mask"] & truth).sum() / (r["mask"] | truth).sum())
    assert np.median(hits) > 0.3, hits
    flat = np.full((320, 400, 3), 128, np.uint8)
    assert not pred.predict(flat)["mask"].any()


def test_a_wheel_carries_the_shipped_detector_and_an_install_from_it_finds_it(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    (whl,) = (tmp_path / "dist").glob("wmrepair-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "wmrepair/weights/detector.pt" in names and "wmrepair/weights/detector.json" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(whl)],
                   check=True, capture_output=True)
    code = ("import wmrepair.shipped as s; from wmrepair.checkpoints import load_model; "
            "p = s.shipped_model(); load_model(p); print(p)")
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(site))  # the installed copy, not the checkout


def test_repair_without_model_uses_the_shipped_detector(tmp_path):
    from PIL import Image

    from wmrepair.synth import TEST_FONTS, TEST_WORDS, add_watermark, make_background

    rng = np.random.default_rng(4)
    (tmp_path / "in").mkdir()
    for i in range(2):
        img, _ = add_watermark(make_background(rng, 240, 320), rng, TEST_WORDS, TEST_FONTS, (0.6, 0.8))
        Image.fromarray(img).save(tmp_path / "in" / f"p{i}.png")
    r = subprocess.run([sys.executable, "-m", "wmrepair", "repair", "--input", str(tmp_path / "in"),
                        "--output", str(tmp_path / "out"), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "out/manifest.csv").read_text().splitlines()
    assert len(rows) == 3 and ",ok," in rows[1] + rows[2]


def test_no_shipped_detector_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from wmrepair.cli import main

    monkeypatch.setattr(shipped, "SHIPPED_MODEL", tmp_path / "absent.pt")
    (tmp_path / "in").mkdir()
    assert main(["repair", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no shipped detector" in err and "--model" in err


def test_training_starts_from_the_shipped_weights_when_told():
    from wmrepair.checkpoints import load_model
    from wmrepair.config import TrainConfig
    from wmrepair.train import initial_model

    ref, _ = load_model(shipped.shipped_model())
    model, sha = initial_model(TrainConfig(init="pretrained"))
    assert sha == sha256_file(shipped.shipped_model())
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k
    assert TrainConfig().init == "pretrained"  # the default
    scratch, sha = initial_model(TrainConfig(init="scratch"))
    assert sha == "" and not torch.equal(next(scratch.parameters()), next(ref.parameters()))
    with pytest.raises(ValueError, match="train.init.*another network"):
        initial_model(TrainConfig(init="pretrained", model={**TrainConfig().model, "base_channels": 8}))
    with pytest.raises(FileNotFoundError, match="train.init"):
        initial_model(TrainConfig(init="nowhere.pt"))


def test_shipping_keeps_what_fp16_cannot_hold_and_the_masks_stay(tmp_path):
    """A BatchNorm variance above 65504 became inf in fp16, and that channel went dark at inference."""
    from wmrepair.checkpoints import atomic_save, load_model
    from wmrepair.config import TrainConfig
    from wmrepair.model import build_model, model_config_dict

    torch.manual_seed(0)
    model = build_model(TrainConfig().model).eval()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var[0] = 1.0e5
    bn.running_mean[0] = 300.0
    meta = {"model": model_config_dict(model)}
    compact = shipped.compact_state_dict(model.state_dict())
    kept = [k for k, v in compact.items() if v.is_floating_point() and v.dtype != torch.float16]
    name = next(n for n, m in model.named_modules() if m is bn)
    assert kept == [f"{name}.running_var"]
    atomic_save({"state_dict": compact, "meta": meta}, tmp_path / "small.pt")
    small, _ = load_model(tmp_path / "small.pt", verify=False)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(small(x)), torch.sigmoid(model(x)), atol=0.02)
    # An inf weight is refused, not used.
    naive = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_save({"state_dict": naive, "meta": meta}, tmp_path / "naive.pt")
    with pytest.raises(ValueError, match="inf or NaN.*running_var"):
        load_model(tmp_path / "naive.pt", verify=False)
