"""The repair engine: detect -> post-process -> inpaint -> re-detect, for folders of images.

Contract: every input gets exactly one manifest row, and an output at the same
relative path with the same extension, or `status=failed` with a readable
error. Failures are isolated per image (exceptions, timeouts, OOM); writes are
atomic; decoding and encoding run on a small thread pool beside the model.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
from tqdm import tqdm

from wmrepair.chunks import group_by_pixels
from wmrepair.config import InpaintConfig, RepairConfig
from wmrepair.files import (
    Staging,
    check_no_overlap,
    ensure_writable_dir,
    ensure_writable_file,
    remove_stale_beside,
)
from wmrepair.hardware import usable_cpus
from wmrepair.imageio import (
    LoadedImage,
    encode_image,
    encode_mask,
    image_size,
    is_lossy,
    list_images,
    read_image,
)
from wmrepair.manifest import (  # noqa: F401 - MANIFEST_FIELDS and write_manifest: the engine's public names
    MANIFEST_FIELDS,
    ManifestWriter,
    is_done,
    new_row,
    read_manifest,
    write_manifest,
)
from wmrepair.memory import MemoryManager, is_oom_error
from wmrepair.morphology import disc
from wmrepair.predict import OptimizedWatermarkPredictor
from wmrepair.profiling import PerformanceAnalyzer
from wmrepair.stamps import Stamp, StampConfig, unstamp
from wmrepair.tiles import complete_tiles

log = logging.getLogger(__name__)




class ImageTimeout(Exception):
    pass


def run_with_timeouts(pool: ThreadPoolExecutor, jobs: list[Callable[[], Any]],
                      timeouts: list[float | None]) -> list[tuple[Any, float]]:
    """Run `jobs` on `pool`; returns (result or exception, seconds) per job, in order.

    A job's clock starts when it starts running (not while it queues). A job
    past its timeout is reported as ImageTimeout and abandoned: a thread cannot
    be killed, so it finishes in the background and its result is dropped.
    """
    started: dict[int, float] = {}

    def timed(i: int, job: Callable[[], Any]) -> tuple[Any, float]:
        started[i] = time.perf_counter()
        return job(), time.perf_counter() - started[i]

    futs = {pool.submit(timed, i, job): i for i, job in enumerate(jobs)}
    out: list[tuple[Any, float]] = [(None, 0.0)] * len(jobs)
    pending = set(futs)
    poll = 0.05 if any(t is not None for t in timeouts) else None
    while pending:
        done, pending = wait(pending, timeout=poll, return_when=FIRST_COMPLETED)
        for f in done:
            i = futs[f]
            exc = f.exception()
            out[i] = (exc, time.perf_counter() - started.get(i, time.perf_counter())) if exc else f.result()
        now = time.perf_counter()
        for f in list(pending):
            i, limit = futs[f], timeouts[futs[f]]
            if limit is not None and i in started and now - started[i] > limit:
                out[i] = (ImageTimeout(f"timed out after {limit:g}s"), now - started[i])
                pending.discard(f)
    return out


def postprocess_mask(prob: np.ndarray, threshold: float = 0.5, min_component: float = 2e-5,
                     component_confidence: float = 0.0) -> np.ndarray:
    """Threshold; drop connected components smaller than `min_component` of the image, and those
    whose most confident pixel stays below `component_confidence` (weak blobs are rarely marks)."""
    mask = (prob > threshold).astype(np.uint8)
    if not mask.any() or (min_component <= 0 and component_confidence <= threshold):
        return mask.astype(bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_px = max(1, int(min_component * mask.size))
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    if component_confidence > threshold:
        peak = np.zeros(n, np.float32)
        on = mask.astype(bool)
        np.maximum.at(peak, labels[on], prob[on].astype(np.float32))
        keep &= peak >= component_confidence
    return keep[labels]


def dilate(mask: np.ndarray, fraction: float) -> np.ndarray:
    """Grow the mask so inpainting also covers anti-aliased edges and soft shadows."""
    return cv2.dilate(mask.astype(np.uint8), disc(max(2, round(fraction * max(mask.shape))))) > 0


def refine_by_change(before: np.ndarray, painted: np.ndarray, det: np.ndarray, min_diff: float,
                     dilation: float, relative: float = 0.0, radius: int = 7,
                     along: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Keep as mark the pixels inpainting changed enough; returns (pixels, mask).

    Inpainting fills a detected blob from its surroundings, so background caught
    inside the blob comes back about as it was while the mark's strokes do not:
    a pixel is kept when it changed by more than `min_diff` grey levels. With
    `relative` > 0 it must also have changed by more than `relative` times the
    largest change on the detected mark within `radius` px. A mark pixel changes
    by its opacity times the mark's contrast, so that threshold follows each
    stroke's own contrast: the faint halo round a strong mark goes, the soft edge
    of a weak one stays. It also makes the detection's 1-px rim safe to consider
    (the detector's mask is up-sampled from the detection scale, its edges a pixel
    off either way; the rim was inpainted too, as painting grows the mask by >= 2 px).
    Pixels outside the (dilated) kept mask get their original values back: exact
    instead of an estimate. On textured ground every pixel changes, so with
    `along` set the painted pixels are then trimmed by direction (`keep_along_mark`).
    """
    if not det.any():
        return painted, det
    keep = det
    if min_diff > 0:
        change = cv2.absdiff(before, painted).max(axis=-1)
        keep = change > min_diff
        if relative > 0:
            strongest = cv2.dilate(np.where(det, change, 0).astype(np.uint8), disc(radius))
            keep &= change > relative * strongest
            keep &= cv2.dilate(det.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        else:
            keep &= det
        painted = np.where(dilate(keep, dilation)[..., None], painted, before)
    if along is not None:
        painted = keep_along_mark(before, painted, keep, along, radius)
    return painted, keep


def keep_along_mark(before: np.ndarray, painted: np.ndarray, mark: np.ndarray, threshold: float,
                    radius: int) -> np.ndarray:
    """Give back its own value to every painted pixel whose change does not point the way its mark's did.

    A mark blends one colour over the picture, so inpainting it moves every mark
    pixel the same way (a white mark: all darker). Where the ground is textured,
    the pixels painted round the strokes (the dilation) and the texture inside
    them move every which way. Painted pixels within `radius` px of each other
    form one group; its direction is the mean change over its `mark` pixels, and
    a pixel keeps its painted value only where its change along that direction
    exceeds `threshold` grey levels. The rest are exact again rather than an
    estimate (marked images: real dev photos +0.11 to +0.15 dB, the synthetic dev splits +0.33
    and +0.39 dB: DEVNOTES).
    """
    changed = (before != painted).any(axis=-1)
    if not changed.any():
        return painted
    ys, xs = np.nonzero(changed)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1  # work on the changed box only
    moved = changed[y0:y1, x0:x1]
    n, labels = cv2.connectedComponents(cv2.dilate(moved.astype(np.uint8), disc(radius)), connectivity=8)
    core = moved & mark[y0:y1, x0:x1]

    def change(c: int) -> np.ndarray:  # one channel at a time: a few bytes per pixel, not 12
        return before[y0:y1, x0:x1, c].astype(np.float32) - painted[y0:y1, x0:x1, c].astype(np.float32)

    channels = range(before.shape[-1])
    direction = np.stack([np.bincount(labels[core], change(c)[core], n) for c in channels], axis=1)
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-6)
    along = np.zeros(moved.shape, np.float32)
    for c in channels:
        along += change(c) * direction[labels, c].astype(np.float32)
    back = moved & (along <= threshold)
    out = painted.copy()
    out[y0:y1, x0:x1][back] = before[y0:y1, x0:x1][back]
    return out


