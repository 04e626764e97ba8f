from wmrepair.shipped import ship
from wmrepair.smk import setup

setup(snakemake)  # noqa: F821 - injected by Snakemake
sm = snakemake  # noqa: F821
card = ship(sm.input.model, sm.output.model, train_summary=sm.input.summary, metrics=sm.input.metrics,
            config=sm.params.settings, bench_dir=sm.params.bench, made_by=sm.params.made_by)
print(f"shipped {sm.output.model} ({card['bytes']} bytes, sha256 {card['sha256'][:12]}): {card['metrics']}")
