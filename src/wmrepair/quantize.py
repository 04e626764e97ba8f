"""Post-training static int8 quantisation of the UNet for CPU inference.

The convolutions run as int8 through PyTorch's x86 backend (fbgemm/oneDNN,
VNNI on CPUs that have it). The transposed convolutions stay float: quantised
they broke the masks (agreement with fp32 fell to IoU 0.003 on a trained model;
with them in float it is 0.97). Calibration uses a fixed set of synthetic
watermarked images, so every process (every repair chunk) gets the same
quantised model for the same weights.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

from wmrepair.model import UNet, fold_space_to_depth


def int8_available() -> bool:
    """The x86 quantised kernels are there (x86-64 builds of PyTorch)."""
    return "x86" in torch.backends.quantized.supported_engines


class _Body(nn.Module):
    """`UNet.body` as a module of its own: what gets quantised (normalisation and pixel shuffle stay float)."""

    def __init__(self, m: UNet) -> None:
        super().__init__()
        self.unet = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet.body(x)


class Int8UNet(nn.Module):
    """Float in, float logits out; int8 inside. Same interface as UNet for the predictor."""

    def __init__(self, model: UNet, body: nn.Module) -> None:
        super().__init__()
        self.unet = model  # its input folding and logit unfolding stay float
        self.body = body

    @property
    def multiple(self) -> int:
        return self.unet.multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet.unfold_logits(self.body(self.unet.fold_input(x)))


def calibration_images(n: int = 32, side: int = 256, seed: int = 1234) -> torch.Tensor:
    """Synthetic watermarked images (float NCHW in [0, 1]), the same every time."""
    from wmrepair.synth import TRAIN_FONTS, TRAIN_WORDS, add_watermark, make_background

    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        img, _ = add_watermark(make_background(rng, side, side), rng, TRAIN_WORDS, TRAIN_FONTS)
        out.append(img)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255)


@torch.inference_mode()
def quantize_int8(model: UNet, calibration: torch.Tensor | None = None) -> Int8UNet:
    """An int8 copy of `model` (eval, CPU); `model` itself is left as it is."""
    if not isinstance(model, UNet):
        raise ValueError(f"int8 quantisation supports wmrepair's UNet, not {type(model).__name__}")
    if not int8_available():
        raise RuntimeError("this PyTorch build has no x86 quantised kernels")
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    m = fold_space_to_depth(copy.deepcopy(model).float().cpu().eval())
    m = m.to(memory_format=torch.contiguous_format)
    qmap = get_default_qconfig_mapping("x86").set_object_type(nn.ConvTranspose2d, None)
    calib = calibration if calibration is not None else calibration_images()
    calib = m.fold_input(calib.float().cpu())  # s2d is already in the stem: normalisation only
    with warnings.catch_warnings():  # torch.ao's deprecation notice points to torchao; the API works
        warnings.simplefilter("ignore")
        prepared = prepare_fx(_Body(m), qmap, (calib[:1],))
        for i in range(0, len(calib), 8):
            prepared(calib[i : i + 8])
        body = convert_fx(prepared)
    return Int8UNet(m, body).eval()
