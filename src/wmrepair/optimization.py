"""OptimizationConfig: levels as presets of concrete fields, YAML I/O, hardware adaptation.

A level only chooses starting values; any field may be overridden from YAML.
`adapt_to_hardware` then switches off what the machine cannot do and returns
one human-readable line per decision, so logs say *why* a feature is off.
"""

from __future__ import annotations

import copy
import enum
import logging
from dataclasses import InitVar, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from wmrepair.hardware import HardwareInfo, detect_hardware
from wmrepair.schema import setting

log = logging.getLogger(__name__)

class OptimizationLevel(str, enum.Enum):
    """The levels as an enum (plain strings work wherever a level is asked for)."""

    CONSERVATIVE = "conservative"
    BALANCED = "balanced"
    AGGRESSIVE = "aggressive"
    CUSTOM = "custom"


LEVELS = tuple(level.value for level in OptimizationLevel)


@dataclass
class MemoryConfig:
    """Memory manager: when to clean up and when to pause work."""

    cleanup_threshold: float = setting(0.85, "RAM/GPU memory share above which cleanup runs",
                                       exclusive_minimum=0, maximum=1)
    pause_threshold: float = setting(0.92, "memory share above which work pauses until memory frees",
                                     exclusive_minimum=0, maximum=1)
    pause_timeout_s: float = setting(30.0, "give up pausing after this many seconds (then carry on)", minimum=0)
    cleanup_interval: int = setting(50, "periodic cleanup every N items (repair: images)", minimum=1)
    # Otherwise the CUDA cache is released only when over a quarter of it is unused (re-allocating is slow).
    aggressive_cleanup: bool = setting(False, "every cleanup also hands the CUDA cache and freed heap back")
    monitor_interval: float = setting(1.0, "seconds between resource samples (RAM, CPU, GPU memory)",
                                      exclusive_minimum=0)
    cuda_memory_management: bool = setting(True, "release PyTorch's CUDA cache on cleanup (false: leave it to PyTorch)")


@dataclass
class BatchConfig:
    """Adaptive batch size: start, bounds, and how it grows after successes and shrinks on OOM."""

    initial_batch_size: int = setting(8, "first batch size tried", minimum=1)
    min_batch_size: int = setting(1, "never below this (OOM at this size fails the item)", minimum=1)
    max_batch_size: int = setting(32, "never above this", minimum=1)
    adaptation_rate: float = setting(1.0, "after a run of successes the batch grows by this share (1.0: doubles)",
                                     exclusive_minimum=0)
    grow_after: int = setting(8, "successful batches before trying a larger one", minimum=1)


@dataclass
class ModelExecConfig:
    """How the network executes."""

    mixed_precision: bool = setting(True, "bf16/fp16 autocast where the hardware gains")
    compile_model: bool = setting(False, "torch.compile the model")
    channels_last: bool = setting(True, "NHWC memory format")
    backend: str = setting("torch", "detector runtime: torch, or onnxruntime (optional extra: pip install "
                                    "onnxruntime; exported once per model and cached beside it)",
                           choices=["torch", "onnxruntime"])
    use_tensorrt: bool = setting(False, "ONNX Runtime's TensorRT provider, engine cache on, fp16 where autocast "
                                        "picks it (implies backend onnxruntime; said off when absent)")
    # Masks agree ~97 % with fp32 (DEVNOTES, int8).
    int8: bool = setting(False, "int8 detection on x86 CPUs (post-training quantisation)")
    amp_dtype: str | None = setting(None, "resolved by adapt_to_hardware: bfloat16 / float16 / None", internal=True)


@dataclass
class DataLoaderConfig:
    """Training data loading (a loader per epoch: each epoch reseeds augmentation and may change the side)."""

    num_workers: int = setting(1, "loader worker processes (capped by the hardware)", minimum=0)
    pin_memory: bool = setting(True, "page-locked host batches (CUDA only)")
    prefetch_factor: int = setting(2, "batches each worker loads ahead", minimum=1)
    # The workflow's datasets are memory-mapped caches already.
    enable_caching: bool = setting(True, "keep the validation samples of datasets given to OptimizedTrainer in RAM")


@dataclass
class TrainingExecConfig:
    """Training-step execution."""

    gradient_accumulation_steps: int = setting(1, "optimiser step every N batches", minimum=1)
    cudnn_benchmark: bool = setting(True, "let cuDNN pick kernels for fixed shapes (CUDA only)")


