from wmrepair.smk import settings, setup
from wmrepair.train import select_detector

setup(snakemake)  # noqa: F821 - injected by Snakemake
sm = snakemake  # noqa: F821
card = select_detector(sm.params.checkpoints, sm.input.val, sm.output.model, sm.output.card, settings(sm).train)
print(f"selected {card['source_checkpoint']}: {card['metrics']}")
