"""Compare training settings (val IoU per epoch, then the real repair on dev and test), e.g. on a GPU.

    python benchmarks/sweep_train.py OUT_DIR '[{"name": "base"}, {"name": "lr1e-2", "lr": 0.01}]'

Synthesises the default dataset plus the dev split, caches it once, then trains
each variant from the same seed and repairs the dev and test splits with its
best checkpoint and config.yaml's predict/repair/inpaint settings (the real
engine, as the workflow runs it): mask IoU over all pixels and PSNR gain. Choose
on dev; test is for reporting. Results (JSON) go to OUT_DIR/sweep.json and
OUT_DIR/runs/<name>/result.json; one line per variant. Variants start from the
default config's `train` section. To use many cores (or one GPU) for several
variants at once, run one process per variant on the same OUT_DIR after a first
call with `'[]'` has written the data and cache.
"""

import json
import sys
import time
from pathlib import Path

import yaml
from tune_repair import score

from wmrepair.cache import build_cache
from wmrepair.checkpoints import select_best
from wmrepair.config import DEFAULT_CONFIG
from wmrepair.optimization import OptimizationConfig
from wmrepair.synth import SynthConfig, synthesize
from wmrepair.train import TrainConfig, train_from_cache


def main(out: str, variants: list[dict]) -> None:
    root = Path(out)
    if not (root / "data/synth.json").exists():
        synthesize(root / "data", SynthConfig(n_dev=48), progress=False)
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
        train_s = time.time() - t0
        best, _ = select_best(root / "runs" / name / "checkpoints")
        repair = {split: score(best, root / "data" / split, root / "runs" / name / split) for split in ("dev", "test")}
        results.append({"name": name, "overrides": v, "curve": curve, "best": max(curve), "train_s": train_s,
                        "samples_per_s": s["median_samples_per_s"], "repair": repair})
        (root / "runs" / name / "result.json").write_text(json.dumps(results[-1], indent=1))
        figures = "  ".join(f"{k} IoU {m['mask_iou']:.3f} PSNR {m['psnr_gain_db']:+.2f} dB" for k, m in repair.items())
        print(f"{name:14s} {figures}  val best {max(curve):.3f} last {curve[-1]:.3f}  "
              f"{s['median_samples_per_s']:.0f} samples/s, trained in {train_s:.0f} s", flush=True)
    if results:
        (root / "sweep.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
