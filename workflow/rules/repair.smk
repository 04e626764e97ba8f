checkpoint split_inputs:
    input:
        synth_for_test(),
    output:
        directory(f"{RESULTS}/repair/chunks"),
    log:
        f"{LOGS}/split_inputs/split_inputs.log",
    benchmark:
        f"{BENCH}/split_inputs.tsv"
    params:
        input_dir=repair_input_dir(),
        chunk_size=config["repair"]["chunk_size"],
        # Added, removed or changed images rerun the split; only the chunks they fall in are new.
        listing=lambda wc: input_listing(),
    conda:
        "../envs/wmrepair.yaml"
    script:
        "../scripts/split_inputs.py"


rule estimate_stamps:
    input:
        synth_for_test(),
        model=model_file(),
    output:
        directory(f"{RESULTS}/repair/stamps"),
    log:
        f"{LOGS}/estimate_stamps/estimate_stamps.log",
    benchmark:
        f"{BENCH}/estimate_stamps.tsv"
    params:
        # No listing trigger: added or removed images must rerun only their chunks (stamps
        # learnt from the folder as it was still apply to new images that carry them).
        input_dir=repair_input_dir(),
        settings=settings_of("predict", "optimization"),
    threads: job_threads()
    resources:
        gpu=1,
    conda:
        "../envs/wmrepair.yaml"
    script:
        "../scripts/estimate_stamps.py"


rule repair_chunk:
    input:
        # ancient: a re-split rewrites every list; a chunk's name is the hash of its content,
        # so an unchanged name means unchanged images (only new names run).
        chunk=ancient(f"{RESULTS}/repair/chunks/chunk_{{i}}.jsonl"),
        model=model_file(),
        stamps=stamps_dir(),
    output:
        manifest=f"{RESULTS}/repair/manifests/chunk_{{i}}.csv",
    log:
        f"{LOGS}/repair_chunk/chunk_{{i}}.log",
    benchmark:
        f"{BENCH}/repair_chunk/chunk_{{i}}.tsv"
    params:
        input_dir=repair_input_dir(),
        images=f"{RESULTS}/repair/images",
        masks=f"{RESULTS}/repair/masks",
        settings=settings_of("predict", "repair", "inpaint", "optimization"),
    threads: job_threads()
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: repair_chunk_mem_mb(wc) * attempt,
    conda:
        "../envs/wmrepair.yaml"
    script:
        "../scripts/repair_chunk.py"


rule gather_repair:
    input:
        chunk_manifests,
    output:
        manifest=f"{RESULTS}/repair/manifest.csv",
    log:
        f"{LOGS}/gather_repair/gather_repair.log",
    benchmark:
        f"{BENCH}/gather_repair.tsv"
    conda:
        "../envs/wmrepair.yaml"
    script:
        "../scripts/gather_repair.py"


rule evaluate:
    input:
        manifest=f"{RESULTS}/repair/manifest.csv",
    output:
        metrics=f"{RESULTS}/eval/metrics.json",
        per_image=f"{RESULTS}/eval/per_image.csv",
    log:
        f"{LOGS}/evaluate/evaluate.log",
    benchmark:
        f"{BENCH}/evaluate.tsv"
    params:
        input_dir=repair_input_dir(),
        clean=ground_truth("clean"),
        masks=ground_truth("masks"),
        pred_masks=f"{RESULTS}/repair/masks",
    conda:
        "../envs/wmrepair.yaml"
    script:
        "../scripts/evaluate.py"
