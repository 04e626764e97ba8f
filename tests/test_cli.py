import subprocess
import sys

import numpy as np
import pandas as pd
from conftest import ROOT, VENV_BIN, make_image
from PIL import Image

from wmrepair.cli import main

WMREPAIR = [str(VENV_BIN / "wmrepair")] if (VENV_BIN / "wmrepair").exists() else [sys.executable, "-m", "wmrepair"]


def run(*args):
    return subprocess.run([*WMREPAIR, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_help_explains():
    p = run("repair", "--help")
    assert p.returncode == 0
    for flag in ("--optimize", "--batch-size", "--pause-interval", "--max-iterations", "--threshold",
                 "--fast", "--conservative", "--save-masks", "--manifest"):
        assert flag in p.stdout
    from wmrepair.config import InpaintConfig, PredictConfig, RepairConfig, TrainConfig
    from wmrepair.schema import help_for

    # The help states the settings' docs and defaults, read from their one definition (without torch).
    text = " ".join(p.stdout.split())
    for cls, name in ((PredictConfig, "scales"), (PredictConfig, "max_side"), (PredictConfig, "threshold"),
                      (RepairConfig, "max_iterations"), (RepairConfig, "threshold"), (RepairConfig, "refine_diff"),
                      (RepairConfig, "refine_relative"),
                      (RepairConfig, "image_timeout_s"), (RepairConfig, "pause_interval"),
                      (InpaintConfig, "model"), (TrainConfig, "device")):
        assert " ".join(help_for(cls, name).split()) in text, (cls.__name__, name)
    assert "--config" in text and "(default 95)" in text  # jpeg_quality, as a user reads it
    assert "repair.keep_jpeg_tables" in text  # --jpeg-quality says what it replaces
    assert run("--help").returncode == 0


def test_cli_defaults_are_the_definitions():
    from wmrepair.cli import build_parser
    from wmrepair.config import DataConfig, SynthConfig, TrainConfig

    a = build_parser().parse_args(["synth", "--out", "x"])
    s = SynthConfig()
    assert (a.seed, a.n_train, a.n_val, a.n_test) == (s.seed, s.n_train, s.n_val, s.n_test)
    assert build_parser().parse_args(["cache", "--data", "d", "--out", "o"]).size == DataConfig().cache_size
    sel = build_parser().parse_args(["select", "--checkpoints", "c", "--model", "m", "--card", "j"])
    assert sel.monitor == TrainConfig().monitor
    rep = build_parser().parse_args(["repair", "--input", "i", "--output", "o", "--model", "m"])
    assert (rep.device, rep.threads) == (TrainConfig().device, TrainConfig().threads)


def test_repair_settings_config_first_then_only_the_flags_given(tmp_path):
    import yaml

    from wmrepair.cli import build_parser, repair_settings
    from wmrepair.config import PredictConfig, RepairConfig

    base = ["repair", "--input", "i", "--output", "o", "--model", "m.pt"]
    opt, pc, rc, inpaint, optimized = repair_settings(build_parser().parse_args(base))
    assert (pc.max_side, rc.jpeg_quality, rc.image_timeout_s) == (PredictConfig().max_side, RepairConfig().jpeg_quality,
                                                                  RepairConfig().image_timeout_s)
    assert opt.level == "conservative" and not optimized and inpaint.model == "cv2" and rc.keep_jpeg_tables
    cfg = tmp_path / "my.yaml"
    cfg.write_text(yaml.safe_dump({"optimization": {"level": "aggressive", "model": {"int8": False}},
                                   "predict": {"max_side": 256, "flip_tta": False},
                                   "repair": {"jpeg_quality": 70, "image_timeout_s": 30, "max_iterations": 1},
                                   "data": {"train_dir": None}}))  # other sections are the workflow's: ignored
    opt, pc, rc, inpaint, optimized = repair_settings(build_parser().parse_args([*base, "--config", str(cfg)]))
    assert (opt.level, opt.model.int8, optimized) == ("aggressive", False, True)
    assert (pc.max_side, pc.flip_tta, rc.jpeg_quality, rc.image_timeout_s, rc.max_iterations) == (256, False, 70, 30, 1)
    args = [*base, "--config", str(cfg), "--max-side", "512", "--jpeg-quality", "80", "--timeout", "9",
            "--conservative"]
    opt, pc, rc, _, _ = repair_settings(build_parser().parse_args(args))
    assert (pc.max_side, rc.jpeg_quality, rc.image_timeout_s, rc.max_iterations) == (512, 80, 9.0, 1)
    assert not rc.keep_jpeg_tables  # a quality given on the command line is the one JPEGs get
    assert opt.level == "conservative" and opt.model.int8 is False  # the level flag keeps the config's overrides

    from wmrepair.config import InpaintConfig

    assert inpaint.texture_fill == InpaintConfig().texture_fill  # not given: the config's (here the default)
    cfg.write_text(yaml.safe_dump({"inpaint": {"texture_fill": 8}}))
    for flags, want in (([], 8.0), (["--texture-fill", "none"], None), (["--texture-fill", "5"], 5.0)):
        _, _, _, inpaint, _ = repair_settings(build_parser().parse_args([*base, "--config", str(cfg), *flags]))
        assert inpaint.texture_fill == want


def test_user_mistakes_are_one_line_errors(tmp_path, tiny_model_file):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.png").write_bytes(b"")
    cases = [
        ("repair", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o"), "--model", str(tiny_model_file)),
        ("repair", "--input", str(src), "--output", str(tmp_path / "o"), "--model", str(tmp_path / "missing.pt")),
        ("repair", "--input", str(src), "--output", str(src / "out"), "--model", str(tiny_model_file)),
        ("repair", "--input", str(src), "--output", str(tmp_path / "o"), "--model", str(src / "a.png")),
    ]
    for args in cases:
        p = run(*args)
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr
        assert p.stderr.strip().splitlines()[-1].startswith("wmrepair: error:")
    p = run("repair", "--input", str(src), "--output", str(tmp_path / "o"), "--model", str(tiny_model_file),
            "--inpaint-model", "lama")
    assert p.returncode == 2 and "LAMA_MODEL_URL" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("repair: {max_iteration: 3}\n")
    p = run("repair", "--input", str(src), "--output", str(tmp_path / "o"), "--model", str(tiny_model_file),
            "--config", str(bad))
    assert p.returncode == 2 and "repair.max_iteration" in p.stderr and "Traceback" not in p.stderr, p.stderr
    for flag in ("--threshold", "--refine-relative"):
        p = run("repair", "--input", str(src), "--output", str(tmp_path / "o"), "--model", str(tiny_model_file),
                flag, "7")
        assert p.returncode == 2 and "between 0 and 1" in p.stderr and flag in p.stderr
    for bad in ("0.9,x", "0,1"):
        p = run("repair", "--input", str(src), "--output", str(tmp_path / "o"), "--model", str(tiny_model_file),
                "--scales", bad)
        assert p.returncode == 2 and "--scales" in p.stderr and "Traceback" not in p.stderr


def test_cli_repair_end_to_end(tmp_path, tiny_model_file):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for i, ext in enumerate([".jpg", ".png", ".jpg"]):
        Image.fromarray(make_image(90, 130, seed=i)).save(tmp_path / "in" / ("sub" if i == 2 else "") / f"p{i}{ext}")
    rc = main(["repair", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model",
               str(tiny_model_file), "--optimize", "--save-masks", str(tmp_path / "m"), "--quiet",
               "--manifest", str(tmp_path / "man.csv"), "--batch-size", "2"])
    assert rc == 0
    m = pd.read_csv(tmp_path / "man.csv", keep_default_na=False)
    assert len(m) == 3 and set(m.status) <= {"ok", "clean"}  # an untrained model: some images show no mark
    for rel in ("p0.jpg", "p1.png", "sub/p2.jpg"):
        assert (tmp_path / "out" / rel).exists()
        mask = np.asarray(Image.open(tmp_path / "m" / f"{rel}.mask.png"))
        assert mask.shape == (90, 130)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("p*")}
    assert main(["repair", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model",
                 str(tiny_model_file), "--save-masks", str(tmp_path / "m"), "--quiet",
                 "--manifest", str(tmp_path / "man.csv")]) == 0  # the same record: everything is done
    again = pd.read_csv(tmp_path / "man.csv", keep_default_na=False)
    assert again.to_dict("records") == m.to_dict("records")
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("p*")}


def test_python_m_and_info():
    p = subprocess.run([sys.executable, "-m", "wmrepair", "info", "--level", "conservative"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and '"level": "conservative"' in p.stdout
