rule synthesize_dataset:
    output:
        marker=f"{SYNTH}/synth.json",
    log:
        f"{LOGS}/synthesize_dataset/synthesize_dataset.log",
    benchmark:
        f"{BENCH}/synthesize_dataset.tsv"
    params:
        out=lambda wc, output: os.path.dirname(output.marker),
        settings={"data": {"synth": config["data"]["synth"]}},
        backgrounds_dir=config["data"].get("backgrounds_dir"),
        # Added, removed or changed pictures in it make a new dataset.
        backgrounds=lambda wc: input_listing(config["data"].get("backgrounds_dir") or ""),
    conda:
        "../envs/wmrepair.yaml"
    script:
        "../scripts/synthesize_dataset.py"


rule cache_dataset:
    input:
        synth_for_train(),
    output:
        index=f"{RESULTS}/cache/{{split}}/index.json",
    log:
        f"{LOGS}/cache_dataset/{{split}}.log",
    benchmark:
        f"{BENCH}/cache_dataset/{{split}}.tsv"
    wildcard_constraints:
        split="train|val",
    params:
        data=lambda wc: train_data_dir(wc.split),
        size=config["data"]["cache_size"],
    conda:
        "../envs/wmrepair.yaml"
    script:
        "../scripts/cache_dataset.py"
