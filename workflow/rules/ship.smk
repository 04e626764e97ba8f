# Only with model.ship_to (the overlays of wmrepair.shipped.STAGES): the selected detector, fp16 with its card, into the package.
rule ship_detector:
    input:
        model=f"{RESULTS}/model/model.pt",
        summary=f"{RESULTS}/train/summary.json",
        metrics=f"{RESULTS}/eval/metrics.json",
    output:
        model=SHIP_TO,
        card=str(Path(SHIP_TO).with_suffix(".json")),
    log:
        f"{LOGS}/ship_detector/ship_detector.log",
    benchmark:
        f"{BENCH}/ship_detector.tsv"
    params:
        bench=f"{RESULTS}/bench",
        settings=settings_of("data", "train"),
        made_by=made_by(),
    conda:
        "../envs/wmrepair.yaml"
    script:
        "../scripts/ship_detector.py"
