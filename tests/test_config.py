import pytest

from wmrepair.config import OptimizationConfig, adapt_to_hardware
from wmrepair.hardware import GPUInfo, HardwareInfo

CPU_BF16 = HardwareInfo(cpu_count=2, cpu_flags=frozenset({"avx512f", "avx512_bf16"}), ram_total_mb=24000)
CPU_PLAIN = HardwareInfo(cpu_count=2, cpu_flags=frozenset({"avx2"}), ram_total_mb=24000)
GPU_BF16 = HardwareInfo(cpu_count=16, gpus=[GPUInfo(0, "NVIDIA H100", 80000, True)])
GPU_NO_BF16 = HardwareInfo(cpu_count=16, gpus=[GPUInfo(0, "Tesla T4", 15000, False)])


def test_levels_differ_as_documented():
    c, b, a = (OptimizationConfig.from_level(x) for x in ("conservative", "balanced", "aggressive"))
    assert c.batch.max_batch_size < b.batch.max_batch_size < a.batch.max_batch_size
    assert c.batch.initial_batch_size < b.batch.initial_batch_size < a.batch.initial_batch_size
    assert not c.model.mixed_precision and b.model.mixed_precision and a.model.mixed_precision
    assert not c.model.compile_model and not b.model.compile_model and a.model.compile_model
    assert not c.model.channels_last and b.model.channels_last
    assert c.memory.cleanup_interval < b.memory.cleanup_interval < a.memory.cleanup_interval


def test_overrides_and_unknown_keys():
    cfg = OptimizationConfig.from_dict({"level": "aggressive", "batch": {"max_batch_size": 7, "initial_batch_size": 4}})
    assert cfg.batch.max_batch_size == 7 and cfg.model.compile_model
    with pytest.raises(ValueError, match="optimization.batch.max_batch"):
        OptimizationConfig.from_dict({"batch": {"max_batch": 3}})
    with pytest.raises(ValueError, match="level"):
        OptimizationConfig.from_level("turbo")
    with pytest.raises(ValueError, match="min_batch_size <= initial_batch_size"):
        OptimizationConfig.from_dict({"batch": {"initial_batch_size": 64, "max_batch_size": 8}})


def test_yaml_round_trip(tmp_path):
    cfg = OptimizationConfig.from_level("aggressive", memory={"cleanup_interval": 77})
    cfg.to_yaml(tmp_path / "o.yaml")
    back = OptimizationConfig.from_yaml(tmp_path / "o.yaml")
    assert back.to_dict() == cfg.to_dict()


def test_adapt_cpu_without_bf16():
    eff = adapt_to_hardware(OptimizationConfig(), CPU_PLAIN)
    assert eff.model.amp_dtype is None and not eff.model.mixed_precision
    assert any("bf16 autocast off: CPU lacks avx512_bf16" in d for d in eff.decisions)
    assert not eff.dataloader.pin_memory and eff.dataloader.num_workers == 0


def test_adapt_cpu_with_bf16():
    eff = adapt_to_hardware(OptimizationConfig(), CPU_BF16)
    assert eff.model.amp_dtype == "bfloat16"
    assert any("bf16 autocast on" in d for d in eff.decisions)


def test_adapt_gpu_with_and_without_bf16():
    assert adapt_to_hardware(OptimizationConfig(), GPU_BF16).model.amp_dtype == "bfloat16"
    eff = adapt_to_hardware(OptimizationConfig(), GPU_NO_BF16)
    assert eff.model.amp_dtype == "float16"
    assert any("GradScaler" in d for d in eff.decisions)
    assert eff.dataloader.pin_memory and eff.training.cudnn_benchmark


def test_adapt_does_not_mutate_input_and_conservative_stays_fp32():
    cfg = OptimizationConfig.from_level("conservative")
    eff = adapt_to_hardware(cfg, GPU_BF16)
    assert eff.model.amp_dtype is None and cfg.decisions == []


def test_compile_off_without_compiler():
    hw = HardwareInfo(cpu_count=2, has_compiler=False)
    eff = adapt_to_hardware(OptimizationConfig.from_level("aggressive"), hw)
    assert not eff.model.compile_model
    assert any("torch.compile off" in d for d in eff.decisions)


def test_tensorrt_request_is_reported_not_ignored():
    eff = adapt_to_hardware(OptimizationConfig.from_dict({"model": {"use_tensorrt": True}}), CPU_PLAIN)
    assert not eff.model.use_tensorrt and any("use_tensorrt off" in d for d in eff.decisions)


