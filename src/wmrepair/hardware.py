"""What the machine can do: CPU ISA, cores, RAM, CUDA devices.

Detection is lazy and side-effect free: nothing here initialises CUDA or loads
NVML at import time, so importing wmrepair stays fast on CPU-only machines.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field

import psutil


@dataclass
class GPUInfo:
    index: int
    name: str
    total_memory_mb: int
    bf16: bool


@dataclass
class HardwareInfo:
    cpu_count: int
    cpu_flags: frozenset[str] = frozenset()
    ram_total_mb: int = 0
    gpus: list[GPUInfo] = field(default_factory=list)
    has_compiler: bool = True

    @property
    def cuda(self) -> bool:
        return bool(self.gpus)

    @property
    def cpu_bf16(self) -> bool:
        """True when the CPU has native bf16 dot products (where autocast pays)."""
        return bool({"avx512_bf16", "amx_bf16"} & self.cpu_flags)

    def describe(self) -> dict:
        d = asdict(self)
        d["cpu_flags"] = sorted(f for f in self.cpu_flags if "avx512" in f or "amx" in f)
        d["cuda"] = self.cuda
        d["cpu_bf16"] = self.cpu_bf16
        return d


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def usable_cpus() -> int:
    """Cores this process may run on (respects taskset/cgroups affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def detect_gpus() -> list[GPUInfo]:
    import torch  # local: keep `import wmrepair` light

    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        bf16 = p.major >= 8  # Ampere and newer run bf16 natively
        gpus.append(GPUInfo(i, p.name, int(p.total_memory // 2**20), bf16))
    return gpus


def detect_hardware() -> HardwareInfo:
    return HardwareInfo(
        cpu_count=usable_cpus(),
        cpu_flags=_cpu_flags(),
        ram_total_mb=int(psutil.virtual_memory().total // 2**20),
        gpus=detect_gpus(),
        has_compiler=shutil.which(os.environ.get("CXX", "g++")) is not None,
    )
