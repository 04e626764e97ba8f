import pytest
import torch

from wmrepair.memory import MemoryManager, is_oom_error, memory_optimized
from wmrepair.optimization import MemoryConfig

# Simulated allocation failures, in every form the manager recognises.
SIMULATED_OOMS = [
    MemoryError("simulated"),
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)"),
    RuntimeError("CUDA error: out of memory (simulated)"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED (simulated)"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle) (simulated)"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 1000 bytes (simulated)"),
]


@pytest.mark.parametrize("exc", SIMULATED_OOMS, ids=lambda e: type(e).__name__ + ":" + str(e)[:25])
def test_oom_forms_recognised(exc):
    assert is_oom_error(exc)


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch"), ValueError("out of memory"), KeyError("x")])
def test_non_oom_not_recognised(exc):
    assert not is_oom_error(exc)


class Patched(MemoryManager):
    """MemoryManager with a scripted memory reading (the pressure itself is simulated)."""

    def __init__(self, readings, **kw):
        super().__init__(**kw)
        self.readings = list(readings)

    def ram_fraction(self):
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def test_pressure_pause_waits_until_memory_falls():
    mm = Patched([0.97, 0.97, 0.96, 0.5], config=MemoryConfig(pause_threshold=0.9, pause_timeout_s=5))
    waited = mm.wait_for_memory(poll_s=0.01)
    assert waited > 0 and mm.stats.pauses == 1 and mm.stats.cleanups >= 1
    assert mm.wait_for_memory(poll_s=0.01) == 0.0  # below threshold: no pause
    assert mm.stats.pauses == 1


def test_pause_gives_up_after_timeout():
    mm = Patched([0.99], config=MemoryConfig(pause_threshold=0.9, pause_timeout_s=0.05))
    assert 0.05 <= mm.wait_for_memory(poll_s=0.01) < 2


def test_cleanup_only_when_it_helps():
    mm = Patched([0.2], config=MemoryConfig(cleanup_threshold=0.8))
    assert mm.cleanup() is False and mm.stats.cleanups == 0
    mm.readings = [0.85]
    assert mm.cleanup() is True and mm.stats.cleanups == 1


def test_periodic_cleanup_every_interval():
    mm = Patched([0.1], config=MemoryConfig(cleanup_interval=3))
    for _ in range(7):
        mm.step()
    assert mm.stats.cleanups == 2  # after items 3 and 6


def test_decorator_counts_oom_and_reraises():
    mm = Patched([0.1])

    @memory_optimized(manager=mm)
    def boom():
        raise RuntimeError("CUDA out of memory (simulated)")

    with pytest.raises(RuntimeError):
        boom()
    assert mm.stats.oom_events == 1
