"""The detector on ONNX Runtime: exported once per model, run on the CPU, CUDA or TensorRT provider.

`onnxruntime` is an optional extra (`pip install onnxruntime`, or
`onnxruntime-gpu` for CUDA/TensorRT). The export is the inference form of the
network (batch norm folded, space-to-depth folded into the first conv) with
dynamic batch, height and width; it is cached beside the model file, named by
the model's sha256, so a changed model exports anew and an unchanged one never
does. Where the model's folder is not writable (an installed package) the
cache is `~/.cache/wmrepair/onnx`.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from wmrepair.files import atomic_write_bytes

log = logging.getLogger(__name__)
OPSET = 17


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def providers_available() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def weights_sha256(model: torch.nn.Module) -> str:
    """A hash of the network's weights and shapes (for modules that came without a file)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def cache_path(model_file: Path | None, sha256: str) -> Path:
    """Where the export of the model with `sha256` lives: beside its file, else the user cache."""
    name = f"{model_file.stem if model_file else 'detector'}.{sha256[:16]}.onnx"
    if model_file is not None and os.access(model_file.parent, os.W_OK):
        return model_file.parent / name
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wmrepair" / "onnx"
    root.mkdir(parents=True, exist_ok=True)
    return root / name


def export(model: torch.nn.Module, path: Path, multiple: int = 1) -> Path:
    """Export `model` (inference form, fp32, on the CPU) to `path` unless it is there already."""
    if path.is_file():
        log.info("ONNX export reused: %s", path)
        return path
    side = max(64, multiple * 2)
    x = torch.zeros(1, 3, side, side)
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter says it is deprecated; it needs no onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(copy.deepcopy(model).float().cpu().eval(), (x,), buf, dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}})
    atomic_write_bytes(path, buf.getvalue())
    log.info("ONNX export written: %s", path)
    return path


def choose_providers(device: str, tensorrt: bool, fp16: bool, engine_cache: Path) -> list:
    """The execution providers to ask for, best first; one log line for each one asked for and missing."""
    have = providers_available()
    chosen: list = []
    if tensorrt:
        if "TensorrtExecutionProvider" in have:
            engine_cache.mkdir(parents=True, exist_ok=True)
            chosen.append(("TensorrtExecutionProvider", {"trt_engine_cache_enable": True,
                                                         "trt_engine_cache_path": str(engine_cache),
                                                         "trt_fp16_enable": bool(fp16)}))
        else:
            log.warning("TensorRT provider missing from this onnxruntime (%s): falling back to %s", ", ".join(have),
                        "CUDA" if "CUDAExecutionProvider" in have and device == "cuda" else "the CPU")
    if device == "cuda":
        if "CUDAExecutionProvider" in have:
            chosen.append("CUDAExecutionProvider")
        else:
            log.warning("CUDA provider missing from this onnxruntime (install onnxruntime-gpu): running on the CPU")
    chosen.append("CPUExecutionProvider")
    return chosen


class OrtDetector:
    """Callable like the torch network: NCHW float tensor in, logits tensor out (on the caller's device)."""

    def __init__(self, onnx_file: Path, device: torch.device, tensorrt: bool = False, fp16: bool = False,
                 threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
        providers = choose_providers(device.type, tensorrt, fp16, onnx_file.parent / "trt-cache")
        self.session = ort.InferenceSession(str(onnx_file), sess_options=opts, providers=providers)
        self.providers = self.session.get_providers()
        self.device = device
        log.info("ONNX Runtime detector: %s on %s", onnx_file.name, ", ".join(self.providers))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        (out,) = self.session.run(None, {"image": arr})
        return torch.from_numpy(out).to(self.device)
