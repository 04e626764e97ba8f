"""Collection mode: learn the stamp that many images share, then undo its blend instead of inpainting.

A visible mark is blended into the picture, `J = a + b·I` per pixel, with
`a = α·W` (the mark's colour times its opacity, per channel) and `b = 1 − α`.
Across a folder of different pictures carrying one stamp, `a` and `b` are the
only things that stay: at each pixel, the marked values `J_k` of the images
are a straight line in the clean values `I_k`. We do not know `I_k` under the
mark, but inpainting the stamp's region of each image gives an estimate
`Î_k`; the least-squares line of `J_k` on `Î_k` over the whole collection is
`(a, b)` (errors of the inpainting average out over many pictures; a robust
weighting drops the pictures where it failed). Then each image is inverted,
`I = (J − a) / b`, which keeps what the mark let through; only where the mark
is nearly opaque (`b` small, inversion would amplify noise) the inpainting is
used. Pixels outside the stamp are never touched.

The stamp's place comes from the detector: the mean of its probability maps
over the collection (a mark every image shares stands out; a false detection
in one picture averages away). Images are grouped by size; a group of at least
`min_support` images may hold a stamp. Images of sizes too rare for a group are
aligned by matching their probability maps (`align`), and a stamp is placed on any
image by matching its outline against the image's edges (`locate`), so a stamp
centred on previews of several aspect ratios is learnt once and found on each.
Dekel et al., "On the Effectiveness of Visible Watermarks" (CVPR 2017) estimate
stamps from collections through gradient medians and multi-image matting; this is
a simpler estimator of the same model that needs no Poisson solve.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from wmrepair.files import atomic_write_bytes
from wmrepair.morphology import disc

log = logging.getLogger(__name__)


@dataclass
class StampConfig:
    """How stamps are found and applied (defaults chosen on synthetic dev collections, DEVNOTES)."""

    min_support: int = 16  # images of one size before a shared stamp is looked for
    sample: int = 100  # images of a group the stamp is estimated from (spread over the group)
    presence: float = 0.3  # mean detector probability that makes a pixel part of the stamp
    edge: float = 4.0  # ... or where the median edge strength over the images is this many times its typical value
    grow: int = 4  # px the stamp region grows beyond those pixels (a stroke's inside, the mark's soft edge)
    opaque: float = 0.85  # alpha above which the blend is not inverted but inpainted
    min_alpha: float = 0.02  # alpha below which a pixel is left as it is
    match: float = 0.8  # an image carries the stamp when its difference from the estimate projects this
    #                       far onto the one the blend predicts (1 = exactly the stamp) ...
    match_low: float = 0.5  # ... or this far, where the two also correlate by at least match_corr (a faint
    match_corr: float = 0.4  #    stamp in a JPEG projects less; unstamped pictures correlate below 0.34, DEVNOTES)
    min_quality: float = 0.5  # stamps whose fit explains less of the variance are not used
    max_per_size: int = 3  # stamps looked for among the images of one size (each from those left unexplained)
    radius: int = 3  # cv2 inpainting radius of the estimate and the opaque parts
    white_refit: bool = True  # a white stamp's α refitted against W = 255: unbiased where the free
    #                           per-pixel fit is flattened by the inpainting's error (DEVNOTES)
    white_tolerance: float = 32.0  # "white": the per-pixel fit's colour within this many grey levels of 255
    shift: bool = True  # a stamp is also looked for at other places and in images of other sizes (its
    #                     edges matched against the image's); folders of several sizes are aligned the same way
    min_align: float = 0.5  # normalised correlation of an image's detector probabilities with the common
    #                         frame's below which it takes no part in a mixed-size estimate
    lossy_smoothing: float = 40.0  # JPEG inputs: colour sigma of the bilateral filter (7 px, space sigma 3) over
    #                                 the inverted pixels, which carry the file's compression error times
    #                                 1 / (1 - α); 0 = off (DEVNOTES)


@dataclass
class Stamp:
    name: str
    size: tuple[int, int]  # (height, width) of the images it belongs to
    box: tuple[int, int, int, int]  # y0, x0, y1, x1
    a: np.ndarray = field(repr=False)  # (h, w, 3) float32: alpha * colour
    b: np.ndarray = field(repr=False)  # (h, w) float32: 1 - alpha
    region: np.ndarray = field(repr=False)  # (h, w) bool: where the stamp may be
    support: int = 0
    quality: float = 0.0
    images: list[str] = field(default_factory=list)

    @property
    def alpha(self) -> np.ndarray:
        return 1.0 - self.b

    @functools.cached_property
    def outline(self) -> np.ndarray:
        """The edges of α that `locate` matches against an image's (computed once per stamp: repair
        locates it on every image that does not carry it at its own place)."""
        return _edges(self.alpha * 255)

    def colour(self) -> np.ndarray:
        """The mark's colour W (0..255) where it has any opacity, else 0."""
        al = self.alpha[..., None]
        return np.where(al > 0.02, self.a / np.maximum(al, 1e-3), 0).clip(0, 255)

    # ---- files a person can look at -------------------------------------------
    def save(self, folder: str | Path) -> Path:
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        alpha16 = (self.alpha.clip(0, 1) * 65535).round().astype(np.uint16)
        atomic_write_bytes(d / "alpha.png", png_bytes(Image.fromarray(alpha16)))
        atomic_write_bytes(d / "colour.png", png_bytes(Image.fromarray(self.colour().round().astype(np.uint8))))
        atomic_write_bytes(d / "region.png", png_bytes(Image.fromarray(self.region.astype(np.uint8) * 255)))
        np.savez_compressed(d / "blend.npz", a=self.a, b=self.b)
        meta = {"name": self.name, "size": list(self.size), "box": list(self.box), "support": self.support,
                "quality": self.quality, "images": self.images}
        atomic_write_bytes(d / "stamp.json", json.dumps(meta, indent=1).encode())
        return d

    @classmethod
    def load(cls, folder: str | Path) -> Stamp:
        d = Path(folder)
        meta = json.loads((d / "stamp.json").read_text())
        blend = np.load(d / "blend.npz")
        region = np.asarray(Image.open(d / "region.png")) > 0
        return cls(meta["name"], tuple(meta["size"]), tuple(meta["box"]), blend["a"], blend["b"], region,
                   meta["support"], meta["quality"], meta.get("images", []))

    def mask(self) -> np.ndarray:
        """Where the stamp changes pixels, as a full-size boolean mask."""
        m = np.zeros(self.size, bool)
        y0, x0, y1, x1 = self.box
        m[y0:y1, x0:x1] = self.b < 1.0
        return m