def test_import_is_light():
    """`import wmrepair` must not import torch (or NVML): CPU-only tools stay fast."""
    import subprocess
    import sys

    code = "import sys, wmrepair; print('torch' in sys.modules, 'pynvml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_int8_inference_only_on_cpu():
    agg = OptimizationConfig.from_level("aggressive")
    on_gpu = adapt_to_hardware(agg, GPU_BF16)
    assert not on_gpu.model.int8 and any("int8 inference off: CUDA" in d for d in on_gpu.decisions)
    on_cpu = adapt_to_hardware(agg, CPU_BF16)
    assert on_cpu.model.int8 and any("int8 inference on" in d for d in on_cpu.decisions)
    assert not adapt_to_hardware(OptimizationConfig(), CPU_BF16).model.int8  # balanced stays bf16


def test_long_training_overlay_merges_onto_the_default():
    """config/long-training.yaml changes only the training length; Snakemake merges it key by key."""
    import copy

    import jsonschema
    import yaml
    from snakemake.utils import update_config

    from wmrepair.settings import DEFAULT_CONFIG, Settings

    root = DEFAULT_CONFIG.parent
    base = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg = copy.deepcopy(base)
    update_config(cfg, yaml.safe_load((root / "long-training.yaml").read_text()))
    jsonschema.validate(cfg, yaml.safe_load((root.parent / "workflow/schemas/config.schema.yaml").read_text()))
    t = Settings.from_config(cfg).train
    assert (t.epochs, t.patience, t.progressive_fraction) == (108, 0, 0) and t.time_budget_s > 3 * base["train"]["time_budget_s"]
    assert t.model == base["train"]["model"] and t.lr == base["train"]["lr"]


@pytest.mark.parametrize("level, io, cleanup, inpaint", [
    ("conservative", 1, 10, 1), ("balanced", 2, 50, None), ("aggressive", 4, 200, None)])
def test_the_level_reaches_the_workflows_repair_engine(tiny_model_file, level, io, cleanup, inpaint):
    """The engine repair_chunk builds (Settings from the config, then build_engine) runs with the level's values."""
    import yaml

    from wmrepair.hardware import usable_cpus
    from wmrepair.repair import build_engine
    from wmrepair.settings import DEFAULT_CONFIG, Settings

    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["optimization"] = {"level": level, "model": {"int8": False, "compile_model": False}}
    s = Settings.from_config(cfg)
    eng = build_engine(tiny_model_file, s.optimization, s.predict, s.repair, s.inpaint)
    assert (eng.io_workers, eng.memory.config.cleanup_interval) == (min(io, 2 * usable_cpus()), cleanup)
    assert eng.inpaint_workers == (inpaint or usable_cpus())  # 0 = one per core for cv2
    s.repair.pause_interval, s.repair.io_workers = 7, 3  # explicit repair settings override the level
    eng = build_engine(tiny_model_file, s.optimization, s.predict, s.repair, s.inpaint)
    assert (eng.io_workers, eng.memory.config.cleanup_interval) == (3, 7)


def test_select_best_follows_the_monitors_direction(tmp_path):
    from wmrepair.checkpoints import CheckpointManager, select_best

    for monitor, want in (("val_loss", 2), ("val_iou", 3)):
        d = tmp_path / monitor
        ck = CheckpointManager(d, top_k=3, monitor=monitor, mode="min" if monitor == "val_loss" else "max")
        for epoch, (loss, iou) in enumerate([(0.9, 0.1), (0.2, 0.3), (0.5, 0.6)], start=1):
            ck.save(epoch, {"val_loss": loss, "val_iou": iou}, {}, {})
        path, meta = select_best(d, monitor)
        assert meta["epoch"] == want, (monitor, meta)


def test_embedded_config_states_the_library_defaults():
    """config/config.yaml and the settings dataclasses give every shared key the same default,
    so `wmrepair train` or the Python API without a config train what `make run` trains."""
    import dataclasses

    import yaml

    from wmrepair.model import UNetConfig
    from wmrepair.predict import PredictConfig
    from wmrepair.repair import RepairConfig
    from wmrepair.settings import DEFAULT_CONFIG
    from wmrepair.synth import SynthConfig
    from wmrepair.train import TrainConfig

    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    workflow_only = {"input_dir", "clean_dir", "mask_dir", "chunk_size", "mem_mb"}
    for cls, section in ((TrainConfig, cfg["train"]), (UNetConfig, cfg["train"]["model"]),
                         (PredictConfig, cfg["predict"]), (RepairConfig, cfg["repair"]),
                         (SynthConfig, cfg["data"]["synth"])):
        defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                    for f in dataclasses.fields(cls)}
        for key, value in section.items():
            if key in workflow_only:
                continue
            assert key in defaults, f"{cls.__name__} has no field {key}"
            want = list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]
            assert want == value, f"{cls.__name__}.{key}: config.yaml {value!r}, library {want!r}"