@dataclass
class RepairExecConfig:
    """Repair concurrency."""

    io_workers: int = setting(2, "threads decoding/encoding while the model runs", minimum=1)
    inpaint_workers: int = setting(0, "images inpainted at once (0 = one per core for cv2, else 1)", minimum=0)
    # On a GPU detection and CPU inpainting use different hardware: running them on
    # consecutive groups at once keeps both busy. On a CPU they share the cores.
    overlap: str = setting("auto", "inpaint a group while the next one is detected: auto (when detection runs "
                                   "on a GPU), on, off", choices=["auto", "on", "off"])


@dataclass
class OptimizationConfig:
    """The optimisation level's preset and any field of it overridden."""

    __required__ = ("level",)
    level: str = setting("balanced", "preset: conservative | balanced | aggressive | custom", choices=list(LEVELS))
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    model: ModelExecConfig = field(default_factory=ModelExecConfig)
    dataloader: DataLoaderConfig = field(default_factory=DataLoaderConfig)
    training: TrainingExecConfig = field(default_factory=TrainingExecConfig)
    repair: RepairExecConfig = field(default_factory=RepairExecConfig)
    decisions: list[str] = setting(doc="filled by adapt_to_hardware", factory=list, internal=True)
    # Keyword form: OptimizationConfig(optimization_level=OptimizationLevel.AGGRESSIVE)
    # is the level's preset, like from_level; fields set afterwards override it.
    optimization_level: InitVar[OptimizationLevel | str | None] = None

    def __post_init__(self, optimization_level: OptimizationLevel | str | None) -> None:
        self.level = OptimizationLevel(self.level).value if self.level in LEVELS else self.level
        if optimization_level is not None:
            self.level = OptimizationLevel(optimization_level).value
            _apply(self, PRESETS[self.level], "optimization")

    # ---- construction -------------------------------------------------
    @classmethod
    def from_level(cls, level: str = "balanced", **overrides: Any) -> OptimizationConfig:
        if level not in LEVELS:
            raise ValueError(f"optimization.level must be one of {', '.join(LEVELS)}; got {level!r}")
        cfg = cls(level=OptimizationLevel(level).value)
        _apply(cfg, PRESETS.get(level, {}), "optimization")
        _apply(cfg, overrides, "optimization")
        return cfg.validate()

    def validate(self) -> OptimizationConfig:
        b, m = self.batch, self.memory
        if not (1 <= b.min_batch_size <= b.initial_batch_size <= b.max_batch_size):
            raise ValueError(
                "optimization.batch needs 1 <= min_batch_size <= initial_batch_size <= max_batch_size, "
                f"got {b.min_batch_size}, {b.initial_batch_size}, {b.max_batch_size}"
            )
        if not 0 < m.cleanup_threshold <= m.pause_threshold <= 1:
            raise ValueError("optimization.memory needs 0 < cleanup_threshold <= pause_threshold <= 1")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> OptimizationConfig:
        data = dict(data or {})
        level = data.pop("level", "balanced")
        data.pop("decisions", None)
        return cls.from_level(level, **data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> OptimizationConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        return cls.from_dict(data.get("optimization", data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self, path: str | Path) -> None:
        d = self.to_dict()
        d.pop("decisions")
        Path(path).write_text(yaml.safe_dump({"optimization": d}, sort_keys=False))


# Presets: only the fields a level changes from the dataclass defaults (= balanced).
PRESETS: dict[str, dict[str, Any]] = {
    "conservative": {
        "memory": {"cleanup_threshold": 0.75, "pause_threshold": 0.85, "cleanup_interval": 10,
                   "aggressive_cleanup": True},
        "batch": {"initial_batch_size": 2, "max_batch_size": 8, "grow_after": 16},
        "model": {"mixed_precision": False, "compile_model": False, "channels_last": False},
        "dataloader": {"num_workers": 0, "prefetch_factor": 2},
        "repair": {"io_workers": 1, "inpaint_workers": 1},
    },
    "balanced": {},
    "aggressive": {
        "memory": {"cleanup_threshold": 0.9, "pause_threshold": 0.95, "cleanup_interval": 200},
        "batch": {"initial_batch_size": 16, "max_batch_size": 128, "grow_after": 4},
        "model": {"mixed_precision": True, "compile_model": True, "channels_last": True, "int8": True},
        "dataloader": {"num_workers": 4, "prefetch_factor": 4},
        "repair": {"io_workers": 4},
    },
    "custom": {},
}


def _apply(obj: Any, overrides: dict[str, Any], where: str) -> None:
    """Set nested dataclass fields from a dict; unknown keys are an error naming the key."""
    names = {f.name for f in fields(obj)}
    for key, value in (overrides or {}).items():
        if key not in names or key == "decisions":
            raise ValueError(f"unknown setting {where}.{key} (expected one of {', '.join(sorted(names - {'decisions', 'level'}))})")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{key} must be a mapping, got {value!r}")
            _apply(current, value, f"{where}.{key}")
        else:
            setattr(obj, key, value)


def adapt_to_hardware(
    config: OptimizationConfig, hw: HardwareInfo | None = None
) -> OptimizationConfig:
    """Return a copy with what `hw` cannot do switched off; `decisions` says why."""
    hw = hw or detect_hardware()
    cfg = copy.deepcopy(config)
    said: list[str] = []
    m = cfg.model

    if m.mixed_precision:
        if hw.cuda:
            if all(g.bf16 for g in hw.gpus):
                m.amp_dtype = "bfloat16"
                said.append(f"bf16 autocast on: {hw.gpus[0].name} supports bf16")
            else:
                m.amp_dtype = "float16"
                said.append(f"fp16 autocast + GradScaler: {hw.gpus[0].name} lacks bf16")
        elif hw.cpu_bf16:
            m.amp_dtype = "bfloat16"
            said.append("bf16 autocast on: CPU has avx512_bf16/AMX")
        else:
            m.amp_dtype = None
            m.mixed_precision = False
            said.append("bf16 autocast off: CPU lacks avx512_bf16 and AMX")
    else:
        m.amp_dtype = None

    if m.compile_model and not hw.cuda and not hw.has_compiler:
        m.compile_model = False
        said.append("torch.compile off: no C++ compiler for the CPU backend")

    if m.use_tensorrt:
        m.backend = "onnxruntime"
    if m.backend == "onnxruntime":
        from wmrepair import onnxrt

        if not onnxrt.available():
            said.append(f"{'use_tensorrt' if m.use_tensorrt else 'backend onnxruntime'} off: onnxruntime is not "
                        "installed (pip install onnxruntime, or onnxruntime-gpu): torch runs the detector")
            m.backend, m.use_tensorrt = "torch", False
        elif m.use_tensorrt and "TensorrtExecutionProvider" not in onnxrt.providers_available():
            m.use_tensorrt = False
            said.append("use_tensorrt off: this onnxruntime has no TensorRT provider (providers: "
                        f"{', '.join(onnxrt.providers_available())}); ONNX Runtime runs without it")
        if m.backend == "onnxruntime" and (m.int8 or m.compile_model):
            m.int8 = m.compile_model = False
            said.append("int8 and torch.compile off: the ONNX Runtime backend runs the exported fp32/fp16 graph")

    if m.int8:
        from wmrepair.quantize import int8_available

        if hw.cuda:
            m.int8 = False
            said.append("int8 inference off: CUDA device (the int8 kernels are CPU ones; bf16/fp16 there)")
        elif not int8_available():
            m.int8 = False
            said.append("int8 inference off: this PyTorch build has no x86 quantised kernels")
        else:
            said.append("int8 inference on: x86 quantised kernels (detection only; training stays bf16/fp32)")

    d = cfg.dataloader
    if d.pin_memory and not hw.cuda:
        d.pin_memory = False
        said.append("pin_memory off: no CUDA device")
    # On a CPU-only box the model already uses every core; a loader worker only
    # steals from it (measured on 2 cores: 42 -> 20 samples/s with one worker).
    max_workers = max(0, hw.cpu_count - 1) if hw.cuda else (0 if hw.cpu_count <= 4 else hw.cpu_count // 4)
    if d.num_workers > max_workers:
        said.append(f"dataloader workers {d.num_workers} -> {max_workers}: {hw.cpu_count} CPU cores"
                    + ("" if hw.cuda else ", no GPU (compute needs them)"))
        d.num_workers = max_workers
    if cfg.training.cudnn_benchmark and not hw.cuda:
        cfg.training.cudnn_benchmark = False
        said.append("cudnn.benchmark off: no CUDA device")

    if cfg.repair.io_workers > hw.cpu_count * 2:
        cfg.repair.io_workers = hw.cpu_count * 2
        said.append(f"repair io_workers capped at {cfg.repair.io_workers}")

    cfg.validate()
    cfg.decisions = said
    for line in said:
        log.info(line)
    return cfg