def png_bytes(im: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _inpaint(crop: np.ndarray, mask: np.ndarray, radius: int) -> np.ndarray:
    return cv2.inpaint(crop, mask.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)


def _box(region: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(region)
    h, w = region.shape
    return (int(max(0, ys.min() - margin)), int(max(0, xs.min() - margin)), int(min(h, ys.max() + margin + 1)),
            int(min(w, xs.max() + margin + 1)))


def fit_blend(marked: np.ndarray, estimate: np.ndarray, iterations: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel, the line `marked ≈ a + b·estimate` over the images (axis 0), `b` shared by the channels.

    `marked`, `estimate`: (n, h, w, 3) float32. Returns a (h, w, 3), b (h, w) in [0, 1], and the
    share of the marked values' variance the line explains (h, w). Huber-weighted least squares:
    images where the estimate is far off count less.
    """
    n = marked.shape[0]
    wts = np.ones(marked.shape[:3], np.float32)  # (n, h, w)
    for _ in range(iterations):
        sw = wts.sum(0)[..., None] + 1e-6
        mj = (wts[..., None] * marked).sum(0) / sw
        me = (wts[..., None] * estimate).sum(0) / sw
        dj, de = marked - mj, estimate - me
        cov = (wts[..., None] * dj * de).sum((0, 3))
        var = (wts[..., None] * de * de).sum((0, 3))
        b = np.clip(cov / np.maximum(var, 1e-3), 0.0, 1.0)
        a = mj - b[..., None] * me
        resid = np.abs(marked - a - b[..., None] * estimate).mean(-1)  # (n, h, w)
        scale = 1.4826 * np.median(resid, axis=0) + 1.0
        wts = np.minimum(1.0, 1.5 * scale / np.maximum(resid, 1e-6)).astype(np.float32)
    total = ((marked - marked.mean(0)) ** 2).sum((0, 3))
    explained = 1.0 - (resid[..., None] ** 2).sum((0, 3)) * 3 / np.maximum(total, 1e-3) if n > 1 else np.zeros(b.shape)
    return a.astype(np.float32), b.astype(np.float32), np.clip(explained, 0, 1).astype(np.float32)


def fit_alpha_to_colour(crops: np.ndarray, est: np.ndarray, colour: np.ndarray, marked: np.ndarray) -> np.ndarray:
    """α per pixel for a stamp of known colour W: the slope through the origin of `J − Î = α (W − Î)`.

    The free per-pixel line of `fit_blend` regresses on a noisy estimate, which flattens its slope
    (regression dilution: α and W both biased, and inversion amplifies the error). With W known, the
    inpainting error enters only as `(1 − α)·e` against `W − Î`, which is large for any visible mark.
    `crops`, `est`: (n, h, w, 3) uint8; `colour`: (3,); `marked`: (h, w) bool. Returns (h, w) float32.
    """
    ys, xs = np.nonzero(marked)
    step = max(1, (32 << 20) // max(1, crops.shape[0] * 3 * 8))  # pixels per band: float temporaries of ~32 MB
    out = np.zeros(marked.shape, np.float32)
    for i in range(0, len(ys), step):
        j = crops[:, ys[i:i + step], xs[i:i + step]].astype(np.float64)
        e = est[:, ys[i:i + step], xs[i:i + step]].astype(np.float64)
        g = colour - e
        out[ys[i:i + step], xs[i:i + step]] = np.clip(((j - e) * g).sum((0, 2)) / np.maximum((g * g).sum((0, 2)), 1e-6), 0, 1)
    return out


def shared_edges(images: list[np.ndarray], factor: float) -> np.ndarray:
    """Pixels where most images have an edge: the median over the images of the gradient magnitude,
    far above its typical value. A stamp's outline is at the same place in every image, whatever
    its colour against each picture; the pictures' own edges are not."""
    mags = []
    for im in images:
        g = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32)
        mags.append(cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)))
    med = np.median(np.stack(mags), axis=0)
    return med > factor * max(float(np.median(med)), 1.0)


