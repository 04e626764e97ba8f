from wmrepair.smk import settings, setup
from wmrepair.synth import synthesize

setup(snakemake)  # noqa: F821 - injected by Snakemake
synthesize(snakemake.params.out, settings(snakemake).synth)  # noqa: F821
