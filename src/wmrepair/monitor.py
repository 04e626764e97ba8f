"""ResourceMonitor: a sampler thread recording CPU, RSS, system memory and GPU use.

GPU figures come from NVML (`nvidia-ml-py`) and the torch allocator; both are
loaded lazily and only if a CUDA device exists, so CPU-only machines pay nothing.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from pathlib import Path

import psutil

FIELDS = [
    "t", "cpu_percent", "rss_mb", "sys_mem_percent",
    "gpu_mem_used_mb", "gpu_util_percent", "torch_allocated_mb", "torch_reserved_mb",
]


class _NVML:
    """Thin NVML wrapper; `available` is False (with a reason) when there is no GPU."""

    def __init__(self) -> None:
        self.available = False
        self.reason = "no GPU"
        self.handles: list = []
        try:
            import torch

            if not torch.cuda.is_available():
                return
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.available = bool(self.handles)
            self.reason = "" if self.available else "NVML sees no device"
        except Exception as exc:  # NVML missing or driver mismatch: monitor still works
            self.reason = f"NVML unavailable: {exc}"

    def sample(self) -> tuple[float, float]:
        used = util = 0.0
        for h in self.handles:
            used += self._nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
            util = max(util, float(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu))
        return used, util


class ResourceMonitor:
    """Samples every `interval` seconds in a daemon thread; use as a context manager."""

    def __init__(self, interval: float = 1.0, csv_path: str | Path | None = None) -> None:
        self.interval = interval
        self.csv_path = Path(csv_path) if csv_path else None
        self.samples: list[dict[str, float]] = []
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: _NVML | None = None
        self._t0 = time.perf_counter()

    @property
    def gpu_status(self) -> str:
        if self._nvml is None:
            self._nvml = _NVML()
        return "ok" if self._nvml.available else self._nvml.reason

    def sample(self) -> dict[str, float]:
        if self._nvml is None:
            self._nvml = _NVML()
        rss = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):  # dataloader workers
            try:
                rss += child.memory_info().rss
            except psutil.Error:
                pass
        row = {
            "t": round(time.perf_counter() - self._t0, 3),
            "cpu_percent": self._proc.cpu_percent(None),
            "rss_mb": rss / 2**20,
            "sys_mem_percent": psutil.virtual_memory().percent,
            "gpu_mem_used_mb": 0.0, "gpu_util_percent": 0.0,
            "torch_allocated_mb": 0.0, "torch_reserved_mb": 0.0,
        }
        if self._nvml.available:
            import torch

            row["gpu_mem_used_mb"], row["gpu_util_percent"] = self._nvml.sample()
            row["torch_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
            row["torch_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
        self.samples.append(row)
        return row

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> ResourceMonitor:
        if self._thread is None:
            self._proc.cpu_percent(None)  # prime: the first reading is always 0
            self.sample()
            self._thread = threading.Thread(target=self._run, name="wmrepair-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            self.sample()
        if self.csv_path:
            self.write_csv(self.csv_path)

    def write_csv(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(self.samples)

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        return {
            "samples": len(self.samples),
            "peak_rss_mb": max(s["rss_mb"] for s in self.samples),
            "mean_cpu_percent": sum(s["cpu_percent"] for s in self.samples) / len(self.samples),
            "peak_gpu_mem_mb": max(s["gpu_mem_used_mb"] for s in self.samples),
            "mean_gpu_util_percent": sum(s["gpu_util_percent"] for s in self.samples) / len(self.samples),
            "gpu": self.gpu_status,
        }

    def __enter__(self) -> ResourceMonitor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class CUDAMonitor(ResourceMonitor):
    """The GPU monitor of the public API: the resource sampler, with `start_monitoring`/`stop_monitoring`.

    On a machine without CUDA it samples RAM and CPU and says "no GPU" (`gpu_status`).
    """

    def start_monitoring(self) -> CUDAMonitor:
        self.start()
        return self

    def stop_monitoring(self) -> dict[str, float]:
        self.stop()
        return self.summary()


def log_memory_usage(prefix: str = "", logger: logging.Logger | None = None) -> dict[str, float | str]:
    """Log (and return) this process's RSS, system memory, and the CUDA allocator's figures or "no GPU"."""
    proc = psutil.Process()
    info: dict[str, float | str] = {"rss_mb": round(proc.memory_info().rss / 2**20, 1),
                                    "sys_mem_percent": psutil.virtual_memory().percent}
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        cuda = False
    if cuda:
        info.update(cuda_allocated_mb=round(torch.cuda.memory_allocated() / 2**20, 1),
                    cuda_reserved_mb=round(torch.cuda.memory_reserved() / 2**20, 1),
                    cuda_peak_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1))
    else:
        info["gpu"] = "no GPU"
    (logger or logging.getLogger("wmrepair.memory")).info(
        "%s%s", f"{prefix}: " if prefix else "", ", ".join(f"{k} {v}" for k, v in info.items()))
    return info
