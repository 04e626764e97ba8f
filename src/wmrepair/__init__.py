"""wmrepair: find visible watermarks with a UNet and repair them with IOPaint, fast and memory-safe."""

from wmrepair.batching import AdaptiveBatchProcessor
from wmrepair.manager import OptimizationManager, create_optimization_manager
from wmrepair.memory import MemoryManager, is_oom_error, memory_optimized
from wmrepair.monitor import CUDAMonitor, ResourceMonitor, log_memory_usage
from wmrepair.optimization import OptimizationConfig, OptimizationLevel, adapt_to_hardware
from wmrepair.profiling import (
    PerformanceAnalyzer,
    get_global_performance_analyzer,
    performance_profile,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # Torch-heavy classes load on first use so `import wmrepair` stays light.
    lazy = {
        "OptimizedTrainer": "wmrepair.train", "TrainConfig": "wmrepair.config",
        "OptimizedWatermarkPredictor": "wmrepair.predict", "PredictConfig": "wmrepair.config",
        "RepairEngine": "wmrepair.repair", "RepairConfig": "wmrepair.config",
        "Inpainter": "wmrepair.inpaint", "UNet": "wmrepair.model", "widen": "wmrepair.widen",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'wmrepair' has no attribute {name!r}")


__all__ = [
    "AdaptiveBatchProcessor", "CUDAMonitor", "MemoryManager", "OptimizationConfig", "OptimizationLevel",
    "OptimizationManager", "get_global_performance_analyzer", "log_memory_usage",
    "OptimizedTrainer", "OptimizedWatermarkPredictor", "PerformanceAnalyzer", "PredictConfig",
    "RepairConfig", "RepairEngine", "ResourceMonitor", "TrainConfig", "Inpainter", "UNet",
    "adapt_to_hardware", "create_optimization_manager", "is_oom_error", "memory_optimized",
    "performance_profile", "widen",
]
