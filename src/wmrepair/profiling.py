"""PerformanceAnalyzer: stage timings, throughput counters, bottlenecks and recommendations."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


class PerformanceAnalyzer:
    def __init__(self) -> None:
        self.timings: dict[str, list[float]] = defaultdict(list)
        self.counters: dict[str, float] = defaultdict(float)
        self.events: dict[str, int] = defaultdict(int)
        self.extra: dict[str, Any] = {}

    def record(self, name: str, seconds: float) -> None:
        self.timings[name].append(seconds)

    @contextlib.contextmanager
    def profile(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.record(name, time.perf_counter() - t0)

    def count(self, name: str, n: float = 1) -> None:
        self.counters[name] += n

    def event(self, name: str) -> None:
        self.events[name] += 1

    def start_monitoring(self, interval: float = 1.0) -> PerformanceAnalyzer:
        """Sample CPU, RSS and GPU memory in the background; the samples go into the report."""
        from wmrepair.monitor import ResourceMonitor

        if getattr(self, "_monitor", None) is None:
            self._monitor = ResourceMonitor(interval=interval).start()
        return self

    def stop_monitoring(self) -> dict[str, float]:
        """Stop sampling; returns the resource summary (peak RSS, GPU memory, ...)."""
        mon, self._monitor = getattr(self, "_monitor", None), None
        if mon is None:
            return {}
        mon.stop()
        self._samples = mon.samples
        return mon.summary()

    def note_settings(self, **settings: Any) -> None:
        """Record what the profiled run had on (amp, int8, inpaint model...), so advice skips it."""
        self.extra.setdefault("settings", {}).update(settings)

    def stage_stats(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, ts in self.timings.items():
            if not ts:
                continue
            out[name] = {
                "count": len(ts),
                "total_s": sum(ts),
                "mean_s": statistics.fmean(ts),
                "p50_s": _percentile(ts, 50),
                "p95_s": _percentile(ts, 95),
            }
        return out

    def throughput(self) -> dict[str, float]:
        """items/s for each counter that has a stage of the same name."""
        stats = self.stage_stats()
        return {
            name: n / stats[name]["total_s"]
            for name, n in self.counters.items()
            if name in stats and stats[name]["total_s"] > 0
        }

    def bottlenecks(
        self, samples: list[dict[str, float]] | None = None, memory: dict[str, float] | None = None
    ) -> list[dict[str, str]]:
        """Findings with a concrete recommendation each, from timings, samples and memory stats."""
        found: list[dict[str, str]] = []
        stats = self.stage_stats()
        total = sum(s["total_s"] for s in stats.values())
        if total > 0:
            for stages, what, advice in _IO_FINDINGS:
                wait = sum(stats[k]["total_s"] for k in stages if k in stats)
                if wait / total > 0.2:
                    found.append({"finding": f"{what} takes {100 * wait / total:.0f}% of profiled time",
                                  "recommendation": advice})
            top = max(stats.items(), key=lambda kv: kv[1]["total_s"])
            found.append({
                "finding": f"largest stage: {top[0]} ({100 * top[1]['total_s'] / total:.0f}% of profiled time)",
                "recommendation": _stage_advice(top[0], self.extra.get("settings", {})),
            })
        if samples:
            gpu = [s["gpu_util_percent"] for s in samples if s.get("gpu_mem_used_mb", 0) > 0]
            if gpu and statistics.fmean(gpu) < 50:
                found.append({
                    "finding": f"GPU utilisation averages {statistics.fmean(gpu):.0f}%",
                    "recommendation": "larger batches (optimization.level: aggressive) or more IO workers",
                })
            cpu = [s["cpu_percent"] for s in samples]
            if cpu and max(cpu) > 0 and statistics.fmean(cpu) < 50 and not gpu:
                found.append({
                    "finding": f"CPU use averages {statistics.fmean(cpu):.0f}% of one core",
                    "recommendation": "work is waiting on something other than compute; check IO and pauses",
                })
        if memory:
            if memory.get("oom_events", 0):
                found.append({
                    "finding": f"{int(memory['oom_events'])} out-of-memory events",
                    "recommendation": "lower optimization.batch.max_batch_size or use the conservative level",
                })
            if memory.get("pauses", 0):
                found.append({
                    "finding": f"{int(memory['pauses'])} pauses under memory pressure ({memory.get('pause_seconds', 0):.1f}s)",
                    "recommendation": "reduce batch size or io_workers, or run fewer jobs per node",
                })
        return found

    def report(self, samples: list[dict[str, float]] | None = None, memory: dict[str, float] | None = None) -> dict[str, Any]:
        return {
            "stages": self.stage_stats(),
            "throughput": self.throughput(),
            "counters": dict(self.counters),
            "events": dict(self.events),
            "bottlenecks": self.bottlenecks(samples, memory),
            **self.extra,
        }

    def generate_performance_report(self, out: str | Path, **kw: Any) -> Path:
        mon = getattr(self, "_monitor", None)
        if "samples" not in kw and (mon is not None or getattr(self, "_samples", None)):
            kw["samples"] = list(mon.samples) if mon is not None else self._samples
        out = Path(out)
        path = out / "performance.json" if out.suffix != ".json" else out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.report(**kw), indent=2, default=float))
        return path


# Waiting for data, by where it happens: training batches or the repair's image files.
# Also the advice when one of these stages is the largest.
_IO_FINDINGS = [
    (("data_wait",), "waiting for training batches",
     "read from the dataset cache (CachedDataset, as the workflow does) and raise "
     "optimization.dataloader.num_workers where cores are spare"),
    (("decode", "encode", "io"), "image decoding/encoding",
     "raise optimization.repair.io_workers so image files are read and written while the model works"),
]

_STAGE_ADVICE = {
    "train_step": "mixed precision and channels_last (optimization.level: balanced/aggressive)",
    "detect": "raise batch size, enable bf16/fp16 autocast or torch.compile",
    "inpaint": "inpainting dominates: use the cv2 model for speed, or a GPU for LaMa",
    "tiles": "finding tiled marks' grids: repair.tile_share: null turns it off",
    **{stage: advice for stages, _, advice in _IO_FINDINGS for stage in stages},
}


def _stage_advice(stage: str, on: dict[str, Any]) -> str:
    """What to try for the largest stage, minus what the run already had on (`extra["settings"]`)."""
    fast = bool(on.get("int8") or (on.get("amp_dtype") and on.get("channels_last")))
    if stage in ("train_step", "detect") and fast:
        what = "int8" if on.get("int8") else f"{on['amp_dtype']} autocast and channels_last"
        more = "fewer train.epochs or a smaller train.model" if stage == "train_step" else "predict.scales: [1.0] or a smaller predict.max_side"
        return f"compute-bound with {what} already on: a GPU, or {more}"
    if stage == "inpaint" and on.get("inpaint_model") == "cv2":
        runs = f"cv2 inpainting already runs {on.get('inpaint_workers', 1)} image(s) at once"
        if on.get("texture_fill") is not None:  # on the real dev photos FSR took 2/3 of the repair time (DEVNOTES)
            return (f"{runs}, with the FSR texture fill: inpaint.texture_fill: null (or a smaller "
                    "inpaint.texture_pixels) trades its quality on textured ground for about 3x faster repair; "
                    "or more CPU cores")
        return f"{runs}: more CPU cores, or a smaller inpaint.cv2_radius"
    return _STAGE_ADVICE.get(stage, "profile this stage further")


DEFAULT_ANALYZER = PerformanceAnalyzer()


def get_global_performance_analyzer() -> PerformanceAnalyzer:
    """The analyzer `@performance_profile` records into when given none."""
    return DEFAULT_ANALYZER


def performance_profile(name: str, analyzer: PerformanceAnalyzer | None = None) -> Any:
    """Use as `@performance_profile("stage")` or `with performance_profile("stage"):`."""

    class _Profile(contextlib.ContextDecorator):
        def __init__(self) -> None:
            self._starts: list[float] = []  # a stack: safe for recursion

        def __enter__(self) -> None:
            self._starts.append(time.perf_counter())

        def __exit__(self, *exc: Any) -> None:
            (analyzer or DEFAULT_ANALYZER).record(name, time.perf_counter() - self._starts.pop())

    return _Profile()

