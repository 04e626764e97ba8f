import pytest

from wmrepair.hardware import GPUInfo, HardwareInfo
from wmrepair.optimization import OptimizationConfig, adapt_to_hardware

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


def test_scratch_overlay_trains_from_random_weights_on_its_measured_schedule():
    import copy

    import yaml
    from snakemake.utils import update_config

    from wmrepair.config import DEFAULT_CONFIG, Settings

    cfg = copy.deepcopy(yaml.safe_load(DEFAULT_CONFIG.read_text()))
    default = Settings.from_config(copy.deepcopy(cfg)).train
    assert (default.init, default.epochs, default.lr, default.progressive_fraction, default.patience) == (
        "pretrained", 12, 5e-4, 0, 0)  # the main job fine-tunes the shipped detector
    update_config(cfg, yaml.safe_load((DEFAULT_CONFIG.parent / "scratch.yaml").read_text()))
    t = Settings.from_config(cfg).train
    assert (t.init, t.epochs, t.lr, t.progressive_fraction, t.patience) == ("scratch", 68, 3e-3, 0.59, 5)


def test_long_training_overlay_merges_onto_the_default():
    """config/long-training.yaml changes only the training (from scratch, 3x long); Snakemake merges it key by key."""
    import copy

    import jsonschema
    import yaml
    from snakemake.utils import update_config

    from wmrepair.config import DEFAULT_CONFIG, Settings

    root = DEFAULT_CONFIG.parent
    base = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg = copy.deepcopy(base)
    update_config(cfg, yaml.safe_load((root / "long-training.yaml").read_text()))
    jsonschema.validate(cfg, yaml.safe_load((root.parent / "workflow/schemas/config.schema.yaml").read_text()))
    t = Settings.from_config(cfg).train
    assert (t.epochs, t.patience, t.progressive_fraction) == (108, 0, 0) and t.time_budget_s > 3 * base["train"]["time_budget_s"]
    assert t.model == base["train"]["model"] and (t.init, t.lr) == ("scratch", 3e-3)  # the measured run


@pytest.mark.parametrize("level, io, cleanup, inpaint", [
    ("conservative", 1, 10, 1), ("balanced", 2, 50, None), ("aggressive", 4, 200, None)])
def test_the_level_reaches_the_workflows_repair_engine(tiny_model_file, level, io, cleanup, inpaint):
    """The engine repair_chunk builds (Settings from the config, then build_engine) runs with the level's values."""
    import yaml

    from wmrepair.config import DEFAULT_CONFIG, Settings
    from wmrepair.hardware import usable_cpus
    from wmrepair.repair import build_engine

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
    """Every key of config/config.yaml is a defined setting and states its one default, so
    `wmrepair train`, `wmrepair repair` or the Python API without a config run what `make run` runs."""
    import yaml

    from wmrepair.config import DEFAULT_CONFIG, WorkflowConfig
    from wmrepair.schema import defaults

    def compare(given, want, where):
        for key, value in given.items():
            assert key in want, f"config.yaml {where}{key}: no such setting in wmrepair.config"
            if isinstance(value, dict) and isinstance(want[key], dict):
                compare(value, want[key], f"{where}{key}.")
            else:
                assert value == want[key], f"config.yaml {where}{key}: {value!r}, its definition {want[key]!r}"

    compare(yaml.safe_load(DEFAULT_CONFIG.read_text()), defaults(WorkflowConfig), "")


def test_the_schema_file_is_generated_from_the_definitions():
    """workflow/schemas/config.schema.yaml is `wmrepair schema` output: stale after a change in config.py."""
    from wmrepair.config import SCHEMA_FILE, schema_text

    assert SCHEMA_FILE.read_text() == schema_text(), "run `wmrepair schema --write` after changing wmrepair/config.py"


def test_every_setting_has_a_doc_and_the_schema_rejects_unknown_keys():
    import dataclasses

    import jsonschema
    import yaml

    from wmrepair.config import DEFAULT_CONFIG, WorkflowConfig, config_schema

    def walk(cls, where=""):
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            if dataclasses.is_dataclass(f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default):
                walk(type(f.default_factory()), f"{where}{f.name}.")
            else:
                assert f.metadata.get("doc"), f"{where}{f.name} has no doc"
    walk(WorkflowConfig)
    schema = config_schema()
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    jsonschema.validate(cfg, schema)
    for section, key, value in (("predict", "treshold", 0.5), ("repair", "jpeg_quality", 101),
                                ("train", "monitor", "val_acc"), ("data", "synth", {"n_train": 0})):
        bad = {**cfg, section: {**cfg[section], key: value}}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_settings_that_did_nothing_are_gone():
    """persistent_workers: each epoch builds its loader (it reseeds augmentation and may change the side),
    so workers could not persist; the setting is refused instead of silently ignored."""
    from wmrepair.optimization import OptimizationConfig

    with pytest.raises(ValueError, match="unknown setting optimization.dataloader.persistent_workers"):
        OptimizationConfig.from_dict({"dataloader": {"persistent_workers": True}})


def test_a_moved_setting_says_where_it_went():
    from wmrepair.config import Settings

    with pytest.raises(ValueError, match=r"repair.mask_threshold is now predict.threshold"):
        Settings.from_config({"repair": {"mask_threshold": 0.4}})
