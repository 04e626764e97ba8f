"""IOPaint in-process: one ModelManager per process, weights checked locally before loading.

IOPaint downloads weights on first use, which hangs or fails offline and on
locked-down clusters. We resolve every weight file first (env var pointing at a
file, or `<model_dir>/torch/hub/checkpoints/<name>`) and fail with a message
that names both places, before IOPaint is imported.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from wmrepair.config import InpaintConfig

log = logging.getLogger(__name__)

# model -> [(env var IOPaint reads, file name of its default URL)]
WEIGHTS: dict[str, list[tuple[str, str]]] = {
    "cv2": [],
    "lama": [("LAMA_MODEL_URL", "big-lama.pt")],
    "anime-lama": [("ANIME_LAMA_MODEL_URL", "anime-manga-big-lama.pt")],
    "mat": [("MAT_MODEL_URL", "Places_512_FullData_G.pth")],
    "migan": [("MIGAN_MODEL_URL", "migan_traced.pt")],
    "fcf": [("FCF_MODEL_URL", "places_512_G.pth")],
    "manga": [("MANGA_INPAINTOR_MODEL_URL", "manga_inpaintor.jit"), ("MANGA_LINE_MODEL_URL", "erika.jit")],
    "ldm": [("LDM_ENCODE_MODEL_URL", "cond_stage_model_encode.pt"),
            ("LDM_DECODE_MODEL_URL", "cond_stage_model_decode.pt"),
            ("LDM_DIFFUSION_MODEL_URL", "diffusion.pt")],
    "zits": [("ZITS_INPAINT_MODEL_URL", "zits-inpaint-0717.pt"),
             ("ZITS_EDGE_LINE_MODEL_URL", "zits-edge-line-0717.pt"),
             ("ZITS_STRUCTURE_UPSAMPLE_MODEL_URL", "zits-structure-upsample-0717.pt"),
             ("ZITS_WIRE_FRAME_MODEL_URL", "zits-wireframe-0717.pt")],
}


# Context (px) round a textured mark group that FSR reconstructs it from; groups this close share a crop.
TEXTURE_MARGIN = 32


class InpaintModelUnavailable(RuntimeError):
    """The configured IOPaint model cannot run here (unknown name, weights missing, IOPaint absent)."""


def resolve_weights(name: str, model_dir: str | Path | None = None) -> dict[str, str]:
    """Map each env var the model needs to an existing local file, or raise naming where to put it."""
    if name not in WEIGHTS:
        raise InpaintModelUnavailable(f"unknown inpaint model {name!r}; supported: {', '.join(WEIGHTS)}")
    found, missing = {}, []
    for var, fname in WEIGHTS[name]:
        env = os.environ.get(var)
        candidates = [Path(env)] if env else []
        if model_dir:
            candidates.append(Path(model_dir) / "torch" / "hub" / "checkpoints" / fname)
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            where = f"set {var}=/path/to/{fname}"
            if model_dir:
                where += f" or put it at {Path(model_dir) / 'torch/hub/checkpoints' / fname}"
            else:
                where += " or set inpaint.model_dir / --model-dir to a folder with torch/hub/checkpoints/" + fname
            missing.append(where)
        else:
            found[var] = str(hit.resolve())
    if missing:
        raise InpaintModelUnavailable(
            f"inpaint model {name!r} needs local weights (wmrepair never downloads): " + "; ".join(missing)
        )
    return found


def resolve_hd_strategy(model: str, hd_strategy: str = "auto") -> str:
    """IOPaint's large-image strategy; `auto` = Original for cv2, Crop for the network models.

    Crop inpaints one crop (mask box + 128 px) per connected mask component.
    That bounds a network's memory, but cv2's cost is already local to the
    mask: on a 1200x1600 image with a tiled mark (hundreds of components)
    Crop took 48.7 s and Original 0.86 s for the same pixels (mean |diff| 0.02).
    """
    if hd_strategy != "auto":
        return hd_strategy
    return "Original" if model == "cv2" else "Crop"


class Inpainter:
    """Wraps IOPaint's ModelManager; `__call__(rgb, mask) -> rgb` (uint8)."""

    def __init__(self, name: str | None = None, device: str = "cpu", config: InpaintConfig | None = None) -> None:
        """`config`: the inpaint settings (defaults: `InpaintConfig`); `name` overrides its model."""
        from wmrepair.config import InpaintConfig

        cfg = config or InpaintConfig()
        name = name or cfg.model
        env = resolve_weights(name, cfg.model_dir)
        os.environ.update(env)  # IOPaint reads these at import time
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import warnings

            with warnings.catch_warnings():  # IOPaint's own deprecation noise, not ours to fix
                warnings.simplefilter("ignore")
                from iopaint.model_manager import ModelManager
                from iopaint.schema import InpaintRequest
        except ImportError as exc:
            raise InpaintModelUnavailable(
                f"IOPaint is not importable ({exc}); install it with `pip install --no-deps iopaint==1.6.0`"
            ) from exc
        _quiet_loguru()
        self.name = name
        # cv2 inpainting is stateless C code that releases the GIL: several images
        # may run at once. Torch models already use every core (or the GPU).
        self.thread_safe = name == "cv2"
        self.manager = ModelManager(name=name, device=device)
        self.request = InpaintRequest(hd_strategy=resolve_hd_strategy(name, cfg.hd_strategy),
                                      cv2_radius=cfg.cv2_radius, cv2_flag=cfg.cv2_flag)
        # The fill mends what diffusion does to texture; the network models paint texture themselves.
        self.texture_fill = cfg.texture_fill if name == "cv2" else None
        self.texture_pixels = cfg.texture_pixels
        if self.texture_fill is not None:
            check_fsr()

    def __call__(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        m = (mask > 0).astype(np.uint8) * 255
        if not m.any():
            return rgb
        # IOPaint's crop strategy writes into its input: give it a writable copy.
        bgr = self.manager(np.array(rgb, copy=True), m, self.request)
        painted = np.ascontiguousarray(bgr[..., ::-1])
        if self.texture_fill is not None:
            fill_textured(rgb, m > 0, painted, self.texture_fill, self.texture_pixels)
        return painted


def check_fsr() -> None:
    """Raise `InpaintModelUnavailable` unless OpenCV's contrib module `xphoto` (FSR) is importable."""
    import cv2

    if not hasattr(cv2, "xphoto"):
        raise InpaintModelUnavailable(
            "inpaint.texture_fill needs OpenCV's contrib modules (cv2.xphoto): install "
            "opencv-contrib-python-headless in place of opencv-python-headless (requirements.txt pins it), "
            "or set inpaint.texture_fill: null (--texture-fill none)")


def ring_texture(grey: np.ndarray, mask: np.ndarray) -> float:
    """Mean |Laplacian| of `grey` (float32) 3-4 px round `mask`: how textured the ground is.

    The ring keeps 2 px off the mask, so the 3x3 Laplacian never reads a mask pixel: a strong
    mark on smooth ground does not count as texture.
    """
    import cv2

    m = mask.astype(np.uint8)
    ring = (cv2.dilate(m, np.ones((9, 9), np.uint8)) > 0) & ~(cv2.dilate(m, np.ones((5, 5), np.uint8)) > 0)
    if not ring.any():
        return 0.0
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F))[ring].mean())


