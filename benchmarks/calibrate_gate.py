"""Choose `predict.gate` on a split with unmarked images (validation or dev, never test or bench real).

    python benchmarks/calibrate_gate.py MODEL SPLIT_DIR [SPLIT_DIR ...]

Each SPLIT_DIR holds watermarked/ and masks/ (the synthetic val/ and dev/ do). The
detector runs with config.yaml's predict settings; for each candidate gate the
table gives the share of unmarked images it leaves untouched (good) and the
share of marked images it would leave unrepaired (bad), pooled over the splits.
Below it: how well the confidence separates the two (the share of marked-unmarked
pairs the marked image wins: 1 is a perfect gate, 0.5 a coin; finer than counts
when two detectors are compared) and the most confident unmarked images.
"""

import sys
from pathlib import Path

import numpy as np

from wmrepair.config import Settings
from wmrepair.imageio import list_images, read_image, read_mask
from wmrepair.predict import OptimizedWatermarkPredictor, image_confidence

GATES = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def confidences(model: str, split: Path) -> list[tuple[float, bool, str]]:
    s = Settings.from_yaml()
    p = OptimizedWatermarkPredictor(model, s.optimization, s.predict)
    out = []
    for rel in list_images(split / "watermarked"):
        mask = next((split / "masks").glob(f"{rel.with_suffix('')}.*"))
        prob = p.predict_proba([read_image(split / "watermarked" / rel).rgb])[0]
        out.append((image_confidence(prob), bool(read_mask(mask).any()), rel.stem))
    return out


def main(model: str, splits: list[str]) -> None:
    scores = [c for sp in splits for c in confidences(model, Path(sp))]
    neg = np.array([c for c, marked, _ in scores if not marked])
    pos = np.array([c for c, marked, _ in scores if marked])
    print(f"{len(neg)} unmarked, {len(pos)} marked images")
    print("gate   unmarked left untouched   marked left unrepaired")
    for g in GATES:
        print(f"{g:4.2f}   {np.mean(neg < g) if len(neg) else float('nan'):24.1%}   {np.mean(pos < g):22.1%}")
    if len(neg) and len(pos):
        print(f"separation (marked above unmarked, ties half): {separation(pos, neg):.3f}")
    print("most confident unmarked:", ", ".join(f"{name} {c:.3f}" for c, _, name in
                                                sorted((s for s in scores if not s[1]), reverse=True)[:6]))


def separation(pos: np.ndarray, neg: np.ndarray) -> float:
    """The share of (marked, unmarked) pairs whose marked image is the more confident (ROC AUC)."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
