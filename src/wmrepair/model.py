"""A small UNet that outputs one watermark logit per pixel.

Input is float RGB in [0, 1]; normalisation happens inside so every caller
(trainer, predictor, ONNX export) feeds the same thing.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn
from torch.nn import functional as F

from wmrepair.config import UNetConfig

# What a model file that lacks a field was built with (files from before the field existed).
LEGACY_FIELDS = {"s2d": False, "skip": "concat", "decoder_convs": 2, "residual": False, "upsample": "transposed"}


def _block(cin: int, cout: int, convs: int = 2, residual: bool = False) -> nn.Module:
    """`convs` x (3x3 conv, BatchNorm, ReLU), the first mapping cin -> cout; optionally residual."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if residual:
        return _Residual(nn.Sequential(*layers[:-1]), cin, cout)
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    """ReLU(body(x) + shortcut(x)); the shortcut is a 1x1 conv + BN where the channel count changes."""

    def __init__(self, body: nn.Sequential, cin: int, cout: int) -> None:
        super().__init__()
        self.body = body
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.proj(x))


class UNet(nn.Module):
    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        c, d = self.config.base_channels, self.config.depth
        chans = [c * 2**i for i in range(d + 1)]
        f = 2 if self.config.s2d else 1
        if self.config.skip not in ("concat", "add"):
            raise ValueError(f"model.skip must be 'concat' or 'add', not {self.config.skip!r}")
        if self.config.upsample not in ("transposed", "nearest"):
            raise ValueError(f"model.upsample must be 'transposed' or 'nearest', not {self.config.upsample!r}")
        r = self.config.residual
        self.stem = _block(self.config.in_channels * f * f, chans[0], residual=r)
        self.down = nn.ModuleList(_block(chans[i], chans[i + 1], residual=r) for i in range(d))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) if self.config.upsample == "transposed"
            else nn.Sequential(nn.Conv2d(chans[i + 1], chans[i], 1), nn.Upsample(scale_factor=2, mode="nearest"))
            for i in reversed(range(d))
        )
        k = 2 if self.config.skip == "concat" else 1
        self.dec = nn.ModuleList(_block(k * chans[i], chans[i], self.config.decoder_convs) for i in reversed(range(d)))
        self.head = nn.Conv2d(chans[0], f * f, 1)
        self.s2d_in_stem = False  # set by fold_space_to_depth (inference only)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @property
    def multiple(self) -> int:
        """Input height/width must be a multiple of this."""
        return 2 ** (self.config.depth + int(self.config.s2d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unfold_logits(self.body(self.fold_input(x)))

    def fold_input(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] -> what `body` takes: normalised, 2x2 blocks in channels with s2d."""
        x = (x - self.mean) / self.std
        return F.pixel_unshuffle(x, 2) if self.config.s2d and not self.s2d_in_stem else x

    def unfold_logits(self, y: torch.Tensor) -> torch.Tensor:
        """The head's output -> one logit per input pixel."""
        return F.pixel_shuffle(y, 2) if self.config.s2d else y

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder-decoder from the normalised (unshuffled) input to the head's output."""
        skips = [self.stem(x)]
        for blk in self.down:
            skips.append(blk(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            y = up(y)
            y = dec(torch.cat([y, skips.pop()], dim=1) if self.config.skip == "concat" else y + skips.pop())
        return self.head(y)


def build_model(cfg: dict | UNetConfig | None = None) -> UNet:
    if isinstance(cfg, dict):
        cfg = UNetConfig(**cfg)
    return UNet(cfg)


def model_config_dict(model: UNet) -> dict:
    return asdict(model.config)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """For inference: fold each BatchNorm2d into the Conv2d before it (in place; eval mode).

    The folded conv computes the same function (to float rounding) and saves a
    full pass over every activation map per layer.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for mod in model.modules():
        if not isinstance(mod, nn.Sequential):
            continue
        for i in range(len(mod) - 1):
            conv, bn = mod[i], mod[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                mod[i], mod[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return model


def fold_space_to_depth(model: UNet) -> UNet:
    """For inference: PixelUnshuffle(2) + the stem's first 3x3 conv == one 6x6 stride-2 conv (in place).

    Unshuffled channel c*4 + i*2 + j at offset (dh, dw) is input pixel row
    2*dh + i, column 2*dw + j of a 6x6 window with stride 2; the zero padding of
    1 on the half-res grid is padding 2 on the input. Same function (to float
    rounding), without the reshuffle pass, which is slow on channels_last. A
    residual stem's 1x1 shortcut becomes a 2x2 stride-2 conv the same way.
    """
    if not model.config.s2d or model.s2d_in_stem:
        return model
    if isinstance(model.stem, _Residual):
        model.stem.body[0] = _unshuffled_to_strided(model.stem.body[0])
        if isinstance(model.stem.proj, nn.Sequential):
            model.stem.proj[0] = _unshuffled_to_strided(model.stem.proj[0])
    else:
        model.stem[0] = _unshuffled_to_strided(model.stem[0])
    model.s2d_in_stem = True
    return model


def _unshuffled_to_strided(conv: nn.Conv2d) -> nn.Conv2d:
    """A k x k conv (padding p) on 2x2-unshuffled input -> a 2k x 2k stride-2 conv (padding 2p) on the input."""
    cin = conv.in_channels // 4
    (k, _), (p, _) = conv.kernel_size, conv.padding
    w = conv.weight.detach()
    w2 = w.new_zeros(conv.out_channels, cin, 2 * k, 2 * k)
    for c in range(cin):
        for i in range(2):
            for j in range(2):
                w2[:, c, i::2, j::2] = w[:, c * 4 + i * 2 + j]
    new = nn.Conv2d(cin, conv.out_channels, 2 * k, stride=2, padding=2 * p, bias=conv.bias is not None)
    new = new.to(device=w.device, dtype=w.dtype).train(conv.training)
    with torch.no_grad():
        new.weight.copy_(w2)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new
