rule report:
    input:
        metrics=f"{RESULTS}/eval/metrics.json",
        per_image=f"{RESULTS}/eval/per_image.csv",
        manifest=f"{RESULTS}/repair/manifest.csv",
        card=[] if USE_OWN_MODEL else f"{RESULTS}/model/model.json",
        stamps=stamps_dir(),
    output:
        html=f"{RESULTS}/report/report.html",
    log:
        f"{LOGS}/report/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    params:
        train_dir=[] if USE_OWN_MODEL else f"{RESULTS}/train",
        bench_dir=BENCH,
        level=config["optimization"]["level"],
    conda:
        "../envs/wmrepair.yaml"
    script:
        "../scripts/report.py"
