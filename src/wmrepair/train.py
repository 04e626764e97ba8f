"""OptimizedTrainer: one readable training loop; the optimisations are the small pieces around it.

Mixed precision (bf16, or fp16 + GradScaler), channels_last, optional
torch.compile, gradient accumulation, warm-up + cosine/one-cycle LR, early
stopping, top-k checkpoints and a resumable `last.pt`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wmrepair.checkpoints import CheckpointManager, EarlyStopping, load, monitor_mode
from wmrepair.config import TrainConfig
from wmrepair.device import autocast_for, resolve_device, to_input  # noqa: F401 - resolve_device: API
from wmrepair.losses import confusion, distill_loss, iou_f1, segmentation_loss
from wmrepair.model import UNet, build_model
from wmrepair.monitor import ResourceMonitor
from wmrepair.optimization import OptimizationConfig, adapt_to_hardware
from wmrepair.profiling import PerformanceAnalyzer

log = logging.getLogger(__name__)


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of the base LR at optimiser step `step` of `total`."""
    if cfg.schedule == "constant":
        return 1.0
    warm = max(1, int(total * cfg.warmup_frac))
    if step < warm:
        return (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total - warm))
    if cfg.schedule == "onecycle":  # linear down from the peak, one cycle
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * (1 - t)
    if cfg.schedule == "cosine":
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {cfg.schedule!r} (expected cosine, onecycle or constant)")


def to_target(y: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Masks (N, 1, H, W) or (N, H, W), values 0/1, as float N1HW on `device`."""
    y = y.to(device, non_blocking=True).float()
    return y[:, None] if y.dim() == 3 else y


Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.inference_mode()
def validate(model: UNet, loader: DataLoader, device: torch.device, amp_dtype: str | None,
             channels_last: bool, loss: str | Criterion) -> dict[str, float]:
    """Validation loss (`loss`: a loss name or a criterion), IoU and F1 at logit 0."""
    model.eval()
    criterion = loss if callable(loss) else (lambda lg, t: segmentation_loss(lg, t, loss))
    counts = torch.zeros(3, dtype=torch.long)
    losses = []
    for x, y in loader:
        x = to_input(x, device, channels_last)
        y = to_target(y, device)
        with autocast_for(device, amp_dtype):
            logits = model(x)
        losses.append(float(criterion(logits.float(), y)))
        counts += confusion(logits.float() > 0, y > 0.5).cpu()
    iou, f1 = iou_f1(counts)
    return {"val_loss": statistics.fmean(losses) if losses else float("nan"), "val_iou": iou, "val_f1": f1}


class SampleCache(Dataset):
    """A dataset's samples kept after their first read: validation reads the same ones every epoch."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.items: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        if i not in self.items:
            self.items[i] = self.ds[i]
        return self.items[i]


def config_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def initial_model(cfg: TrainConfig) -> tuple[UNet, str]:
    """The network `cfg.model` describes, with the weights `cfg.init` names; returns it and their sha256.

    Fine-tuning needs the same architecture, or the same one wider (the weights are
    then widened without changing what they compute, `wmrepair.widen`): any other
    `train.model` is refused with what to change, not silently trained from scratch.
    """
    from wmrepair.checkpoints import load_model, sha256_file
    from wmrepair.model import model_config_dict
    from wmrepair.shipped import init_weights
    from wmrepair.widen import widen

    model = build_model(cfg.model)
    path = init_weights(cfg.init)
    if path is None:
        return model, ""
    pre, _ = load_model(path)
    have, want = model_config_dict(pre), model_config_dict(model)
    if {**have, "base_channels": want["base_channels"]} == want and want["base_channels"] > have["base_channels"]:
        log.info("widening %s from base_channels %d to %d", path, have["base_channels"], want["base_channels"])
        pre, have = widen(pre, want["base_channels"], seed=cfg.seed), want
    if have != want:
        diff = {k: (have.get(k), want.get(k)) for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)}
        raise ValueError(f"train.init: {path} is another network than train.model asks for "
                         f"(field: (its value, train.model's)): {diff}; set train.model to match or train.init: scratch")
    model.load_state_dict(pre.state_dict())
    log.info("starting from the weights of %s", path)
    return model, sha256_file(path)


