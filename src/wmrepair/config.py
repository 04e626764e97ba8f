"""The config: every setting of config/config.yaml, defined once here (default, bounds, one-line doc).

`WorkflowConfig` mirrors config.yaml section by section. From it come the JSON
schema under workflow/schemas/ (`wmrepair schema --write`; a test fails when the
file is stale), the command line's defaults and help, and the check that
config.yaml states these defaults. `Settings` turns a config mapping into the
typed objects the library runs with. No heavy imports: `--help` needs no torch.
The optimisation level's fields live in `wmrepair.optimization`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from wmrepair.inpaint import WEIGHTS
from wmrepair.optimization import LEVELS, OptimizationConfig, OptimizationLevel  # noqa: F401 - re-exported
from wmrepair.schema import json_schema, setting

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# Settings that moved: a config that still uses the old key gets told where it went.
MOVED = {("repair", "mask_threshold"): "predict.threshold"}

TEST_SIZES = [(320, 240), (480, 360), (640, 480), (800, 600), (1024, 768), (1280, 960),
              (600, 900), (1200, 1600)]


# ---- data -------------------------------------------------------------------
@dataclass
class SynthConfig:
    """The embedded synthetic dataset (used where no folder of your own is set)."""

    seed: int = setting(0, "random seed of the whole dataset")
    n_train: int = setting(600, "training images", minimum=1)
    n_val: int = setting(100, "validation images", minimum=1)
    n_test: int = setting(48, "test images (unseen words and fonts)", minimum=1)
    n_dev: int = setting(0, "test-sized images with training words/fonts, for tuning", minimum=0)
    train_size: int = setting(256, "square side of training and validation images", minimum=32)
    test_sizes: list[tuple[int, int]] = setting(doc="(width, height) of test images, cycled",
                                                factory=lambda: list(TEST_SIZES), items={"items": {"minimum": 16}})
    alpha_range: tuple[float, float] = setting((0.3, 0.8), "mark opacity drawn from this range",
                                               items={"minimum": 0, "maximum": 1})
    jpeg_fraction: float = setting(0.35, "share of watermarked files written as (recompressed) JPEG",
                                   minimum=0, maximum=1)
    # Without negatives every training image carries a mark, and the detector learns that some
    # part of every picture is one: it altered 29 of 38 unmarked real photographs (DEVNOTES, negatives).
    negative_fraction: float = setting(0.25, "share of images (every split) with no mark at all", minimum=0,
                                       maximum=1)
    scene_fraction: float = setting(0.4, "share of clean pictures given hard negatives: signs, outlined shapes, "
                                         "highlights drawn into the picture", minimum=0, maximum=1)
    # The false alarms on real photographs were such repeats; 0.35 took the real dev photos the main job
    # harms from 5 to 2 of 94 (DEVNOTES, scene structures as hard negatives).
    structure_fraction: float = setting(0.35, "share of clean pictures given repeated scene strokes (illustrated "
                                             "fronds, planks and railings, fallen leaves) as hard negatives",
                                        minimum=0, maximum=1)
    artwork_fraction: float = setting(0.0, "share of clean pictures given opaque artwork (titles and release "
                                           "numbers, a brand's own emblem, app icons, glowing light art) as hard "
                                           "negatives", minimum=0, maximum=1)


@dataclass
class DataConfig:
    """Training data: your own pairs, or the synthetic dataset."""

    train_dir: str | None = setting(None, "your training pairs: <dir>/watermarked + <dir>/masks (or clean); null = synthetic")
    val_dir: str | None = setting(None, "your validation pairs (required with train_dir)")
    backgrounds_dir: str | None = setting(None, "a folder of your own clean images: the synthesiser stamps marks on "
                                                "them and uses them as negatives (adapts the detector to your photos)")
    cache_size: int = setting(256, "square side of the cached training images", minimum=32)
    synth: SynthConfig = field(default_factory=SynthConfig)


# ---- model and training ------------------------------------------------------
@dataclass
class UNetConfig:
    """The detector's architecture."""

    base_channels: int = setting(16, "channels of the first level (doubling per level)", minimum=4)
    # Input sides must divide 2**depth (2**(depth+1) with s2d).
    depth: int = setting(4, "down-sampling steps", minimum=1, maximum=6)
    in_channels: int = setting(3, "input channels (RGB)", choices=[3])
    # Space-to-depth stem: fold each 2x2 pixel block into channels on the way in and
    # unfold the logits on the way out (PixelUnshuffle/PixelShuffle). The network then
    # runs at half resolution, so the same compute sees 4x the image area (context is
    # what finds faint marks), while the output keeps full resolution.
    s2d: bool = setting(True, "space-to-depth stem: half-resolution body, full-resolution output")
    # Light decoder: each encoder skip is added to the up-sampled map (LinkNet style)
    # instead of concatenated, so the decoder's one 3x3 conv per level reads c channels,
    # not 2c; up-sampling is a 1x1 conv at low resolution, then nearest 2x (the 2x2
    # transposed conv's backward was ~10% of a CPU training step); encoder blocks are
    # residual. 1.4x the training samples/s of the classic UNet (concat, 2 decoder
    # convs, transposed), and better models in the same time (docs/DEVNOTES.md).
    skip: str = setting("add", "add (LinkNet style) or concat (classic UNet) encoder skips", choices=["add", "concat"])
    decoder_convs: int = setting(1, "3x3 convs per decoder level", minimum=1)
    residual: bool = setting(True, "residual encoder blocks")
    upsample: str = setting("nearest", "nearest (1x1 conv + 2x nearest) or transposed (2x2 stride-2 conv)",
                            choices=["nearest", "transposed"])


