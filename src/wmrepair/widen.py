"""Widen a trained UNet without changing what it computes (Net2WiderNet, Chen et al. 2016).

A wider network fine-tuned from a narrower one's weights keeps everything the
narrow one learnt and adds capacity, instead of starting from random weights.
Each new channel copies an existing one (its incoming weights and BatchNorm
statistics), and every layer that reads the copies gets the original's outgoing
weights split between them in random shares that sum to one: the output is the
same (to float rounding), and the unequal shares give the copies different
gradients, so training can move them apart.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from wmrepair.model import UNet, _Residual, model_config_dict


class _Space:
    """One activation space of the widened network: which old channel each new one copies, and its share."""

    def __init__(self, old: int, new: int, rng: np.random.Generator) -> None:
        src = np.concatenate([np.arange(old), rng.integers(0, old, new - old)])
        raw = np.ones(new) if new == old else rng.uniform(0.3, 0.7, new)
        totals = np.bincount(src, weights=raw, minlength=old)
        self.src = torch.as_tensor(src)
        self.share = torch.as_tensor(raw / totals[src])  # the copies of one old channel share its outgoing weights


def _conv(old: nn.Conv2d, new: nn.Conv2d, out: _Space | None, inp: _Space | None) -> None:
    """new.weight[j, i] = old.weight[out.src[j], inp.src[i]] * inp.share[i] (bias copied by output)."""
    w = old.weight.detach()
    if out is not None:
        w = w[out.src]
    if inp is not None:
        w = w[:, inp.src] * inp.share.to(w.dtype).view(1, -1, 1, 1)
    new.weight.data.copy_(w)
    if old.bias is not None:
        b = old.bias.detach()
        new.bias.data.copy_(b[out.src] if out is not None else b)


def _bn(old: nn.BatchNorm2d, new: nn.BatchNorm2d, out: _Space) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new, name).data.copy_(getattr(old, name).detach()[out.src])
    new.num_batches_tracked.data.copy_(old.num_batches_tracked)


def _residual(old: _Residual, new: _Residual, inp: _Space | None, out: _Space, mid: _Space) -> None:
    """conv, BN, ReLU, conv, BN (+ 1x1 conv, BN shortcut): the middle and the output widened."""
    if not isinstance(old.proj, nn.Sequential):
        raise ValueError("widening needs a 1x1 shortcut in every residual block")
    _conv(old.body[0], new.body[0], mid, inp)
    _bn(old.body[1], new.body[1], mid)
    _conv(old.body[3], new.body[3], out, mid)
    _bn(old.body[4], new.body[4], out)
    _conv(old.proj[0], new.proj[0], out, inp)
    _bn(old.proj[1], new.proj[1], out)


def widen(model: UNet, base_channels: int, seed: int = 0) -> UNet:
    """A UNet like `model` with `base_channels` (>= its own) that computes the same logits.

    Supports the default architecture (residual encoder, added skips, nearest
    up-sampling, one decoder conv); raises ValueError for others.
    """
    cfg = model.config
    if base_channels < cfg.base_channels:
        raise ValueError(f"cannot narrow a model: base_channels {base_channels} < its {cfg.base_channels}")
    if not (cfg.residual and cfg.skip == "add" and cfg.upsample == "nearest" and cfg.decoder_convs == 1):
        raise ValueError("widening supports the default architecture only (residual encoder, skip add, "
                         f"upsample nearest, decoder_convs 1), not {model_config_dict(model)}")
    wide = UNet(type(cfg)(**{**model_config_dict(model), "base_channels": base_channels}))
    rng = np.random.default_rng(seed)
    d = cfg.depth

    def level(i: int) -> _Space:  # an activation space at level i (base channels doubled i times)
        return _Space(cfg.base_channels * 2**i, base_channels * 2**i, rng)

    enc = [level(i) for i in range(d + 1)]  # each encoder level's output
    mid = [level(i) for i in range(d + 1)]  # inside each residual block
    training = model.training
    old, new = model.eval(), wide.eval()
    with torch.no_grad():
        _residual(old.stem, new.stem, None, enc[0], mid[0])
        for i in range(d):
            _residual(old.down[i], new.down[i], enc[i], enc[i + 1], mid[i + 1])
        y = enc[d]
        for k, i in enumerate(reversed(range(d))):
            # up's output is added to encoder level i, so it takes that level's copies
            _conv(old.up[k][0], new.up[k][0], enc[i], y)
            dec = level(i)
            _conv(old.dec[k][0], new.dec[k][0], dec, enc[i])
            _bn(old.dec[k][1], new.dec[k][1], dec)
            y = dec
        _conv(old.head, new.head, None, y)
    model.train(training)
    return wide.train(training)
