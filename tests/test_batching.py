import pytest
from test_memory import SIMULATED_OOMS

from wmrepair.batching import AdaptiveBatchProcessor
from wmrepair.optimization import BatchConfig


@pytest.mark.parametrize("oom", SIMULATED_OOMS, ids=lambda e: type(e).__name__ + ":" + str(e)[:25])
def test_oom_halves_retries_same_items_and_regrows(oom):
    cfg = BatchConfig(initial_batch_size=8, min_batch_size=1, max_batch_size=8, adaptation_rate=1.0, grow_after=2)
    proc = AdaptiveBatchProcessor(cfg)
    processed = []
    fail_once = {"armed": True}

    def fn(batch):
        # Simulated OOM: the first batch of 8 fails once.
        if len(batch) == 8 and fail_once["armed"]:
            fail_once["armed"] = False
            raise oom
        processed.extend(batch)
        return [x * 10 for x in batch]

    items = list(range(50))
    out = list(proc.process(items, fn))
    assert [i for i, _ in out] == items  # every item exactly once, in order
    assert [r for _, r in out] == [i * 10 for i in items]
    assert sorted(processed) == items and len(processed) == len(set(processed))
    t = proc.stats.trajectory
    assert t[0] == 8 and t[1] == 4  # halved and retried
    assert max(t[2:]) > 4  # then grew again
    assert proc.stats.ooms == 1


def test_never_below_min_and_failing_items_reported():
    proc = AdaptiveBatchProcessor(BatchConfig(initial_batch_size=4, min_batch_size=2, max_batch_size=4))

    def fn(batch):
        if 3 in batch:
            raise MemoryError("simulated")
        return batch

    out = dict(proc.process(list(range(8)), fn))
    assert set(out) == set(range(8))
    assert isinstance(out[3], MemoryError) and isinstance(out[2], MemoryError)  # its min-size batch
    assert all(out[i] == i for i in (0, 1, 4, 5, 6, 7))
    assert min(proc.stats.trajectory) >= 2


def test_non_oom_errors_propagate():
    proc = AdaptiveBatchProcessor(BatchConfig(initial_batch_size=2, max_batch_size=2))
    with pytest.raises(KeyError):
        list(proc.process([1, 2, 3], lambda b: (_ for _ in ()).throw(KeyError("x"))))


def test_growth_capped_at_max():
    proc = AdaptiveBatchProcessor(BatchConfig(initial_batch_size=1, max_batch_size=5, grow_after=1))
    proc.run(list(range(40)), lambda b: b)
    assert max(proc.stats.trajectory) == 5