def fill_textured(rgb: np.ndarray, mask: np.ndarray, painted: np.ndarray, min_texture: float,
                  max_pixels: int | None = None, margin: int = TEXTURE_MARGIN) -> int:
    """Re-fill, in place in `painted`, each group of `mask` that lies on textured ground; returns how many.

    cv2's inpainting (Navier-Stokes, Telea) diffuses the border inwards: on smooth ground that is
    near exact, on grass, gravel or brick it leaves a smooth patch that can differ from the
    picture more than the faint mark did. OpenCV's frequency-selective reconstruction (FSR,
    Seiler et al., IEEE TIP 2015) fits each block with the Fourier components of its known
    pixels, so texture runs on through the hole. It costs 0.1-0.3 ms per missing pixel against
    cv2's ~0.005, so it is kept to the groups whose surrounding ring has a mean |Laplacian| of
    at least `min_texture` (grey levels), smallest first, up to `max_pixels` mask pixels per
    call (None: no bound): a tiled grid over a 12-MP photo would otherwise take minutes. Groups:
    mask pixels within `margin` px of each other, each re-filled from a crop of the input with
    `margin` px of context.
    """
    import cv2

    m8 = mask.astype(np.uint8)
    near = cv2.dilate(m8, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    n, labels, boxes, _ = cv2.connectedComponentsWithStats(near, connectivity=8)
    holes = []
    for g in range(1, n):
        x, y, w, h, _ = boxes[g]
        box = np.s_[y:y + h, x:x + w]
        hole = mask[box] & (labels[box] == g)
        if hole.any():
            holes.append((int(hole.sum()), box, hole))
    filled, budget = 0, np.inf if max_pixels is None else max_pixels
    for size, box, hole in sorted(holes, key=lambda t: t[0]):
        if size > budget:
            break
        crop = np.ascontiguousarray(rgb[box][..., ::-1])  # BGR, for OpenCV; only the group's crop is copied
        if ring_texture(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32), hole) < min_texture:
            continue
        out = np.zeros_like(crop)
        # xphoto's mask marks the *known* pixels (non-zero), the opposite of cv2.inpaint's.
        cv2.xphoto.inpaint(crop, (~hole).astype(np.uint8) * 255, out, cv2.xphoto.INPAINT_FSR_FAST)
        painted[box][hole] = out[..., ::-1][hole]
        filled += 1
        budget -= size
    return filled


def _quiet_loguru() -> None:
    """IOPaint logs every call at INFO via loguru; keep warnings only."""
    try:
        import sys

        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, level="WARNING")
    except Exception:  # loguru absent or reconfigured elsewhere: harmless
        pass