WHITE = np.full(3, 255.0)


def _drop_faint(a: np.ndarray, b: np.ndarray, min_alpha: float) -> np.ndarray:
    """Clear (in place) the pixels whose α is below `min_alpha`: left as they are; returns them."""
    faint = (1 - b) < min_alpha
    b[faint], a[faint] = 1.0, 0.0
    return faint


def _white_stamp(crops: np.ndarray, est: np.ndarray, free: Stamp, cfg: StampConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) of a white stamp, α refitted against W = 255 over the images that carry the free fit `free`;
    None where the free fit's colour is not white (within `white_tolerance`) or too few images carry it."""
    marked = free.b < 1.0
    strong = marked & (free.alpha > 0.1)
    if not strong.any():
        return None
    free_colour = np.median(free.colour()[strong], axis=0)
    # Estimating W itself from the same noisy estimate is biased too (a true 210 read 193 on a synthetic
    # check): only the common case whose colour is known, white, is refitted.
    if float(np.abs(WHITE - free_colour).max()) > cfg.white_tolerance:
        return None
    # Only the carriers, by the projection alone (the stricter test): an unstamped image pulls a
    # through-origin α towards 0, and with the correlation test too some did (logo -0.7 dB, DEVNOTES).
    strict = replace(cfg, match_low=cfg.match)
    keep = [k for k in range(len(crops)) if carries(crops[k].astype(np.float32), est[k].astype(np.float32), free, strict)]
    if len(keep) < cfg.min_support:
        return None
    alpha = fit_alpha_to_colour(crops[keep], est[keep], WHITE, marked)
    log.info("white stamp (per-pixel fit's colour %s): alpha refitted on the %d images that carry it",
             np.round(free_colour).astype(int).tolist(), len(keep))
    b = np.where(marked, 1 - alpha, 1.0).astype(np.float32)
    a = np.where(marked[..., None], alpha[..., None] * WHITE, 0.0).astype(np.float32)
    _drop_faint(a, b, cfg.min_alpha)
    return a, b


