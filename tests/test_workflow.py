"""The real workflow through the Snakemake CLI, on a tiny config in a temp folder."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, VENV_BIN

SNAKEMAKE = [str(VENV_BIN / "snakemake")] if (VENV_BIN / "snakemake").exists() else [sys.executable, "-m", "snakemake"]

TINY = {
    "data": {"synth": {"seed": 0, "n_train": 48, "n_val": 16, "n_test": 6,
                       "test_sizes": [[320, 240], [640, 480], [1200, 1000]]}},
    "train": {"epochs": 2, "batch_size": 8, "crop": 96, "patience": 0, "top_k": 2, "seed": 0, "init": "scratch",
              "time_budget_s": None, "model": {"base_channels": 8, "depth": 3, "in_channels": 3}},
    "repair": {"chunk_size": 4},
}


def overlay(override: dict, base: dict | None = None) -> dict:
    """`base` (TINY) with each section of `override` merged over it (scalars replace)."""
    base = base or TINY
    return {**base, **{k: {**base.get(k, {}), **v} if isinstance(v, dict) else v for k, v in override.items()}}


def smk(workdir: Path, *args: str, config: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cfg = workdir / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(config or TINY))
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile", str(ROOT / "config/config.yaml"),
           str(cfg), "--cores", "2", "--resources", "gpu=1", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(f"snakemake failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("wf")
    smk(wd)
    return wd


def test_dry_run_dag(tmp_path):
    p = smk(tmp_path, "-n", "--quiet", "rules")
    for rule in ("synthesize_dataset", "cache_dataset", "train", "select_checkpoint", "split_inputs",
                 "gather_repair", "evaluate", "report"):
        assert rule in p.stdout + p.stderr


def test_lint():
    p = subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--lint", "--directory", str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_stage_output(finished_run):
    r = finished_run / "results"
    assert (r / "data/synth/synth.json").exists()
    for split in ("train", "val"):
        idx = json.loads((r / f"cache/{split}/index.json").read_text())
        assert idx["count"] == (48 if split == "train" else 16) and len(idx["content_hash"]) == 64
    hist = pd.read_csv(r / "train/history.csv")
    assert list(hist.epoch) == [1, 2]
    card = json.loads((r / "model/model.json").read_text())
    assert card["sha256"] and "val_iou" in card["metrics"]
    import torch

    torch.load(r / "model/model.pt", weights_only=True)
    from wmrepair.chunks import read_chunk

    chunks = sorted((r / "repair/chunks").glob("chunk_*.jsonl"))
    assert 2 <= len(chunks) <= 3 and sum(len(read_chunk(c)) for c in chunks) == 6  # 6 images, chunk_size 4
    m = pd.read_csv(r / "repair/manifest.csv", keep_default_na=False)
    inputs = sorted((r / "data/synth/test/watermarked").iterdir())
    assert len(m) == len(inputs) == 6
    assert set(m.columns) >= {"input", "output", "status", "error", "mask_fraction", "iterations", "seconds"}
    for row in m.itertuples():
        assert row.status in ("ok", "clean"), row.error
        src, out = finished_run / row.input, finished_run / row.output  # relative to the workdir
        assert out.suffix == src.suffix and out.name == src.name and out.exists()
    metrics = json.loads((r / "eval/metrics.json").read_text())
    assert metrics["n_images"] == 6 and "mask_iou" in metrics and metrics["psnr_input"] is not None
    lo, hi = metrics["mask_iou_ci95"]
    assert lo <= metrics["mask_iou"] <= hi
    html = (r / "report/report.html").read_text()
    assert "wmrepair report" in html and 'id="n-images">6<' in html and 'id="mask-iou-ci"' in html
    for rule in ("synthesize_dataset", "train", "select_checkpoint", "evaluate"):
        assert (finished_run / "logs" / rule).is_dir()
    assert (r / "benchmarks/train.tsv").exists()


def test_rerun_nothing_to_do_and_forcerun_train(finished_run):
    p = smk(finished_run, "-n")
    assert "Nothing to be done" in p.stdout + p.stderr
    p = smk(finished_run, "-n", "--forcerun", "train")
    out = p.stdout + p.stderr
    for rule in ("train", "select_checkpoint", "repair_chunk", "gather_repair", "evaluate", "report"):
        assert f"rule {rule}:" in out or f"localrule {rule}:" in out, rule
    assert "synthesize_dataset:" not in out


def test_changed_settings_rerun_what_depends_on_them(finished_run):
    p = smk(finished_run, "-n", config={**TINY, "predict": {"max_side": 256}})
    out = p.stdout + p.stderr
    assert "rule repair_chunk:" in out and "rule train:" not in out
    p = smk(finished_run, "-n", config={**TINY, "train": {**TINY["train"], "epochs": 3}})
    out = p.stdout + p.stderr
    assert "rule train:" in out and "rule repair_chunk:" in out


def test_the_shipped_detector_replaces_training_or_starts_it(tmp_path):
    from wmrepair.shipped import SHIPPED_MODEL

    out = smk(tmp_path, "-n", config=overlay({"model": {"path": "shipped"}})).stdout
    assert "rule train:" not in out and "rule repair_chunk:" not in out  # chunks come after the split
    assert "split_inputs:" in out and "rule synthesize_dataset:" in out
    pretrained = {**{k: v for k, v in TINY["train"].items() if k != "model"}, "init": "pretrained"}
    out = smk(tmp_path, "-n", config={**TINY, "train": pretrained}).stdout
    assert "rule train:" in out and str(SHIPPED_MODEL) in out  # the shipped weights are an input of training


@pytest.mark.parametrize("override, key", [
    ({"results": ""}, "results"),
    ({"train": {"init": "nowhere.pt"}}, "train.init"),
    ({"train": {"teachers": ["pretrained", "nowhere.pt"]}}, "train.teachers: nowhere.pt"),
    ({"train": {"teachers": ["scratch"]}}, "train.teachers: scratch is no teacher"),
    ({"results": "/"}, "results"),
    ({"results": "../../../../../../etc"}, "results"),
    ({"logs": "."}, "logs"),
    ({"train": {"epochs": -1}}, "train.epochs"),
    ({"optimization": {"level": "turbo"}}, "optimization.level"),
    ({"repair": {"chunk_sizes": 3}}, "repair"),
    ({"predict": {"scales": [0, 1]}}, "predict.scales"),
    ({"repair": {"mask_threshold": 0.4}}, "repair.mask_threshold is now predict.threshold"),
    ({"optimization": {"level": "balanced", "batch": {"initial_batch_size": 64, "max_batch_size": 8}}}, "optimization.batch"),
])
def test_malformed_config_one_line_error(tmp_path, override, key):
    p = smk(tmp_path, "-n", config=overlay(override), check=False)
    assert p.returncode != 0
    err = (p.stderr + p.stdout).strip()
    lines = [ln for ln in err.splitlines() if "wmrepair config error" in ln]
    assert len(lines) == 1 and key in lines[0], err
    assert "Traceback" not in err


def test_run_never_writes_where_it_reads(tmp_path, finished_run):
    """Every overlap between a user folder and what the run writes is one config-time line, in both directions."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(next((finished_run / "results/data/synth/test/watermarked").iterdir()), photos)
    (tmp_path / "empty").mkdir()
    model = str(finished_run / "results/model/model.pt")
    cases = [
        ({"repair": {"input_dir": str(tmp_path / "results/repair/images")}}, "repair.input_dir"),  # repairs in place
        ({"results": str(photos / "results"), "repair": {"input_dir": str(photos)}}, "repair.input_dir"),
        ({"logs": str(photos / "logs"), "repair": {"input_dir": str(photos)}}, "logs"),
        ({"repair": {"input_dir": str(tmp_path / "empty")}}, "no images"),
        ({"data": {"backgrounds_dir": str(tmp_path / "empty")}}, "data.backgrounds_dir: no images"),
        ({"results": str(photos / "results"), "data": {"backgrounds_dir": str(photos)}}, "data.backgrounds_dir"),
    ]
    (tmp_path / "results/repair/images").mkdir(parents=True)
    shutil.copy(next(photos.iterdir()), tmp_path / "results/repair/images")
    before = {p: p.read_bytes() for p in photos.rglob("*")}
    for override, key in cases:
        p = smk(tmp_path, "-n", config=overlay({"model": {"path": model}, **override}), check=False)
        err = (p.stderr + p.stdout).strip()
        lines = [ln for ln in err.splitlines() if "wmrepair config error" in ln]
        assert p.returncode != 0 and len(lines) == 1 and key in lines[0], err
        assert "Traceback" not in err
    assert before == {p: p.read_bytes() for p in photos.rglob("*")}


