rule train:
    input:
        train=f"{RESULTS}/cache/train/index.json",
        val=f"{RESULTS}/cache/val/index.json",
        init=init_model(),
        teachers=teacher_models(),
    output:
        summary=f"{RESULTS}/train/summary.json",
        history=f"{RESULTS}/train/history.csv",
    log:
        f"{LOGS}/train/train.log",
    benchmark:
        f"{BENCH}/train.tsv"
    params:
        out=lambda wc, output: os.path.dirname(output.summary),
        settings=settings_of("train", "optimization", drop=["train.keep_init"]),  # select_checkpoint applies it
    threads: job_threads()
    resources:
        gpu=1,
    conda:
        "../envs/wmrepair.yaml"
    script:
        "../scripts/train.py"


rule select_checkpoint:
    input:
        summary=f"{RESULTS}/train/summary.json",
        val=f"{RESULTS}/cache/val/index.json",  # train.keep_init validates the average
        init=init_model(),
    output:
        model=f"{RESULTS}/model/model.pt",
        card=f"{RESULTS}/model/model.json",
    log:
        f"{LOGS}/select_checkpoint/select_checkpoint.log",
    benchmark:
        f"{BENCH}/select_checkpoint.tsv"
    params:
        checkpoints=f"{RESULTS}/train/checkpoints",
        settings=settings_of("train"),
    conda:
        "../envs/wmrepair.yaml"
    script:
        "../scripts/select_checkpoint.py"
