from wmrepair.chunks import gather_manifests
from wmrepair.smk import setup

setup(snakemake)  # noqa: F821 - injected by Snakemake
sm = snakemake  # noqa: F821
print(gather_manifests(list(sm.input), sm.output.manifest))
