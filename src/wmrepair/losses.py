"""Segmentation loss and metrics. Dice keeps thin text strokes from drowning in background BCE."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0, per_image: bool = False) -> torch.Tensor:
    """Soft Dice over the whole batch's pixels (default), or the mean of each image's Dice.

    Pooled, like the mask IoU we report: an image's share of the loss follows its
    mark pixels. Per image, a 20-pixel logo weighs as much as a tiled mark over
    the whole frame (measured: pooled trains to dev IoU 0.702 vs 0.688 and test
    0.627 vs 0.579, docs/DEVNOTES.md).
    """
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    if not per_image:
        p, t = p.reshape(1, -1), t.reshape(1, -1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    pt = p * target + (1 - p) * (1 - target)
    w = alpha * target + (1 - alpha) * (1 - target)
    return (w * (1 - pt) ** gamma * bce).mean()


def hard_negative_loss(logits: torch.Tensor, target: torch.Tensor, share: float = 0.001, guard: int = 2) -> torch.Tensor:
    """BCE towards 0 of each image's most confident pixels away from any mark (the top `share`, at least 16).

    A sure false alarm of a few hundred pixels is a rounding error in a loss averaged
    over every pixel of the batch, yet it is what alters an unmarked picture: this term
    looks only at the pixels the repair would act on. Pixels within `guard` px of the
    mask are left out (a mask's edge is a threshold on a soft blend).
    """
    near = F.max_pool2d(target, 2 * guard + 1, 1, guard) > 0.5 if guard else target > 0.5
    flat = logits.masked_fill(near, -1e4).flatten(1)
    k = min(flat.shape[1], max(16, round(share * flat.shape[1])))
    top = flat.topk(k, dim=1).values
    return F.binary_cross_entropy_with_logits(top, torch.zeros_like(top))


def distill_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """BCE of the student's logits towards the teachers' probabilities (soft targets), in fp32."""
    return F.binary_cross_entropy_with_logits(logits.float(), torch.sigmoid(teacher_logits.float()))


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "bce_dice",
                      hard_negative_weight: float = 0.0, hard_negative_share: float = 0.001) -> torch.Tensor:
    """`bce_dice` (default) or `focal_dice`, plus `hard_negative_weight` x `hard_negative_loss`;
    computed in fp32 whatever the autocast dtype."""
    logits, target = logits.float(), target.float()
    if kind == "bce_dice":
        loss = F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target)
    elif kind == "focal_dice":
        loss = 10 * focal_loss(logits, target) + dice_loss(logits, target)
    else:
        raise ValueError(f"unknown loss {kind!r} (expected bce_dice or focal_dice)")
    if hard_negative_weight:
        loss = loss + hard_negative_weight * hard_negative_loss(logits, target, hard_negative_share)
    return loss


def confusion(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[tp, fp, fn] counts of boolean tensors, as int64."""
    pred, target = pred.bool(), target.bool()
    return torch.stack([(pred & target).sum(), (pred & ~target).sum(), (~pred & target).sum()]).long()


def iou_f1(counts: torch.Tensor | list[int]) -> tuple[float, float]:
    """IoU and F1 from [tp, fp, fn]; both 1.0 when there is nothing to find and nothing found."""
    tp, fp, fn = (int(c) for c in counts)
    if tp + fp + fn == 0:
        return 1.0, 1.0
    return tp / (tp + fp + fn), 2 * tp / (2 * tp + fp + fn)
