"""The seed's documented API, run as its documents show it (module paths `src.…` are `wmrepair`)."""

import logging

import numpy as np
import pytest
import torch
from conftest import make_image
from PIL import Image


class PairDataset(torch.utils.data.Dataset):
    """Any torch Dataset of (image, mask) pairs: CHW float images in [0, 1], 1HW 0/1 masks."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            img = (rng.random((32, 32, 3)) * 0.4 + 0.3).astype(np.float32)
            mask = np.zeros((1, 32, 32), np.float32)
            y, x = rng.integers(0, 20, 2)
            img[y : y + 8, x : x + 10] = 1.0  # a white mark
            mask[0, y : y + 8, x : x + 10] = 1.0
            self.items.append((torch.from_numpy(img).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def test_configuration_and_manager_as_the_seed_documents(tmp_path):
    from wmrepair import OptimizationConfig, OptimizationLevel, create_optimization_manager

    config = OptimizationConfig(optimization_level=OptimizationLevel.CUSTOM)
    config.memory.cleanup_threshold = 0.8
    config.memory.aggressive_cleanup = True
    config.memory.monitor_interval = 0.5
    config.memory.cuda_memory_management = True
    config.batch.initial_batch_size = 4
    config.batch.min_batch_size = 1
    config.batch.max_batch_size = 16
    config.batch.adaptation_rate = 0.1
    config.model.mixed_precision = True
    config.model.compile_model = False
    config.model.use_tensorrt = False
    config.model.channels_last = True
    config.dataloader.num_workers = 2
    config.dataloader.pin_memory = True
    config.dataloader.prefetch_factor = 2
    config.dataloader.enable_caching = True
    manager = create_optimization_manager(config=config)
    summary = manager.get_optimization_summary()
    assert summary["level"] == "custom" and summary["effective"]["batch"]["adaptation_rate"] == 0.1
    assert manager.monitor.interval == 0.5  # monitor_interval is live
    assert manager.memory.cleanup() is True  # aggressive_cleanup: a cleanup call always collects
    report = manager.generate_performance_report(tmp_path)
    assert report.exists()
    manager.close()
    aggressive = OptimizationConfig(optimization_level=OptimizationLevel.AGGRESSIVE)
    assert aggressive.level == "aggressive" and aggressive.batch.max_batch_size == 128
    assert OptimizationConfig.from_level(OptimizationLevel.CONSERVATIVE).memory.aggressive_cleanup


def test_adaptation_rate_is_the_growth_share():
    from wmrepair.batching import AdaptiveBatchProcessor
    from wmrepair.optimization import BatchConfig

    proc = AdaptiveBatchProcessor(BatchConfig(initial_batch_size=10, max_batch_size=100, adaptation_rate=0.5,
                                              grow_after=1))
    proc.run(list(range(10)), lambda batch: batch)
    assert proc.batch_size == 15  # grew by half after a success


def test_predictor_as_the_seed_documents(tiny_model_file, tmp_path):
    from wmrepair import OptimizedWatermarkPredictor

    Image.fromarray(make_image(64, 80)).save(tmp_path / "image.jpg")
    with OptimizedWatermarkPredictor(str(tiny_model_file)) as predictor:
        result = predictor.predict(str(tmp_path / "image.jpg"))
        for same in (np.array(Image.open(tmp_path / "image.jpg")), Image.open(tmp_path / "image.jpg")):
            assert (predictor.predict(same)["mask"] == result["mask"]).all()
    assert result["mask"].shape == (64, 80) and result["mask"].dtype == bool
    assert set(result) >= {"mask", "probability", "mask_fraction", "has_watermark", "confidence", "processing_time"}


def test_trainer_as_the_seed_documents(tmp_path, monkeypatch):
    from wmrepair import OptimizedTrainer
    from wmrepair.model import UNet, UNetConfig

    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=8, depth=2))
    train_dataset, val_dataset = PairDataset(32, 0), PairDataset(8, 1)
    criterion = torch.nn.BCEWithLogitsLoss()
    monkeypatch.chdir(tmp_path)  # checkpoints and history go to results/train by default
    with OptimizedTrainer(model, train_dataset, val_dataset) as trainer:
        history = trainer.train(criterion, epochs=3)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert (tmp_path / "results/train/checkpoints/last.pt").exists()


def test_decorators_global_analyzer_and_monitors(caplog):
    from wmrepair import (
        CUDAMonitor,
        get_global_performance_analyzer,
        log_memory_usage,
        memory_optimized,
        performance_profile,
    )

    @memory_optimized
    def heavy(n):
        return sum(range(n))

    @performance_profile("seed_stage")
    def timed():
        return heavy(1000)

    analyzer = get_global_performance_analyzer()
    analyzer.start_monitoring()
    assert timed() == sum(range(1000))
    assert analyzer.stage_stats()["seed_stage"]["count"] >= 1
    summary = analyzer.stop_monitoring()
    assert summary["samples"] >= 1
    monitor = CUDAMonitor()
    monitor.start_monitoring()
    stats = monitor.stop_monitoring()
    if not torch.cuda.is_available():
        assert stats["gpu"] == "no GPU"
    with caplog.at_level(logging.INFO, logger="wmrepair.memory"):
        info = log_memory_usage("after load")
    assert "after load: rss_mb" in caplog.text and info["rss_mb"] > 0
    if not torch.cuda.is_available():
        assert info["gpu"] == "no GPU" and "no GPU" in caplog.text


@pytest.mark.parametrize("level", ["conservative", "balanced", "aggressive", "custom"])
def test_levels_by_enum_and_by_name_agree(level):
    from wmrepair import OptimizationConfig, OptimizationLevel

    assert OptimizationConfig(optimization_level=OptimizationLevel(level)).to_dict() == \
        OptimizationConfig.from_level(level).to_dict()
