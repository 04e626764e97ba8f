from wmrepair.checkpoints import export_model, select_best
from wmrepair.smk import settings, setup

setup(snakemake)  # noqa: F821 - injected by Snakemake
sm = snakemake  # noqa: F821
path, meta = select_best(sm.params.checkpoints, settings(sm).train.monitor)
card = export_model(path, sm.output.model, sm.output.card)
print(f"selected {path}: {card['metrics']}")
