"""A small UNet that outputs one watermark logit per pixel.

Input is float RGB in [0, 1]; normalisation happens inside so every caller
(trainer, predictor, ONNX export) feeds the same thing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class UNetConfig:
    base_channels: int = 16
    depth: int = 4  # number of down-sampling steps; input sides must divide 2**depth
    in_channels: int = 3


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        c, d = self.config.base_channels, self.config.depth
        chans = [c * 2**i for i in range(d + 1)]
        self.stem = _block(self.config.in_channels, chans[0])
        self.down = nn.ModuleList(_block(chans[i], chans[i + 1]) for i in range(d))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(d))
        )
        self.dec = nn.ModuleList(_block(2 * chans[i], chans[i]) for i in reversed(range(d)))
        self.head = nn.Conv2d(chans[0], 1, 1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @property
    def multiple(self) -> int:
        """Input height/width must be a multiple of this."""
        return 2**self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        skips = [self.stem(x)]
        for blk in self.down:
            skips.append(blk(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            y = dec(torch.cat([up(y), skips.pop()], dim=1))
        return self.head(y)


def build_model(cfg: dict | UNetConfig | None = None) -> UNet:
    if isinstance(cfg, dict):
        cfg = UNetConfig(**cfg)
    return UNet(cfg)


def model_config_dict(model: UNet) -> dict:
    return asdict(model.config)
