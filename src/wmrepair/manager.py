"""The optimisation library's entry point: one object holding the effective config, monitor, memory and profiler."""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

from wmrepair.hardware import HardwareInfo, detect_hardware
from wmrepair.memory import MemoryManager
from wmrepair.monitor import ResourceMonitor
from wmrepair.optimization import OptimizationConfig, adapt_to_hardware
from wmrepair.profiling import PerformanceAnalyzer


class OptimizationManager:
    def __init__(self, config: OptimizationConfig, hardware: HardwareInfo | None = None,
                 monitor_interval: float | None = None) -> None:
        self.hardware = hardware or detect_hardware()
        self.config = adapt_to_hardware(config, self.hardware)
        device = "cuda" if self.hardware.cuda else "cpu"
        self.memory = MemoryManager(self.config.memory, device)
        self.analyzer = PerformanceAnalyzer()
        self.monitor = ResourceMonitor(interval=monitor_interval or self.config.memory.monitor_interval)
        self._closed = False
        atexit.register(self.close)

    def get_optimization_summary(self) -> dict[str, Any]:
        return {"level": self.config.level, "effective": self.config.to_dict(),
                "decisions": list(self.config.decisions), "hardware": self.hardware.describe()}

    def generate_performance_report(self, out_dir: str | Path) -> Path:
        return self.analyzer.generate_performance_report(out_dir, samples=self.monitor.samples,
                                                         memory=self.memory.summary())

    def start(self) -> OptimizationManager:
        self.monitor.start()
        return self

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.monitor.stop()
            self.memory.cleanup(force=True)

    def __enter__(self) -> OptimizationManager:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def create_optimization_manager(config: OptimizationConfig | str | Path | dict | None = None,
                                level: str | None = None, **kw: Any) -> OptimizationManager:
    """`config` may be an OptimizationConfig, a YAML path, a dict, or None (then `level`, default balanced)."""
    if config is None:
        config = OptimizationConfig.from_level(level or "balanced")
    elif isinstance(config, (str, Path)):
        config = OptimizationConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = OptimizationConfig.from_dict(config)
    return OptimizationManager(config, **kw)
