import json

import pytest

from wmrepair.profiling import PerformanceAnalyzer, performance_profile


def test_stage_statistics_on_known_timings():
    a = PerformanceAnalyzer()
    for t in [1.0, 2.0, 3.0, 4.0, 10.0]:
        a.record("detect", t)
    a.count("detect", 50)
    s = a.stage_stats()["detect"]
    assert s["count"] == 5 and s["total_s"] == 20.0 and s["mean_s"] == 4.0
    assert s["p50_s"] == 3.0
    assert s["p95_s"] == pytest.approx(8.8)  # linear interpolation between 4 and 10
    assert a.throughput()["detect"] == pytest.approx(2.5)


def test_bottlenecks_and_report(tmp_path):
    a = PerformanceAnalyzer()
    a.record("decode", 6.0)
    a.record("detect", 4.0)
    found = a.bottlenecks(memory={"oom_events": 2, "pauses": 1, "pause_seconds": 3.0})
    text = json.dumps(found)
    assert "image decoding/encoding takes 60%" in text and "repair.io_workers" in text
    assert "training batches" not in text  # no data_wait stage: not a training profile
    assert "largest stage: decode" in text
    assert "2 out-of-memory events" in text and "pauses under memory pressure" in text
    path = a.generate_performance_report(tmp_path)
    assert json.loads(path.read_text())["stages"]["decode"]["count"] == 1


def test_decorator_and_context_forms():
    a = PerformanceAnalyzer()

    @performance_profile("f", a)
    def f(n):
        return f(n - 1) if n else 0

    f(3)
    with performance_profile("g", a):
        pass
    assert a.stage_stats()["f"]["count"] == 4 and a.stage_stats()["g"]["count"] == 1


def test_report_names_the_job_of_each_bottleneck(tmp_path):
    from wmrepair.report import render_report

    a = PerformanceAnalyzer()
    a.record("data_wait", 3.0)
    a.record("train_step", 1.0)
    perf = a.generate_performance_report(tmp_path / "train")
    html = render_report(tmp_path / "r.html", performance={"train": perf}).read_text()
    assert "train: <b>waiting for training batches takes 75% of profiled time</b>" in html
    assert "dataloader.num_workers" in html


def test_stage_advice_knows_what_is_already_on():
    a = PerformanceAnalyzer()
    a.record("train_step", 5.0)
    assert "mixed precision" in json.dumps(a.bottlenecks())  # nothing known: suggest it
    a.note_settings(amp_dtype="bfloat16", channels_last=True)
    text = json.dumps(a.bottlenecks())
    assert "compute-bound with bfloat16 autocast and channels_last already on" in text and "mixed precision" not in text

    a = PerformanceAnalyzer()
    a.record("inpaint", 5.0)
    a.note_settings(inpaint_model="cv2", inpaint_workers=2)
    assert "cv2 inpainting already runs 2 image(s) at once: more CPU cores" in json.dumps(a.bottlenecks())
    a.note_settings(texture_fill=3.0)
    assert "inpaint.texture_fill: null" in json.dumps(a.bottlenecks())


def test_training_curves_shade_the_progressive_epochs(tmp_path):
    """Epochs trained (and validated) on shrunk images get a grey band, so their low val IoU reads right."""
    import base64
    import io

    import numpy as np
    import pandas as pd
    from PIL import Image

    from wmrepair.report import plot_history

    def grey_pixels(sides: list[int]) -> int:
        n = len(sides)
        pd.DataFrame({"epoch": range(1, n + 1), "train_side": sides, "train_loss": np.linspace(1, 0.3, n),
                      "val_loss": np.linspace(1, 0.4, n), "val_iou": np.linspace(0.1, 0.6, n),
                      "val_f1": np.linspace(0.2, 0.7, n), "samples_per_s": [300.0] * n}).to_csv(tmp_path / "h.csv", index=False)
        png = Image.open(io.BytesIO(base64.b64decode(plot_history(tmp_path / "h.csv")))).convert("RGB")
        a = np.asarray(png).astype(int)
        return int((np.abs(a - 230).max(-1) <= 2).sum())

    assert grey_pixels([96] * 6 + [256] * 4) > 5000 > 20 * grey_pixels([256] * 10)  # (antialiased edges: a few)


def test_report_names_the_device_and_level_the_repair_ran_on(tmp_path):
    """With your own model there is no training summary: the repair profile says what ran."""
    import json

    from wmrepair.report import render_report

    perf = tmp_path / "chunk_a.performance.json"
    perf.write_text(json.dumps({"stages": {}, "settings": {"device": "cuda:0", "level": "aggressive"}}))
    html = render_report(tmp_path / "r.html", performance={"chunk_a": perf}, level="balanced").read_text()
    assert "optimisation level <b>aggressive</b> · cuda:0" in html


def test_gallery_shows_the_worst_and_best_repairs_within_its_budget(tmp_path):
    """The report's gallery: worst PSNR change first, then the best; thumbnails decode; the byte budget holds."""
    import base64
    import io

    import numpy as np
    import pandas as pd
    from PIL import Image

    from wmrepair.manifest import write_manifest
    from wmrepair.report import GALLERY_SIDE, gallery

    rows, per = [], []
    rng = np.random.default_rng(0)
    for i, change in enumerate([-5.0, 1.0, 9.0, 0.5]):
        for kind in ("in", "out"):
            (tmp_path / kind).mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(tmp_path / kind / f"{i}.png")
        mask = tmp_path / f"{i}.mask.png"
        Image.fromarray(np.pad(np.full((10, 10), 255, np.uint8), 100)).save(mask)
        rows.append({"input": str(tmp_path / "in" / f"{i}.png"), "output": str(tmp_path / "out" / f"{i}.png"),
                     "status": "ok", "mask_fraction": 0.01 * i, "mask": str(mask)})
        per.append({"input": rows[-1]["input"], "marked": True, "psnr_input": 30.0, "psnr_output": 30.0 + change})
    write_manifest(rows, tmp_path / "manifest.csv")
    pd.DataFrame(per).to_csv(tmp_path / "per.csv", index=False)
    rows.append({"input": rows[0]["input"].replace("0.png", "3.png"), "output": "", "status": "failed",
                 "error": "broken", "mask_fraction": "", "mask": ""})
    write_manifest(rows, tmp_path / "manifest.csv")
    g = gallery(tmp_path / "manifest.csv", tmp_path / "per.csv", limit=4)
    assert [x["change"] for x in g][:2] == [-5.0, 9.0] and len(g) == 5  # worst, best, two at random; the failed row
    assert g[-1]["status"] == "failed" and g[-1]["after"] is None
    im = Image.open(io.BytesIO(base64.b64decode(g[0]["before"])))
    assert im.format == "JPEG" and max(im.size) == GALLERY_SIDE
    assert gallery(tmp_path / "manifest.csv", tmp_path / "per.csv", budget=1000) == []
    no_truth = gallery(tmp_path / "manifest.csv")  # own folder: the largest repairs
    assert [x["mask_fraction"] for x in no_truth][:2] == [0.03, 0.02] and no_truth[-1]["status"] == "failed"