OWN_NAMES = ["a.png", "b.jpg", "sub/c.png", "new\nline.png", "sep\u2028arator.jpg", "d.jpg", "e.png"]


@pytest.fixture(scope="module")
def own_photos(tmp_path_factory, finished_run):
    """A user's folder: photos, their clean originals and masks, names a line-based list would split."""
    root = tmp_path_factory.mktemp("own")
    synth = finished_run / "results/data/synth/test"
    srcs = sorted((synth / "watermarked").iterdir())
    for i, name in enumerate(OWN_NAMES):
        src = srcs[i % len(srcs)]
        stem = Path(name).with_suffix("")
        for kind, ext, from_dir in (("photos", Path(name).suffix, "watermarked"), ("clean", ".png", "clean"),
                                    ("masks", ".png", "masks")):
            dst = root / kind / f"{stem}{ext}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            from PIL import Image

            Image.open(next((synth / from_dir).glob(f"{src.stem}.*"))).convert("RGB").save(dst)
    return root


@pytest.mark.parametrize("truth", ["none", "clean", "clean+masks"])
def test_own_folder_runs_to_the_report(tmp_path, finished_run, own_photos, truth):
    """The user's own folder and model, with no, some or all ground truth: a real run ends with a report."""
    cfg = {**TINY, "model": {"path": str(finished_run / "results/model/model.pt")},
           "repair": {"chunk_size": 3, "input_dir": str(own_photos / "photos"),
                      "clean_dir": str(own_photos / "clean") if "clean" in truth else None,
                      "mask_dir": str(own_photos / "masks") if "masks" in truth else None}}
    before = {p: p.read_bytes() for p in own_photos.rglob("*") if p.is_file()}
    smk(tmp_path, config=cfg)
    r = tmp_path / "results"
    m = pd.read_csv(r / "repair/manifest.csv", keep_default_na=False)
    assert sorted(Path(i).relative_to(own_photos / "photos").as_posix() for i in m.input) == sorted(OWN_NAMES)
    assert set(m.status) <= {"ok", "clean"}, m[["input", "error"]]
    for row in m.itertuples():
        assert (tmp_path / row.output).is_file() and Path(row.output).suffix == Path(row.input).suffix
    metrics = json.loads((r / "eval/metrics.json").read_text())
    assert (metrics["psnr_gain_db"] is not None) == ("clean" in truth)
    assert (metrics["mask_iou"] is not None) == ("masks" in truth)
    html = (r / "report/report.html").read_text()
    assert f'id="n-images">{len(OWN_NAMES)}<' in html and ('id="mask-iou"' in html) == ("masks" in truth)
    assert not (r / "train").exists() and not (r / "data").exists()
    assert before == {p: p.read_bytes() for p in own_photos.rglob("*") if p.is_file()}  # inputs untouched