def estimate_stamp(images: list[np.ndarray], probs: list[np.ndarray], cfg: StampConfig | None = None,
                   names: list[str] | None = None, name: str = "stamp") -> Stamp | None:
    """The stamp images of one size share, from the images and their detector probability maps; None if none.

    Its `support` and `images` are those of the given images that carry it (`carries`).
    """
    got = _estimate(images, probs, cfg or StampConfig(), names, name)
    return None if got is None else got[0]


def _estimate(images: list[np.ndarray], probs: list[np.ndarray], cfg: StampConfig, names: list[str] | None,
              name: str) -> tuple[Stamp, list[int]] | None:
    """`estimate_stamp`, and the indices of the images that carry the stamp (tested on the crops and
    inpainted estimates the fit used, so nothing is inpainted twice)."""
    if len(images) < cfg.min_support:
        return None
    core = (np.mean(probs, axis=0) > cfg.presence) | shared_edges(images, cfg.edge)
    if core.sum() < 16:
        return None
    region_full = cv2.dilate(core.astype(np.uint8), disc(cfg.grow)) > 0
    y0, x0, y1, x1 = _box(region_full, cfg.radius + 2)
    region = region_full[y0:y1, x0:x1]
    crops = np.stack([im[y0:y1, x0:x1] for im in images])
    est = np.stack([_inpaint(im[y0:y1, x0:x1], region, cfg.radius) for im in images])
    # In bands of rows: the fit's float temporaries stay a few hundred MB for any image size.
    band = max(1, (64 << 20) // max(1, crops.shape[0] * crops.shape[2] * 3 * 4))
    a, b, explained = (np.concatenate(parts) for parts in zip(*(
        fit_blend(crops[:, r:r + band].astype(np.float32), est[:, r:r + band].astype(np.float32))
        for r in range(0, crops.shape[1], band))))
    b = np.where(region, b, 1.0).astype(np.float32)
    a = np.where(region[..., None], a, 0.0).astype(np.float32)
    marked = region & ~_drop_faint(a, b, cfg.min_alpha)
    if cfg.white_refit and marked.any():
        white = _white_stamp(crops, est, Stamp(name, images[0].shape[:2], (y0, x0, y1, x1), a, b, region), cfg)
        if white is not None:
            a, b = white
    quality = float(np.median(explained[marked])) if marked.any() else 0.0
    stamp = Stamp(name, images[0].shape[:2], (y0, x0, y1, x1), a, b, region, quality=quality)
    carried = [i for i in range(len(images)) if carries(crops[i].astype(np.float32), est[i].astype(np.float32), stamp, cfg)]
    stamp.support = len(carried)
    stamp.images = [names[i] for i in carried] if names else []
    log.info("stamp %dx%d at %s from %d images: %d px of alpha > %.2f, quality %.2f, carried by %d", x1 - x0,
             y1 - y0, (y0, x0), len(images), int(marked.sum()), cfg.min_alpha, quality, len(carried))
    return stamp, carried


def align(probs: list[np.ndarray], cfg: StampConfig) -> tuple[tuple[int, int], list[tuple[int, int] | None]] | None:
    """A common frame for images of several sizes, found by matching their detector probability maps.

    The mark one size's images agree on (their mean probability above `presence`, with a margin) is
    the template; each image's probability map is matched against it. Every size is tried as that
    reference, and the frame most images match wins (a tiled grid's frame is its reference's whole
    image, which only images at least as large can hold). Returns the frame's (height, width) and
    each image's top-left corner of it (None: it does not fit, or matches below `min_align`); None
    when no size shows a mark.
    """
    best = None
    for size, _ in Counter(p.shape[:2] for p in probs).most_common():
        ref = np.mean([p for p in probs if p.shape[:2] == size], axis=0)
        core = ref > cfg.presence
        if core.sum() < 16:
            continue
        y0, x0, y1, x1 = _box(core, 8 * cfg.grow)
        template = ref[y0:y1, x0:x1]
        if float(template.std()) < 1e-3:
            continue
        at: list[tuple[int, int] | None] = []
        for p in probs:
            if p.shape[0] < y1 - y0 or p.shape[1] < x1 - x0:
                at.append(None)
                continue
            corner, score = _best_match(p, template)
            at.append(corner if score >= cfg.min_align else None)
        found = sum(c is not None for c in at)
        if best is None or found > best[0]:
            best = found, ((y1 - y0, x1 - x0), at)
    return None if best is None else best[1]


def _edges(grey: np.ndarray) -> np.ndarray:
    """Gradient magnitude, clipped at its 95th percentile so that a picture's strongest edges do not
    outweigh a stamp's outline when the two are matched."""
    g = grey.astype(np.float32)
    mag = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    return np.minimum(mag, max(float(np.percentile(mag, 95)), 1e-3))


def _best_match(search: np.ndarray, template: np.ndarray) -> tuple[tuple[int, int], float]:
    """Top-left corner (y, x) where `template` correlates best with `search` (normalised), and that correlation."""
    res = cv2.matchTemplate(search.astype(np.float32), template.astype(np.float32), cv2.TM_CCOEFF_NORMED)
    _, peak, _, (x, y) = cv2.minMaxLoc(np.nan_to_num(res, nan=-1.0))
    return (int(y), int(x)), float(peak)


def locate(image: np.ndarray, stamp: Stamp) -> tuple[int, int]:
    """Where the stamp's box best fits on `image` (its top-left corner), found by matching the stamp's
    outline (the edges of α) against the image's edges. Whether the image carries the stamp there is
    for `carries` to say.

    A box that fits is matched everywhere (at full resolution: a stamp's thin outline on a bright
    picture correlates at only ~0.2, and halving the resolution lost it; 17 ms for a 300×250 box on a
    960×640 image, 0.4 s on 12 MP). One larger than the image (a tiled grid learnt on bigger images)
    is tried where such marks are anchored: each axis at its start, centre or end; the box is then
    cut to the image.
    """
    bh, bw = stamp.b.shape
    ih, iw = image.shape[:2]
    if (bh, bw) == (ih, iw):
        return 0, 0
    img_e = _edges(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    tpl_e = stamp.outline
    if bh <= ih and bw <= iw:
        return _best_match(img_e, tpl_e)[0]
    best, corner = -2.0, (0, 0)
    for y in sorted({0, (ih - bh) // 2, ih - bh}):
        for x in sorted({0, (iw - bw) // 2, iw - bw}):
            sy, sx = slice(max(0, y), min(ih, y + bh)), slice(max(0, x), min(iw, x + bw))
            t = tpl_e[sy.start - y:sy.stop - y, sx.start - x:sx.stop - x]
            i = img_e[sy, sx]
            score = float(np.corrcoef(t.ravel(), i.ravel())[0, 1]) if t.std() > 0 and i.std() > 0 else -1.0
            if score > best:
                best, corner = score, (y, x)
    return corner


def moved(stamp: Stamp, corner: tuple[int, int], shape: tuple[int, int]) -> Stamp | None:
    """The stamp with its box's top-left corner at `corner` on an image of `shape`, cut to the image;
    None when too little of it (under 16 marked pixels) falls on the image."""
    y, x = corner
    bh, bw = stamp.b.shape
    y0, x0, y1, x1 = max(0, y), max(0, x), min(shape[0], y + bh), min(shape[1], x + bw)
    if y1 <= y0 or x1 <= x0:
        return None
    cut = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    if (stamp.b[cut] < 1.0).sum() < 16:
        return None
    return Stamp(stamp.name, tuple(shape), (y0, x0, y1, x1), stamp.a[cut], stamp.b[cut], stamp.region[cut],
                 stamp.support, stamp.quality, stamp.images)


def _crop_and_estimate(image: np.ndarray, stamp: Stamp, cfg: StampConfig) -> tuple[np.ndarray, np.ndarray]:
    y0, x0, y1, x1 = stamp.box
    crop = image[y0:y1, x0:x1]
    return crop.astype(np.float32), _inpaint(crop, stamp.region, cfg.radius).astype(np.float32)


def place(image: np.ndarray, stamp: Stamp, cfg: StampConfig | None = None
          ) -> tuple[Stamp, np.ndarray, np.ndarray] | None:
    """The stamp where `image` carries it (`moved` onto the image), with the image's crop under its box
    and the crop's inpainted estimate; None when the image does not carry it. An image of the stamp's
    size is tried at the stamp's own place first; with `shift`, then where `locate` puts it."""
    cfg = cfg or StampConfig()
    shape = image.shape[:2]
    tried = [tuple(stamp.box[:2])] if shape == tuple(stamp.size) else []
    if cfg.shift:
        found = locate(image, stamp)
        if found not in tried:
            tried.append(found)
    for corner in tried:
        here = moved(stamp, corner, shape)
        if here is None:
            continue
        crop, est = _crop_and_estimate(image, here, cfg)
        if carries(crop, est, here, cfg):
            return here, crop, est
    return None


def unstamp(image: np.ndarray, stamp: Stamp, cfg: StampConfig | None = None,
            lossy: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """`image` with the stamp's blend undone and the mask of the pixels that changed, or None when the
    image does not carry the stamp (`place`).

    `lossy`: the image was decoded from a JPEG; the inverted pixels are then smoothed
    edge-preservingly (`lossy_smoothing`), the pixels round them serving as context.
    """
    cfg = cfg or StampConfig()
    got = place(image, stamp, cfg)
    if got is None:
        return None
    stamp, crop, est = got
    y0, x0, y1, x1 = stamp.box
    b = stamp.b[..., None]
    marked = stamp.b < 1.0
    inverted = (crop - stamp.a) / np.maximum(b, 1e-3)
    opaque = (1 - stamp.b) > cfg.opaque
    if opaque.any():  # nearly opaque: what is under it is lost; inpaint from the inverted surroundings
        base = np.clip(inverted, 0, 255).round().astype(np.uint8)
        filled = _inpaint(base, opaque, cfg.radius).astype(np.float32)
        inverted = np.where(opaque[..., None], filled, inverted)
    inverted = np.where(marked[..., None], np.clip(inverted, 0, 255), crop).round().astype(np.uint8)
    if lossy and cfg.lossy_smoothing > 0:
        inverted = cv2.bilateralFilter(inverted, 7, cfg.lossy_smoothing, 3)
    out = image.copy()
    out[y0:y1, x0:x1][marked] = inverted[marked]
    return out, stamp.mask()


def apply_stamp(image: np.ndarray, stamp: Stamp, cfg: StampConfig | None = None, lossy: bool = False) -> np.ndarray | None:
    """`image` with the stamp's blend undone, or None when the image does not carry the stamp (`unstamp`)."""
    got = unstamp(image, stamp, cfg, lossy)
    return None if got is None else got[0]


def _highpass(x: np.ndarray) -> np.ndarray:
    return x - cv2.GaussianBlur(x, (0, 0), 2.0)


def carries(crop: np.ndarray, est: np.ndarray, stamp: Stamp, cfg: StampConfig) -> bool:
    """Whether an image's stamp region holds the stamp.

    The fine detail of the image's difference from its inpainted estimate (`J − Î`) is projected
    onto that of the difference the blend predicts (`a − α·Î`): about 1 where the stamp is there,
    about 0 where it is not (the texture of a picture does not follow the stamp's edges). A
    projection between `match_low` and `match` counts only where the two also correlate well
    (`match_corr`): compression blurs a faint stamp's detail, which lowers its projection but
    not how closely the detail follows the stamp.
    """
    marked = stamp.b < 1.0
    if not marked.any():
        return False
    diff = _highpass(crop - est)[marked]
    pred = _highpass(stamp.a - (1 - stamp.b)[..., None] * est)[marked]
    dp, pp = float((diff * pred).sum()), max(float((pred * pred).sum()), 1e-6)
    scale = dp / pp
    if not cfg.match_low < scale < 2.0:
        return False
    return scale > cfg.match or dp / np.sqrt(pp * max(float((diff * diff).sum()), 1e-6)) >= cfg.match_corr


def stamp_summary(stamp: Stamp) -> dict[str, Any]:
    d = asdict(stamp)
    for k in ("a", "b", "region"):
        d.pop(k)
    return d


# ---- folders -----------------------------------------------------------------
INDEX = "stamps.json"


def estimate_folder(input_dir: str | Path, predictor: Any, cfg: StampConfig | None = None,
                    out_dir: str | Path | None = None) -> list[Stamp]:
    """The stamps a folder's images share, saved under `out_dir`.

    Each group of at least `min_support` images of one size is sampled evenly (`sample`
    images), and with `shift` the sizes too rare for a group of their own are pooled and
    sampled as one more group. Groups are taken one at a time (one sample in memory). A
    group's images that carry a stamp found before (`place`: at any place, on any size)
    are set aside; the detector runs on the rest, and a stamp is kept when its fit explains
    the images well (`min_quality`) and at least `min_support` different pictures of them
    carry it (copies of one picture, `same_picture`, count once). The next
    stamp (up to `max_per_size` per group) is looked for among the images none explains.
    Images of several sizes, or a stamp that moved, are first aligned by matching (`align`).
    """
    from collections import defaultdict

    from wmrepair.imageio import image_size, list_images, picture_hash, read_image, same_picture

    cfg = cfg or StampConfig()
    root = Path(input_dir)
    groups: dict[tuple[int, int], list[Path]] = defaultdict(list)
    for rel in list_images(root):
        try:
            w, h = image_size(root / rel)
        except Exception:  # unreadable: the repair reports it
            continue
        groups[(h, w)].append(rel)
    ordered = sorted(groups.values(), key=lambda m: -len(m))
    samples = [_spread(members, cfg.sample) for members in ordered if len(members) >= cfg.min_support]
    rare = [rel for members in ordered if len(members) < cfg.min_support for rel in members]
    if cfg.shift and len(rare) >= cfg.min_support:
        samples.append(_spread(rare, cfg.sample))
    stamps: list[Stamp] = []
    for sample in samples:
        images, names = [], []
        for rel in sample:
            try:
                image = read_image(root / rel).rgb
            except Exception:
                continue
            if cfg.shift and any(place(image, st, cfg) is not None for st in stamps):
                continue  # a stamp already known, at another place or on another size
            images.append(image)
            names.append(str(rel))
        if len(images) < cfg.min_support:
            continue
        hashes = [picture_hash(im) for im in images]
        probs = list(predictor.predict_proba(images))
        left = list(range(len(images)))
        one_size = len({im.shape[:2] for im in images}) == 1
        for _ in range(cfg.max_per_size):  # several sources in one folder: each from the images left unexplained
            got = _learn(images, probs, names, left, cfg, f"stamp_{len(stamps):02d}", aligned=one_size)
            if got is None and cfg.shift and one_size:  # the stamp moved between images (other crops)
                got = _learn(images, probs, names, left, cfg, f"stamp_{len(stamps):02d}", aligned=False)
            if got is None:
                break
            # One picture twice (a marked and an unmarked copy, a re-export) lets the per-pixel fit learn
            # the picture itself as a "stamp" that both copies then carry: the support that counts is
            # how many different pictures carry it.
            distinct: list[np.ndarray] = []
            for k in sorted(got[1]):
                if not any(same_picture(hashes[k], o) for o in distinct):
                    distinct.append(hashes[k])
            if len(distinct) < cfg.min_support:
                log.info("%s: carried by %d images but only %d different pictures, fewer than %d: not used",
                         got[0].name, len(got[1]), len(distinct), cfg.min_support)
                break
            stamps.append(got[0])
            left = [k for k in left if k not in got[1]]
    if out_dir is not None:
        save_stamps(stamps, out_dir)
    return stamps


def _learn(images: list[np.ndarray], probs: list[np.ndarray], names: list[str], members: list[int],
           cfg: StampConfig, name: str, aligned: bool) -> tuple[Stamp, set[int]] | None:
    """One stamp from `images[members]` and the members that carry it; None if none is kept.

    `aligned`: the images are of one size and the stamp in one place; otherwise they are first
    cut to a common frame found by matching (`align`), and the stamp is put in the frame of the
    most common size's images among them.
    """
    if len(members) < cfg.min_support:
        return None
    if aligned:
        ims, prs = [images[k] for k in members], [probs[k] for k in members]
    else:
        frame = align([probs[k] for k in members], cfg)
        if frame is None:
            return None
        (fh, fw), found = frame
        pairs = [(k, c) for k, c in zip(members, found) if c is not None]
        if len(pairs) < cfg.min_support:
            return None
        members, corners = [k for k, _ in pairs], [c for _, c in pairs]
        ims = [images[k][y:y + fh, x:x + fw] for k, (y, x) in zip(members, corners)]
        prs = [probs[k][y:y + fh, x:x + fw] for k, (y, x) in zip(members, corners)]
    got = _estimate(ims, prs, cfg, [names[k] for k in members], name=name)
    if got is None or got[0].quality < cfg.min_quality:
        return None
    stamp, carried = got
    if not aligned:
        ref = Counter(images[k].shape[:2] for k in members).most_common(1)[0][0]
        y, x = (int(v) for v in np.median([c for k, c in zip(members, corners) if images[k].shape[:2] == ref], axis=0))
        y0, x0, y1, x1 = stamp.box
        stamp.size, stamp.box = ref, (y0 + y, x0 + x, y1 + y, x1 + x)
    if stamp.support < cfg.min_support:
        log.info("%s: carried by %d of %d sampled images, fewer than %d: not used", stamp.name, stamp.support,
                 len(members), cfg.min_support)
        return None
    return stamp, {members[i] for i in carried}


def _spread(members: list[Path], n: int) -> list[Path]:
    """Up to `n` of `members`, evenly spread."""
    return members[:: max(1, len(members) // n)][:n]


def save_stamps(stamps: list[Stamp], out_dir: str | Path) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for st in stamps:
        st.save(out / st.name)
    index = [stamp_summary(st) for st in stamps]
    atomic_write_bytes(out / INDEX, json.dumps(index, indent=1).encode())


def load_stamps(folder: str | Path | None) -> list[Stamp]:
    """The stamps `save_stamps` wrote (none for None or a folder without an index)."""
    if folder is None or not (Path(folder) / INDEX).is_file():
        return []
    index = json.loads((Path(folder) / INDEX).read_text())
    return [Stamp.load(Path(folder) / entry["name"]) for entry in index]

