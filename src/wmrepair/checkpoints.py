"""Checkpoints: atomic writes, top-k by a validation metric plus `last.pt`, best-model selection.

Every file holds only tensors and plain Python values, so it loads with
`torch.load(..., weights_only=True)` (no pickle code execution).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from wmrepair.files import atomic_write
from wmrepair.model import LEGACY_FIELDS, UNet, build_model, model_config_dict


def atomic_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def load(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class EarlyStopping:
    """Stop after `patience` checks without an improvement larger than `min_delta`."""

    def __init__(self, patience: int = 5, min_delta: float = 0.0, mode: str = "max") -> None:
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best: float | None = None
        self.bad = 0

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta

    def step(self, value: float) -> bool:
        """Record `value`; True when training should stop."""
        if self.improved(value):
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return self.patience > 0 and self.bad >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.bad = d["best"], d["bad"]


class CheckpointManager:
    """Keeps the `top_k` checkpoints by `monitor` and a full-state `last.pt` for resume."""

    def __init__(self, directory: str | Path, top_k: int = 3, monitor: str = "val_iou", mode: str = "max") -> None:
        self.dir = Path(directory)
        self.top_k, self.monitor, self.mode = top_k, monitor, mode
        self.kept: list[dict] = []  # [{"path", "epoch", "value"}], best first

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def save(self, epoch: int, metrics: dict[str, float], weights: dict, meta: dict, full_state: dict | None = None,
             rank: bool = True) -> Path | None:
        """Save `weights` if they rank in the top k (and `rank`); always refresh `last.pt` with `full_state`."""
        value = float(metrics[self.monitor])
        saved = None
        rank_ok = len(self.kept) < self.top_k or self._better(value, self.kept[-1]["value"])
        if rank and self.top_k > 0 and rank_ok:
            saved = self.dir / f"epoch_{epoch:04d}.pt"
            atomic_save({"state_dict": weights, "meta": {**meta, "epoch": epoch, "metrics": metrics}}, saved)
            self.kept.append({"path": saved.name, "epoch": epoch, "value": value})
            # Stable: on ties the earlier epoch stays ahead.
            self.kept.sort(key=lambda k: -k["value"] if self.mode == "max" else k["value"])
            for old in self.kept[self.top_k :]:
                (self.dir / old["path"]).unlink(missing_ok=True)
            self.kept = self.kept[: self.top_k]
        if full_state is not None:
            atomic_save({**full_state, "kept": self.kept}, self.dir / "last.pt")
        self._write_index()
        return saved

    def _write_index(self) -> None:
        (self.dir / "checkpoints.json").write_text(json.dumps({"monitor": self.monitor, "mode": self.mode, "kept": self.kept}, indent=1))

    def best(self) -> Path | None:
        return self.dir / self.kept[0]["path"] if self.kept else None

    def load_state_dict(self, kept: list[dict]) -> None:
        self.kept = [k for k in kept if (self.dir / k["path"]).exists()]


def monitor_mode(monitor: str) -> str:
    """Whether higher ("max") or lower ("min") values of a validation metric are better."""
    return "min" if monitor.endswith("loss") else "max"


def select_best(checkpoint_dir: str | Path, monitor: str = "val_iou", mode: str | None = None) -> tuple[Path, dict]:
    """The best checkpoint in a folder, by the metric stored inside each file (`mode` from the metric's name)."""
    mode = mode or monitor_mode(monitor)
    cands = []
    for p in sorted(Path(checkpoint_dir).glob("epoch_*.pt")):
        meta = load(p)["meta"]
        cands.append((float(meta["metrics"][monitor]), -meta["epoch"], p, meta))
    if not cands:
        raise FileNotFoundError(f"no checkpoints (epoch_*.pt) in {checkpoint_dir}")
    cands.sort(key=lambda c: (c[0], c[1]), reverse=(mode == "max"))
    _, _, path, meta = cands[0]
    return path, meta


def export_model(checkpoint: str | Path | dict, out_model: str | Path, out_card: str | Path,
                 extra: dict | None = None) -> dict:
    """Write the selected model (weights + meta; a file or its loaded dict) and a JSON card with its sha256."""
    ck = checkpoint if isinstance(checkpoint, dict) else load(checkpoint)
    atomic_save(ck, out_model)
    card = {
        "source_checkpoint": None if isinstance(checkpoint, dict) else str(checkpoint),
        "epoch": ck["meta"]["epoch"],
        "metrics": ck["meta"]["metrics"],
        "model": ck["meta"]["model"],
        "config_hash": ck["meta"].get("config_hash"),
        "versions": {"torch": str(torch.__version__), **ck["meta"].get("versions", {})},
        "sha256": sha256_file(out_model),
        **(extra or {}),
    }
    Path(out_card).write_text(json.dumps(card, indent=2))
    return card


def average_weights(state: dict[str, torch.Tensor], start: dict[str, torch.Tensor],
                    keep: float) -> dict[str, torch.Tensor]:
    """`(1 - keep) * state + keep * start`, tensor by tensor (BatchNorm statistics included).

    Integer tensors (BatchNorm's batch counters) are `state`'s. Both must be the same network.
    """
    if set(state) != set(start) or any(state[k].shape != start[k].shape for k in state):
        raise ValueError("train.keep_init: the selected detector and its starting weights are different networks")
    return {k: torch.lerp(v.float(), start[k].float(), keep).to(v.dtype) if v.is_floating_point() else v
            for k, v in state.items()}


def save_model(model: UNet, path: str | Path, **meta: Any) -> None:
    """Write `model` in the format `load_model` reads (weights + its UNet config)."""
    atomic_save({"state_dict": model.state_dict(), "meta": {"model": model_config_dict(model), **meta}}, path)


MAX_PARAMS = 50_000_000  # the shipped UNet has ~1.5 M; a file declaring more is not a detector of ours


class ModelCardMismatch(ValueError):
    """The model file is not the one its card describes (changed, truncated or swapped)."""


def card_path(model_path: str | Path) -> Path:
    """The JSON card `export_model` writes beside a model (model.pt -> model.json)."""
    return Path(model_path).with_suffix(".json")


def verify_card(path: str | Path) -> dict | None:
    """Check the model against the sha256 of the card beside it, if there is one; returns the card."""
    card_file = card_path(path)
    if not card_file.is_file():
        return None
    try:
        card = json.loads(card_file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelCardMismatch(f"model card {card_file} is unreadable ({exc})") from None
    want = card.get("sha256") if isinstance(card, dict) else None
    if want and sha256_file(path) != want:
        raise ModelCardMismatch(f"{path} does not match its card {card_file} (sha256 {want[:12]}...): the file "
                                "changed since it was exported; use the right pair, or --no-verify-model to use it anyway")
    return card


def _check_declared_shape(model_cfg: dict, state_dict: dict, path: Path) -> None:
    """Build the declared network on the meta device (no memory) and compare it with the stored weights.

    A small file can declare a huge network: building it for real would allocate
    before `load_state_dict` could notice that the weights are not there.
    """
    with torch.device("meta"):
        probe = build_model(model_cfg)
    n = sum(p.numel() for p in probe.parameters())
    if n > MAX_PARAMS:
        raise ValueError(f"{path} declares a network of {n / 1e6:.0f} M parameters (at most {MAX_PARAMS / 1e6:.0f} M)")
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))[:1]
        raise ValueError(f"{path}: its weights do not match the network it declares (first difference: {diff})")
    # An inf or NaN weight gives plausible-looking but wrong masks (an fp16 copy of a large BatchNorm
    # variance is inf): refuse the file rather than silently detect worse.
    bad = [k for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path}: {len(bad)} weight tensor(s) hold inf or NaN (first: {bad[0]}); "
                         "the file is damaged or was stored in a precision too small for it")


def load_model(path: str | Path, verify: bool = True) -> tuple[UNet, dict]:
    """Load a model file or checkpoint written by wmrepair (weights_only).

    With `verify`, a card beside the file (model.json) must carry its sha256.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if verify:
        verify_card(path)
    try:
        ck = load(path)
        cfg = {**LEGACY_FIELDS, **ck["meta"]["model"]}
        _check_declared_shape(cfg, ck["state_dict"], path)
        model = build_model(cfg)
        model.load_state_dict(ck["state_dict"])
    except ValueError:
        raise
    except (KeyError, RuntimeError, TypeError, EOFError, OSError) as exc:
        raise ValueError(f"{path} is not a wmrepair model checkpoint ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # unpickling errors have many types
        raise ValueError(f"{path} is not a loadable wmrepair model ({type(exc).__name__}: {exc})") from exc
    return model.eval(), ck["meta"]