@dataclass
class TrainConfig:
    """Training. The defaults fine-tune the shipped detector within the main job (docs/DEVNOTES.md);
    config/scratch.yaml holds the measured schedule from random weights."""

    epochs: int = setting(12, "epochs (progressive and full size together)", minimum=1)
    batch_size: int = setting(16, "images per optimiser step", minimum=1)
    lr: float = setting(5e-4, "peak learning rate (AdamW); 3e-3 from scratch (config/scratch.yaml)",
                        exclusive_minimum=0)
    weight_decay: float = setting(1e-4, "AdamW weight decay", minimum=0)
    schedule: str = setting("cosine", "learning-rate schedule after warm-up",
                            choices=["cosine", "onecycle", "constant"])
    warmup_frac: float = setting(0.05, "share of optimiser steps spent warming up", minimum=0, maximum=1)
    min_lr_ratio: float = setting(0.02, "final learning rate as a share of lr", minimum=0, maximum=1)
    crop: int = setting(256, "training crop side in pixels (256: whole cached images, context finds faint marks)",
                        minimum=16)
    # Random zoom-in measured worse (val IoU 0.51 vs 0.56).
    scale_range: tuple[float, float] = setting((1.0, 1.0), "random zoom range of training crops",
                                               items={"exclusiveMinimum": 0})
    # The first `progressive_fraction` of the epochs train on samples shrunk to `progressive_size`
    # (vs 256: ~3x the samples/s at 128, ~4x at 96), the rest at `crop`. A fraction, so that changing
    # `epochs` keeps the proportion; off when the size is not below `crop`.
    progressive_fraction: float = setting(0.0, "share of the epochs trained at progressive_size",
                                          minimum=0, exclusive_maximum=1)
    progressive_size: int = setting(128, "image side of the progressive (small) epochs", minimum=16)
    loss: str = setting("bce_dice", "training loss", choices=["bce_dice", "focal_dice"])
    # Sure false alarms are a few hundred pixels: averaged over the batch they cost nothing. This
    # term is BCE on each image's most confident pixels away from any mark (losses.hard_negative_loss).
    hard_negative_weight: float = setting(0.1, "weight of the loss on each image's most confident pixels away from "
                                               "any mark (0 = off)", minimum=0)
    hard_negative_share: float = setting(0.001, "share of each image's pixels that loss looks at (at least 16)",
                                         minimum=0, maximum=1)
    monitor: str = setting("val_iou", "metric that selects checkpoints and stops early (val_loss: lower is better)",
                           choices=["val_iou", "val_f1", "val_loss"])
    patience: int = setting(0, "full-size epochs without improvement before stopping (0 = never)", minimum=0)
    min_delta: float = setting(0.002, "smallest change of the monitor that counts as improvement", minimum=0)
    top_k: int = setting(3, "best checkpoints kept", minimum=1)
    seed: int = setting(0, "seed of weights, augmentation and shuffling")
    threads: int = setting(0, "torch CPU threads (0 = all usable cores)", minimum=0)
    resume: bool = setting(True, "resume an interrupted run of the same settings and data from last.pt")
    time_budget_s: float | None = setting(330.0, "stop at the first full-size epoch end past this many seconds "
                                                 "(null = no limit)", exclusive_minimum=0)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    # Fine-tuning the shipped detector beats training from scratch in the same budget on both synthetic
    # dev splits and the real-photo dev set (DEVNOTES, the shipped detector).
    init: str = setting("pretrained", "starting weights: scratch (random), pretrained (the shipped detector, "
                                   "fine-tuned), or the path of a wmrepair .pt (same architecture, or "
                                   "the same with a larger base_channels: widened first)", min_length=1)
    # Weight-space interpolation with the start (WiSE-FT, Wortsman et al. 2022): fine-tuning on one
    # synthetic world drifts away from what the start knew; averaging back keeps part of both (DEVNOTES,
    # weights averaged with their start: measured on a fourth stage, not shipped).
    keep_init: float = setting(0.0, "share of the starting weights (train.init) averaged back into the selected "
                                    "detector, tensor by tensor (0 = off)", minimum=0, exclusive_maximum=1)
    # Knowledge distillation (Hinton et al. 2015): two detectors' logits averaged spared real dev photos
    # that either one alone harmed, at twice the detection cost; a student that learns the average runs once.
    teachers: list[str] = setting(doc="detectors whose averaged logits training also matches (knowledge "
                                      "distillation): pretrained (the shipped detector) or wmrepair .pt paths",
                                  factory=list, items={"minLength": 1})
    distill_weight: float = setting(1.0, "weight of the loss towards the teachers' averaged probabilities "
                                         "(with train.teachers)", minimum=0)
    model: dict = setting(doc="the detector's architecture", factory=lambda: asdict(UNetConfig()),
                          schema_of=UNetConfig)

    def __post_init__(self) -> None:
        self.scale_range = tuple(self.scale_range)
        self.teachers = list(self.teachers)
        if self.keep_init and self.init == "scratch":
            raise ValueError("train.keep_init averages the selected detector with its starting weights: "
                             "it needs train.init pretrained or a model file, not scratch")
        if "scratch" in self.teachers:
            raise ValueError("train.teachers: scratch is no teacher; name pretrained or a wmrepair .pt")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TrainConfig:
        return _make(cls, d, "train")


