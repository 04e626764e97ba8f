"""AdaptiveBatchProcessor: run a function over items in batches that shrink on OOM and regrow.

Unlike Accelerate's `find_executable_batch_size` (halves, never grows) or
Lightning's `BatchSizeFinder` (probes once), the size here follows memory during
the run: halve on OOM and retry the *same* items, grow after a run of successes
while there is headroom. Every item is yielded exactly once, as a result or as
the exception that a batch of `min_batch_size` still raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from wmrepair.memory import MemoryManager, is_oom_error
from wmrepair.optimization import BatchConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    trajectory: list[int] = field(default_factory=list)  # batch size of every attempt
    ooms: int = 0
    items: int = 0
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "trajectory": self.trajectory, "ooms": self.ooms, "items": self.items,
            "seconds": round(self.seconds, 4), "items_per_s": round(self.throughput, 3),
        }


class AdaptiveBatchProcessor(Generic[T, R]):
    def __init__(self, config: BatchConfig | None = None, memory: MemoryManager | None = None) -> None:
        self.config = config or BatchConfig()
        self.memory = memory
        self.batch_size = self.config.initial_batch_size
        self.stats = BatchStats()
        self._successes = 0
        self._ceiling = self.config.max_batch_size  # lowered by an OOM, restored slowly

    def _grow(self) -> None:
        c = self.config
        self._successes += 1
        if self._successes < c.grow_after:
            return
        self._successes = 0
        if self.batch_size >= self._ceiling:
            # A size that OOMed once is tried again only after a long quiet run.
            self._ceiling = min(c.max_batch_size, self._ceiling * 2)
            return
        if self.memory is not None and not self.memory.headroom():
            return
        new = min(self._ceiling, c.max_batch_size, max(self.batch_size + 1, int(self.batch_size * (1 + c.adaptation_rate))))
        if new != self.batch_size:
            log.debug("batch size %d -> %d", self.batch_size, new)
            self.batch_size = new

    def _shrink(self) -> None:
        self.stats.ooms += 1
        self._successes = 0
        self._ceiling = max(self.config.min_batch_size, self.batch_size - 1)
        new = max(self.config.min_batch_size, self.batch_size // 2)
        log.warning("out of memory at batch size %d: retrying the same items at %d", self.batch_size, new)
        self.batch_size = new
        if self.memory is not None:
            self.memory.record_oom()

    def process(
        self, items: Sequence[T], fn: Callable[[list[T]], Sequence[R]]
    ) -> Iterator[tuple[T, R | BaseException]]:
        """Yield `(item, result)` in input order; `result` is the exception if even a
        minimum-size batch failed with OOM. Other exceptions propagate."""
        i = 0
        n = len(items)
        while i < n:
            if self.memory is not None:
                self.memory.wait_for_memory()
            batch = list(items[i : i + self.batch_size])
            self.stats.trajectory.append(len(batch))
            t0 = time.perf_counter()
            try:
                results = fn(batch)
            except Exception as exc:
                if not is_oom_error(exc):
                    raise
                if len(batch) <= self.config.min_batch_size:
                    self.stats.ooms += 1
                    if self.memory is not None:
                        self.memory.record_oom()
                    for item in batch:
                        yield item, exc
                    i += len(batch)
                    continue
                self._shrink()
                continue
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            self.stats.seconds += time.perf_counter() - t0
            self.stats.items += len(batch)
            yield from zip(batch, results, strict=True)
            i += len(batch)
            self._grow()

    def run(self, items: Sequence[T], fn: Callable[[list[T]], Sequence[R]]) -> list[R | BaseException]:
        return [r for _, r in self.process(items, fn)]