def test_added_and_removed_inputs_rerun_only_their_chunks(tmp_path, finished_run):
    from wmrepair.chunks import cut

    photos = tmp_path / "photos"
    photos.mkdir()
    srcs = sorted((finished_run / "results/data/synth/test/watermarked").iterdir())
    for i in range(12):
        shutil.copy(srcs[i % len(srcs)], photos / f"img{i:02d}{srcs[i % len(srcs)].suffix}")
    cfg = {**TINY, "model": {"path": str(finished_run / "results/model/model.pt")},
           "repair": {"chunk_size": 3, "input_dir": str(photos)}}
    smk(tmp_path, config=cfg)
    chunks = tmp_path / "results/repair/chunks"
    old_ids = {p.stem.removeprefix("chunk_") for p in chunks.glob("chunk_*.jsonl")}
    assert len(old_ids) >= 3
    removed = sorted(photos.iterdir())[-1]
    removed.unlink()
    shutil.copy(srcs[0], photos / f"img05b{srcs[0].suffix}")
    p = smk(tmp_path, config=cfg)
    out = p.stdout + p.stderr
    new_ids = {q.stem.removeprefix("chunk_") for q in chunks.glob("chunk_*.jsonl")}
    assert "checkpoint split_inputs:" in out  # the listing changed
    ran = set(re.findall(r"chunk_(\w+)\.csv", " ".join(ln for ln in out.splitlines() if "output:" in ln)))
    assert ran == new_ids - old_ids and 1 <= len(ran) < len(new_ids), (ran, new_ids, old_ids)
    m = pd.read_csv(tmp_path / "results/repair/manifest.csv", keep_default_na=False)
    assert sorted(Path(i).name for i in m.input) == sorted(q.name for q in photos.iterdir())
    names = sorted(q.name for q in photos.iterdir())
    assert len(list(cut(names, 3))) == len(new_ids)
    assert sorted(q.name for q in (tmp_path / "results/repair/manifests").glob("chunk_*.csv")) == sorted(
        f"chunk_{i}.csv" for i in new_ids)  # stale chunk manifests are gone
    assert "Nothing to be done" in (lambda q: q.stdout + q.stderr)(smk(tmp_path, "-n", config=cfg))


