from wmrepair.smk import settings, setup
from wmrepair.synth import synthesize

setup(snakemake)  # noqa: F821 - injected by Snakemake
# Every usable core (synthesize's default) without a `threads:` request: synthesis is
# the DAG's first job and runs alone, and on a cluster the job's CPU set bounds
# usable_cpus(). A `threads:` request would need its own set-threads entry on every
# cluster command line.
sm = snakemake  # noqa: F821
synthesize(sm.params.out, settings(sm).synth, backgrounds_dir=sm.params.backgrounds_dir)
