from wmrepair.smk import settings, setup
from wmrepair.train import train_from_cache

setup(snakemake)  # noqa: F821 - injected by Snakemake
sm = snakemake  # noqa: F821
s = settings(sm)
s.train.threads = sm.threads
train_from_cache(sm.input.train, sm.input.val, sm.params.out, s.train, s.optimization)
