"""Side-by-side benchmarks: naive baselines vs the optimised paths, in one run, medians of repeats.

`wmrepair bench train|predict|repair|all` prints a table and writes JSON under
`--out`. Everything runs on data synthesised on the spot, so figures are
comparable between machines; memory figures come from child processes so one
variant's allocations never inflate another's.
"""

from __future__ import annotations

import copy
import functools
import json
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

# The train bench's samples: random crops of this side from the 256-px images.
TRAIN_CROP = 128


def _median_rate(fn, n_items: int, repeats: int) -> tuple[float, list[float]]:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(n_items / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def _rss_anon_mb(pid: int | None = None) -> float:
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakRSS:
    """Peak RSS (and anonymous RSS) of this process, sampled in a thread."""

    def __init__(self, interval: float = 0.01) -> None:
        import threading

        self.interval = interval
        self.peak = self.peak_anon = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        p = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, p.memory_info().rss / 2**20)
            self.peak_anon = max(self.peak_anon, _rss_anon_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()


def _in_child(fn, *args: Any) -> dict[str, Any]:
    """Run fn(*args) -> dict in a fresh process (spawn) and return its result."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def _synth(tmp: Path, n_train: int, n_test: int = 0, sizes: list[tuple[int, int]] | None = None) -> Path:
    from wmrepair.synth import SynthConfig, synthesize

    cfg = SynthConfig(seed=123, n_train=n_train, n_val=1, n_test=max(1, n_test))
    if sizes:
        cfg.test_sizes = sizes
    synthesize(tmp, cfg, progress=False)
    return tmp


def peak_matmul_gflops(dtype: str = "bfloat16", n: int = 2048, repeats: int = 5) -> float:
    import torch

    a = torch.randn(n, n).to(getattr(torch, dtype))
    b = torch.randn(n, n).to(getattr(torch, dtype))
    a @ b
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


# ---------------------------------------------------------------- train ----
def _memory_child(kind: str, data: str, cache: str, size: int) -> dict[str, Any]:
    """One pass over the training data as each pipeline would hold it."""
    import torch  # noqa: F401 - baseline includes torch, as in training

    from wmrepair.cache import find_pairs
    from wmrepair.data import CachedDataset, InMemoryDataset

    base, base_anon = psutil.Process().memory_info().rss / 2**20, _rss_anon_mb()
    with PeakRSS() as peak:
        if kind == "naive_in_ram":
            ds = InMemoryDataset(find_pairs(data), size=size, augment=True, crop=TRAIN_CROP)
        else:
            ds = CachedDataset(cache, size, augment=True, crop=TRAIN_CROP)
        for i in range(len(ds)):
            ds[i]
    return {"baseline_rss_mb": base, "peak_rss_mb": peak.peak, "pipeline_rss_mb": peak.peak - base,
            "peak_anon_mb": peak.peak_anon, "pipeline_anon_mb": peak.peak_anon - base_anon}


def bench_train(out: Path, quick: bool = False) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from wmrepair.cache import build_cache, find_pairs
    from wmrepair.data import CachedDataset, FileDataset
    from wmrepair.device import autocast_for, to_input
    from wmrepair.losses import segmentation_loss
    from wmrepair.model import UNet, UNetConfig
    from wmrepair.optimization import OptimizationConfig, adapt_to_hardware

    n = 96 if quick else 600
    steps, repeats = (4, 2) if quick else (12, 3)
    bs = 16
    res: dict[str, Any] = {"images": n, "image_side": 256, "crop": TRAIN_CROP, "batch_size": bs, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _synth(tmp / "data", n)
        data = tmp / "data/train"
        build_cache(data, tmp / "cache", size=256, progress=False)
        res["data_mb"] = round(n * 256 * 256 * 4 / 2**20, 1)  # uint8 RGB + mask

        # Data loading per epoch: decode from files vs read from the cache (same
        # samples, same shuffled DataLoader batches as training, main process).
        def epoch(ds):
            loader = DataLoader(ds, batch_size=bs, shuffle=True, generator=torch.Generator().manual_seed(0))
            return lambda: [b for b in loader]

        files = FileDataset(find_pairs(data), 256, augment=False)
        cached = CachedDataset(tmp / "cache", 256, augment=False)
        f_rate, _ = _median_rate(epoch(files), n, repeats)
        c_rate, _ = _median_rate(epoch(cached), n, repeats)
        files_aug = FileDataset(find_pairs(data), 256, crop=TRAIN_CROP, augment=True)
        cached_aug = CachedDataset(tmp / "cache", 256, crop=TRAIN_CROP, augment=True)
        fa_rate, _ = _median_rate(epoch(files_aug), n, repeats)
        ca_rate, _ = _median_rate(epoch(cached_aug), n, repeats)
        res["data_loading"] = {
            "epoch_s_decode_files": n / f_rate, "epoch_s_cache": n / c_rate, "ratio": c_rate / f_rate,
            "with_augmentation": {"epoch_s_decode_files": n / fa_rate, "epoch_s_cache": n / ca_rate,
                                  "ratio": ca_rate / fa_rate},
        }

        # Training throughput, same model init, same samples.
        def trainer(ds, amp, cl, compile_model=False):
            torch.manual_seed(0)
            model = UNet(UNetConfig())
            if cl:
                model = model.to(memory_format=torch.channels_last)
            fwd = torch.compile(model) if compile_model else model
            opt = torch.optim.AdamW(model.parameters(), 1e-3)
            loader = DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True,
                                generator=torch.Generator().manual_seed(0))
            dev = torch.device("cpu")

            def run():
                it = iter(loader)
                for _ in range(steps):
                    x, y = next(it)
                    x = to_input(x, dev, cl)
                    with autocast_for(dev, amp):
                        logits = fwd(x)
                    loss = segmentation_loss(logits, y.float())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

            run()  # warm-up (and compile)
            return run

        variants = {"naive": (FileDataset(find_pairs(data), 256, crop=TRAIN_CROP), None, False, False)}
        for level in ("conservative", "balanced", "aggressive"):
            eff = adapt_to_hardware(OptimizationConfig.from_level(level))
            variants[level] = (CachedDataset(tmp / "cache", 256, crop=TRAIN_CROP), eff.model.amp_dtype,
                               eff.model.channels_last, eff.model.compile_model and not quick)
        res["throughput"] = {}
        for name, (ds, amp, cl, comp) in variants.items():
            try:
                rate, rates = _median_rate(trainer(ds, amp, cl, comp), steps * bs, repeats)
            except Exception as exc:  # e.g. torch.compile unavailable: say so, keep going
                res["throughput"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            res["throughput"][name] = {"samples_per_s": rate, "repeats": rates, "amp": amp,
                                       "channels_last": cl, "compile": comp}
        naive = res["throughput"]["naive"]["samples_per_s"]
        for v in res["throughput"].values():
            if "samples_per_s" in v:
                v["ratio_vs_naive"] = v["samples_per_s"] / naive

        res["memory"] = {k: _in_child(_memory_child, k, str(data), str(tmp / "cache"), 256)
                         for k in ("naive_in_ram", "cached_memmap")}
        m = res["memory"]
        res["memory"]["pipeline_reduction"] = 1 - m["cached_memmap"]["pipeline_rss_mb"] / max(1e-6, m["naive_in_ram"]["pipeline_rss_mb"])
        res["memory"]["total_reduction"] = 1 - m["cached_memmap"]["peak_rss_mb"] / m["naive_in_ram"]["peak_rss_mb"]
    _save(out, "train", res)
    t = res["throughput"]
    print(f"train bench: {n} images of 256 px ({res['data_mb']} MB decoded), {res['crop']}-px crops, batch {bs}, {res['threads']} threads")
    for k, v in t.items():
        if "samples_per_s" in v:
            print(f"  {k:13s} {v['samples_per_s']:7.1f} samples/s  x{v['ratio_vs_naive']:.2f} vs naive"
                  f"  (amp={v['amp']}, channels_last={v['channels_last']}, compile={v['compile']})")
        else:
            print(f"  {k:13s} failed: {v['error']}")
    d = res["data_loading"]
    print(f"  data loading / epoch: files {d['epoch_s_decode_files']:.2f}s, cache {d['epoch_s_cache']:.3f}s"
          f" -> x{d['ratio']:.1f}; with augmentation x{d['with_augmentation']['ratio']:.1f}")
    for k in ("naive_in_ram", "cached_memmap"):
        v = m[k]
        print(f"  {k:14s} peak RSS {v['peak_rss_mb']:.0f} MB (pipeline +{v['pipeline_rss_mb']:.0f} MB,"
              f" anon +{v['pipeline_anon_mb']:.0f} MB)")
    print(f"  data-pipeline RSS {100 * m['pipeline_reduction']:.0f}% lower; whole-process peak"
          f" {100 * m['total_reduction']:.0f}% lower")
    return res


# -------------------------------------------------------------- predict ----
PREDICT_ROWS = ("naive", "conservative", "balanced", "aggressive", "onnxruntime", "onnxruntime_tensorrt")


def _onnx_predictors(model: Any, res: dict[str, Any]) -> dict[str, Any]:
    """The ONNX Runtime rows of `bench predict` (its default provider; TensorRT where installed)."""
    from wmrepair import onnxrt
    from wmrepair.optimization import OptimizationConfig
    from wmrepair.predict import OptimizedWatermarkPredictor, PredictConfig

    if not onnxrt.available():
        res["onnxruntime"] = {"error": "onnxruntime is not installed (pip install onnxruntime)"}
        return {}
    out = {}
    for name, tensorrt in (("onnxruntime", False), ("onnxruntime_tensorrt", True)):
        if tensorrt and "TensorrtExecutionProvider" not in onnxrt.providers_available():
            res[name] = {"error": "no TensorRT provider in this onnxruntime"}
            continue
        opt = OptimizationConfig.from_level("balanced")
        opt.model.backend, opt.model.use_tensorrt = "onnxruntime", tensorrt
        p = OptimizedWatermarkPredictor(copy.deepcopy(model), opt, PredictConfig(flip_tta=False, scales=(1.0,)))
        p.warmup()
        res[name] = {"amp": p.amp_dtype, "channels_last": False, "int8": False, "compile": False,
                     "providers": p._fwd.providers}
        out[name] = p
    return out


def bench_predict(out: Path, quick: bool = False, model_path: str | None = None) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from wmrepair.checkpoints import load_model
    from wmrepair.losses import confusion, iou_f1
    from wmrepair.model import UNet, UNetConfig
    from wmrepair.optimization import OptimizationConfig
    from wmrepair.predict import OptimizedWatermarkPredictor, PredictConfig
    from wmrepair.quantize import calibration_images

    n, repeats = (16, 2) if quick else (64, 5)
    torch.manual_seed(0)
    # A trained model makes the mask agreement below meaningful; the timing is the same either way.
    model = load_model(model_path)[0] if model_path and Path(model_path).exists() else UNet(UNetConfig()).eval()
    # Synthetic watermarked images (not the int8 calibration set: another seed).
    images = list(calibration_images(n, seed=99).mul(255).round().byte().permute(0, 2, 3, 1).numpy())
    with FlopCounterMode(display=False) as fc:
        model(torch.rand(1, 3, 256, 256))
    flops = fc.get_total_flops()  # per 256x256 image
    peak = {"bfloat16": peak_matmul_gflops("bfloat16"), "float32": peak_matmul_gflops("float32")}
    res: dict[str, Any] = {"images": n, "side": 256, "gflop_per_image": flops / 1e9, "peak_gflops": peak}

    @torch.no_grad()
    def naive():
        out = []
        for im in images:  # the naive "before": one image at a time, fp32, NCHW
            x = torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255
            out.append(torch.sigmoid(model(x))[0, 0].numpy())
        return out

    runners: dict[str, Any] = {"naive": naive}
    res["naive"] = {}
    for level in ("conservative", "balanced", "aggressive"):
        opt = OptimizationConfig.from_level(level)
        try:
            # No flip or scale TTA: the same forward passes as the naive loop (TTA multiplies them for quality).
            p = OptimizedWatermarkPredictor(copy.deepcopy(model), opt, PredictConfig(flip_tta=False, scales=(1.0,)),
                                            optimized=level != "conservative")
            p.warmup()
            runners[level] = lambda p=p: p.predict_proba(images)
        except Exception as exc:
            res[level] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        res[level] = {"amp": p.amp_dtype, "channels_last": p.channels_last, "int8": p.int8, "compile": p.compiled}
    for name, p in _onnx_predictors(model, res).items():
        runners[name] = lambda p=p: p.predict_proba(images)
    # Repeats interleaved (naive, conservative, ... , naive, ...): a noisy neighbour
    # slows every variant alike instead of whichever happened to run at the time.
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for k, fn in runners.items():
            rates[k].append(_median_rate(fn, n, 1)[0])
    for k, r in rates.items():
        res[k].update(images_per_s=statistics.median(r), repeats=r)
    # How far each level's masks (p > 0.5) are from the naive fp32 ones, as IoU over all pixels.
    ref = torch.from_numpy(np.stack(naive()) > 0.5)
    for k, fn in runners.items():
        m = torch.from_numpy(np.stack(fn()) > 0.5)
        res[k]["mask_iou_vs_naive"] = iou_f1(confusion(m, ref))[0]
    res["model"] = model_path if model_path and Path(model_path).exists() else "untrained UNet"
    for k in PREDICT_ROWS:
        v = res.get(k, {})
        if "images_per_s" not in v:
            continue
        v["ms_per_image"] = 1000 / v["images_per_s"]
        v["ratio_vs_naive"] = v["images_per_s"] / res["naive"]["images_per_s"]
        v["gflops"] = v["images_per_s"] * flops / 1e9
        v["fraction_of_bf16_peak"] = v["gflops"] / peak["bfloat16"]
    _save(out, "predict", res)
    print(f"predict bench: {n} synthetic images 256x256, {flops / 1e9:.2f} GFLOP/image, model: {res['model']}; "
          f"matmul peak bf16 {peak['bfloat16']:.0f} GFLOP/s, fp32 {peak['float32']:.0f} GFLOP/s")
    for k in PREDICT_ROWS:
        v = res.get(k, {})
        if "images_per_s" in v:
            kind = "int8" if v.get("int8") else (v.get("amp") or "fp32")
            print(f"  {k:13s} {v['images_per_s']:7.1f} img/s {v['ms_per_image']:7.1f} ms/img  x{v['ratio_vs_naive']:.2f}"
                  f"  {v['gflops']:.0f} GFLOP/s = {100 * v['fraction_of_bf16_peak']:.0f}% of bf16 matmul peak"
                  f"  [{kind}; masks vs naive IoU {v['mask_iou_vs_naive']:.3f}]")
        elif "error" in v:
            print(f"  {k:13s} not measured: {v['error']}")
    return res


# --------------------------------------------------------------- repair ----
def _repair_child(kind: str, model: str, images: str, masks: str, out: str,
                  inpaint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Repair `images` in this (fresh) process: IOPaint's batch loop, or our engine with `inpaint`."""
    from wmrepair.imageio import list_images

    n = len(list_images(images))
    trace: list[tuple[int, float]] = []
    with PeakRSS(0.05) as peak:
        t0 = time.perf_counter()
        if kind == "iopaint_run":
            from wmrepair.inpaint import _quiet_loguru

            _quiet_loguru()
            from iopaint.batch_processing import batch_inpaint  # what `iopaint run` calls

            config = None
            if inpaint:  # IOPaint settings other than its defaults, as `iopaint run --config` takes them
                config = Path(out).with_suffix(".config.json")
                config.write_text(json.dumps(inpaint))
            batch_inpaint("cv2", "cpu", Path(images), Path(masks), Path(out), config=config)
        else:
            from wmrepair.optimization import OptimizationConfig
            from wmrepair.repair import RepairConfig, build_engine

            eng = build_engine(model, OptimizationConfig(), repair_config=RepairConfig(skip_existing=False),
                               inpaint=inpaint)
            eng.run(images, out, progress=False)
            trace = eng.rss_trace
        dt = time.perf_counter() - t0
    return {"images": n, "seconds": dt, "images_per_s": n / dt, "peak_rss_mb": peak.peak, "trace": trace}


# IOPaint's cv2 defaults (NS, radius 4) for both sides, and no FSR texture fill on ours, so the
# pipelines differ, not the inpainting. Ours keeps hd_strategy "auto" (Original for cv2);
# `iopaint run` runs with its default (Crop) and again with Original, both printed.
IOPAINT_CV2_DEFAULTS = {"model": "cv2", "cv2_radius": 4, "cv2_flag": "INPAINT_NS", "texture_fill": None}


def bench_repair(out: Path, quick: bool = False, model: str | None = None) -> dict[str, Any]:
    import shutil

    from PIL import Image

    from wmrepair.checkpoints import save_model
    from wmrepair.imageio import list_images, read_image
    from wmrepair.model import UNet, UNetConfig
    from wmrepair.predict import OptimizedWatermarkPredictor
    from wmrepair.repair import postprocess_mask

    n = 8 if quick else 32
    long_n = 200 if quick else 2000
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if model is None or not Path(model).exists():
            model = str(tmp / "model.pt")
            save_model(UNet(UNetConfig()), model)
            res["model"] = "untrained UNet (no trained model given)"
        else:
            res["model"] = str(model)
        _synth(tmp / "d", 1, n, sizes=[(320, 240), (640, 480), (800, 600), (1024, 768), (1280, 960)])
        images = tmp / "d/test/watermarked"  # mixed sizes, JPEG and PNG
        # Masks for `iopaint run`: the ones our detector produces, in its naming (stem.png).
        masks = tmp / "masks"
        masks.mkdir()
        pred = OptimizedWatermarkPredictor(model)
        for rel in list_images(images):
            prob = pred.predict_proba([read_image(images / rel).rgb])[0]
            Image.fromarray(postprocess_mask(prob).astype(np.uint8) * 255).save(masks / f"{rel.stem}.png")
        res["ours_full_pipeline"] = _in_child(_repair_child, "ours", model, str(images), str(masks), str(tmp / "o1"),
                                              IOPAINT_CV2_DEFAULTS)
        res["ours_full_pipeline"].pop("trace")
        res["iopaint_run_inpaint_only"] = _in_child(_repair_child, "iopaint_run", model, str(images), str(masks), str(tmp / "o2"))
        res["iopaint_run_inpaint_only"].pop("trace")
        res["iopaint_run_original"] = _in_child(_repair_child, "iopaint_run", model, str(images), str(masks),
                                                str(tmp / "o4"), {"hd_strategy": "Original"})
        res["iopaint_run_original"].pop("trace")
        res["ratio"] = res["ours_full_pipeline"]["images_per_s"] / res["iopaint_run_inpaint_only"]["images_per_s"]
        res["ratio_vs_original"] = res["ours_full_pipeline"]["images_per_s"] / res["iopaint_run_original"]["images_per_s"]
        res["output_mb"] = {"ours": _mb(tmp / "o1"), "iopaint_run": _mb(tmp / "o2"), "input": _mb(images)}

        # RSS over a long run: many small images in one chunk.
        small = tmp / "small"
        small.mkdir()
        src = sorted(images.iterdir())[0]
        im = Image.open(src).convert("RGB").resize((96, 72))
        for i in range(long_n):
            im.save(small / f"s{i:05d}.png")
        trace = _in_child(_repair_child, "ours", model, str(small), "", str(tmp / "o3"))["trace"]
        first = next(r for d, r in trace if d >= long_n // 10)
        # RSS is sampled after every group of images and swings between samples, so
        # also compare medians of windows around image 200 and the last 200 images.
        early = statistics.median(r for d, r in trace if long_n // 20 <= d <= long_n * 3 // 20)
        late = statistics.median(r for d, r in trace if d > long_n * 9 // 10)
        res["long_run"] = {"images": long_n, "rss_at_10pct_mb": first, "rss_at_end_mb": trace[-1][1],
                           "growth": trace[-1][1] / first - 1, "median_early_mb": early, "median_late_mb": late,
                           "growth_of_medians": late / early - 1, "max_mb": max(r for _, r in trace),
                           "trace": trace[:: max(1, len(trace) // 50)]}
        shutil.rmtree(small)
    _save(out, "repair", res)
    o, i, io = res["ours_full_pipeline"], res["iopaint_run_inpaint_only"], res["iopaint_run_original"]
    print(f"repair bench: {n} mixed-size JPEG/PNG images, cv2 NS radius 4, model: {res['model']}")
    print(f"  ours (detect + inpaint)                 {o['images_per_s']:6.2f} img/s  peak RSS {o['peak_rss_mb']:.0f} MB")
    print(f"  iopaint run (inpaint only, defaults)    {i['images_per_s']:6.2f} img/s  peak RSS {i['peak_rss_mb']:.0f} MB")
    print(f"  iopaint run (inpaint only, Original)    {io['images_per_s']:6.2f} img/s  peak RSS {io['peak_rss_mb']:.0f} MB")
    print(f"  ratio x{res['ratio']:.2f} (x{res['ratio_vs_original']:.2f} vs Original); output MB ours {res['output_mb']['ours']:.1f}, iopaint {res['output_mb']['iopaint_run']:.1f}"
          f" (input {res['output_mb']['input']:.1f})")
    lr = res["long_run"]
    print(f"  long run {long_n} images: RSS {lr['rss_at_10pct_mb']:.0f} MB after {long_n // 10}, "
          f"{lr['rss_at_end_mb']:.0f} MB at the end ({100 * lr['growth']:+.1f}%); medians of windows "
          f"{lr['median_early_mb']:.0f} -> {lr['median_late_mb']:.0f} MB ({100 * lr['growth_of_medians']:+.1f}%), "
          f"max {lr['max_mb']:.0f} MB")
    return res


def _mb(d: Path) -> float:
    return sum(p.stat().st_size for p in Path(d).rglob("*") if p.is_file() and p.suffix != ".csv") / 2**20


def _save(out: Path, name: str, res: dict[str, Any]) -> None:
    import platform

    import torch

    out.mkdir(parents=True, exist_ok=True)
    res["machine"] = {"cpus": os.cpu_count(), "torch": str(torch.__version__), "python": platform.python_version(),
                      "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    (out / f"{name}.json").write_text(json.dumps(res, indent=2, default=float))


# ----------------------------------------------------------------- real ----
def bench_real(out: Path, quick: bool = False, model: str | None = None, photo_set: str = "test") -> dict[str, Any]:
    """Detection and repair on a real-photo set (realphotos.py), with the harm figures, per style.

    `test` is the benchmark the docs report; `dev` (other packages, other fonts) is where defaults are chosen.
    """
    import pandas as pd

    from wmrepair import realphotos
    from wmrepair.evaluate import evaluate
    from wmrepair.repair import RepairConfig, build_engine

    if model is None or not Path(model).exists():
        raise FileNotFoundError("bench real needs a trained model: run `make run` first, or pass --model")
    realphotos.ensure_packages(photo_set)
    name = "real" if photo_set == "test" else f"real_{photo_set}"
    data = out / name / ("data_quick" if quick else "data")
    if not (data / "styles.json").exists():
        realphotos.build(data, limit=8 if quick else None, name=photo_set)
    styles = json.loads((data / "styles.json").read_text())
    run = out / name / "run"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    eng = build_engine(model, repair_config=RepairConfig(skip_existing=False))
    eng.run(data / "watermarked", run / "images", manifest=run / "manifest.csv", masks_dir=run / "masks",
            progress=False)
    seconds = time.perf_counter() - t0
    metrics = evaluate(run / "manifest.csv", data / "watermarked", data / "clean", data / "masks", run / "masks",
                       per_image_csv=run / "per_image.csv")
    per_style = realphotos.by_style(pd.read_csv(run / "per_image.csv"), styles)
    res = {"model": str(model), "set": photo_set, "images": metrics["n_images"], "seconds": seconds, "overall": metrics,
           "per_style": per_style}
    print(f"real-photo bench: {metrics['n_images']} images ({metrics['n_marked']} marked, {metrics['n_unmarked']} "
          f"unmarked) from Debian wallpapers ({photo_set} set), model {model}, {seconds:.0f} s")
    print(f"  mask IoU (marked) {_fmt(metrics['mask_iou'], '.3f')}; unmarked altered {metrics['clean_altered']}/"
          f"{metrics['n_unmarked']}; marked made worse {metrics['marked_worse']}/{metrics['n_marked']}; "
          f"marked left untouched {metrics['marked_untouched']}/{metrics['n_marked']}; "
          f"worst PSNR change {_fmt(metrics['worst_psnr_change_db'], '+.2f')} dB; "
          f"predicted mask pixels not mark {_fmt(metrics['false_mark_share'], '.0%')}")
    print(f"  {'style':7s} {'n':>3s} {'altered':>8s} {'worse':>6s} {'IoU':>6s} {'PSNR in -> out':>16s} {'SSIM in -> out':>16s}")
    for style, r in per_style.items():
        altered = f"{r['clean_altered']}/{r['n_unmarked']}" if r["n_unmarked"] else "-"
        worse = f"{r['marked_worse']}/{r['n_marked']}" if r["n_marked"] else "-"
        print(f"  {style:7s} {r['n']:3d} {altered:>8s} {worse:>6s} {_fmt(r['mask_iou'], '.3f'):>6s} "
              f"{_fmt(r['psnr_input'], '.2f'):>7s} -> {_fmt(r['psnr_output'], '.2f'):>6s} "
              f"{_fmt(r['ssim_input'], '.4f'):>7s} -> {_fmt(r['ssim_output'], '.4f'):>6s}")
    _save(out, name, res)
    return res


def bench_collection(out: Path, quick: bool = False, model: str | None = None, photo_set: str = "test") -> dict[str, Any]:
    """Collection mode on real-photo backgrounds sharing one stamp (realphotos.build_collection).

    Per case (logo or tiled stamp; PNG or JPEG q90): PSNR inside the mark over an
    inpainting oracle given the true mask (dilated, cv2), whole-image PSNR over the
    input, stamped images the stamp was not applied to, and plain images (no stamp)
    it was applied to or that came out changed.
    """
    import cv2
    import pandas as pd

    from wmrepair import realphotos
    from wmrepair.evaluate import psnr
    from wmrepair.imageio import read_image
    from wmrepair.repair import RepairConfig, build_engine
    from wmrepair.stamps import estimate_folder

    realphotos.ensure_packages(photo_set)
    root = out / f"collection_{photo_set}"
    eng = build_engine(model, repair_config=RepairConfig(skip_existing=False))  # each case sets its stamps
    cases = {}
    # The four cases of one size, then a centred stamp on pictures of several sizes (placed by matching).
    plan = [(kind, fmt, False) for kind in realphotos.COLLECTION_KINDS for fmt in ("png", "jpg")]
    for kind, fmt, mixed in plan + [("logo", "jpg", True), ("tiled", "png", True)]:
        case = f"{kind}_{fmt}" + ("_sizes" if mixed else "")
        data = root / case / ("data_quick" if quick else "data")
        if not (data / "layout.json").exists():
            realphotos.build_collection(data, kind, fmt, photo_set, limit=20 if quick else None, mixed=mixed)
        run = root / case / "run"
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.perf_counter()
        stamps = estimate_folder(data / "watermarked", eng.p, out_dir=run / "stamps")
        t_est = time.perf_counter() - t0
        eng.use_stamps(stamps)
        eng.run(data / "watermarked", run / "images", manifest=run / "manifest.csv", progress=False)
        man = pd.read_csv(run / "manifest.csv")
        inside, whole, unmatched, plain_stamped, plain_changed = [], [], 0, 0, 0
        for row in man.itertuples():
            stem = Path(row.input).stem
            clean = read_image(data / "clean" / f"{stem}.png").rgb
            marked = read_image(row.input).rgb
            stamped_here = str(row.method).startswith("stamp")
            if stem.startswith("p_"):
                plain_stamped += stamped_here
                plain_changed += Path(row.output).read_bytes() != Path(row.input).read_bytes()
                continue
            if not stamped_here:
                unmatched += 1
                continue
            repaired = read_image(row.output).rgb
            truth, oracle_mask = _collection_truth(photo_set, kind, marked.shape[:2], mixed)
            oracle = cv2.inpaint(marked, oracle_mask, 3, cv2.INPAINT_TELEA)
            inside.append(psnr(repaired, clean, truth) - psnr(oracle, clean, truth))
            whole.append(psnr(repaired, clean) - psnr(marked, clean))
        layout = json.loads((data / "layout.json").read_text())
        cases[f"{kind} {fmt}" + (" sizes" if mixed else "")] = {
            "stamps": len(stamps), "support": [s_.support for s_ in stamps], "estimate_s": t_est,
            "stamped": layout["stamped"], "plain": layout["plain"], "stamped_not_matched": unmatched,
            "inside_gain_over_oracle_db": float(np.mean(inside)) if inside else None,
            "whole_image_gain_db": float(np.mean(whole)) if whole else None,
            "plain_given_the_stamp": plain_stamped, "plain_changed": plain_changed}
    print(f"collection mode on real-photo backgrounds ({photo_set} set), model {model}")
    print(f"  {'case':15s} {'stamps':>6s} {'inside vs oracle':>17s} {'whole image':>12s} {'not matched':>12s} "
          f"{'plain stamped':>14s} {'plain changed':>14s}")
    for case, r in cases.items():
        print(f"  {case:15s} {r['stamps']:6d} {_fmt(r['inside_gain_over_oracle_db'], '+.1f'):>14s} dB "
              f"{_fmt(r['whole_image_gain_db'], '+.1f'):>9s} dB {r['stamped_not_matched']:5d}/{r['stamped']:<6d}"
              f"{r['plain_given_the_stamp']:7d}/{r['plain']:<6d} {r['plain_changed']:7d}/{r['plain']:<6d}")
    res = {"model": str(model), "set": photo_set, "cases": cases}
    _save(out, f"collection_{photo_set}", res)
    return res


@functools.lru_cache(maxsize=8)
def _collection_truth(photo_set: str, kind: str, shape: tuple[int, int], mixed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Where a collection's stamp is on an image of `shape`, and the oracle's mask (that dilated by 2 px)."""
    import cv2

    from wmrepair import realphotos

    alpha, _ = realphotos.collection_stamp(photo_set, kind, shape[::-1] if mixed else None)
    truth = alpha > 0.02
    return truth, cv2.dilate(truth.astype(np.uint8), np.ones((5, 5), np.uint8)) * 255


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None or v != v else format(v, spec)


def main(what: str, out_dir: str | Path = "benchmarks/out", quick: bool = False, model: str | None = None,
         photo_set: str = "test") -> int:
    out = Path(out_dir)
    from wmrepair.shipped import SHIPPED, SHIPPED_MODEL

    if model == SHIPPED:
        model = str(SHIPPED_MODEL)
    if model is None:  # what `make run` trained, else the shipped detector
        trained = Path("results/model/model.pt")
        found = trained if trained.exists() else SHIPPED_MODEL if SHIPPED_MODEL.exists() else None
        model = str(found) if found else None
    if what in ("real", "collection"):
        (bench_real if what == "real" else bench_collection)(out, quick, model, photo_set)
        return 0
    for name in (["train", "predict", "repair"] if what == "all" else [what]):
        if name == "repair":
            bench_repair(out, quick, model)
        elif name == "predict":
            bench_predict(out, quick, model)
        else:
            bench_train(out, quick)
    return 0
