"""SIGKILL `train` mid-epoch, rerun with resume on: same final metric as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

CONFIG = {
    # Two progressive (32 px) epochs of four: the kill lands after the switch to 64 px, so the
    # resumed run must pick the right side from the epoch number alone.
    "train": {"epochs": 4, "batch_size": 8, "crop": 64, "patience": 0, "top_k": 2, "seed": 1, "threads": 1, "init": "scratch",
              "time_budget_s": None, "progressive_fraction": 0.5, "progressive_size": 32, "model": {"base_channels": 4, "depth": 2, "in_channels": 3}},
    "optimization": {"level": "balanced"},
}


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    from conftest import build_tiny_caches

    root = tmp_path_factory.mktemp("resume")
    build_tiny_caches(root, 96, 8, 96)
    (root / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    return root


def _cmd(root, out):
    return [sys.executable, "-m", "wmrepair", "train", "--train-cache", str(root / "c/train/index.json"),
            "--val-cache", str(root / "c/val/index.json"), "--out", str(out), "--config", str(root / "cfg.yaml")]


def test_kill_and_resume_matches_uninterrupted(caches, tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(_cmd(caches, ref), check=True, capture_output=True, timeout=600)
    ref_summary = json.loads((ref / "summary.json").read_text())

    out = tmp_path / "killed"
    p = subprocess.Popen(_cmd(caches, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if last.exists():
            try:
                if torch.load(last, weights_only=True)["epoch"] >= 1:  # epoch 2 done, epoch 3 running
                    break
            except Exception:
                pass  # being replaced right now
        time.sleep(0.05)
    assert p.poll() is None, "training finished before it could be killed; make the test data larger"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert killed_at < CONFIG["train"]["epochs"] - 1 and not (out / "summary.json").exists()

    subprocess.run(_cmd(caches, out), check=True, capture_output=True, timeout=600)
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["resumed_from_epoch"] == killed_at + 1
    assert resumed["epochs_run"] == ref_summary["epochs_run"] == 4
    assert resumed["final"]["val_iou"] == pytest.approx(ref_summary["final"]["val_iou"], abs=1e-6)
    assert resumed["final"]["train_loss"] == pytest.approx(ref_summary["final"]["train_loss"], rel=1e-5)
    sides = [int(line.split(",")[1]) for line in (out / "history.csv").read_text().splitlines()[1:]]
    assert sides == [32, 32, 64, 64]


def test_finished_run_is_not_resumed(caches, tmp_path):
    out = tmp_path / "twice"
    subprocess.run(_cmd(caches, out), check=True, capture_output=True, timeout=600)
    subprocess.run(_cmd(caches, out), check=True, capture_output=True, timeout=600)
    assert json.loads((out / "summary.json").read_text())["resumed_from_epoch"] is None


def test_small_side_epochs_do_not_count_towards_patience(caches, tmp_path):
    """Progressive epochs validate at their small side, not comparable with full size: patience starts after them.

    min_delta 1.0 makes every epoch after the first counted one 'no improvement',
    so patience 1 stops two epochs after the progressive ones (not at epoch 2).
    """
    from wmrepair.optimization import OptimizationConfig
    from wmrepair.train import TrainConfig, train_from_cache

    cfg = TrainConfig.from_dict({**CONFIG["train"], "epochs": 6, "patience": 1, "min_delta": 1.0})  # 3 small
    summary = train_from_cache(caches / "c/train/index.json", caches / "c/val/index.json", tmp_path, cfg,
                               OptimizationConfig())
    assert summary["stopped_early"] and summary["epochs_run"] == 5
    assert {k["epoch"] for k in summary["checkpoints"]} == {4, 5}  # top_k 2, from the full-size epochs only
    assert summary["best"]["epoch"] in (4, 5)


@pytest.mark.parametrize(("change", "message"), [({"progressive_size": 36}, "progressive_size 36 must be a multiple of 8"),
                                               ({"progressive_fraction": 1.0}, r"must be in \[0, 1\)")])
def test_bad_progressive_settings_are_refused(caches, tmp_path, change, message):
    from wmrepair.optimization import OptimizationConfig
    from wmrepair.train import TrainConfig, train_from_cache

    cfg = TrainConfig.from_dict({**CONFIG["train"], **change})
    with pytest.raises(ValueError, match=message):
        train_from_cache(caches / "c/train/index.json", caches / "c/val/index.json", tmp_path, cfg,
                         OptimizationConfig())


def test_a_student_learns_its_teachers_outputs(caches, tmp_path):
    """train.teachers: with a heavy distillation weight the student ends closer to the teacher than without."""
    from dataclasses import asdict

    from wmrepair.checkpoints import load_model, save_model
    from wmrepair.device import to_input
    from wmrepair.model import UNet, UNetConfig
    from wmrepair.optimization import OptimizationConfig
    from wmrepair.train import TrainConfig, train_from_cache, val_dataset

    arch = asdict(UNetConfig(base_channels=4, depth=2))
    torch.manual_seed(5)
    teacher = UNet(UNetConfig(**arch))
    save_model(teacher, tmp_path / "teacher.pt", epoch=1, metrics={})
    teacher = load_model(tmp_path / "teacher.pt")[0].eval()
    x = to_input(torch.stack([val_dataset(caches / "c/val/index.json")[i][0] for i in range(4)]), torch.device("cpu"),
                 False)
    gaps = {}
    for name, extra in [("plain", {}), ("student", {"teachers": [str(tmp_path / "teacher.pt")], "distill_weight": 50.0})]:
        cfg = TrainConfig.from_dict({**CONFIG["train"], "epochs": 4, "progressive_fraction": 0.0, "lr": 3e-3,
                                     "model": arch, **extra})
        train_from_cache(caches / "c/train/index.json", caches / "c/val/index.json", tmp_path / name, cfg,
                         OptimizationConfig())
        ck = sorted((tmp_path / name / "checkpoints").glob("epoch_*.pt"))[-1]
        model, meta = load_model(ck)
        assert ("teachers_sha256" in meta) == (name == "student")
        with torch.no_grad():
            gaps[name] = (model.eval()(x).sigmoid() - teacher(x).sigmoid()).abs().mean().item()
    assert gaps["student"] < 0.7 * gaps["plain"], gaps  # same seed: without the term they are equal
