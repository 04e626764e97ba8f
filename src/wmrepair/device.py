"""Where the network runs and how its input gets there: shared by training, detection and the benchmarks."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` = the first CUDA device where there is one, else the CPU; a CUDA name without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but no CUDA device is available")
    return torch.device(name)


def autocast_for(device: torch.device, amp_dtype: str | None):
    """Autocast to `amp_dtype` (bfloat16 / float16) on `device`; None: a no-op context."""
    if not amp_dtype:
        return nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, amp_dtype))


def to_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 NHWC batch (ours) or an NCHW image batch (uint8 or float in [0, 1]) -> float NCHW on `device`.

    Conversion after the copy: 4x less traffic. The permuted view of NHWC keeps
    its memory, i.e. channels_last, with no copy; only the NCHW-contiguous
    (conservative) path pays for a reorder.
    """
    x = x.to(device, non_blocking=True)
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    x = x.float() if x.is_floating_point() else x.float().div_(255)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