@dataclass
class ModelFileConfig:
    """A detector you already have."""

    path: str | None = setting(None, "an existing detector to use instead of training: a .pt from wmrepair, "
                                     "or 'shipped' (the detector in the package)")
    ship_to: str | None = setting(None, "also write the selected detector here, fp16 with its card "
                                        "(the overlays of wmrepair.shipped.STAGES: the package's shipped detector)")


# ---- detection and repair -------------------------------------------------------
def check_scales(scales: Any) -> tuple[float, ...]:
    """`scales` as a tuple of floats; ValueError unless it is a non-empty list of factors in (0, 4]."""
    vals = tuple(float(f) for f in scales)
    if not vals or any(not 0 < f <= 4 for f in vals):
        raise ValueError(f"predict.scales must be a non-empty list of factors above 0 and at most 4, got {list(vals)}")
    return vals


@dataclass
class PredictConfig:
    """Detection: the probability mask of each image."""

    max_side: int = setting(384, "detect at this long side (0 = native resolution, tiled); matches the training scale",
                            minimum=0)
    # 352 and 416 hold the `scales` passes of a large image (long side 352 / 416) in one tile
    # each; with only 384 and 512 the 416 pass was padded to 512 (repair ~1.2x slower).
    buckets: list[int] = setting(doc="tile sides", factory=lambda: [256, 352, 384, 416, 512],
                                 items={"minimum": 16}, min_items=1)
    overlap: int = setting(32, "tile overlap in pixels, blended", minimum=0)
    threshold: float = setting(0.5, "probability above which a pixel is watermark", minimum=0, maximum=1)
    # Chosen on the real-photo dev set and two synthetic dev splits, all with unmarked images
    # (DEVNOTES, hard negatives in the loss): with detectors trained with train.hard_negative_weight,
    # 0.9 alters no more dev images than 0.98 and leaves fewer marks in place.
    gate: float = setting(0.9, "images whose confidence (mean probability of their top 0.1 % pixels) is below "
                               "this are left untouched", minimum=0, maximum=1)
    flip_tta: bool = setting(True, "also predict mirrored tiles and average (+0.2 dB PSNR, ~25% more repair time)")
    # A mark the detector misses at one scale (fine strokes aliasing against a fine texture) is
    # often found at a neighbouring one: +0.004 to +0.02 mask IoU and +0.04 to +0.3 dB on every
    # dev set with two models (DEVNOTES, scale TTA). Sides at or above an image's own long side
    # collapse into one native pass, so small images pay nothing.
    scales: tuple[float, ...] = setting((0.917, 1.0, 1.083), "detect at max_side times each factor and average "
                                        "([1.0] = off)", items={"exclusiveMinimum": 0, "maximum": 4}, min_items=1)
    # Copyright lines sit in the top and bottom margins and are small: at the detection scale
    # their letters are 4-6 px, too faint to pass `gate`, which left 9 of 11 on the real dev
    # set untouched. The margins are looked at again at `margin_zoom` times the scale, with
    # their own decision (DEVNOTES, the margin pass).
    margin_band: float = setting(0.15, "share of the height at the top and at the bottom that is detected again at "
                                       "margin_zoom (0 = off)", minimum=0, maximum=0.5)
    margin_zoom: float = setting(2.0, "the margin bands are detected at this times the image's detection scale",
                                 exclusive_minimum=0, maximum=4)
    margin_confidence: float = setting(0.999, "a margin pixel counts as sure above this probability",
                                       minimum=0, maximum=1)
    margin_pixels: int = setting(100, "a margin band is repaired when at least this many of its pixels (at its "
                                     "detection scale) are sure", minimum=1)

    def __post_init__(self) -> None:
        self.scales = check_scales(self.scales)


