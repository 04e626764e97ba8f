"""The detector shipped in the package: where it is, how a path names it, how the workflow writes it.

The overlays in `STAGES` make it with the workflow's own rules: `config/pretrain.yaml`
trains it, `config/pretrain_structure.yaml` fine-tunes that against scene structure and
`config/pretrain_hardneg.yaml` against sure false alarms (the hard-negative loss); their last rule
(`ship_detector`) calls `ship`, which stores the weights in fp16 (half the
bytes, the same masks) beside a card that says how they were made and how
well they do. Every loader checks the card's sha256 and loads with
`weights_only`. Torch is imported only by `ship`, so path resolution stays
light enough for `--help` and config validation.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

SHIPPED = "shipped"  # the name that selects the shipped detector (model.path, --model, train.init)
SHIPPED_MODEL = Path(__file__).parent / "weights" / "detector.pt"
# The workflow overlays that make the shipped detector, in the order they run (each starts from the one before).
STAGES = ("config/pretrain.yaml", "config/pretrain_structure.yaml", "config/pretrain_hardneg.yaml")


class NoShippedModel(FileNotFoundError):
    """This install has no shipped detector (a checkout that never produced one)."""


def shipped_model() -> Path:
    """The shipped detector's file; NoShippedModel (with what to do) when it is absent."""
    if not SHIPPED_MODEL.is_file():
        raise NoShippedModel(f"this install of wmrepair has no shipped detector ({SHIPPED_MODEL}): name a model "
                             "(--model, model.path), train from scratch (train.init: scratch), or produce it with "
                             + ", then ".join(f"`snakemake --cores 8 --resources gpu=1 --configfile {c}`" for c in STAGES))
    return SHIPPED_MODEL


def resolve_model(path: str | Path | None) -> Path:
    """A model path as given by a user: None or 'shipped' is the shipped detector."""
    if path is None or str(path) == SHIPPED:
        return shipped_model()
    return Path(path)


def init_weights(init: str, key: str = "train.init") -> Path | None:
    """The file `train.init` (or another `key`) names: None for scratch, the shipped detector for
    pretrained, else a path."""
    if init == "scratch":
        return None
    if init == "pretrained":
        return shipped_model()
    if not Path(init).is_file():
        raise FileNotFoundError(f"{key}: {init} is neither pretrained, scratch nor an existing model file")
    return Path(init)


def _commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": head, "dirty": dirty}


def _hardware(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"device": device, "cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version()}


SYNTH_TEST_KEYS = ("n_images", "n_marked", "n_unmarked", "mask_iou", "psnr_input", "psnr_output", "psnr_gain_db",
                   "ssim_input",
                   "ssim_output", "clean_altered", "marked_worse", "marked_untouched", "worst_psnr_change_db",
                   "false_mark_share")


def measure_real_photos(model: Path, out: Path) -> dict[str, Any]:
    """The real-photo benchmark of `model` (`wmrepair bench real`), or {"not_measured": why}."""
    from wmrepair.bench import bench_real

    try:
        return bench_real(out, model=str(model))
    except RuntimeError as exc:  # the Debian packages it draws on are missing and cannot be installed
        return {"not_measured": str(exc)}


def compact_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """fp16 copies of the floating-point tensors fp16 can hold; the others stay as they are.

    A BatchNorm running variance can exceed fp16's largest value (65504): cast, it becomes inf and
    that channel's output 0 at inference, which changes the masks (and a model fine-tuned from such
    weights keeps the inf, since running statistics only blend).
    """
    import torch

    out = {}
    for k, v in state.items():
        if v.is_floating_point() and v.dtype != torch.float16:
            h = v.half()
            v = h if torch.isfinite(h).all() and bool(torch.isfinite(v).all()) else v
        out[k] = v
    return out


def ship(model: str | Path, out: str | Path, *, train_summary: str | Path, metrics: str | Path,
         config: dict[str, Any], made_by: str, bench_dir: str | Path | None = None) -> dict[str, Any]:
    """Write `model` (a selected model.pt) as fp16 weights (`compact_state_dict`) at `out`, with its card beside
    it; returns the card.

    With `bench_dir`, the written file itself runs the real-photo benchmark there
    and the card records the result. `made_by` is the command the card names.
    """
    import torch

    from wmrepair.checkpoints import atomic_save, card_path, load, sha256_file

    ck = load(model)
    half = compact_state_dict(ck["state_dict"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    card_path(out).unlink(missing_ok=True)  # the old card no longer describes the file
    atomic_save({"state_dict": half, "meta": ck["meta"]}, out)
    real = measure_real_photos(out, Path(bench_dir)) if bench_dir else {"not_measured": "not asked"}
    summary = json.loads(Path(train_summary).read_text())
    synth = json.loads(Path(metrics).read_text())
    card = {
        "name": "wmrepair shipped detector",
        "made_by": made_by,
        "epoch": ck["meta"]["epoch"],
        "model": ck["meta"]["model"],
        "config_hash": ck["meta"].get("config_hash"),
        "data": config.get("data", {}).get("synth"),
        "train": config.get("train"),
        "code": _commit(),
        "hardware": _hardware(summary.get("device", "?")),
        "train_wall_time_s": round(float(summary.get("seconds", 0.0)), 1),
        "epochs_run": summary.get("epochs_run"),
        "metrics": {
            "val": ck["meta"].get("metrics"),
            "synthetic_test": {k: synth.get(k) for k in SYNTH_TEST_KEYS},
            "real_photos": (real if "not_measured" in real else
                            {"overall": {k: real["overall"].get(k) for k in SYNTH_TEST_KEYS},
                             "per_style": real["per_style"]}),
        },
        "dtype": "float16",
        "float32_tensors": sorted(k for k, v in half.items() if v.is_floating_point() and v.dtype != torch.float16),
        "bytes": out.stat().st_size,
        "versions": {"torch": str(torch.__version__)},
        "sha256": sha256_file(out),
    }
    card_path(out).write_text(json.dumps(card, indent=2, default=float) + "\n")
    return card
