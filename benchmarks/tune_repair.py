"""Score repair settings on a dev split: the real engine, then mask IoU and PSNR.

    python benchmarks/tune_repair.py MODEL OUT_DIR 'predict.threshold=0.5 refine_diff=16' 'refine_diff=0' ...

The dev split (made once under OUT_DIR/data/dev) has the test split's image
sizes but the training words and fonts and its own seeds, so repair and
predict settings can be chosen without looking at the test split. Each
argument is one setting: space-separated `field=value` pairs of RepairConfig
or PredictConfig (`predict.field` / `repair.field` where both have the name), or `inpaint.field`. One line per setting; JSON in OUT_DIR/tune.json.

    python benchmarks/tune_repair.py MODEL OUT_DIR --split benchmarks/out/real_dev/data 'predict.gate=0.9'

`--split DIR` scores on another folder with watermarked/, clean/ and masks/ instead,
e.g. the real-photo dev set that `wmrepair bench real --set dev` builds.
"""

import json
import sys
import time
from pathlib import Path

import yaml

from wmrepair.config import (
    DEFAULT_CONFIG,
    InpaintConfig,
    PredictConfig,
    RepairConfig,
    Settings,
    SynthConfig,
)
from wmrepair.evaluate import evaluate
from wmrepair.repair import build_engine
from wmrepair.synth import synthesize


def settings_from(spec: str) -> tuple[PredictConfig, RepairConfig, InpaintConfig]:
    """config.yaml's predict/repair/inpaint sections, then the overrides in `spec`."""
    s = Settings.from_yaml(DEFAULT_CONFIG)
    pc, rc = s.predict, s.repair
    rc.skip_existing = False
    for kv in spec.split():
        key, value = kv.split("=", 1)
        section, _, key = key.rpartition(".")
        target = {"predict": pc, "repair": rc, "inpaint": s.inpaint}.get(section) or (pc if hasattr(pc, key) else rc)
        if not hasattr(target, key):
            raise SystemExit(f"unknown setting {key!r}")
        setattr(target, key, yaml.safe_load(value))
    return pc, rc, s.inpaint


def score(model: str | Path, split: Path, run: Path, spec: str = "") -> dict:
    """Repair `split`/watermarked with the real engine and `spec`'s settings into `run`; evaluate against it."""
    pc, rc, inpaint = settings_from(spec)
    t0 = time.time()
    engine = build_engine(model, None, pc, rc, inpaint)
    engine.run(split / "watermarked", run / "images", manifest=run / "manifest.csv", masks_dir=run / "masks",
               progress=False)
    seconds = time.time() - t0
    m = evaluate(run / "manifest.csv", split / "watermarked", split / "clean", split / "masks", run / "masks",
                 run / "per_image.csv")
    return {"setting": spec, "seconds": seconds, **m}


def main(model: str, out: str, specs: list[str], split: str | None = None) -> None:
    root = Path(out)
    dev = Path(split) if split else root / "data" / "dev"
    if not split and not dev.is_dir():
        synthesize(root / "data", SynthConfig(n_train=0, n_val=0, n_test=0, n_dev=48), progress=False)
    results = []
    for n, spec in enumerate(specs):
        m = score(model, dev, root / f"run{n}", spec)
        results.append(m)
        print(f"{spec or '(config.yaml)':45s} mask IoU {m['mask_iou']:.3f} (per image {m['mask_iou_mean_per_image']:.3f})"
              f"  PSNR {m['psnr_input']:.2f} -> {m['psnr_output']:.2f} dB  SSIM {m['ssim_output']:.3f}"
              f"  unmarked altered {m['clean_altered']}/{m['n_unmarked']}  marked worse {m['marked_worse']}/{m['n_marked']}"
              f"  untouched {m['marked_untouched']}/{m['n_marked']}"
              f"  {m['seconds']:.0f} s", flush=True)
    (root / "tune.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    args = sys.argv[1:]
    split = None
    if "--split" in args:
        i = args.index("--split")
        split = args[i + 1]
        del args[i:i + 2]
    if len(args) < 2:
        raise SystemExit(__doc__)
    main(args[0], args[1], args[2:] or [""], split)