@dataclass
class RepairConfig:
    """Repair of each image: mask clean-up, inpainting rounds, output, limits."""

    threshold: float = setting(0.001, "inpaint again while the residual mask covers more than this share",
                               minimum=0, maximum=1)
    max_iterations: int = setting(2, "inpaint rounds per image", minimum=0)
    min_component: float = setting(2e-5, "drop detected blobs smaller than this share of the image",
                                   minimum=0, maximum=1)
    component_confidence: float = setting(0.7, "drop detected blobs whose most confident pixel is below this "
                                               "(at or below predict.threshold: off)", minimum=0, maximum=1)
    dilation: float = setting(0.002, "mask dilation radius as a share of the long side (min 2 px)",
                              minimum=0, maximum=0.2)
    # After inpainting, a pixel counts as watermark only if inpainting changed it by more than
    # `refine_diff` grey levels (any channel) and by more than `refine_relative` of the largest
    # change on the detected mark within `refine_radius` px; the others get their own pixels
    # back. Trims the detector's blobby strokes to the mark itself.
    refine_diff: float = setting(16.0, "keep as mark only pixels inpainting changed by more than this (grey levels; "
                                       "0 = off)", minimum=0, maximum=255)
    refine_relative: float = setting(0.25, "... and by more than this share of the strongest change on the mark "
                                           "nearby (+0.014 mask IoU)", minimum=0, maximum=1)
    refine_radius: int = setting(7, "'nearby' for refine_relative and refine_along, in pixels", minimum=1, maximum=100)
    # Then a painted pixel keeps its painted value only where its change points the way its mark's
    # pixels changed (the mean over the mark within refine_radius px), by more than this: the
    # texture round and under a mark on busy ground comes back exact (repair.keep_along_mark).
    refine_along: float | None = setting(4.0, "keep painted only pixels that changed the mark's way by more than "
                                              "this (grey levels; null = off)", minimum=0, maximum=255)
    # A tiled mark repeats one unit on a grid: where the detected mask does, the copies the detector
    # missed are marked too (repair.complete_tiles), before the first inpainting round.
    tile_share: float | None = setting(0.5, "mark a pixel that at least this share of its copies on a detected "
                                             "tiled mark's grid are marked (null = off)", minimum=0.05, maximum=1)
    jpeg_quality: int = setting(95, "quality of repaired WebP images, and of JPEGs where keep_jpeg_tables is false", minimum=1, maximum=100)
    keep_jpeg_tables: bool = setting(True, "write a repaired JPEG with its input's own quantisation tables and "
                                           "chroma subsampling (its quality and size; the pixels left alone decode "
                                           "as before); false = re-encode at jpeg_quality")
    skip_existing: bool = setting(True, "resume: keep images the manifest records as done")
    group_size: int = setting(8, "images detected together (tiles batched across them)", minimum=1)
    group_pixels: int = setting(24_000_000, "decoded pixels repaired together: memory follows pixels, not image count",
                                minimum=1_000_000)
    max_pixels: int = setting(120_000_000, "larger images get a failed row instead of exhausting memory", minimum=1)
    image_timeout_s: float = setting(120.0, "seconds per image before it is failed (and left untouched)",
                                     exclusive_minimum=0)
    pause_interval: int | None = setting(None, "memory cleanup every N images (null = the level's "
                                               "optimization.memory.cleanup_interval)", minimum=1)
    io_workers: int | None = setting(None, "decode/encode threads (null = the level's optimization.repair.io_workers)",
                                     minimum=1)
    # 0 = the level's optimization.repair.inpaint_workers, and where that is 0 too, one per usable
    # core when the inpainter is thread-safe (IOPaint's cv2 model: C code without the GIL), else 1.
    inpaint_workers: int = setting(0, "images inpainted at once (0 = the level's choice)", minimum=0)


