"""The workflow's config.yaml as typed settings: the one place its sections map onto the library.

Detection and repair settings are defined here, with no heavy imports, so that
the command line can state their defaults in `--help` without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from wmrepair.config import OptimizationConfig

if TYPE_CHECKING:
    from wmrepair.synth import SynthConfig
    from wmrepair.train import TrainConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"


@dataclass
class PredictConfig:
    max_side: int = 384  # detect at this long side (0 = native resolution); matches the training scale
    # Tile sides. 352 and 416 hold the `scales` passes of a large image (long side 352 / 416) in
    # one tile each; with only 384 and 512 the 416 pass was padded to 512 (repair ~1.2x slower).
    buckets: list[int] = field(default_factory=lambda: [256, 352, 384, 416, 512])
    overlap: int = 32  # tile overlap in pixels, blended
    # Probability above which `predict_masks` calls a pixel watermark. Repair thresholds
    # with `RepairConfig.mask_threshold` and then trims by `refine_diff`.
    threshold: float = 0.5
    flip_tta: bool = True  # also predict the mirrored tiles and average (2x detection cost, +0.2 dB PSNR)
    # Scale TTA: detect at `max_side` times each factor (352, 384, 416) and average the
    # probabilities. A mark the detector misses at one scale (fine strokes aliasing against a
    # fine texture) is often found at a neighbouring one: +0.004 to +0.02 mask IoU and +0.04
    # to +0.3 dB on every dev set with two models (DEVNOTES, scale TTA). Sides at or above an
    # image's own long side collapse into one native pass, so small images pay nothing.
    # (1.0,) turns it off.
    scales: tuple[float, ...] = (0.917, 1.0, 1.083)

    def __post_init__(self) -> None:
        self.scales = check_scales(self.scales)


def check_scales(scales: Any) -> tuple[float, ...]:
    """`scales` as a tuple of floats; ValueError unless it is a non-empty list of factors in (0, 4]."""
    vals = tuple(float(f) for f in scales)
    if not vals or any(not 0 < f <= 4 for f in vals):
        raise ValueError(f"predict.scales must be a non-empty list of factors above 0 and at most 4, got {list(vals)}")
    return vals


@dataclass
class RepairConfig:
    mask_threshold: float = 0.5  # probability above which a pixel is watermark
    threshold: float = 0.001  # iterate while the residual mask fraction exceeds this
    max_iterations: int = 2
    min_component: float = 2e-5  # drop detected blobs smaller than this fraction of the image
    dilation: float = 0.002  # dilation radius as a fraction of the long side (min 2 px)
    # After inpainting, a pixel counts as watermark only if inpainting changed it by more than
    # `refine_diff` grey levels (any channel) and by more than `refine_relative` of the largest
    # change on the detected mark within `refine_radius` px; the others get their own pixels
    # back. Trims the detector's blobby strokes to the mark itself (refine_diff 0 = off).
    refine_diff: float = 16.0
    refine_relative: float = 0.25
    refine_radius: int = 7
    jpeg_quality: int = 95
    skip_existing: bool = True  # resume: keep images the manifest records as done (see `is_done`)
    group_size: int = 8  # images detected together (tiles batched across them)
    # Decoded pixels of a group together: memory follows pixels, not image count.
    group_pixels: int = 24_000_000
    max_pixels: int = 120_000_000  # larger images get a failed row instead of exhausting memory
    image_timeout_s: float = 120.0
    # None: the optimisation level's value (optimization.memory.cleanup_interval,
    # optimization.repair.io_workers); a number here overrides the level.
    pause_interval: int | None = None  # periodic memory cleanup every N images
    io_workers: int | None = None
    # Images inpainted at once. 0 = the level's optimization.repair.inpaint_workers, and where
    # that is 0 too, one per usable core when the inpainter says it is thread-safe (IOPaint's
    # cv2 model: C code without the GIL), else 1.
    inpaint_workers: int = 0


def _make(cls: type, data: dict[str, Any] | None, section: str, drop: tuple[str, ...] = ()) -> Any:
    data = {k: v for k, v in (data or {}).items() if k not in drop}
    known = {f.name for f in fields(cls)}
    bad = sorted(set(data) - known)
    if bad:
        raise ValueError(f"unknown setting {section}.{bad[0]} (known: {', '.join(sorted(known))})")
    return cls(**data)


@dataclass
class Settings:
    optimization: OptimizationConfig
    synth: SynthConfig
    train: TrainConfig
    predict: PredictConfig
    repair: RepairConfig
    inpaint: dict[str, Any]
    raw: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Settings:
        from wmrepair.synth import SynthConfig
        from wmrepair.train import TrainConfig

        synth = dict(cfg.get("data", {}).get("synth", {}))
        if "test_sizes" in synth:
            synth["test_sizes"] = [tuple(s) for s in synth["test_sizes"]]
        rep = cfg.get("repair", {})
        return cls(
            optimization=OptimizationConfig.from_dict(cfg.get("optimization")),
            synth=_make(SynthConfig, synth, "data.synth"),
            train=TrainConfig.from_dict(cfg.get("train")),
            predict=_make(PredictConfig, cfg.get("predict"), "predict"),
            repair=_make(RepairConfig, rep, "repair",
                         drop=("input_dir", "chunk_size", "mem_mb", "clean_dir", "mask_dir")),
            inpaint=dict(cfg.get("inpaint", {})),
            raw=cfg,
        )

    @classmethod
    def from_yaml(cls, path: str | Path = DEFAULT_CONFIG) -> Settings:
        return cls.from_config(yaml.safe_load(Path(path).read_text()) or {})