def test_user_data_skips_synthesis(tmp_path, finished_run):
    """Own input folder + own model: no synthesis, no training."""
    own = tmp_path / "photos"
    shutil.copytree(finished_run / "results/data/synth/test/watermarked", own)
    cfg = {**TINY, "model": {"path": str(finished_run / "results/model/model.pt")},
           "repair": {"chunk_size": 10, "input_dir": str(own)}}
    p = smk(tmp_path, "-n", config=cfg)
    out = p.stdout + p.stderr
    assert "synthesize_dataset" not in out and "rule train:" not in out and "split_inputs" in out


def test_report_renders_in_a_browser(finished_run, tmp_path):
    """Headless Chromium loads the report: both plots decode to real images, the tables render."""
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no Chromium browser installed (.ci/run installs Debian's chromium)")
    probe = ("<script>addEventListener('load', () => document.body.setAttribute('data-probe',"
             " [...document.images].map(i => i.naturalWidth).join(',') + '|'"
             " + document.querySelectorAll('table tr').length));</script>")
    page = tmp_path / "report.html"
    page.write_text((finished_run / "results/report/report.html").read_text().replace("</body>", probe + "</body>"))
    p = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                        "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'data-probe="([^"]*)"', p.stdout)
    assert m, p.stderr[-2000:]
    widths, rows = m.group(1).split("|")
    widths = [int(w) for w in widths.split(",")]
    # Every picture decodes: the training curves, resources, and the gallery's thumbnails (at least one pair).
    assert len(widths) == page.read_text().count("<img") >= 4 and all(w > 100 for w in widths), widths
    assert int(rows) > TINY["data"]["synth"]["n_test"]  # the manifest table has a row per image, plus the others


def test_collection_mode_in_the_workflow(tmp_path):
    """repair.collection: auto learns the stamp a user folder shares (estimate_stamps), every chunk
    inverts it, and the report shows it; with the shipped detector, so no training runs."""
    from PIL import Image
    from test_stamps import _backgrounds, _blend, _logo_stamp

    src = tmp_path / "photos"
    src.mkdir()
    alpha, colour = _logo_stamp()
    for i, c in enumerate(_backgrounds(20, 23)):
        Image.fromarray(_blend(c, alpha, colour, "png")).save(src / f"p{i:02d}.png")
    wd = tmp_path / "wd"
    wd.mkdir()
    smk(wd, config=overlay({"model": {"path": "shipped"}, "repair": {"input_dir": str(src), "chunk_size": 10}}))
    m = pd.read_csv(wd / "results/repair/manifest.csv", keep_default_na=False)
    assert len(m) == 20 and (m.method == "stamp:stamp_00").sum() >= 16, m[["input", "status", "method"]]
    assert (wd / "results/repair/stamps/stamp_00/alpha.png").is_file()
    assert (wd / "logs/estimate_stamps/estimate_stamps.log").is_file()
    html = (wd / "results/report/report.html").read_text()
    assert "Shared stamps" in html and "stamp_00" in html
