"""Compare training settings at a fixed sample budget (val IoU per epoch), e.g. on a lent GPU.

    python benchmarks/sweep_train.py OUT_DIR '[{"name": "base"}, {"name": "lr1e-2", "lr": 0.01}]'

Synthesises the default dataset, caches it once, then trains each variant from
the same seed and scores its best checkpoint on the test split the way the
workflow does (detect at `predict.max_side`, mask IoU at full resolution over
all test pixels). Results (JSON) go to OUT_DIR/sweep.json and
OUT_DIR/runs/<name>/result.json; one line per variant. Variants start from the
default config's `train` section. To use many cores (or one GPU) for several
variants at once, run one process per variant on the same OUT_DIR after a first
call with `'[]'` has written the data and cache.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from wmrepair.cache import build_cache
from wmrepair.checkpoints import select_best
from wmrepair.config import OptimizationConfig
from wmrepair.imageio import list_images, read_image, read_mask
from wmrepair.losses import confusion, iou_f1
from wmrepair.predict import OptimizedWatermarkPredictor, PredictConfig
from wmrepair.settings import DEFAULT_CONFIG
from wmrepair.synth import SynthConfig, synthesize
from wmrepair.train import TrainConfig, train_from_cache


def test_iou(model: Path, test_dir: Path, threshold: float = 0.5) -> float:
    """Pixel IoU over the whole test split (the figure `evaluate` reports, before repair dilation)."""
    counts = np.zeros(3, np.int64)
    with OptimizedWatermarkPredictor(model, predict_config=PredictConfig(threshold=threshold)) as pred:
        for rel in list_images(test_dir / "watermarked"):
            g = read_mask(test_dir / "masks" / rel.with_suffix(".png"))
            p = pred.predict_masks([read_image(test_dir / "watermarked" / rel).rgb])[0]
            counts += confusion(torch.from_numpy(p), torch.from_numpy(g)).numpy()
    return iou_f1(counts.tolist())[0]


def main(out: str, variants: list[dict]) -> None:
    root = Path(out)
    if not (root / "data/synth.json").exists():
        synthesize(root / "data", SynthConfig(), progress=False)
    for split in ("train", "val"):
        c, _ = build_cache(root / "data" / split, root / "cache" / split, size=256, progress=False)
        c.write_index(root / "cache" / split / "index.json")
    results = []
    base = yaml.safe_load(DEFAULT_CONFIG.read_text())["train"]
    base |= {"patience": 0, "time_budget_s": None}
    for v in variants:
        v = dict(v)
        name = v.pop("name")
        v["model"] = {**base["model"], **v.get("model", {})}
        cfg = TrainConfig.from_dict({**base, **v})
        t0 = time.time()
        s = train_from_cache(root / "cache/train/index.json", root / "cache/val/index.json", root / "runs" / name,
                             cfg, OptimizationConfig())
        hist = (root / "runs" / name / "history.csv").read_text().splitlines()[1:]
        curve = [round(float(line.split(",")[3]), 3) for line in hist]
        best, _ = select_best(root / "runs" / name / "checkpoints")
        tiou = test_iou(best, root / "data" / "test")
        results.append({"name": name, "overrides": v, "curve": curve, "best": max(curve), "test_iou": tiou,
                        "samples_per_s": s["median_samples_per_s"], "seconds": time.time() - t0})
        (root / "runs" / name / "result.json").write_text(json.dumps(results[-1], indent=1))
        print(f"{name:14s} test {tiou:.3f} best {max(curve):.3f} last {curve[-1]:.3f} "
              f"{s['median_samples_per_s']:.0f} samples/s {time.time() - t0:.0f}s curve {curve}", flush=True)
    if results:
        (root / "sweep.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
