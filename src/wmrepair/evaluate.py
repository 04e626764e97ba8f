"""Evaluation against ground truth: mask IoU/F1 of the detector, PSNR/SSIM of the repair."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from wmrepair.hardware import usable_cpus
from wmrepair.imageio import list_images, read_image, read_mask
from wmrepair.losses import confusion, iou_f1


def _by_stem(d: Path | None) -> dict[str, Path]:
    if d is None or not Path(d).is_dir():
        return {}
    return {str(r.with_suffix("")): Path(d) / r for r in list_images(d)}


PSNR_CAP_DB = 100.0  # identical images: a finite figure (an unmarked image copied as it was)
WORSE_DB = 0.1  # a marked image "made worse": its PSNR against the clean image fell by more than this


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR of `a` against `b` (over the pixels `where` is true, when given), capped at PSNR_CAP_DB."""
    if where is not None:
        a, b = a[where], b[where]
    if np.array_equal(a, b):
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, float(peak_signal_noise_ratio(b, a, data_range=255)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255))


def bootstrap_ci(values: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of `statistic` over images resampled with replacement.

    `values` has one row per image; `statistic` maps a (n_boot, n_images, ...)
    resample to n_boot figures. A set of ~50 images gives a pooled IoU only to
    about +-0.1: one large tiled mark can hold a sixth of all mark pixels.
    """
    values = np.asarray(values)
    if len(values) < 2:
        return None
    idx = np.random.default_rng(seed).integers(0, len(values), (n_boot, len(values)))
    stats = statistic(values[idx])
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def pooled_iou(counts: np.ndarray) -> np.ndarray:
    """IoU of [tp, fp, fn] counts summed over the second-to-last axis: `losses.iou_f1`'s IoU for many sets at once."""
    tp, fp, fn = np.moveaxis(counts.sum(axis=-2), -1, 0).astype(np.float64)
    union = tp + fp + fn
    return np.where(union > 0, tp / np.maximum(union, 1), 1.0)


def evaluate(manifest: str | Path, input_root: str | Path, clean_dir: str | Path | None = None,
             mask_dir: str | Path | None = None, pred_masks_dir: str | Path | None = None,
             per_image_csv: str | Path | None = None) -> dict[str, Any]:
    """Metrics over the manifest's rows; ground truth matched by relative path without extension."""
    rows = pd.read_csv(manifest, keep_default_na=False)
    input_root = Path(input_root)
    cleans, masks = _by_stem(clean_dir), _by_stem(mask_dir)

    def score(r: Any) -> tuple[dict[str, Any], np.ndarray]:
        rel = Path(r.input).relative_to(input_root) if Path(r.input).is_relative_to(input_root) else Path(r.input).name
        stem = str(Path(rel).with_suffix(""))
        rec: dict[str, Any] = {"input": r.input, "status": r.status}
        c = np.zeros(3, np.int64)
        gt = masks.get(stem)
        if gt is not None:
            gt_mask = read_mask(gt)
            rec["marked"] = bool(gt_mask.any())
        clean = cleans.get(stem)
        # Decode only what some ground truth can judge: a run on your own folder has none.
        if r.status in ("ok", "clean", "skipped") and Path(r.output).exists() and (clean or gt):
            i, o = read_image(r.input).rgb, read_image(r.output).rgb
            rec["altered"] = not np.array_equal(i, o)
            if clean is not None:
                cl = read_image(clean).rgb
                rec.update(psnr_input=psnr(i, cl), psnr_output=psnr(o, cl), ssim_input=ssim(i, cl), ssim_output=ssim(o, cl))
            pm = Path(pred_masks_dir) / f"{rel}.mask.png" if pred_masks_dir else None
            if gt is not None and pm is not None and pm.exists():
                c = confusion(torch.from_numpy(read_mask(pm)), torch.from_numpy(gt_mask)).numpy()
                rec["mask_iou"], rec["mask_f1"] = iou_f1(c)
        return rec, c

    # SSIM/PSNR are numpy/scipy work that releases the GIL: threads use every core.
    with ThreadPoolExecutor(usable_cpus()) as pool:
        scored = list(pool.map(score, rows.itertuples()))
    per = [rec for rec, _ in scored]
    # [tp, fp, fn] of each marked image with a ground-truth mask: their sum is the figure, the
    # rows its interval. Unmarked images count in the harm figures instead.
    image_counts = np.array([c for rec, c in scored if "mask_iou" in rec and rec.get("marked")],
                            np.int64).reshape(-1, 3)
    all_counts = np.array([c for rec, c in scored if "mask_iou" in rec], np.int64).reshape(-1, 3).sum(axis=0)
    counts = image_counts.sum(axis=0)
    df = pd.DataFrame(per)
    # PSNR and SSIM describe the repair of marked images; an unmarked image's input equals its clean
    # picture (PSNR capped at 100 dB), so it would swamp the mean. Unmarked ones count in `harm`.
    known = "marked" in df and df["marked"].notna().any()
    graded = df[df["marked"].fillna(True).astype(bool)] if known else df

    def mean(col: str, frame: pd.DataFrame = graded) -> float | None:
        return float(frame[col].mean()) if col in frame and frame[col].notna().any() else None

    # Every key is always there (None where the ground truth for it is missing): readers
    # such as the report need not know which ground truth a run had.
    out: dict[str, Any] = {
        "n_images": len(rows),
        "n_ok": int((rows.status == "ok").sum()),
        "n_clean": int((rows.status == "clean").sum()),
        "n_skipped": int((rows.status == "skipped").sum()),
        "n_failed": int((rows.status == "failed").sum()),
        "psnr_input": mean("psnr_input"), "psnr_output": mean("psnr_output"),
        "ssim_input": mean("ssim_input"), "ssim_output": mean("ssim_output"),
        "psnr_gain_db": None, "psnr_gain_median_db": None, "psnr_gain_ci95_db": None,
        "mask_iou": None, "mask_f1": None, "mask_iou_ci95": None,
        "mask_iou_mean_per_image": mean("mask_iou"),  # marked images only
        "has_ground_truth": bool(cleans or masks),
    }
    if out["psnr_input"] is not None:
        out["psnr_gain_db"] = out["psnr_output"] - out["psnr_input"]
        gains = (graded["psnr_output"] - graded["psnr_input"]).dropna()
        out["psnr_gain_median_db"] = float(statistics.median(gains)) if len(gains) else None
        out["psnr_gain_ci95_db"] = bootstrap_ci(gains.to_numpy(), lambda g: g.mean(axis=-1))
    if counts.sum():
        out["mask_iou"], out["mask_f1"] = iou_f1(counts.tolist())
        out["mask_iou_ci95"] = bootstrap_ci(image_counts, pooled_iou)
    out.update(harm(df, all_counts))
    if per_image_csv:
        cols = ["input", "status", "marked", "altered", "psnr_input", "psnr_output", "ssim_input", "ssim_output",
                "mask_iou", "mask_f1"]
        df.reindex(columns=cols).to_csv(per_image_csv, index=False)
    return out


def harm(per_image: pd.DataFrame, counts: np.ndarray | None = None) -> dict[str, Any]:
    """What the repair damaged: unmarked images altered, marked images made worse, the worst PSNR change,
    and the share of predicted mask pixels that are not mark (`counts`: pooled [tp, fp, fn]); and what it
    left: marked images it did not change at all (a missed mark, the price of the image-level gate).

    An image is marked or not by its ground-truth mask; without masks these figures are None.
    """
    df = per_image
    out: dict[str, Any] = {"n_marked": None, "n_unmarked": None, "clean_altered": None, "clean_altered_share": None,
                           "marked_worse": None, "marked_worse_share": None, "worst_psnr_change_db": None,
                           "marked_untouched": None, "marked_untouched_share": None, "false_mark_share": None}
    if "marked" not in df or df["marked"].isna().all():
        return out
    judged = df[df["marked"].notna() & df.get("altered", pd.Series(index=df.index, dtype=object)).notna()]
    marked, unmarked = judged[judged["marked"].astype(bool)], judged[~judged["marked"].astype(bool)]
    out.update(n_marked=len(marked), n_unmarked=len(unmarked))
    if len(marked):
        out["marked_untouched"] = int((~marked["altered"].astype(bool)).sum())
        out["marked_untouched_share"] = out["marked_untouched"] / len(marked)
    if len(unmarked):
        out["clean_altered"] = int(unmarked["altered"].astype(bool).sum())
        out["clean_altered_share"] = out["clean_altered"] / len(unmarked)
    if "psnr_output" in df:
        change = (df["psnr_output"] - df["psnr_input"]).dropna()
        out["worst_psnr_change_db"] = float(change.min()) if len(change) else None
        m = marked.dropna(subset=["psnr_output"])
        if len(m):
            out["marked_worse"] = int((m["psnr_output"] < m["psnr_input"] - WORSE_DB).sum())
            out["marked_worse_share"] = out["marked_worse"] / len(m)
    if counts is not None and counts[:2].sum():
        out["false_mark_share"] = float(counts[1] / counts[:2].sum())
    return out


def write_metrics(metrics: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(metrics, indent=2))
