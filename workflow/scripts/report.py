from pathlib import Path

from wmrepair.report import render_report
from wmrepair.smk import setup

setup(snakemake)  # noqa: F821 - injected by Snakemake
sm = snakemake  # noqa: F821
train_dir = sm.params.train_dir or None
perf = {"train": Path(train_dir) / "performance.json"} if train_dir else {}
# Each repair chunk leaves its profile beside its manifest.
for p in sorted((Path(sm.input.manifest).parent / "manifests").glob("*.performance.json")):
    perf[p.name.removesuffix(".performance.json")] = p
render_report(sm.output.html, metrics=sm.input.metrics, per_image=sm.input.per_image,
              card=sm.input.card or None, train_dir=train_dir, manifest=sm.input.manifest,
              bench_dir=sm.params.bench_dir, level=sm.params.level, performance=perf,
              stamps_dir=sm.input.stamps[0] if sm.input.get("stamps") else None)