@dataclass
class _Item:
    src: Path
    rel: Path
    out: Path
    row: dict[str, Any]
    work_s: float = 0.0  # this image's own processing time (not queueing)
    image: LoadedImage | None = None


@dataclass
class _Pass:
    """One image between inpainting passes."""

    rgb: np.ndarray  # current pixels
    det: np.ndarray  # what the next pass paints
    total: np.ndarray  # union of what the passes so far found to be watermark
    seen: np.ndarray  # union of what the detector flagged (leftovers are looked for near it)
    iterations: int = 0


class RepairEngine:
    """Repairs lists of files with a predictor and an inpainter, both loaded once."""

    def __init__(self, predictor: OptimizedWatermarkPredictor, inpainter: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 config: RepairConfig | None = None, memory: MemoryManager | None = None,
                 analyzer: PerformanceAnalyzer | None = None, stamps: list[Stamp] | None = None) -> None:
        self.p = predictor
        self.inpaint = inpainter
        self.use_stamps(stamps or [])
        self.cfg = config or RepairConfig()
        self.memory = memory or predictor.memory
        level = predictor.opt.repair
        if self.cfg.pause_interval:
            self.memory.config.cleanup_interval = self.cfg.pause_interval
        self.io_workers = self.cfg.io_workers or level.io_workers
        self.analyzer = analyzer or predictor.analyzer
        self.rss_trace: list[tuple[int, float]] = []  # (images done, RSS MB)
        self.resumed = 0  # images the last `run` found done and kept
        self._record: ManifestWriter | None = None
        self.inpaint_workers = self.cfg.inpaint_workers or level.inpaint_workers or (
            usable_cpus() if getattr(inpainter, "thread_safe", False) else 1)
        self.overlap = level.overlap == "on" or (level.overlap == "auto" and predictor.device.type == "cuda")
        self.analyzer.note_settings(inpaint_model=getattr(inpainter, "name", type(inpainter).__name__),
                                    texture_fill=getattr(inpainter, "texture_fill", None),
                                    inpaint_workers=self.inpaint_workers, io_workers=self.io_workers,
                                    overlap=self.overlap,
                                    cleanup_interval=self.memory.config.cleanup_interval)

    # ---- images ----------------------------------------------------------
    def repair_image(self, rgb: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Returns (repaired rgb, union of detected masks, inpaint iterations); raises on failure.

        `prob` is acted on as it is: `predictor.gated_proba` applies the image-level decision.
        """
        with ThreadPoolExecutor(1) as pool:
            (res, _), = self.repair_images([rgb], [prob], pool)
        if isinstance(res, BaseException):
            raise res
        return res

    def repair_images(self, rgbs: list[np.ndarray], probs: list[np.ndarray],
                      pool: ThreadPoolExecutor) -> list[tuple[tuple[np.ndarray, np.ndarray, int] | BaseException, float]]:
        """Repair several images pass by pass; per image ((rgb, mask, iterations) or the error, seconds).

        Each pass inpaints all images that need it on `pool` at once (IOPaint's
        cv2 model runs in C without the GIL, one core each), then re-detects the
        leftovers of all of them in one batch. An image's passes together get
        `image_timeout_s`; a failure or timeout fails that image only.
        """
        c = self.cfg
        out: list[Any] = [None] * len(rgbs)
        spent = [0.0] * len(rgbs)
        live: dict[int, _Pass] = {}
        for i, prob in enumerate(probs):
            try:
                det = postprocess_mask(prob, self.p.cfg.threshold, c.min_component, c.component_confidence)
                if c.tile_share is not None:
                    with self.analyzer.profile("tiles"):
                        det = complete_tiles(det, c.tile_share)
                live[i] = _Pass(rgbs[i], det, np.zeros_like(det), det.copy())
            except Exception as exc:
                out[i] = exc
        while live:
            todo = [i for i, st in live.items()
                    if st.iterations < c.max_iterations and st.det.mean() > (c.threshold if st.iterations else 0.0)]
            for i in [i for i in live if i not in todo]:  # finished: nothing (more) to paint
                st = live.pop(i)
                out[i] = (st.rgb, st.total, st.iterations)
            if not todo:
                break
            jobs = [lambda st=live[i]: self._inpaint_pass(st) for i in todo]
            limits = [max(0.0, c.image_timeout_s - spent[i]) if c.image_timeout_s else None for i in todo]
            for i, (res, secs) in zip(todo, run_with_timeouts(pool, jobs, limits), strict=True):
                spent[i] += secs
                if isinstance(res, BaseException):
                    out[i] = res
                    live.pop(i)
                else:
                    st = live[i]
                    st.rgb, found = res
                    st.total |= found
                    st.iterations += 1
            again = [i for i in todo if i in live and live[i].iterations < c.max_iterations]
            probs_again, share = self._detect([live[i].rgb for i in again])
            for i, prob in zip(again, probs_again, strict=True):
                spent[i] += share
                if isinstance(prob, BaseException):
                    out[i] = prob
                    live.pop(i)
                    continue
                # Leftovers of a mark lie next to it: new detections far from the
                # first mask are false positives that another pass would only damage.
                st = live[i]
                st.det = postprocess_mask(prob, self.p.cfg.threshold, c.min_component, c.component_confidence) & dilate(st.seen, 3 * c.dilation)
                st.seen |= st.det
        return list(zip(out, spent, strict=True))

    def _inpaint_pass(self, st: _Pass) -> tuple[np.ndarray, np.ndarray]:
        """Inpaint `st.det`; returns (new pixels, the part of `st.det` that is watermark)."""
        with self.analyzer.profile("inpaint"):
            painted = self.inpaint(st.rgb, dilate(st.det, self.cfg.dilation))
        c = self.cfg
        return refine_by_change(st.rgb, painted, st.det, c.refine_diff, c.dilation, c.refine_relative, c.refine_radius,
                                c.refine_along)

    # ---- folders ---------------------------------------------------------
    def run(self, input_root: str | Path, output_root: str | Path, rels: list[Path] | None = None,
            manifest: str | Path | None = None, masks_dir: str | Path | None = None,
            progress: bool = True) -> list[dict[str, Any]]:
        """Repair `rels` (default: every image under `input_root`) into `output_root`; returns the manifest rows.

        Refuses (PathError) before any work when an output overlaps the input or
        cannot be written. With `skip_existing`, an image is done, and kept as it
        was, only when the manifest at `manifest` says so and its input, output and
        mask are still the files that row describes; everything else is redone.
        """
        input_root, output_root = Path(input_root), Path(output_root)
        manifest = Path(manifest) if manifest else output_root / "manifest.csv"
        check_paths(input_root, output_root, manifest, masks_dir)
        rels = [Path(r) for r in (rels if rels is not None else list_images(input_root))]
        earlier = read_manifest(manifest) if self.cfg.skip_existing else {}
        items = [_Item(input_root / r, r, output_root / r, new_row(input_root / r, output_root / r,
                                                                     Path(masks_dir) / f"{r}.mask.png" if masks_dir else None))
                 for r in rels]
        todo, kept = [], []
        for it in items:
            prev = earlier.get(it.row["input"])
            if prev is not None and is_done(prev, it.row):
                it.row = prev
                kept.append(prev)
            else:
                todo.append(it)
        self.resumed = len(kept)
        self.staging = [Staging(output_root)] + ([Staging(masks_dir)] if masks_dir else [])
        for st in self.staging:
            st.sweep()
        remove_stale_beside(manifest)
        record = self._record = ManifestWriter(manifest, kept)
        bar = tqdm(total=len(items), desc="repair", unit="img", disable=not progress, mininterval=1)
        bar.update(self.resumed)
        done = 0
        try:
            with (ThreadPoolExecutor(max(1, self.io_workers), thread_name_prefix="wmrepair-io") as pool,
                  ThreadPoolExecutor(self.inpaint_workers, thread_name_prefix="wmrepair-inpaint") as workers,
                  ThreadPoolExecutor(1, thread_name_prefix="wmrepair-finish") as finisher):
                decodes: deque[tuple[list[_Item], list[Future]]] = deque()
                writes: list[tuple[_Item, Future]] = []
                finishing: Future | None = None  # the previous group's inpainting (overlap on)
                groups = self._groups(todo)
                ahead = 2  # groups decoded ahead of the model
                for g in itertools.islice(groups, ahead):
                    decodes.append((g, [pool.submit(self._decode, it) for it in g]))
                while decodes:
                    group, futs = decodes.popleft()
                    for g in itertools.islice(groups, 1):
                        decodes.append((g, [pool.submit(self._decode, it) for it in g]))
                    found = self._detect_group(group, futs)
                    if self.overlap:
                        if finishing is not None:
                            writes += finishing.result()
                        finishing = finisher.submit(self._finish_group, group, found, workers, pool)
                    else:
                        writes += self._finish_group(group, found, workers, pool)
                    done += len(group)
                    self.memory.step(len(group))
                    rss = psutil.Process().memory_info().rss / 2**20
                    self.rss_trace.append((done, rss))
                    bar.update(len(group))
                    bar.set_postfix(rss=f"{rss:.0f}MB", refresh=False)
                    writes = self._drain(writes, block=False)
                if finishing is not None:
                    writes += finishing.result()
                self._drain(writes, block=True)
        finally:
            bar.close()
            record.close([it.row for it in items])
            for st in self.staging:
                st.close()
        return [it.row for it in items]

    def _groups(self, todo: list[_Item]) -> Iterator[list[_Item]]:
        """`todo` in groups (see `group_by_pixels`); sizes come from the file headers, lazily."""
        def pixels(it: _Item) -> int:
            try:
                w, h = image_size(it.src)
                return w * h
            except Exception:
                return 0  # decoding reports the real error
        yield from group_by_pixels(todo, pixels, self.cfg.group_size, self.cfg.group_pixels)

    def _detect_group(self, group: list[_Item], futs: list[Future]) -> list[tuple[_Item, np.ndarray]]:
        """Wait for the group's decodes, detect; (item, probability map) of each image that got this far."""
        ready = []
        for it, f in zip(group, futs, strict=True):
            try:
                it.image = f.result()
                ready.append(it)
            except Exception as exc:
                self._fail(it, exc)
        probs, share = self._detect([it.image.rgb for it in ready], gated=True)
        found = []
        for it, prob in zip(ready, probs, strict=True):
            it.work_s += share
            if isinstance(prob, BaseException):
                self._fail(it, prob)
            else:
                found.append((it, prob))
        return found

    def _finish_group(self, group: list[_Item], found: list[tuple[_Item, np.ndarray]], workers: ThreadPoolExecutor,
                      pool: ThreadPoolExecutor) -> list[tuple[_Item, Future]]:
        """Inpaint what detection found and queue the writes (returned); frees the group's pixels."""
        writes: list[tuple[_Item, Future]] = []
        if self.stamps:
            found = self._unstamp(found, writes, pool)
        results = self.repair_images([it.image.rgb for it, _ in found], [pr for _, pr in found], workers)
        for (it, _), (res, secs) in zip(found, results, strict=True):
            it.work_s += secs
            if isinstance(res, BaseException):
                self._fail(it, res)
                continue
            out, mask, iters = res
            it.row.update(mask_fraction=round(float(mask.mean()), 6), iterations=iters, method="inpaint" if iters else "")
            writes.append((it, pool.submit(self._write, it, it.image, out, mask, iters)))
        for it in group:
            it.image = None  # free pixels now, not at the end of the run
        return writes

    def use_stamps(self, stamps: list[Stamp], cfg: StampConfig | None = None) -> None:
        """Collection mode: an image carrying one of these has its blend inverted (wmrepair.stamps)."""
        self.stamps = list(stamps)
        self.stamp_cfg = cfg or StampConfig()

    def _stamps_for(self, size: tuple[int, int]) -> list[Stamp]:
        """The stamps to try on an image of `size`, in order: those learnt on its size (a size may hold several:
        one folder, several sources), then, with `shift`, the others (placed by matching)."""
        own = [st for st in self.stamps if tuple(st.size) == size]
        return own + ([st for st in self.stamps if tuple(st.size) != size] if self.stamp_cfg.shift else [])

    def _unstamp(self, found: list[tuple[_Item, np.ndarray]], writes: list[tuple[_Item, Future]],
                 pool: ThreadPoolExecutor) -> list[tuple[_Item, np.ndarray]]:
        """Invert the blend of the images that carry a known stamp; returns the others (per-image path)."""
        rest = []
        for it, prob in found:
            got = None
            for stamp in self._stamps_for(it.image.rgb.shape[:2]):
                with self._stage(it, "stamp"):
                    try:
                        got = unstamp(it.image.rgb, stamp, self.stamp_cfg, lossy=is_lossy(it.src))
                    except Exception as exc:  # a broken stamp must not lose the image: per-image path
                        log.warning("stamp %s failed on %s (%s): per-image repair", stamp.name, it.src, exc)
                if got is not None:
                    break
            if got is None:
                rest.append((it, prob))
                continue
            out, mask = got
            it.row.update(mask_fraction=round(float(mask.mean()), 6), iterations=1, method=f"stamp:{stamp.name}")
            self.analyzer.count(f"images_{stamp.name}")
            writes.append((it, pool.submit(self._write, it, it.image, out, mask, 1)))
        return rest

    @contextlib.contextmanager
    def _stage(self, it: _Item, name: str) -> Iterator[None]:
        """Time a stage once, for the analyzer (per stage) and the manifest's `seconds` (per image)."""
        t0 = time.perf_counter()
        try:
            with self.analyzer.profile(name):
                yield
        finally:
            it.work_s += time.perf_counter() - t0

    def _decode(self, it: _Item) -> LoadedImage:
        with self._stage(it, "decode"):
            st = os.stat(it.src)
            it.row.update(input_bytes=st.st_size, input_mtime_ns=st.st_mtime_ns)
            img = read_image(it.src, max_pixels=self.cfg.max_pixels)
        it.row.update(height=img.rgb.shape[0], width=img.rgb.shape[1])
        return img

    def _detect(self, rgbs: list[np.ndarray], gated: bool = False) -> tuple[list[np.ndarray | BaseException], float]:
        """Batched detection: (probability map or error per image, each image's share of the time).

        `gated`: the maps with the image-level decisions applied (`gated_proba`), for the
        first pass; the passes after inpainting look for leftovers of a mark already decided.
        If the batch fails, retry one by one so only bad images fail.
        """
        t0 = time.perf_counter()
        detect = self.p.gated_proba if gated else self.p.predict_proba
        return self._detect_batch(rgbs, detect), (time.perf_counter() - t0) / max(1, len(rgbs))

    @staticmethod
    def _detect_batch(rgbs: list[np.ndarray], detect: Any) -> list[np.ndarray | BaseException]:
        if not rgbs:
            return []
        try:
            return detect(rgbs)
        except Exception as exc:
            if len(rgbs) == 1:
                return [exc]
            log.warning("batched detection failed (%s): retrying image by image", exc)
        out: list[np.ndarray | BaseException] = []
        for rgb in rgbs:
            try:
                out.append(detect([rgb])[0])
            except Exception as exc:
                out.append(exc)
        return out

    def _write(self, it: _Item, src: LoadedImage, out: np.ndarray, mask: np.ndarray, iters: int) -> None:
        """Image first, mask second, the record last (`_drain`): a kill in between leaves it not done."""
        with self._stage(it, "encode"):
            images = self.staging[0]
            if iters == 0:  # nothing to repair: the original bytes, bit for bit
                images.copy(it.src, it.out)
            else:
                images.write_bytes(it.out, encode_image(out, it.out.suffix, jpeg_quality=self.cfg.jpeg_quality,
                                                        source=src, keep_jpeg_tables=self.cfg.keep_jpeg_tables))
            st = os.stat(it.out)
            it.row.update(output_bytes=st.st_size, output_mtime_ns=st.st_mtime_ns)
            if it.row["mask"]:
                self.staging[-1].write_bytes(it.row["mask"], encode_mask(mask))

    def _drain(self, writes: list[tuple[_Item, Future]], block: bool) -> list[tuple[_Item, Future]]:
        pending = []
        for it, f in writes:
            if not block and not f.done():
                pending.append((it, f))
                continue
            try:
                f.result()
                status = "ok" if it.row["iterations"] else "clean"
                it.row.update(status=status, error="", seconds=round(it.work_s, 4))
                self.analyzer.count(f"images_{status}")
                self._record.append(it.row)
            except Exception as exc:
                self._fail(it, exc)
        return pending

    def _fail(self, it: _Item, exc: BaseException) -> None:
        if is_oom_error(exc):
            self.memory.record_oom()
            msg = f"out of memory: {exc}"
        else:
            msg = f"{type(exc).__name__}: {exc}"
        it.row.update(status="failed", error=" ".join(msg.split())[:500], seconds=round(it.work_s, 4),
                      mask="", output_bytes="", output_mtime_ns="")
        it.image = None
        self.analyzer.count("images_failed")
        if self._record is not None:
            self._record.append(it.row)
        log.warning("failed %s: %s", it.src, msg)


def check_paths(input_root: str | Path, output_root: str | Path, manifest: str | Path,
                masks_dir: str | Path | None = None) -> None:
    """Refuse overlaps between the input and what a repair writes, and unwritable outputs (PathError)."""
    check_no_overlap({"--input": input_root},
                     {"--output": output_root, "--save-masks": masks_dir, "--manifest": manifest},
                     files=("--manifest",))
    ensure_writable_dir("--output", output_root)
    if masks_dir:
        ensure_writable_dir("--save-masks", masks_dir)
    ensure_writable_file("--manifest", manifest)


def build_engine(model: str | Path | None = None, optimization: Any = None, predict_config: Any = None,
                 repair_config: RepairConfig | None = None, inpaint: InpaintConfig | dict[str, Any] | None = None,
                 device: str = "auto", threads: int = 0, optimized: bool = True,
                 verify_model: bool = True, stamps: list[Stamp] | None = None) -> RepairEngine:
    """Predictor + IOPaint inpainter + engine, as the CLI and the workflow both use them.

    The inpaint model is checked (weights present, IOPaint importable) *before*
    the detector loads, so a misconfigured run fails in seconds, not after work.
    """
    from wmrepair.inpaint import Inpainter
    from wmrepair.optimization import OptimizationConfig

    opt = optimization or OptimizationConfig()
    rc = repair_config or RepairConfig()
    inp = InpaintConfig(**inpaint) if isinstance(inpaint, dict) else inpaint
    from wmrepair.device import resolve_device

    dev = resolve_device(device)
    inpainter = Inpainter(device=dev.type, config=inp)
    predictor = OptimizedWatermarkPredictor(model, opt, predict_config, device=str(dev), threads=threads,
                                            optimized=optimized, verify_model=verify_model)
    from wmrepair.gpulease import leased_device

    gpu = leased_device()  # for the report: what the repair ran on (the host's GPU id when leased)
    predictor.analyzer.note_settings(device=f"{dev} (GPU {gpu})" if gpu and dev.type == "cuda" else str(dev),
                                     gpu_lease=gpu, level=opt.level)
    return RepairEngine(predictor, inpainter, rc, stamps=stamps)
