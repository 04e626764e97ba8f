"""GPU paths: fp16 + GradScaler, bf16, pin_memory, cudnn.benchmark, NVML, a real CUDA OOM.

Runs on a CUDA machine in a few minutes (`pytest tests/gpu`); skipped elsewhere.
"""

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    from conftest import build_tiny_caches

    return build_tiny_caches(tmp_path_factory.mktemp("gpu"), 64, 16, 128)


@pytest.mark.parametrize("gpu_bf16", [False, True], ids=["fp16+GradScaler", "bf16"])
def test_trainer_mixed_precision_on_gpu(caches, tmp_path, monkeypatch, gpu_bf16):
    from wmrepair import config as config_mod
    from wmrepair.hardware import GPUInfo, HardwareInfo
    from wmrepair.optimization import OptimizationConfig
    from wmrepair.train import TrainConfig, train_from_cache

    hw = HardwareInfo(cpu_count=8, gpus=[GPUInfo(0, torch.cuda.get_device_name(0), 80000, gpu_bf16)])
    monkeypatch.setattr(config_mod, "detect_hardware", lambda: hw)
    cfg = TrainConfig(epochs=3, batch_size=16, crop=96, patience=0, device="cuda", time_budget_s=None)
    s = train_from_cache(caches / "train/index.json", caches / "val/index.json", tmp_path, cfg, OptimizationConfig())
    eff = s["effective_optimization"]
    assert eff["model"]["amp_dtype"] == ("bfloat16" if gpu_bf16 else "float16")
    assert eff["dataloader"]["pin_memory"] and eff["training"]["cudnn_benchmark"]
    assert torch.backends.cudnn.benchmark
    h = [r["train_loss"] for r in __import__("pandas").read_csv(tmp_path / "history.csv").to_dict("records")]
    assert np.isfinite(h).all() and h[-1] < h[0]
    print(f"\n{'bf16' if gpu_bf16 else 'fp16'}: {s['median_samples_per_s']:.0f} samples/s, best {s['best']['val_iou']:.3f}")


def test_predictor_on_gpu_matches_cpu():
    from wmrepair.model import UNet, UNetConfig
    from wmrepair.optimization import OptimizationConfig
    from wmrepair.predict import OptimizedWatermarkPredictor

    torch.manual_seed(0)
    m = UNet(UNetConfig())
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(300, 400), (1200, 900), (64, 64)]]
    cpu = OptimizedWatermarkPredictor(UNet(UNetConfig()), OptimizationConfig(), device="cpu", optimized=False)
    cpu.model.load_state_dict(m.state_dict())
    gpu = OptimizedWatermarkPredictor(m, OptimizationConfig.from_level("aggressive"), device="cuda")
    gpu.warmup()
    a, b = cpu.predict_proba(imgs), gpu.predict_proba(imgs)
    for x, y in zip(a, b):
        assert x.shape == y.shape and np.abs(x - y).mean() < 0.02


def test_real_cuda_oom_is_caught_and_backed_off():
    from wmrepair.batching import AdaptiveBatchProcessor
    from wmrepair.memory import MemoryManager, is_oom_error
    from wmrepair.optimization import BatchConfig

    free, total = torch.cuda.mem_get_info()
    per_item = int(total * 0.3)  # 4 items at once cannot fit; 2 can

    def fn(batch):
        t = torch.empty(len(batch) * per_item, dtype=torch.uint8, device="cuda")  # a real allocation
        del t
        return batch

    try:
        torch.empty(total * 2, dtype=torch.uint8, device="cuda")
    except Exception as exc:
        assert is_oom_error(exc)
    mm = MemoryManager(device="cuda")
    proc = AdaptiveBatchProcessor(BatchConfig(initial_batch_size=4, max_batch_size=4, grow_after=100), mm)
    out = proc.run(list(range(10)), fn)
    assert out == list(range(10)) and proc.stats.ooms >= 1 and mm.stats.oom_events >= 1


def test_monitor_reads_nvml():
    from wmrepair.monitor import ResourceMonitor

    x = torch.ones(256, 1024, 1024, device="cuda")  # 1 GiB
    m = ResourceMonitor()
    s = m.sample()
    assert m.gpu_status == "ok" and s["gpu_mem_used_mb"] > 900 and s["torch_allocated_mb"] >= 1024
    del x
