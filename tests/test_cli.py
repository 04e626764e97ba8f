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
    from wmrepair.predict import PredictConfig

    # The help names the library's default scales (written out: --help does not import torch).
    assert f"default {','.join(f'{f:g}' for f in PredictConfig().scales)}" in " ".join(p.stdout.split())
    assert run("--help").returncode == 0


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