def teacher_logits(cfg: TrainConfig, device: torch.device, amp_dtype: str | None
                   ) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, list[str]]:
    """The frozen `cfg.teachers` as one function of a batch (their logits averaged), and their sha256s;
    (None, []) without teachers."""
    from wmrepair.checkpoints import load_model, sha256_file
    from wmrepair.shipped import init_weights

    if not cfg.teachers:
        return None, []
    paths = [init_weights(t, "train.teachers") for t in cfg.teachers]  # TrainConfig refuses scratch
    nets = [load_model(p)[0].to(device).eval().requires_grad_(False) for p in paths]

    @torch.no_grad()
    def average(x: torch.Tensor) -> torch.Tensor:
        with autocast_for(device, amp_dtype):
            return torch.stack([net(x).float() for net in nets]).mean(0)

    log.info("distilling from %s (weight %g)", ", ".join(map(str, paths)), cfg.distill_weight)
    return average, [sha256_file(p) for p in paths]


class OptimizedTrainer:
    """Trains a UNet with the effective optimisation settings; use as a context manager.

    The original API's form: `with OptimizedTrainer(model, train_dataset, val_dataset) as t:
    history = t.train(criterion, epochs=100)` for any torch Datasets of (image, mask)
    pairs (images HWC uint8 or CHW float in [0, 1], masks 0/1); checkpoints and
    history go to `out_dir`. The workflow's form is `fit(train_ds, val_ds)`.
    """

    def __init__(self, model: torch.nn.Module | None = None, train_dataset: Dataset | None = None,
                 val_dataset: Dataset | None = None, *, train_config: TrainConfig | None = None,
                 optimization: OptimizationConfig | None = None, out_dir: str | Path = "results/train",
                 data_hash: str = "", analyzer: PerformanceAnalyzer | None = None) -> None:
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.criterion: Criterion | None = None
        self.cfg = train_config or TrainConfig()
        self.opt_cfg = adapt_to_hardware(optimization or OptimizationConfig())
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.device = resolve_device(self.cfg.device)
        if self.device.type == "cpu" and self.opt_cfg.model.amp_dtype == "float16":
            self.opt_cfg.model.amp_dtype = None  # fp16 autocast on CPU is slow and lossy
        if self.cfg.threads > 0:
            from wmrepair.hardware import usable_cpus

            torch.set_num_threads(min(self.cfg.threads, usable_cpus()))
        torch.backends.cudnn.benchmark = self.opt_cfg.training.cudnn_benchmark
        torch.manual_seed(self.cfg.seed)
        init_sha = ""
        if model is None:
            model, init_sha = initial_model(self.cfg)
        self.model = model
        self.data_hash = data_hash + init_sha  # other starting weights: another run, never resumed into
        self.hash = self._config_hash()
        self.history: list[dict[str, float]] = []
        self.analyzer = analyzer or PerformanceAnalyzer()
        self.monitor = ResourceMonitor(interval=self.opt_cfg.memory.monitor_interval, csv_path=self.out / "resources.csv")

    def _config_hash(self) -> str:
        return config_hash(asdict(self.cfg) | {"threads": None, "resume": None, "time_budget_s": None},
                           self.opt_cfg.model.amp_dtype, self.data_hash)

    def __enter__(self) -> OptimizedTrainer:
        self.monitor.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.monitor.stop()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------
    def _loader(self, ds: Dataset, train: bool, epoch: int) -> DataLoader:
        d = self.opt_cfg.dataloader
        g = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        kw: dict[str, Any] = {}
        if d.num_workers > 0:
            kw.update(prefetch_factor=d.prefetch_factor)
        return DataLoader(
            ds, batch_size=self.cfg.batch_size, shuffle=train, generator=g if train else None,
            num_workers=d.num_workers, pin_memory=d.pin_memory and self.device.type == "cuda",
            drop_last=train and self.opt_cfg.model.compile_model,  # one static shape for compile
            **kw,
        )

    def small_epochs(self) -> int:
        """How many leading epochs train at `progressive_size` (at least one epoch runs at full size)."""
        c = self.cfg
        if not 0 <= c.progressive_fraction < 1:
            raise ValueError(f"train.progressive_fraction must be in [0, 1), got {c.progressive_fraction}")
        if c.progressive_size >= c.crop:
            return 0
        return min(round(c.epochs * c.progressive_fraction), c.epochs - 1)

    def _resume_state(self) -> dict | None:
        last = self.ckpt_dir / "last.pt"
        if not last.exists():
            return None
        state = load(last)
        if not self.cfg.resume or state.get("finished") or state.get("config_hash") != self.hash:
            why = ("resume off" if not self.cfg.resume else "previous run finished" if state.get("finished")
                   else "config or data changed")
            log.info("starting fresh (%s): clearing %s", why, self.ckpt_dir)
            for f in self.ckpt_dir.glob("*.pt"):
                f.unlink()
            return None
        return state

    def train(self, criterion: Criterion | None = None, epochs: int | None = None) -> list[dict[str, float]]:
        """Fit the datasets given to the constructor; returns the history (one row per epoch).

        `criterion(logits, masks)` replaces the configured loss (train.loss) in
        training and validation; `epochs` replaces train.epochs. The time budget
        (train.time_budget_s) still applies; set it to None for no limit.
        """
        if self.train_dataset is None or self.val_dataset is None:
            raise ValueError("OptimizedTrainer.train needs train_dataset and val_dataset (or call fit)")
        if epochs is not None:
            self.cfg.epochs = epochs
            self.hash = self._config_hash()  # resume only a run of these very settings
        self.criterion = criterion
        self.fit(self.train_dataset, self.val_dataset)
        return self.history

    def fit(self, train_ds: Dataset, val_ds: Dataset) -> dict[str, Any]:
        cfg, oc = self.cfg, self.opt_cfg
        dev, amp, cl = self.device, oc.model.amp_dtype, oc.model.channels_last
        accum = max(1, oc.training.gradient_accumulation_steps)
        model = self.model.to(dev)
        # Progressive resizing needs datasets that can shrink their samples (ours); others train at their size.
        small_epochs = self.small_epochs() if hasattr(train_ds, "set_side") else 0
        loss_fn = self.criterion or (lambda lg, t: segmentation_loss(lg, t, cfg.loss, cfg.hard_negative_weight,
                                                                     cfg.hard_negative_share))
        if oc.dataloader.enable_caching and not hasattr(val_ds, "set_side"):
            val_ds = SampleCache(val_ds)
        multiple = getattr(model, "multiple", 1)
        if small_epochs and cfg.progressive_size % multiple:
            raise ValueError(f"train.progressive_size {cfg.progressive_size} must be a multiple of {multiple} "
                             f"for this model (e.g. {max(multiple, cfg.progressive_size // multiple * multiple)})")
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler(dev.type, enabled=(amp == "float16" and dev.type == "cuda"))
        steps_per_epoch = max(1, len(self._loader(train_ds, True, 0)) // accum)
        total_steps = steps_per_epoch * cfg.epochs
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, cfg))
        stopper = EarlyStopping(cfg.patience, cfg.min_delta, monitor_mode(cfg.monitor))
        ckpts = CheckpointManager(self.ckpt_dir, cfg.top_k, cfg.monitor, stopper.mode)
        history: list[dict[str, float]] = []
        start_epoch = 0

        state = self._resume_state()
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            stopper.load_state_dict(state["early_stopping"])
            ckpts.load_state_dict(state["kept"])
            torch.set_rng_state(state["rng"])
            history = state["history"]
            start_epoch = state["epoch"] + 1
            log.info("resumed from %s at epoch %d", self.ckpt_dir / "last.pt", start_epoch)

        fwd = torch.compile(model) if oc.model.compile_model else model
        teacher, teacher_shas = teacher_logits(cfg, dev, amp)
        self.analyzer.note_settings(amp_dtype=amp, channels_last=cl)
        meta = {"model": dict(cfg.model), "config_hash": self.hash, "train_config": json.loads(json.dumps(asdict(cfg))),
                "amp_dtype": amp, "versions": {"torch": str(torch.__version__)}}
        if teacher_shas:
            meta["teachers_sha256"] = teacher_shas
        t_start = time.perf_counter()
        stopped_early = False
        epoch = start_epoch - 1
        for epoch in range(start_epoch, cfg.epochs):
            train_ds.set_epoch(epoch) if hasattr(train_ds, "set_epoch") else None
            small = epoch < small_epochs
            for ds in (train_ds, val_ds):  # validate at the side trained on: comparable, and 4x cheaper
                if hasattr(ds, "set_side"):
                    ds.set_side(cfg.progressive_size if small else None)
            loader = self._loader(train_ds, True, epoch)
            model.train()
            t_epoch = time.perf_counter()
            data_wait = 0.0
            seen = 0
            losses = []
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False, mininterval=2)
            t_fetch = time.perf_counter()
            for i, (x, y) in enumerate(bar):
                data_wait += time.perf_counter() - t_fetch
                with self.analyzer.profile("train_step"):
                    x = to_input(x, dev, cl)
                    y = to_target(y, dev)
                    with autocast_for(dev, amp):
                        logits = fwd(x)
                    loss = loss_fn(logits.float() if self.criterion else logits, y)
                    if teacher is not None:
                        loss = loss + cfg.distill_weight * distill_loss(logits, teacher(x))
                    scaler.scale(loss / accum).backward()
                    if (i + 1) % accum == 0:
                        scaler.step(opt)
                        scaler.update()
                        opt.zero_grad(set_to_none=True)
                        sched.step()
                seen += x.shape[0]
                losses.append(loss.item())
                bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
                t_fetch = time.perf_counter()
            bar.close()
            self.analyzer.record("data_wait", data_wait)
            self.analyzer.count("train_step", seen)
            epoch_s = time.perf_counter() - t_epoch
            with self.analyzer.profile("validate"):
                metrics = validate(model, self._loader(val_ds, False, epoch), dev, amp, cl, self.criterion or cfg.loss)
            row = {"epoch": epoch + 1, "train_side": int(x.shape[-1]), "train_loss": statistics.fmean(losses), **metrics,
                   "lr": sched.get_last_lr()[0], "samples_per_s": seen / epoch_s,
                   "data_wait_s": data_wait, "epoch_s": epoch_s}
            history.append(row)
            log.info("epoch %d: loss %.4f val_iou %.4f val_f1 %.4f (%.1f samples/s, data wait %.2fs)",
                     epoch + 1, row["train_loss"], row["val_iou"], row["val_f1"], row["samples_per_s"], data_wait)
            # Small-side epochs are scored at the small side: they neither count towards
            # patience nor compete for the top-k, and the budget lets one full-size epoch run.
            stop = not small and stopper.step(metrics[cfg.monitor])
            over_budget = (not small and cfg.time_budget_s is not None
                           and time.perf_counter() - t_start > cfg.time_budget_s)
            finished = stop or over_budget or epoch + 1 == cfg.epochs
            weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            full = {"model": weights, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(), "early_stopping": stopper.state_dict(),
                    "rng": torch.get_rng_state(), "history": history, "epoch": epoch,
                    "config_hash": self.hash, "finished": finished}
            ckpts.save(epoch + 1, metrics, weights, meta, full, rank=not small)
            self._write_history(history)
            if stop:
                stopped_early = True
                log.info("early stopping: no %s improvement > %g for %d epochs", cfg.monitor, cfg.min_delta, cfg.patience)
                break
            if over_budget:
                log.warning("time budget %.0fs reached after epoch %d: stopping", cfg.time_budget_s, epoch + 1)
                break
        full_size = [r for r in history if r["epoch"] > small_epochs]
        best = max(full_size, key=lambda r: r[cfg.monitor] if stopper.mode == "max" else -r[cfg.monitor]) if full_size else {}
        summary = {
            "epochs_run": len(history), "resumed_from_epoch": start_epoch if state is not None else None,
            "stopped_early": stopped_early, "best": best, "final": history[-1] if history else {},
            "checkpoints": ckpts.kept, "config_hash": self.hash,
            "effective_optimization": oc.to_dict(), "device": str(dev),
            "median_samples_per_s": statistics.median(r["samples_per_s"] for r in history) if history else 0.0,
            "seconds": time.perf_counter() - t_start,
        }
        self.history = history
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        self.analyzer.generate_performance_report(self.out / "performance.json", samples=self.monitor.samples)
        return summary

    def _write_history(self, history: list[dict[str, float]]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / "history.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(history[0]))
            w.writeheader()
            w.writerows(history)


def val_dataset(val_index: str | Path) -> Dataset:
    """The cached validation split that `val_index` (its index.json) describes, unaugmented."""
    from wmrepair.data import CachedDataset

    return CachedDataset(Path(val_index).parent, json.loads(Path(val_index).read_text())["size"], augment=False)


def select_detector(checkpoint_dir: str | Path, val_index: str | Path, out_model: str | Path,
                    out_card: str | Path, cfg: TrainConfig) -> dict[str, Any]:
    """The best checkpoint by `cfg.monitor` as the run's detector (model file + card).

    With `cfg.keep_init`, its weights are first averaged with the starting weights
    (`train.init`, widened as training widened them) and the average is validated
    again on `val_index`, so the card's metrics are those of the file written.
    """
    from wmrepair.checkpoints import average_weights, export_model, select_best

    path, _ = select_best(checkpoint_dir, cfg.monitor)
    if not cfg.keep_init:
        return export_model(path, out_model, out_card)
    ck = load(path)
    model, start_sha = initial_model(cfg)
    model.load_state_dict(average_weights(ck["state_dict"], model.state_dict(), cfg.keep_init))
    loader = DataLoader(val_dataset(val_index), batch_size=cfg.batch_size)
    metrics = validate(model, loader, torch.device("cpu"), None, False, cfg.loss)
    log.info("%s averaged with %.2f of its start: %s (before: %s)", path, cfg.keep_init, metrics, ck["meta"]["metrics"])
    meta = {**ck["meta"], "metrics": metrics, "fine_tuned_metrics": ck["meta"]["metrics"],
            "keep_init": cfg.keep_init, "init_sha256": start_sha}
    return export_model({"state_dict": model.state_dict(), "meta": meta}, out_model, out_card, extra={
        "source_checkpoint": str(path), "keep_init": cfg.keep_init, "init": cfg.init, "init_sha256": start_sha,
        "fine_tuned_metrics": ck["meta"]["metrics"]})


def train_from_cache(cache_index: str | Path, val_index: str | Path, out_dir: str | Path,
                     train_config: TrainConfig, optimization: OptimizationConfig) -> dict[str, Any]:
    """Workflow entry point: datasets from two cache index files, then fit."""
    from wmrepair.data import CachedDataset

    tr, va = json.loads(Path(cache_index).read_text()), json.loads(Path(val_index).read_text())
    c = train_config
    train_ds = CachedDataset(Path(cache_index).parent, tr["size"], crop=c.crop, augment=True, seed=c.seed,
                             scale_range=c.scale_range)
    val_ds = val_dataset(val_index)
    with OptimizedTrainer(train_config=c, optimization=optimization, out_dir=out_dir,
                          data_hash=tr["content_hash"] + va["content_hash"]) as t:
        return t.fit(train_ds, val_ds)
