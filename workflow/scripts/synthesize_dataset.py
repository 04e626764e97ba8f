from wmrepair.hardware import usable_cpus
from wmrepair.smk import settings, setup
from wmrepair.synth import synthesize

setup(snakemake)  # noqa: F821 - injected by Snakemake
workers = min(snakemake.threads, usable_cpus())  # noqa: F821
synthesize(snakemake.params.out, settings(snakemake).synth, workers=workers)  # noqa: F821
