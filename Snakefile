# wmrepair: synthetic/user data -> cache -> train -> select -> chunked repair -> evaluate -> report
# (-> ship, with model.ship_to)
# Run: snakemake --cores 8 --resources gpu=1   (config/config.yaml is the embedded default)
# On SLURM: snakemake --profile profiles/slurm

configfile: "config/config.yaml"


# Seconds of bookkeeping: on a cluster they run in the Snakemake process, not as jobs.
localrules: all, select_checkpoint, split_inputs, gather_repair, report


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/repair.smk"
include: "workflow/rules/report.smk"


if SHIP_TO:

    include: "workflow/rules/ship.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