@dataclass
class RepairJobsConfig(RepairConfig):
    """What to repair and how the workflow splits it into jobs, with the repair settings of each image."""

    input_dir: str | None = setting(None, "images to repair (searched recursively); null = the synthetic test split")
    clean_dir: str | None = setting(None, "optional ground truth for evaluation: clean images (same relative names)")
    mask_dir: str | None = setting(None, "optional ground truth for evaluation: masks (same relative names)")
    chunk_size: int = setting(24, "images per repair_chunk job", minimum=1)
    collection: str = setting("auto", "collection mode: learn stamps shared by 16+ images (of one size, or aligned "
                                      "by matching across sizes) and invert their blend (auto: where a stamp fits well), off: every image on its own",
                              choices=["auto", "off"])
    mem_mb: int | None = setting(None, "memory per chunk job in MB (null = from its images: 800 MB + 100 B per pixel "
                                       "of its largest group); times the attempt on retry", minimum=256)


@dataclass
class InpaintConfig:
    """How the detected marks are filled: the IOPaint model, and FSR where the ground is textured."""

    model: str = setting("cv2", "IOPaint model; all but cv2 need local weights (see README)", choices=list(WEIGHTS))
    model_dir: str | None = setting(None, "folder with torch/hub/checkpoints/<weights>")
    # Original for cv2 is 57x faster than Crop on tiled marks, same pixels (wmrepair.inpaint).
    hd_strategy: str = setting("auto", "large-image strategy: auto = Original for cv2, Crop for the networks",
                               choices=["auto", "Crop", "Resize", "Original"])
    cv2_radius: int = setting(3, "cv2 inpaint radius (3 is ~4x faster than 5 at equal PSNR)", minimum=1)
    cv2_flag: str = setting("INPAINT_NS", "cv2 algorithm", choices=["INPAINT_TELEA", "INPAINT_NS"])
    # cv2 smooths over grass, gravel and brick; FSR (OpenCV contrib) keeps their texture (DEVNOTES, texture fill).
    texture_fill: float | None = setting(
        3.0, "with the cv2 model, re-fill a mark with OpenCV's FSR, which keeps texture, where the ground round "
        "it has a mean |Laplacian| of at least this (grey levels); null = cv2 everywhere", minimum=0)
    # FSR costs 0.1-0.3 ms per pixel: without a bound a tiled grid over a large photo takes minutes.
    texture_pixels: int | None = setting(
        100_000, "at most this many mask pixels per image are re-filled by FSR, the smallest marks first "
        "(bounds the time: about 10-30 s on one core); null = no bound", minimum=1)


