"""Collection mode's cost: estimating the stamp of a folder, and repairing with it vs per image.

    python benchmarks/collection.py [N] [--sizes]

Makes N (default 500) stamped 640x480 JPEGs (quality 90; a white logo + word at opacity 0.5) in a
temporary folder, times `estimate_folder` over them, then repairs the same 48 of them with the
stamp and without it (the per-image path), interleaved, and prints images/s (medians of 3).
`--sizes`: the images come in five sizes with the stamp centred (aligned and placed by matching).
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from PIL import Image  # noqa: E402
from test_stamps import SIZES, _backgrounds, _blend, _centred_logo, _logo_stamp  # noqa: E402

from wmrepair.inpaint import Inpainter  # noqa: E402
from wmrepair.predict import OptimizedWatermarkPredictor  # noqa: E402
from wmrepair.repair import RepairEngine  # noqa: E402
from wmrepair.stamps import estimate_folder  # noqa: E402


def _pictures(n: int, sizes: bool):
    """(clean picture, its stamp's alpha) x n: one size, or five with the stamp centred."""
    from wmrepair.synth import make_background

    if not sizes:
        alpha, _ = _logo_stamp()
        return [(c, alpha) for c in _backgrounds(n, 41)]
    import numpy as np

    shapes = [SIZES[i % len(SIZES)] for i in range(n)]
    return [(make_background(np.random.default_rng([41, i]), *hw), _centred_logo(*hw)) for i, hw in enumerate(shapes)]


def main(n: int = 500, sizes: bool = False) -> None:
    _, colour = _logo_stamp()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src, part = tmp / "all", tmp / "part"
        src.mkdir()
        part.mkdir()
        for i, (c, alpha) in enumerate(_pictures(n, sizes)):
            Image.fromarray(_blend(c, alpha, colour, "png")).save(src / f"p{i:04d}.jpg", quality=90)
            if i < 48:
                Image.fromarray(_blend(c, alpha, colour, "png")).save(part / f"p{i:04d}.jpg", quality=90)
        pred = OptimizedWatermarkPredictor()
        t0 = time.perf_counter()
        stamps = estimate_folder(src, pred, out_dir=tmp / "stamps")
        est = time.perf_counter() - t0
        print(f"estimate_folder over {n} images{' of five sizes' if sizes else ''}: {est:.1f} s, {len(stamps)} stamp(s)"
              + "".join(f", {s.name} carried by {s.support} of the sample, quality {s.quality:.2f}" for s in stamps))
        rates = {"stamp": [], "per-image": []}
        inpainter = Inpainter("cv2")
        for r in range(3):
            for mode in rates:
                eng = RepairEngine(pred, inpainter, stamps=stamps if mode == "stamp" else None)
                t0 = time.perf_counter()
                rows = eng.run(part, tmp / f"out_{mode}_{r}", progress=False)
                rates[mode].append(len(rows) / (time.perf_counter() - t0))
        for mode, v in rates.items():
            print(f"repair 48 images, {mode:9s}: {statistics.median(v):.2f} img/s (repeats {', '.join(f'{x:.2f}' for x in v)})")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=500, help="stamped images to make (default 500)")
    ap.add_argument("--sizes", action="store_true", help="five image sizes, the stamp centred on each")
    a = ap.parse_args()
    main(a.n, a.sizes)
