"""MemoryManager: thresholds, cleanup that only runs when it helps, OOM detection, pressure pause."""

from __future__ import annotations

import functools
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import psutil

from wmrepair.optimization import MemoryConfig

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

# Message forms of allocation failures that arrive as RuntimeError (cuDNN/cuBLAS
# wrap them; the CPU allocator raises RuntimeError, not MemoryError).
OOM_MESSAGES = (
    "out of memory",
    "cuda error: out of memory",
    "cudnn_status_alloc_failed",
    "cudnn_status_not_enough_workspace",
    "cublas_status_alloc_failed",
    "defaultcpuallocator: can't allocate memory",
    "failed to allocate memory",
)


def is_oom_error(exc: BaseException) -> bool:
    """True for allocation failures, by type first and then by the known message forms."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):  # exists in CPU builds too
            return True
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()
        return any(m in msg for m in OOM_MESSAGES)
    return False


@dataclass
class MemoryStats:
    peak_rss_mb: float = 0.0
    peak_gpu_allocated_mb: float = 0.0
    cleanups: int = 0
    cuda_cache_releases: int = 0
    pauses: int = 0
    pause_seconds: float = 0.0
    oom_events: int = 0


@functools.cache
def _glibc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, looked up once (find_library runs ldconfig); None elsewhere."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim
        return None


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them per thread arena).

    With several inpainting threads, freed image buffers sit in per-thread
    arenas and RSS swings by ~50-100 MB between groups; trimming at each
    periodic cleanup keeps a long run's RSS at what it actually holds.
    """
    trim = _glibc_malloc_trim()
    if trim is not None:
        trim(0)


class MemoryManager:
    """Watches RAM (and GPU memory when CUDA is in use) against configured thresholds."""

    def __init__(self, config: MemoryConfig | None = None, device: str = "cpu") -> None:
        self.config = config or MemoryConfig()
        self.device = str(device)
        self.stats = MemoryStats()
        self._proc = psutil.Process()
        self._items = 0

    # ---- readings (patched in tests) ---------------------------------
    def ram_fraction(self) -> float:
        return psutil.virtual_memory().percent / 100.0

    def gpu_fraction(self) -> float:
        if not self.device.startswith("cuda"):
            return 0.0
        import torch

        free, total = torch.cuda.mem_get_info()
        return 1.0 - free / total

    def usage(self) -> float:
        """The tighter of RAM and GPU memory use, as a fraction."""
        rss = self._proc.memory_info().rss / 2**20
        self.stats.peak_rss_mb = max(self.stats.peak_rss_mb, rss)
        if self.device.startswith("cuda"):
            import torch

            self.stats.peak_gpu_allocated_mb = max(
                self.stats.peak_gpu_allocated_mb, torch.cuda.max_memory_allocated() / 2**20
            )
        return max(self.ram_fraction(), self.gpu_fraction())

    def headroom(self) -> bool:
        """Whether there is room to grow batches (below the cleanup threshold)."""
        return self.usage() < self.config.cleanup_threshold

    # ---- actions -------------------------------------------------------
    def cleanup(self, force: bool = False) -> bool:
        """Collect garbage; release the CUDA cache only if it holds much unused memory.

        `empty_cache` after every image forces re-allocation (slow) and is what
        makes `iopaint run` crawl; we release only when reserved-but-unused
        memory is large or we are above the threshold.
        """
        if not force and not self.config.aggressive_cleanup and self.usage() < self.config.cleanup_threshold:
            return False
        gc.collect()
        _malloc_trim()
        self.stats.cleanups += 1
        if self.device.startswith("cuda") and self.config.cuda_memory_management:
            import torch

            unused = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
            if force or self.config.aggressive_cleanup or unused > 0.25 * torch.cuda.memory_reserved():
                torch.cuda.empty_cache()
                self.stats.cuda_cache_releases += 1
        return True

    def step(self, n: int = 1) -> None:
        """Count processed items; run the periodic cleanup every `cleanup_interval`."""
        before = self._items
        self._items += n
        every = max(1, self.config.cleanup_interval)
        if self._items // every != before // every:
            self.cleanup(force=True)
        self.wait_for_memory()

    def wait_for_memory(self, poll_s: float = 0.5) -> float:
        """Pause while memory use is above `pause_threshold`; returns seconds paused."""
        if self.usage() < self.config.pause_threshold:
            return 0.0
        self.cleanup(force=True)
        t0 = time.monotonic()
        self.stats.pauses += 1
        log.warning("memory above %.0f%%: pausing until it falls", self.config.pause_threshold * 100)
        while self.usage() >= self.config.pause_threshold:
            if time.monotonic() - t0 > self.config.pause_timeout_s:
                log.warning("memory still high after %.0fs: continuing", self.config.pause_timeout_s)
                break
            time.sleep(poll_s)
        waited = time.monotonic() - t0
        self.stats.pause_seconds += waited
        return waited

    def record_oom(self) -> None:
        self.stats.oom_events += 1
        self.cleanup(force=True)

    def summary(self) -> dict[str, float]:
        self.usage()
        return asdict(self.stats)

    def __enter__(self) -> MemoryManager:
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup(force=True)


def memory_optimized(func: F | None = None, *, manager: MemoryManager | None = None) -> Any:
    """Decorator: wait for memory before the call, clean up after it, count OOMs.

    OOMs are re-raised (the caller decides whether to retry smaller).
    """

    def wrap(f: F) -> F:
        @functools.wraps(f)
        def inner(*args: Any, **kwargs: Any) -> Any:
            mm = manager or _default_manager()
            mm.wait_for_memory()
            try:
                return f(*args, **kwargs)
            except Exception as exc:
                if is_oom_error(exc):
                    mm.record_oom()
                raise
            finally:
                mm.cleanup()

        return inner  # type: ignore[return-value]

    return wrap(func) if func is not None else wrap


_DEFAULT: MemoryManager | None = None


def _default_manager() -> MemoryManager:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = MemoryManager()
    return _DEFAULT
