"""Compare training settings at a fixed sample budget (val IoU per epoch), e.g. on a lent GPU.

    python benchmarks/sweep_train.py OUT_DIR '[{"name": "base"}, {"name": "lr1e-2", "lr": 0.01}]'

Synthesises the default dataset, caches it once, then trains each variant from
the same seed. Results (JSON) go to OUT_DIR/sweep.json; one line per variant is printed.
"""

import json
import sys
import time
from pathlib import Path

from wmrepair.cache import build_cache
from wmrepair.config import OptimizationConfig
from wmrepair.synth import SynthConfig, synthesize
from wmrepair.train import TrainConfig, train_from_cache


def main(out: str, variants: list[dict]) -> None:
    root = Path(out)
    if not (root / "data/synth.json").exists():
        synthesize(root / "data", SynthConfig(), progress=False)
    for split in ("train", "val"):
        c, _ = build_cache(root / "data" / split, root / "cache" / split, size=256, progress=False)
        c.write_index(root / "cache" / split / "index.json")
    results = []
    for v in variants:
        v = dict(v)
        name = v.pop("name")
        base = {"epochs": 14, "batch_size": 16, "lr": 3e-3, "crop": 128, "patience": 0, "time_budget_s": None}
        cfg = TrainConfig.from_dict({**base, **v})
        t0 = time.time()
        s = train_from_cache(root / "cache/train/index.json", root / "cache/val/index.json", root / "runs" / name,
                             cfg, OptimizationConfig())
        hist = (root / "runs" / name / "history.csv").read_text().splitlines()[1:]
        curve = [round(float(line.split(",")[3]), 3) for line in hist]
        results.append({"name": name, "overrides": v, "curve": curve, "best": max(curve),
                        "samples_per_s": s["median_samples_per_s"], "seconds": time.time() - t0})
        print(f"{name:14s} best {max(curve):.3f} last {curve[-1]:.3f} {s['median_samples_per_s']:.0f} samples/s "
              f"{time.time() - t0:.0f}s curve {curve}", flush=True)
    (root / "sweep.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
