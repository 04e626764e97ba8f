import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


class ColourDetector(torch.nn.Module):
    """A real, hand-built detector for engine tests: pure red pixels are 'watermark'.

    Not a mock: it runs through the same predictor (tiling, batching, autocast)
    as the UNet; it only makes the expected mask known in advance.
    """

    multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        return 40 * (r - 0.8) - 40 * g - 40 * b


def make_image(h: int, w: int, seed: int = 0, red_box: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 60 + 90).astype(np.uint8)  # textured grey
    if red_box:
        img[h // 3 : h // 3 + max(4, h // 10), w // 4 : w // 4 + max(8, w // 3)] = (255, 0, 0)
    return img


@pytest.fixture
def colour_detector() -> ColourDetector:
    return ColourDetector()


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    """An (untrained) UNet saved in the checkpoint format the CLI loads."""
    from wmrepair.checkpoints import save_model
    from wmrepair.model import UNet, UNetConfig

    torch.manual_seed(0)
    p = tmp_path / "tiny.pt"
    save_model(UNet(UNetConfig(base_channels=4, depth=2)), p, epoch=1, metrics={"val_iou": 0.0})
    return p


def build_tiny_caches(root: Path, n_train: int, n_val: int, size: int) -> Path:
    """Synthesise a small dataset under `root/d` and cache train/val at `size`; returns `root/c`."""
    from wmrepair.cache import build_cache
    from wmrepair.synth import SynthConfig, synthesize

    synthesize(root / "d", SynthConfig(n_train=n_train, n_val=n_val, n_test=1), progress=False)
    for split in ("train", "val"):
        c, _ = build_cache(root / "d" / split, root / "c" / split, size=size, progress=False)
        c.write_index(root / "c" / split / "index.json")
    return root / "c"


def _tiled_unit():
    from PIL import Image, ImageDraw, ImageFont

    unit = Image.new("L", (70, 16), 0)
    # Strokes 3 px wide, as the detector's masks are (one-pixel strokes differ copy to copy by rasterising)
    ImageDraw.Draw(unit).text((2, 1), "PROOF", fill=255, font=ImageFont.load_default(14), stroke_width=1, stroke_fill=255)
    return unit


def tiled_grid(h: int = 360, w: int = 480, angle: float = 30.0, gx: int = 96,
               gy: int = 40) -> tuple[np.ndarray, list[np.ndarray]]:
    """A brick grid of one word, rotated and cut to h x w (as stock sites tile), and each copy's own mask."""
    from PIL import Image

    unit = _tiled_unit()
    big = 2 * (h + w)
    copies = []
    for row, y in enumerate(range(0, big, gy)):
        for x in range(-(row % 2) * gx // 2, big, gx):
            one = Image.new("L", (big, big), 0)
            one.paste(unit, (x, y))
            one = one.rotate(angle, resample=Image.NEAREST)
            cut = np.asarray(one)[(big - h) // 2:(big - h) // 2 + h, (big - w) // 2:(big - w) // 2 + w] > 127
            if cut.any():  # copies cut by the border too: the grid runs on past it
                copies.append(cut)
    return np.any(copies, axis=0), copies


@pytest.fixture(scope="session")
def grid() -> tuple[np.ndarray, list[np.ndarray]]:
    """tiled_grid() built once for the tests that need it."""
    return tiled_grid()
