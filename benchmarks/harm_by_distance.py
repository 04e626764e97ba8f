"""Where a repair adds or removes error: per marked image, by distance from the true mark.

    python benchmarks/harm_by_distance.py RUN_DIR DATA_DIR

RUN_DIR holds manifest.csv from a repair of DATA_DIR/watermarked (e.g. a run of
`tune_repair.py` or `wmrepair bench real`); DATA_DIR has clean/ and masks/. Prints, per
marked image, the PSNR change and the change in squared error against the clean picture
(summed over channels, per image pixel) inside the mark, 0.5-3, 3-8, 8-20 and more than 20 px
from it: a mark painted badly shows inside, painted texture round it in the near bands, a
false alarm far away. Images made worse come first.
"""

import csv
import sys
from pathlib import Path

import cv2
import numpy as np

from wmrepair.evaluate import psnr
from wmrepair.imageio import read_mask

BANDS = ((0, 0.5), (0.5, 3), (3, 8), (8, 20), (20, np.inf))
LABELS = ("mark", "0.5-3 px", "3-8 px", "8-20 px", ">20 px")


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float64)


def main(run: Path, data: Path) -> None:
    rows = []
    for r in csv.DictReader(open(run / "manifest.csv")):
        stem = Path(r["input"]).stem
        mask = next((data / "masks").rglob(f"{stem}.png"), None)
        clean = next((data / "clean").glob(f"{stem}.*"), None)
        if mask is None or clean is None or r["status"] not in ("ok", "clean"):
            continue
        truth = read_mask(mask)
        if not truth.any():
            continue
        c, j = rgb(clean), rgb(Path(r["input"]))
        o = rgb(Path(r["output"]))
        dist = cv2.distanceTransform((~truth).astype(np.uint8), cv2.DIST_L2, 5)
        gain = (((o - c) ** 2).sum(-1) - ((j - c) ** 2).sum(-1)) / truth.size
        bands = [gain[(dist >= lo) & (dist < hi)].sum() for lo, hi in BANDS]
        rows.append((psnr(o, c) - psnr(j, c), stem, r["status"], bands))
    print(f"{'image':40s} {'status':6s} {'dPSNR':>7s}  " + " ".join(f"{label:>9s}" for label in LABELS))
    for d, stem, status, bands in sorted(rows):
        print(f"{stem:40s} {status:6s} {d:+7.2f}  " + " ".join(f"{b:+9.1f}" for b in bands))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
