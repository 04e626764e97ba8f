"""OptimizedWatermarkPredictor: batched, tiled watermark detection.

Each image is scaled so its long side is at most `max_side` (384: the scale the
model was trained at; 0 keeps native resolution), then cut into square tiles
from a few fixed sizes ("buckets"). Tiles of all images in a call are batched
together per bucket, so the model only ever sees a handful of shapes: batching
works across mixed image sizes and torch.compile does not recompile per image.
Overlapping tiles are blended with a linear ramp, so there are no seams, and a
4000x3000 photo is never squashed to the tile size nor held as one huge tensor.
With `scales`, a large image is detected at a few neighbouring long sides and
the probabilities averaged (test-time augmentation, like the mirrored tiles).
`gated_proba` adds the image-level decisions repair acts on: the `gate`, and a
second look at the top and bottom margins at twice the scale, where small
copyright lines sit (cut into low, wide tiles).
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from wmrepair.batching import AdaptiveBatchProcessor
from wmrepair.checkpoints import load_model
from wmrepair.config import PredictConfig, check_scales  # noqa: F401 - part of this module's API
from wmrepair.device import resolve_device
from wmrepair.memory import MemoryManager
from wmrepair.model import UNet, fold_batchnorm, fold_space_to_depth
from wmrepair.optimization import OptimizationConfig, adapt_to_hardware
from wmrepair.profiling import PerformanceAnalyzer
from wmrepair.quantize import quantize_int8

log = logging.getLogger(__name__)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets covering [0, length) with at least `overlap` between neighbours."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def ramp_window(tile: int, overlap: int, width: int | None = None) -> np.ndarray:
    """2-D blending weights (tile x width, default square): 1 inside, a linear ramp over `overlap` pixels at the edges."""
    def ramp(n: int) -> np.ndarray:
        w = np.ones(n, np.float32)
        if 0 < overlap < n:
            r = np.linspace(1.0 / (overlap + 1), 1.0, overlap, dtype=np.float32)
            w[:overlap] = r
            w[-overlap:] = r[::-1]
        return w

    return np.outer(ramp(tile), ramp(width or tile))


@dataclass
class _Plan:
    index: int
    orig_hw: tuple[int, int]
    work: np.ndarray  # padded working image (H', W', 3) uint8
    work_hw: tuple[int, int]  # unpadded working size
    tile: tuple[int, int]  # (height, width): square, or a strip's
    starts: list[tuple[int, int]]


class OptimizedWatermarkPredictor:
    """Loads a model once and predicts watermark probabilities for lists of RGB uint8 images.

    `model`: a wmrepair .pt file, a torch module, or None / "shipped" for the
    detector shipped in the package.
    """

    def __init__(self, model: str | Path | torch.nn.Module | None = None, optimization: OptimizationConfig | None = None,
                 predict_config: PredictConfig | None = None, device: str = "auto", threads: int = 0,
                 analyzer: PerformanceAnalyzer | None = None, memory: MemoryManager | None = None,
                 optimized: bool = True, verify_model: bool = True) -> None:
        self.cfg = predict_config or PredictConfig()
        self.opt = adapt_to_hardware(optimization or OptimizationConfig())
        self.device = resolve_device(device)
        if threads > 0:
            from wmrepair.hardware import usable_cpus

            torch.set_num_threads(min(threads, usable_cpus()))
        model_file: Path | None = None
        if isinstance(model, torch.nn.Module):
            self.model, self.meta = model.eval(), {}
        else:  # None or "shipped": the detector shipped in the package
            from wmrepair.shipped import resolve_model

            model_file = resolve_model(model)
            self.model, self.meta = load_model(model_file, verify=verify_model)
        self.optimized = optimized
        m = self.opt.model
        self.backend = m.backend if optimized else "torch"
        self.int8 = bool(optimized and m.int8 and self.device.type == "cpu" and isinstance(self.model, UNet))
        int8_model = quantize_int8(self.model) if self.int8 else None  # from the unfolded model: FX fuses conv+BN+ReLU
        if optimized:  # inference only from here (on a copy; the caller's model stays): BN folded into
            # the convs, the space-to-depth reshuffle folded into the first conv.
            self.model = fold_batchnorm(copy.deepcopy(self.model))
            if isinstance(self.model, UNet):
                fold_space_to_depth(self.model)
        self.amp_dtype = m.amp_dtype if optimized and not self.int8 else None
        if self.device.type == "cpu" and self.amp_dtype == "float16":
            self.amp_dtype = None
        self.channels_last = m.channels_last and optimized
        self.model = self.model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.multiple = getattr(self.model, "multiple", 1)
        self.buckets = sorted({-(-b // self.multiple) * self.multiple for b in self.cfg.buckets})
        # Freezing lets Inductor treat the weights as constants: on CPU it pre-packs them
        # for oneDNN and fuses the pointwise ops (measured 1.3-1.5x over eager bf16).
        self.compiled = bool(m.compile_model and optimized and int8_model is None)
        if self.backend == "onnxruntime":
            self._fwd = self._onnx_runner(model_file, threads)
            self.amp_dtype, self.channels_last = None, False  # the session takes fp32 NCHW
        elif int8_model is not None:
            self._fwd = int8_model
        elif self.compiled:
            self._fwd = torch.compile(self.model, dynamic=False, options={"freezing": True})
        else:
            self._fwd = self.model
        self.memory = memory or MemoryManager(self.opt.memory, str(self.device))
        self.batcher: AdaptiveBatchProcessor = AdaptiveBatchProcessor(self.opt.batch, self.memory)
        self.analyzer = analyzer or PerformanceAnalyzer()
        self.analyzer.note_settings(amp_dtype=self.amp_dtype, channels_last=self.channels_last, int8=self.int8)
        self.tiles_run = 0

    def _onnx_runner(self, model_file: Path | None, threads: int) -> Any:
        from wmrepair import onnxrt
        from wmrepair.checkpoints import sha256_file

        sha = sha256_file(model_file) if model_file else onnxrt.weights_sha256(self.model)
        path = onnxrt.export(self.model, onnxrt.cache_path(model_file, sha), self.multiple)
        fp16 = self.opt.model.amp_dtype == "float16"
        return onnxrt.OrtDetector(path, self.device, tensorrt=self.opt.model.use_tensorrt, fp16=fp16, threads=threads)

    def __enter__(self) -> OptimizedWatermarkPredictor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.memory.cleanup(force=True)

    # ---- planning ----------------------------------------------------------
    def sides_for(self, shape: tuple[int, int]) -> list[int]:
        """The long sides an image of `shape` (h, w) is detected at (0 = native), one per distinct pass."""
        long = max(shape)
        sides = [round(self.cfg.max_side * f) if self.cfg.max_side else 0 for f in self.cfg.scales]
        return list(dict.fromkeys(s if 0 < s < long else 0 for s in sides))

    def _plan(self, index: int, rgb: np.ndarray, max_side: int, strip: bool = False) -> _Plan:
        h, w = rgb.shape[:2]
        s = 1.0
        if max_side and max(h, w) > max_side:
            s = max_side / max(h, w)
        wh, ww = max(1, round(h * s)), max(1, round(w * s))
        work = rgb if s == 1.0 else cv2.resize(rgb, (ww, wh), interpolation=cv2.INTER_AREA)
        fit = [b for b in self.buckets if b >= max(wh, ww)]
        side = fit[0] if fit else self.buckets[-1]
        th = tw = side
        if strip and wh <= STRIP_HEIGHT:
            # A margin band: one row of wide, low tiles instead of squares mostly padding
            # (a 768 x 65 band: one 128 x 768 tile, not four of 256 x 256).
            th = -(-STRIP_HEIGHT // self.multiple) * self.multiple
            widths = sorted({b * k for b in self.buckets for k in (1, 2)})
            tw = next((b for b in widths if b >= ww), widths[-1])
        ph, pw = max(wh, th), max(ww, tw)
        if (ph, pw) != (wh, ww):
            mode = cv2.BORDER_REFLECT_101 if min(wh, ww) > 1 else cv2.BORDER_REPLICATE
            work = cv2.copyMakeBorder(work, 0, ph - wh, 0, pw - ww, mode)
        starts = [(y, x) for y in tile_starts(ph, th, self.cfg.overlap) for x in tile_starts(pw, tw, self.cfg.overlap)]
        return _Plan(index, (h, w), work, (wh, ww), (th, tw), starts)

    # ---- model -------------------------------------------------------------
    @torch.inference_mode()
    def _run_tiles(self, tiles: list[np.ndarray]) -> list[np.ndarray]:
        n = len(tiles)
        batch = np.stack(tiles)
        if self.compiled:  # pad to a power of two: few distinct shapes, few recompiles
            target = 1 << (n - 1).bit_length()
            if target > n:
                batch = np.concatenate([batch, np.zeros((target - n, *batch.shape[1:]), batch.dtype)])
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(self.device.type, dtype=getattr(torch, self.amp_dtype)) if self.amp_dtype else nullcontext()
        with ctx:
            if self.cfg.flip_tta:  # one batch of twice the size: better use of the cores than two
                both = self._fwd(torch.cat([x, x.flip(-1)]))
                m = x.shape[0]
                logits = (both[:m] + both[m:].flip(-1)) / 2
            else:
                logits = self._fwd(x)
        out = logits[:n, 0].float().cpu().numpy()
        self.tiles_run += n
        return list(out)

    def warmup(self, steps: int = 1) -> None:
        """Run each bucket once so first-image latency (and compile) is paid up front."""
        for b in self.buckets:
            for _ in range(steps):
                self._run_tiles([np.zeros((b, b, 3), np.uint8)] * self.batcher.batch_size)

    def predict_proba(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Watermark probability maps (float32, HxW at each image's own size).

        One pass per image and detection side (see `PredictConfig.scales`); every pass's
        tiles share the batches, and an image's passes are averaged.
        """
        with self.analyzer.profile("detect"):
            out = self._proba(images, [self.sides_for(im.shape[:2]) for im in images])
            self.analyzer.count("detect", len(images))
            return out

    def gated_proba(self, images: list[np.ndarray], probs: list[np.ndarray] | None = None,
                    confidences: list[float] | None = None) -> list[np.ndarray]:
        """The maps repair acts on: `predict_proba` with the image-level decisions applied.

        An image below `gate` gets an all-zero map, except for its top and bottom
        margin bands (`margin_band`), which are detected again at `margin_zoom` times
        the scale and kept where at least `margin_pixels` of their pixels are sure.
        `probs`: the images' `predict_proba` maps, and `confidences` their `image_confidence`, when
        already computed.
        """
        probs = self.predict_proba(images) if probs is None else probs
        confidences = confidences or [None] * len(probs)
        out = [p if self.passes_gate(p, conf) else np.zeros_like(p) for p, conf in zip(probs, confidences, strict=True)]
        c = self.cfg
        bands, where = [], []
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            b = round(h * c.margin_band)
            if b < 1:
                continue
            s = c.margin_zoom * (min(1.0, c.max_side / max(h, w)) if c.max_side else 1.0)
            size = (max(1, round(w * s)), max(1, round(b * s)))
            for y in dict.fromkeys((0, h - b)):
                bands.append(cv2.resize(im[y : y + b], size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC))
                where.append((i, y, b))
        if bands:
            with self.analyzer.profile("detect"):
                band_probs = self._proba(bands, [[0]] * len(bands), strip=True)
            for (i, y, b), bp in zip(where, band_probs, strict=True):
                if int((bp > c.margin_confidence).sum()) >= c.margin_pixels:
                    if out[i] is probs[i]:
                        out[i] = out[i].copy()  # the caller's map stays as it was
                    bp = cv2.resize(bp, (out[i].shape[1], b), interpolation=cv2.INTER_LINEAR)
                    np.maximum(out[i][y : y + b], bp, out=out[i][y : y + b])
        return out

    def _proba(self, images: list[np.ndarray], sides: list[list[int]], strip: bool = False) -> list[np.ndarray]:
        """Probability maps of `images`, each detected at its `sides` (0 = native) and averaged.

        `strip`: the images are margin bands, cut into low, wide tiles.
        """
        passes = [(i, side) for i, im_sides in enumerate(sides) for side in im_sides]
        owner = [i for i, _ in passes]
        plans = [self._plan(k, images[i], side, strip) for k, (i, side) in enumerate(passes)]
        acc = [np.zeros(p.work.shape[:2], np.float32) for p in plans]
        wsum = [np.zeros(p.work.shape[:2], np.float32) for p in plans]
        for th, tw in sorted({p.tile for p in plans}):
            win = ramp_window(th, self.cfg.overlap, tw)
            jobs = [(p.index, y, x) for p in plans if p.tile == (th, tw) for (y, x) in p.starts]
            work = {p.index: p.work for p in plans}

            def run(batch: list[tuple[int, int, int]], th: int = th, tw: int = tw, work: dict = work) -> list[np.ndarray]:
                return self._run_tiles([work[i][y : y + th, x : x + tw] for i, y, x in batch])

            for (i, y, x), logits in self.batcher.process(jobs, run):
                if isinstance(logits, BaseException):
                    raise logits
                acc[i][y : y + th, x : x + tw] += logits * win
                wsum[i][y : y + th, x : x + tw] += win
        out: list[np.ndarray | None] = [None] * len(images)
        for p in plans:
            wh, ww = p.work_hw
            logit = acc[p.index][:wh, :ww] / np.maximum(wsum[p.index][:wh, :ww], 1e-6)
            acc[p.index] = wsum[p.index] = None  # free the working maps as we go
            prob = 1.0 / (1.0 + np.exp(-logit))
            if (wh, ww) != p.orig_hw:
                prob = cv2.resize(prob, (p.orig_hw[1], p.orig_hw[0]), interpolation=cv2.INTER_LINEAR)
            i = owner[p.index]
            out[i] = prob if out[i] is None else out[i] + prob
        for i, n in Counter(owner).items():
            out[i] = (out[i] / n).astype(np.float32)
        return out  # type: ignore[return-value]

    def passes_gate(self, prob: np.ndarray, confidence: float | None = None) -> bool:
        """The image-level decision: is the image sure enough to carry a mark (`predict.gate`)?"""
        return (image_confidence(prob) if confidence is None else confidence) >= self.cfg.gate

    def predict_masks(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [p > self.cfg.threshold for p in self.predict_proba(images)]

    def predict(self, image: str | Path | np.ndarray | Any) -> dict[str, Any]:
        """Detect on one image (a path, an RGB uint8 array or a PIL image).

        Returns the mask (bool HxW, `threshold` applied), the probability map, the
        share of the image marked, whether any pixel is, and the seconds it took.
        """
        import time

        t0 = time.perf_counter()
        if isinstance(image, (str, Path)):
            from wmrepair.imageio import read_image

            rgb = read_image(image).rgb
        else:
            rgb = np.array(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.uint8)
            if rgb.ndim == 2:
                rgb = np.repeat(rgb[..., None], 3, axis=2)
        prob = self.predict_proba([rgb])[0]
        confidence = image_confidence(prob)
        mask = self.gated_proba([rgb], [prob], [confidence])[0] > self.cfg.threshold
        return {"mask": mask, "probability": prob, "mask_fraction": float(mask.mean()),
                "has_watermark": bool(mask.any()), "confidence": confidence,
                "processing_time": time.perf_counter() - t0}

    def tiles_for(self, shape: tuple[int, int]) -> int:
        """How many tiles an image of `shape` (h, w) is cut into."""
        return sum(len(self._plan(0, np.zeros((*shape, 3), np.uint8), s).starts) for s in self.sides_for(shape))


# Margin bands are at most 0.5 x margin_zoom x max_side high at their detection scale (115 px
# with the defaults' 0.15, 2 and 384), so one tile row of this height holds them.
STRIP_HEIGHT = 128

# The image-level score reads the most confident pixels only: a corner copyright line covers
# ~0.2 % of an image, so a whole-image mean would call it unmarked.
CONFIDENCE_TOP_SHARE = 0.001
CONFIDENCE_MIN_PIXELS = 16


def image_confidence(prob: np.ndarray) -> float:
    """Mean probability of the image's most confident pixels (top 0.1 %, at least 16): 0..1."""
    flat = np.asarray(prob, np.float32).ravel()
    k = min(flat.size, max(CONFIDENCE_MIN_PIXELS, int(flat.size * CONFIDENCE_TOP_SHARE)))
    return float(np.partition(flat, flat.size - k)[flat.size - k:].mean()) if flat.size else 0.0
