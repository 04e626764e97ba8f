"""The repair engine: detect -> post-process -> inpaint -> re-detect, for folders of images.

Contract: every input gets exactly one manifest row, and an output at the same
relative path with the same extension, or `status=failed` with a readable
error. Failures are isolated per image (exceptions, timeouts, OOM); writes are
atomic; decoding and encoding run on a small thread pool beside the model.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
from tqdm import tqdm

from wmrepair.imageio import LoadedImage, atomic_write_bytes, encode_image, read_image, write_mask
from wmrepair.memory import MemoryManager, is_oom_error
from wmrepair.predict import OptimizedWatermarkPredictor
from wmrepair.profiling import PerformanceAnalyzer

log = logging.getLogger(__name__)

MANIFEST_FIELDS = ["input", "output", "status", "error", "mask_fraction", "iterations", "seconds", "width", "height"]


@dataclass
class RepairConfig:
    mask_threshold: float = 0.65  # probability above which a pixel is watermark (0.65 measured best PSNR)
    threshold: float = 0.001  # iterate while the residual mask fraction exceeds this
    max_iterations: int = 2
    min_component: float = 2e-5  # drop detected blobs smaller than this fraction of the image
    dilation: float = 0.002  # dilation radius as a fraction of the long side (min 2 px)
    jpeg_quality: int = 95
    skip_existing: bool = True
    group_size: int = 8  # images detected together (tiles batched across them)
    image_timeout_s: float = 120.0
    pause_interval: int = 50  # periodic memory cleanup every N images
    io_workers: int = 2
    extra: dict[str, Any] = field(default_factory=dict)


class ImageTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ImageTimeout in the main thread after `seconds` (SIGALRM; no-op elsewhere)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise ImageTimeout(f"timed out after {seconds:g}s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def postprocess_mask(prob: np.ndarray, threshold: float = 0.5, min_component: float = 2e-5) -> np.ndarray:
    """Threshold and drop connected components smaller than `min_component` of the image."""
    mask = (prob > threshold).astype(np.uint8)
    if not mask.any() or min_component <= 0:
        return mask.astype(bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_px = max(1, int(min_component * mask.size))
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    return keep[labels]


def dilate(mask: np.ndarray, fraction: float) -> np.ndarray:
    """Grow the mask so inpainting also covers anti-aliased edges and soft shadows."""
    r = max(2, round(fraction * max(mask.shape)))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), k) > 0


@dataclass
class _Item:
    src: Path
    rel: Path
    out: Path
    row: dict[str, Any]
    work_s: float = 0.0  # this image's own processing time (not queueing)
    image: LoadedImage | None = None


class RepairEngine:
    """Repairs lists of files with a predictor and an inpainter, both loaded once."""

    def __init__(self, predictor: OptimizedWatermarkPredictor, inpainter: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 config: RepairConfig | None = None, memory: MemoryManager | None = None,
                 analyzer: PerformanceAnalyzer | None = None) -> None:
        self.p = predictor
        self.inpaint = inpainter
        self.cfg = config or RepairConfig()
        self.memory = memory or predictor.memory
        self.memory.config.cleanup_interval = self.cfg.pause_interval
        self.analyzer = analyzer or predictor.analyzer
        self.rss_trace: list[tuple[int, float]] = []  # (images done, RSS MB)

    # ---- one image -------------------------------------------------------
    def repair_image(self, rgb: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Returns (repaired rgb, union of detected masks, inpaint iterations)."""
        c = self.cfg
        det = postprocess_mask(prob, c.mask_threshold, c.min_component)
        total = det.copy()
        cur, it = rgb, 0
        while it < c.max_iterations and det.mean() > (c.threshold if it else 0.0):
            with self.analyzer.profile("inpaint"):
                cur = self.inpaint(cur, dilate(det, c.dilation))
            it += 1
            if it >= c.max_iterations:
                break
            # Leftovers of a mark lie next to it: new detections far from the
            # first mask are false positives that a second pass would only damage.
            near = dilate(total, 3 * c.dilation)
            det = postprocess_mask(self.p.predict_proba([cur])[0], c.mask_threshold, c.min_component) & near
            total |= det
        return cur, total, it

    # ---- folders ---------------------------------------------------------
    def run(self, input_root: str | Path, output_root: str | Path, rels: list[Path] | None = None,
            manifest: str | Path | None = None, masks_dir: str | Path | None = None,
            progress: bool = True) -> list[dict[str, Any]]:
        from wmrepair.imageio import list_images

        input_root, output_root = Path(input_root), Path(output_root)
        rels = [Path(r) for r in (rels if rels is not None else list_images(input_root))]
        manifest = Path(manifest) if manifest else output_root / "manifest.csv"
        items = [
            _Item(input_root / r, r, output_root / r,
                  {"input": str(input_root / r), "output": str(output_root / r), "status": "", "error": "",
                   "mask_fraction": "", "iterations": 0, "seconds": 0.0, "width": "", "height": ""})
            for r in rels
        ]
        todo = []
        for it in items:
            if self.cfg.skip_existing and it.out.exists():
                it.row.update(status="skipped", error="output exists")
            else:
                todo.append(it)
        bar = tqdm(total=len(items), desc="repair", unit="img", disable=not progress, mininterval=1)
        bar.update(len(items) - len(todo))
        done = 0
        groups = [todo[i : i + self.cfg.group_size] for i in range(0, len(todo), self.cfg.group_size)]
        with ThreadPoolExecutor(max(1, self.cfg.io_workers), thread_name_prefix="wmrepair-io") as pool:
            decodes: deque[list[Future]] = deque()
            writes: list[tuple[_Item, Future]] = []
            ahead = 2  # groups decoded ahead of the model
            for g in groups[:ahead]:
                decodes.append([pool.submit(self._decode, it) for it in g])
            for gi, group in enumerate(groups):
                futs = decodes.popleft()
                if gi + ahead < len(groups):
                    decodes.append([pool.submit(self._decode, it) for it in groups[gi + ahead]])
                ready = []
                for it, f in zip(group, futs, strict=True):
                    try:
                        it.image = f.result()
                        ready.append(it)
                    except Exception as exc:
                        self._fail(it, exc)
                t_det = time.perf_counter()
                detected = list(self._detect(ready))
                share = (time.perf_counter() - t_det) / max(1, len(ready))
                for it, prob in detected:
                    it.work_s += share
                    if isinstance(prob, BaseException):
                        self._fail(it, prob)
                        continue
                    try:
                        t0 = time.perf_counter()
                        try:
                            with time_limit(self.cfg.image_timeout_s):
                                out, mask, iters = self.repair_image(it.image.rgb, prob)
                        finally:
                            it.work_s += time.perf_counter() - t0
                        it.row.update(mask_fraction=round(float(mask.mean()), 6), iterations=iters)
                        writes.append((it, pool.submit(self._write, it, it.image, out, mask, iters, masks_dir)))
                    except Exception as exc:
                        self._fail(it, exc)
                    it.image = None  # free pixels now, not at the end of the group
                done += len(group)
                self.memory.step(len(group))
                rss = psutil.Process().memory_info().rss / 2**20
                self.rss_trace.append((done, rss))
                bar.update(len(group))
                bar.set_postfix(rss=f"{rss:.0f}MB", refresh=False)
                writes = self._drain(writes, block=False)
            self._drain(writes, block=True)
        bar.close()
        rows = [it.row for it in items]
        write_manifest(rows, manifest)
        return rows

    def _decode(self, it: _Item) -> LoadedImage:
        t0 = time.perf_counter()
        with self.analyzer.profile("decode"):
            img = read_image(it.src)
        it.row.update(height=img.rgb.shape[0], width=img.rgb.shape[1])
        it.work_s += time.perf_counter() - t0
        return img

    def _detect(self, ready: list[_Item]) -> Iterator[tuple[_Item, np.ndarray | BaseException]]:
        """Batched detection; if the batch fails, retry one by one so only bad images fail."""
        if not ready:
            return
        try:
            probs = self.p.predict_proba([it.image.rgb for it in ready])
            yield from zip(ready, probs, strict=True)
            return
        except Exception as exc:
            if len(ready) == 1:
                yield ready[0], exc
                return
            log.warning("batched detection failed (%s): retrying image by image", exc)
        for it in ready:
            try:
                yield it, self.p.predict_proba([it.image.rgb])[0]
            except Exception as exc:
                yield it, exc

    def _write(self, it: _Item, src: LoadedImage, out: np.ndarray, mask: np.ndarray, iters: int,
               masks_dir: str | Path | None) -> None:
        t0 = time.perf_counter()
        with self.analyzer.profile("encode"):
            if iters == 0:  # nothing to repair: the original bytes, bit for bit
                tmp = it.out.with_name(f".{it.out.name}.copy.tmp")
                it.out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(it.src, tmp)
                tmp.replace(it.out)
            else:
                data = encode_image(out, it.out.suffix, alpha=src.alpha, mode=src.mode,
                                    jpeg_quality=self.cfg.jpeg_quality, icc_profile=src.icc_profile)
                atomic_write_bytes(it.out, data)
            if masks_dir is not None:
                write_mask(Path(masks_dir) / f"{it.rel}.mask.png", mask)
        it.work_s += time.perf_counter() - t0

    def _drain(self, writes: list[tuple[_Item, Future]], block: bool) -> list[tuple[_Item, Future]]:
        pending = []
        for it, f in writes:
            if not block and not f.done():
                pending.append((it, f))
                continue
            try:
                f.result()
                it.row.update(status="ok", seconds=round(it.work_s, 4))
                self.analyzer.count("images_ok")
            except Exception as exc:
                self._fail(it, exc)
        return pending

    def _fail(self, it: _Item, exc: BaseException) -> None:
        if is_oom_error(exc):
            self.memory.record_oom()
            msg = f"out of memory: {exc}"
        else:
            msg = f"{type(exc).__name__}: {exc}"
        it.row.update(status="failed", error=" ".join(msg.split())[:500], seconds=round(it.work_s, 4))
        it.image = None
        self.analyzer.count("images_failed")
        log.warning("failed %s: %s", it.src, msg)


def write_manifest(rows: list[dict[str, Any]], path: str | Path) -> None:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def build_engine(model: str | Path, optimization: Any = None, predict_config: Any = None,
                 repair_config: RepairConfig | None = None, inpaint: dict[str, Any] | None = None,
                 device: str = "auto", threads: int = 0, optimized: bool = True) -> RepairEngine:
    """Predictor + IOPaint inpainter + engine, as the CLI and the workflow both use them.

    The inpaint model is checked (weights present, IOPaint importable) *before*
    the detector loads, so a misconfigured run fails in seconds, not after work.
    """
    from wmrepair.config import OptimizationConfig
    from wmrepair.inpaint import Inpainter

    opt = optimization or OptimizationConfig()
    rc = repair_config or RepairConfig()
    inp = dict(inpaint or {})
    from wmrepair.train import resolve_device

    dev = resolve_device(device)
    inpainter = Inpainter(name=inp.pop("model", "cv2"), device=dev.type, **inp)
    predictor = OptimizedWatermarkPredictor(model, opt, predict_config, device=str(dev), threads=threads,
                                            optimized=optimized)
    rc.io_workers = rc.io_workers or predictor.opt.repair.io_workers
    return RepairEngine(predictor, inpainter, rc)