# ---- the whole file -----------------------------------------------------------------
@dataclass
class WorkflowConfig:
    """wmrepair workflow configuration (config/config.yaml)."""

    __required__ = ("optimization", "data", "train", "repair", "inpaint")
    results: str = setting("results", "folder everything a run writes goes under", min_length=1)
    logs: str = setting("logs", "folder of the jobs' logs (logs/<rule>/...)", min_length=1)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelFileConfig = field(default_factory=ModelFileConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    repair: RepairJobsConfig = field(default_factory=RepairJobsConfig)
    inpaint: InpaintConfig = field(default_factory=InpaintConfig)


def config_schema() -> dict[str, Any]:
    """The JSON schema of config.yaml, generated from `WorkflowConfig`."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **json_schema(WorkflowConfig)}


def schema_text() -> str:
    """The schema file's content (what `wmrepair schema --write` writes)."""
    head = ("# Generated from src/wmrepair/config.py by `wmrepair schema --write`; do not edit by hand\n"
            "# (tests/test_config.py fails when this file and the definitions disagree).\n")
    return head + yaml.safe_dump(config_schema(), sort_keys=False, width=200, default_flow_style=None)


def check_moved(cfg: dict[str, Any]) -> None:
    """ValueError naming the new key when `cfg` uses a key that moved."""
    for (section, key), new in MOVED.items():
        if isinstance(cfg.get(section), dict) and key in cfg[section]:
            raise ValueError(f"{section}.{key} is now {new}")


def _make(cls: type, data: dict[str, Any] | None, section: str, drop: tuple[str, ...] = ()) -> Any:
    data = {k: v for k, v in (data or {}).items() if k not in drop}
    known = {f.name for f in fields(cls) if f.init}
    bad = sorted(set(data) - known)
    if bad:
        raise ValueError(f"unknown setting {section}.{bad[0]} (known: {', '.join(sorted(known))})")
    return cls(**data)


def repair_config(section: dict[str, Any] | None) -> RepairConfig:
    """The per-image `RepairConfig` of a workflow `repair:` section (its job-splitting keys left aside)."""
    check_moved({"repair": section or {}})
    jobs = {f.name for f in fields(RepairJobsConfig)} - {f.name for f in fields(RepairConfig)}
    return _make(RepairConfig, section, "repair", drop=tuple(jobs))


@dataclass
class Settings:
    """A config mapping as the typed objects the library runs with (missing sections: the defaults)."""

    optimization: OptimizationConfig
    synth: SynthConfig
    train: TrainConfig
    predict: PredictConfig
    repair: RepairConfig
    inpaint: InpaintConfig
    raw: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Settings:
        check_moved(cfg)
        synth = dict((cfg.get("data") or {}).get("synth") or {})
        if "test_sizes" in synth:
            synth["test_sizes"] = [tuple(s) for s in synth["test_sizes"]]
        return cls(
            optimization=OptimizationConfig.from_dict(cfg.get("optimization")),
            synth=_make(SynthConfig, synth, "data.synth"),
            train=TrainConfig.from_dict(cfg.get("train")),
            predict=_make(PredictConfig, cfg.get("predict"), "predict"),
            repair=repair_config(cfg.get("repair")),
            inpaint=_make(InpaintConfig, cfg.get("inpaint"), "inpaint"),
            raw=cfg,
        )

    @classmethod
    def from_yaml(cls, path: str | Path = DEFAULT_CONFIG) -> Settings:
        return cls.from_config(yaml.safe_load(Path(path).read_text()) or {})
