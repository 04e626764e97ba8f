"""One GPU per job: an exclusive lease on a device, taken before torch initialises CUDA.

Snakemake's `--resources gpu=4` only counts: four jobs at once would all pick
`cuda:0` (snakemake#281). Each GPU job therefore takes an exclusive `flock` on
one lock file per visible device and narrows `CUDA_VISIBLE_DEVICES` to the
device it won. The lock lives as long as the process: the kernel releases it
when the job ends or is killed, so a crashed job never leaves a device taken.
A `CUDA_VISIBLE_DEVICES` set by SLURM or the user is respected (the lease is
taken within that list). With no GPU it does nothing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "WMREPAIR_GPU_LOCK_DIR"
_held: list[GpuLease] = []  # leases of this process, kept open for its life


@dataclass
class GpuLease:
    device: str  # the id as the parent's CUDA_VISIBLE_DEVICES (or NVML) names it
    path: Path
    fd: int

    def release(self) -> None:
        os.close(self.fd)


def visible_devices() -> list[str]:
    """The devices a job may lease: CUDA_VISIBLE_DEVICES when set, else every NVML device; [] without GPUs."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no NVML: a CPU machine
        return []


def wants_lease(device: str) -> bool:
    """A job leases a GPU unless told a device: `cpu`, or `cuda:N` chosen by the user."""
    return device in ("auto", "cuda")


def lock_dir() -> Path:
    d = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"wmrepair-gpu-locks-{os.getuid()}")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def acquire_gpu(devices: list[str] | None = None, wait_s: float | None = None, poll_s: float = 0.2) -> GpuLease | None:
    """Lease one of `devices` (default `visible_devices()`) and point CUDA_VISIBLE_DEVICES at it.

    Returns None where there is nothing to lease (CPU). Waits (up to `wait_s`,
    None = forever) while every device is held by another job. A process holds
    at most one lease: a second call returns the first.
    """
    if _held:
        return _held[0]
    devices = visible_devices() if devices is None else devices
    if not devices:
        return None
    # The device id goes into the file name, so that jobs given different CUDA_VISIBLE_DEVICES
    # lists (SLURM, the user) still contend for the same physical devices.
    folder, start, said = lock_dir(), time.monotonic(), False
    while True:
        for dev in devices:
            path = folder / f"gpu-{dev.replace('/', '_')}.lock"
            fd = _try_lock(path)
            if fd is not None:
                lease = GpuLease(dev, path, fd)
                _held.append(lease)
                os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # ids as nvidia-smi and NVML number them
                os.environ["CUDA_VISIBLE_DEVICES"] = dev
                log.info("GPU lease: device %s (%s)", dev, path)
                return lease
        if wait_s is not None and time.monotonic() - start > wait_s:
            raise TimeoutError(f"every GPU ({', '.join(devices)}) stayed leased for {wait_s:.0f} s (locks in {folder})")
        if not said:
            log.info("every GPU (%s) is leased by another job: waiting", ", ".join(devices))
            said = True
        time.sleep(poll_s)


def leased_device() -> str | None:
    """The device this process leased, or None."""
    return _held[0].device if _held else None
