from wmrepair.evaluate import evaluate, write_metrics
from wmrepair.smk import setup

setup(snakemake)  # noqa: F821 - injected by Snakemake
sm = snakemake  # noqa: F821
m = evaluate(sm.input.manifest, sm.params.input_dir, sm.params.clean, sm.params.masks, sm.params.pred_masks,
             per_image_csv=sm.output.per_image)
write_metrics(m, sm.output.metrics)
print(m)
