"""The README's Python API example runs as written."""

import re
import subprocess
import sys

import numpy as np
from conftest import ROOT, make_image
from PIL import Image


def test_readme_api_example_runs(tmp_path, tiny_model_file):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- api-example.*?-->\s*```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "results/model").mkdir(parents=True)
    (tmp_path / "results/model/model.pt").write_bytes(tiny_model_file.read_bytes())
    Image.fromarray(make_image(300, 400)).save(tmp_path / "photo.jpg")
    (tmp_path / "example.py").write_text(block)
    p = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "watermark covers" in p.stdout and "performance.json" in p.stdout
    assert (tmp_path / "results/notebook/performance.json").exists()
    assert np.isfinite(float(p.stdout.split("covers ")[1].split("%")[0]))
