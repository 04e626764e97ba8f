# wmrepair: synthetic/user data -> cache -> train -> select -> chunked repair -> evaluate -> report
# Run: snakemake --cores 8 --resources gpu=1   (config/config.yaml is the embedded default)

configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/repair.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
