"""Offline, seeded synthetic watermark dataset in the style of CLWD / LOGO-series.

Clean backgrounds come from images shipped with scikit-image plus procedural
textures; marks are text (several fonts, sizes, colours, rotations), tiled
diagonal text, and logos (shape + letters), blended as J = I*(1-a) + W*a with
alpha 0.3-0.8. The test split uses fonts and words never seen in training so
evaluation measures generalisation, not memory.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps
from tqdm import tqdm

from wmrepair.config import TEST_SIZES, SynthConfig  # noqa: F401 - SynthConfig: part of this module's API
from wmrepair.files import atomic_write_bytes
from wmrepair.hardware import usable_cpus
from wmrepair.imageio import encode_image, write_mask

TRAIN_WORDS = ["SAMPLE", "PREVIEW", "stock", "Photo", "COPYRIGHT", "draft", "(c) 2024",
               "PROOF", "studio", "Getty", "shutter", "www.pics.com", "CONFIDENTIAL", "demo",
               "Alamy", "iStock", "DO NOT COPY", "watermark", "LICENSED", "imagebank"]
TEST_WORDS = ["Unsplash", "Dreamstime", "PRIVATE", "specimen", "(c) Lens&Co", "FOTOLIA",
              "not for sale", "123RF", "Pixabay", "NEGATIVE"]
TRAIN_FONTS = ["DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono-Bold.ttf",
               "DejaVuSans-Oblique.ttf", "STIXGeneralBol.ttf", "cmss10.ttf", "DejaVuSerif-Italic.ttf"]
TEST_FONTS = ["DejaVuSerif-BoldItalic.ttf", "STIXGeneralItalic.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf"]
# Every image scikit-image ships locally (no pooch download), and matplotlib's sample photographs.
# "page" and "text" (print), "logo" and "horse" (graphics) are hard negatives by nature.
SKIMAGE_BACKGROUNDS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                       "immunohistochemistry", "retina", "brick", "grass", "gravel", "camera",
                       "moon", "coins", "clock", "cell", "colorwheel", "page", "text", "logo", "horse"]
MATPLOTLIB_BACKGROUNDS = ["grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"]


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


_BACKGROUND_CACHE: dict[str | None, list[np.ndarray]] = {}
OWN_BACKGROUND_SIDE = 1024  # a user's background is shrunk to this long side once (memory, speed)


def _rgb(a: np.ndarray) -> np.ndarray:
    """Any sample image as uint8 RGB: grey stacked, RGBA over white, bool as two tones, floats scaled."""
    if a.dtype == bool:
        a = np.where(a, 30, 235).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a * (255.0 if a.max() <= 1 else 1.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    if a.shape[-1] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255
        a = (a[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3])


def _shipped_backgrounds() -> list[np.ndarray]:
    """Clean images that ship inside installed packages (no download): scikit-image's local set and
    matplotlib's sample photograph. Some are hard negatives by nature: a printed page, text, a logo."""
    import skimage.data as skd

    out = []
    for name in SKIMAGE_BACKGROUNDS:
        try:
            out.append(_rgb(np.asarray(getattr(skd, name)())))
        except Exception:  # a name missing (or needing a download) in some skimage version: use the rest
            continue
    import matplotlib

    for name in MATPLOTLIB_BACKGROUNDS:
        f = Path(matplotlib.get_data_path()) / "sample_data" / name
        if f.is_file():
            out.append(_rgb(np.asarray(Image.open(f))))
    if len(out) < 3:
        raise RuntimeError("scikit-image ships too few sample images for backgrounds")
    return out


def _own_backgrounds(folder: str | Path) -> list[np.ndarray]:
    """The user's clean images (`data.backgrounds_dir`), each shrunk to OWN_BACKGROUND_SIDE."""
    from wmrepair.imageio import iter_images, read_image

    out = []
    for path in iter_images(folder):
        try:
            im = Image.fromarray(read_image(Path(folder) / path).rgb)
        except Exception:  # unreadable file: the others still serve
            continue
        im.thumbnail((OWN_BACKGROUND_SIDE, OWN_BACKGROUND_SIDE))
        out.append(np.asarray(im))
    if not out:
        raise ValueError(f"data.backgrounds_dir: no readable images under {folder}")
    return out


def _backgrounds(own: str | Path | None = None) -> list[np.ndarray]:
    """The photographs backgrounds are cut from: the shipped ones, plus `own` (a folder) when given."""
    if None not in _BACKGROUND_CACHE:
        _BACKGROUND_CACHE[None] = _shipped_backgrounds()
    if own is None:
        return _BACKGROUND_CACHE[None]
    key = str(Path(own).resolve())
    if key not in _BACKGROUND_CACHE:
        _BACKGROUND_CACHE[key] = _own_backgrounds(own)
    return _BACKGROUND_CACHE[key]


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    """A random RGB colour, each channel in [lo, hi)."""
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _noise(rng: np.random.Generator, h: int, w: int, octaves: int = 4) -> np.ndarray:
    """Smooth value noise in [0, 1]."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        gh, gw = 2 + 2**o * 2, 2 + 2**o * 2
        grid = rng.random((gh, gw)).astype(np.float32)
        layer = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC))
        out += amp * layer
        total += amp
        amp *= 0.5
    out /= total
    return np.clip((out - out.min()) / (np.ptp(out) + 1e-6), 0, 1)


def _dead_leaves(rng: np.random.Generator, h: int, w: int, detail: float = 1.0) -> np.ndarray:
    """Dead-leaves occlusion model: opaque discs of power-law radii (natural images' statistics)."""
    im = Image.new("RGB", (w, h), _colour(rng))
    d = ImageDraw.Draw(im)
    rmin, rmax = max(1.5, 2 * detail), max(h, w) / 3
    for _ in range(int(rng.integers(150, 400))):
        # r ~ r^-3 between rmin and rmax (inverse CDF): scale invariance
        r = 1 / np.sqrt(rng.uniform(1 / rmax**2, 1 / rmin**2))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        d.ellipse((x - r, y - r, x + r, y + r), fill=_colour(rng))
    return np.asarray(im)


def _illustration(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Flat vector-style art: gradient sky, filled shapes with strong dark outlines."""
    c1, c2 = rng.random(3) * 255, rng.random(3) * 255
    t = np.linspace(0, 1, h)[:, None, None]
    im = Image.fromarray((c1 * (1 - t) + c2 * t).repeat(w, 1).astype(np.uint8))
    _draw_outlined_shapes(im, rng, int(rng.integers(3, 9)))
    return np.asarray(im)


def _procedural(rng: np.random.Generator, h: int, w: int, detail: float = 1.0) -> np.ndarray:
    """A synthetic texture; `detail` < 1 shrinks its stripes and checker cells (see `synthesize`)."""
    kind = rng.integers(6)
    if kind == 4:
        return _dead_leaves(rng, h, w, detail)
    if kind == 5:
        return _illustration(rng, h, w)
    c1, c2 = rng.random(3) * 255, rng.random(3) * 255
    if kind == 0:  # gradient
        t = np.linspace(0, 1, w)[None, :, None] * np.ones((h, 1, 1))
        if rng.random() < 0.5:
            t = np.linspace(0, 1, h)[:, None, None] * np.ones((1, w, 1))
    elif kind == 1:  # clouds
        t = _noise(rng, h, w)[..., None]
    elif kind == 2:  # stripes
        f = rng.uniform(4, 30) * detail
        ang = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        t = (0.5 + 0.5 * np.sin((xx * np.cos(ang) + yy * np.sin(ang)) / f))[..., None]
    else:  # checker blended with noise
        s = int(rng.integers(8, 64)) * detail
        yy, xx = np.mgrid[0:h, 0:w]
        t = (((yy // s) + (xx // s)) % 2).astype(np.float32)[..., None] * 0.6 + 0.4 * _noise(rng, h, w)[..., None]
    img = c1 * (1 - t) + c2 * t
    img += rng.normal(0, rng.uniform(0, 8), img.shape)  # sensor-like grain
    return np.clip(img, 0, 255).astype(np.uint8)


def make_background(rng: np.random.Generator, h: int, w: int, detail: float = 1.0,
                    own: str | Path | None = None) -> np.ndarray:
    """A clean picture: a crop of a photograph (70 %; from `own` when given, 80 % of those) or a procedural one."""
    if rng.random() < 0.7:
        pool = _backgrounds(own) if own is not None and rng.random() < 0.8 else _backgrounds()
        src = pool[rng.integers(len(pool))]
        sh, sw = src.shape[:2]
        scale = rng.uniform(0.5, 1.0)
        ch, cw = max(16, int(sh * scale)), max(16, int(sw * scale))
        # Keep the target aspect ratio inside the source crop.
        if cw / ch > w / h:
            cw = max(16, int(ch * w / h))
        else:
            ch = max(16, int(cw * h / w))
        ch, cw = min(ch, sh), min(cw, sw)
        y, x = rng.integers(0, sh - ch + 1), rng.integers(0, sw - cw + 1)
        im = Image.fromarray(src[y : y + ch, x : x + cw]).resize((w, h), Image.BICUBIC)
        if rng.random() < 0.5:
            im = ImageOps.mirror(im)
        img = np.asarray(im).astype(np.float32)
        img = img * rng.uniform(0.7, 1.2) + rng.uniform(-25, 25, 3)  # colour/brightness shift
        if rng.random() < 0.3:
            img = 0.7 * img + 0.3 * _procedural(rng, h, w, detail)
        return np.clip(img, 0, 255).astype(np.uint8)
    return _procedural(rng, h, w, detail)


def _font(fonts: list[str], rng: np.random.Generator, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_font_dir() / fonts[rng.integers(len(fonts))]), max(8, size))


def _text_layer(text: str, font: ImageFont.FreeTypeFont, stroke: int = 0, hollow: bool = False) -> Image.Image:
    """Coverage of `text` (0..255); `hollow`: the stroke only (outlined letters)."""
    x0, y0, x1, y1 = font.getbbox(text, stroke_width=stroke)
    im = Image.new("L", (x1 - x0 + 4, y1 - y0 + 4), 0)
    ImageDraw.Draw(im).text((2 - x0, 2 - y0), text, fill=0 if hollow else 255, font=font, stroke_width=stroke,
                            stroke_fill=255)
    return im


def _logo_layer(rng: np.random.Generator, size: int, font: ImageFont.FreeTypeFont, text: str) -> Image.Image:
    im = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(im)
    shape = rng.integers(4)
    lw = max(2, size // 16)
    box = (lw, lw, size - lw, size - lw)
    filled = rng.random() < 0.5
    if shape == 0:
        d.ellipse(box, fill=255 if filled else None, outline=255, width=lw)
    elif shape == 1:
        d.rounded_rectangle(box, radius=size // 6, fill=255 if filled else None, outline=255, width=lw)
    elif shape == 2:
        d.regular_polygon((size / 2, size / 2, size / 2 - lw), int(rng.integers(3, 7)),
                          rotation=float(rng.uniform(0, 90)), fill=255 if filled else None, outline=255, width=lw)
    else:
        pts = []
        for k in range(10):
            r = (size / 2 - lw) * (1.0 if k % 2 == 0 else 0.45)
            a = np.pi * k / 5 - np.pi / 2
            pts.append((size / 2 + r * np.cos(a), size / 2 + r * np.sin(a)))
        d.polygon(pts, fill=255 if filled else None, outline=255, width=lw)
    letters = _text_layer(text[:3].upper(), font)
    letters.thumbnail((int(size * 0.6), int(size * 0.6)))
    x, y = (size - letters.width) // 2, (size - letters.height) // 2
    if filled:  # knockout letters: the mark is the shape minus the letters
        region = im.crop((x, y, x + letters.width, y + letters.height))
        im.paste(Image.fromarray(np.minimum(np.asarray(region), 255 - np.asarray(letters))), (x, y))
    else:
        im.paste(255, (x, y), letters)
    return im


def _draw_outlined_shapes(im: Image.Image, rng: np.random.Generator, n: int) -> None:
    """Cartoon-like filled shapes with thick dark outlines, drawn into the picture itself."""
    d = ImageDraw.Draw(im)
    w, h = im.size
    for _ in range(n):
        r = rng.uniform(0.05, 0.3) * min(w, h)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        fill = _colour(rng)
        line = _colour(rng, 0, 60)
        lw = max(1, int(r * rng.uniform(0.04, 0.12)))
        if rng.random() < 0.5:
            d.ellipse((x - r, y - r * rng.uniform(0.5, 1), x + r, y + r), fill=fill, outline=line, width=lw)
        else:
            d.regular_polygon((x, y, r), int(rng.integers(3, 8)), rotation=float(rng.uniform(0, 90)),
                              fill=fill, outline=line, width=lw)


def add_scene_elements(img: np.ndarray, rng: np.random.Generator, fonts: list[str], words: list[str]) -> np.ndarray:
    """Hard negatives: things that belong to the picture (opaque and mask 0), not overlays.

    A sign or label (opaque text on its own panel), cartoon shapes with outlines,
    specular highlights. A detector that marks these would damage clean photographs.
    """
    im = Image.fromarray(img)
    h, w = img.shape[:2]
    short = min(h, w)
    for _ in range(int(rng.integers(1, 3))):
        kind = rng.choice(["sign", "shapes", "highlights"])
        if kind == "sign":
            text = str(words[rng.integers(len(words))])
            font = _font(fonts, rng, int(short * rng.uniform(0.05, 0.14)))
            layer = _text_layer(text, font)
            pad = max(2, layer.height // 3)
            pw, ph = layer.width + 2 * pad, layer.height + 2 * pad
            x, y = int(rng.integers(-pw // 4, max(1, w - pw * 3 // 4))), int(rng.integers(-ph // 4, max(1, h - ph * 3 // 4)))
            panel = _colour(rng)
            ink = tuple(255 - c if abs(255 - 2 * c) > 80 else (0 if c > 127 else 255) for c in panel)
            d = ImageDraw.Draw(im)
            d.rounded_rectangle((x, y, x + pw, y + ph), radius=pad, fill=panel,
                                outline=tuple(max(0, c - 60) for c in panel), width=max(1, pad // 3))
            im.paste(ink, (x + pad, y + pad), layer)
        elif kind == "shapes":
            _draw_outlined_shapes(im, rng, int(rng.integers(1, 4)))
        else:  # specular highlights: small bright soft blobs
            a = np.asarray(im).astype(np.float32)
            yy, xx = np.mgrid[0:h, 0:w]
            for _ in range(int(rng.integers(2, 8))):
                cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.005, 0.03) * short + 1
                g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
                a = a * (1 - g) + 255 * g
            im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return np.asarray(im)


def _fronds(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """Illustrated foliage: curved stems with rows of leaflets on both sides (a fern, a branch)."""
    short = min(w, h)
    ink = _colour(rng)
    for _ in range(int(rng.integers(1, 4))):
        length = rng.uniform(0.25, 0.7) * short
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        ang, bend = rng.uniform(0, 2 * np.pi), rng.uniform(-1.5, 1.5) / length
        n = int(rng.integers(6, 18))
        leaf, spread = rng.uniform(0.15, 0.4) * length, rng.uniform(0.5, 1.2)
        width = max(1, int(length * rng.uniform(0.01, 0.03)))
        step = length / n
        for k in range(n):
            nx, ny = x + step * np.cos(ang), y + step * np.sin(ang)
            d.line((x, y, nx, ny), fill=ink, width=width)
            size = leaf * (1 - 0.7 * k / n)
            for side in (-1, 1):
                a = ang + side * spread
                tx, ty = nx + size * np.cos(a), ny + size * np.sin(a)
                if rng.random() < 0.5:  # a blade: a thin line
                    d.line((nx, ny, tx, ty), fill=ink, width=max(1, width))
                else:  # a leaflet: a narrow quadrilateral
                    ox, oy = -np.sin(a) * size * 0.18, np.cos(a) * size * 0.18
                    mx, my = (nx + tx) / 2, (ny + ty) / 2
                    d.polygon([(nx, ny), (mx + ox, my + oy), (tx, ty), (mx - ox, my - oy)], fill=ink)
            x, y, ang = nx, ny, ang + bend * step


def _planks(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """Man-made repeats: a deck of planks with dark seams, or a railing of thin posts under a rail."""
    short = min(w, h)
    bw, bh = rng.uniform(0.2, 0.8) * w, rng.uniform(0.08, 0.4) * h
    x0, y0 = rng.uniform(-0.1 * w, w - bw * 0.8), rng.uniform(-0.1 * h, h - bh * 0.8)
    wood, seam = _colour(rng), _colour(rng, 0, 90)
    n = int(rng.integers(5, 30))
    line = max(1, int(short * rng.uniform(0.002, 0.008)))
    if rng.random() < 0.5:  # deck: seams that crowd together with distance (perspective)
        d.rectangle((x0, y0, x0 + bw, y0 + bh), fill=wood)
        t = np.linspace(0, 1, n) ** rng.uniform(1.0, 2.0)
        slant = rng.uniform(-0.3, 0.3) * bw
        for v in t:
            yy = y0 + v * bh
            d.line((x0, yy, x0 + bw, yy + slant * (v - 0.5) * 0.2), fill=seam, width=line)
    else:  # railing or pier posts against the sky or water
        d.line((x0, y0, x0 + bw, y0), fill=seam, width=line * 2)
        for xx in np.linspace(x0, x0 + bw, n):
            d.line((xx, y0, xx + rng.uniform(-1, 1) * line, y0 + bh), fill=seam, width=line)


def _leaves(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """Fallen leaves: pointed shapes of autumn colours with a darker vein and outline."""
    short = min(w, h)
    for _ in range(int(rng.integers(3, 20))):
        r = rng.uniform(0.03, 0.12) * short
        x, y, a = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, np.pi)
        fill = (int(rng.integers(120, 256)), int(rng.integers(40, 200)), int(rng.integers(0, 80)))
        dark = tuple(max(0, c - 80) for c in fill)
        ca, sa = np.cos(a), np.sin(a)
        teeth = 0.15 if rng.random() < 0.4 else 0.0  # serrated edges on some leaves
        pts = []
        for k in range(16):  # a lens outline
            t = 2 * np.pi * k / 16
            rr = r * (1 + teeth * (k % 2))
            px, py = rr * np.cos(t), 0.4 * rr * np.sin(t)
            pts.append((x + px * ca - py * sa, y + px * sa + py * ca))
        d.polygon(pts, fill=fill, outline=dark, width=max(1, int(r * 0.05)))
        d.line((x - r * ca, y - r * sa, x + r * ca, y + r * sa), fill=dark, width=max(1, int(r * 0.04)))


STRUCTURES = {"fronds": _fronds, "planks": _planks, "leaves": _leaves}


def add_structures(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hard negatives of the kinds a detector mistakes for marks on photographs (DEVNOTES): repeated thin
    strokes that belong to the scene (illustrated fronds, planks and railings, fallen leaves). Opaque, so
    they stay part of the clean picture and the mask stays 0."""
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    names = list(STRUCTURES)
    for _ in range(int(rng.integers(1, 3))):
        STRUCTURES[names[rng.integers(len(names))]](d, rng, *im.size)
    return np.asarray(im)


# Text that is part of artwork: release numbers, years, titles. Not the watermark words, which stay marks.
ART_WORDS = ["Welcome", "OPEN", "Summer", "Horizon", "Aurora", "Cafe", "Nebula", "Harbor", "Kinetic", "Zenith"]


def _art_word(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.35:  # a release number such as 20.04 or 3.2
        return f"{rng.integers(1, 30)}.{rng.integers(0, 13):02d}" if rng.random() < 0.6 else f"{rng.integers(1, 10)}.{rng.integers(0, 10)}"
    if r < 0.5:
        return str(int(rng.integers(1990, 2031)))
    return ART_WORDS[rng.integers(len(ART_WORDS))]


def _paint(im: Image.Image, cover: Image.Image, xy: tuple[int, int], ink: tuple[int, int, int],
           rng: np.random.Generator) -> None:
    """Paste `cover` opaque in `ink`, under it (some of the time) a soft glow or a drop shadow, as artwork has."""
    r = rng.random()
    if r < 0.35:  # a glow: the shape blurred, in a light or the ink's colour
        pad = max(2, cover.height // 4)
        halo = Image.new("L", (cover.width + 2 * pad, cover.height + 2 * pad), 0)
        halo.paste(cover, (pad, pad))
        halo = halo.filter(ImageFilter.GaussianBlur(pad / 2))
        glow = ink if rng.random() < 0.5 else _colour(rng, 150)
        im.paste(glow, (xy[0] - pad, xy[1] - pad), halo)
    elif r < 0.55:  # a drop shadow
        off = max(1, cover.height // 12)
        im.paste((0, 0, 0), (xy[0] + off, xy[1] + off), cover.filter(ImageFilter.GaussianBlur(off)))
    im.paste(ink, xy, cover)


def _fit_width(layer: Image.Image, w: int, limit: float) -> Image.Image:
    """`layer` shrunk to 90 % of the picture's width `w` where it is wider than `limit` of it."""
    if layer.width > w * limit:
        layer = layer.resize((int(w * 0.9), max(1, int(layer.height * w * 0.9 / layer.width))))
    return layer


def _titles(im: Image.Image, rng: np.random.Generator, fonts: list[str]) -> None:
    """Opaque text drawn into the art itself (no panel): a release number, a year, a title."""
    w, h = im.size
    font = _font(fonts, rng, int(min(w, h) * rng.uniform(0.05, 0.2)))
    layer = _text_layer(_art_word(rng), font)
    layer = _fit_width(layer, w, 0.9)
    ink = (255, 255, 255) if rng.random() < 0.3 else _colour(rng)
    _paint(im, layer, (int(rng.integers(0, max(1, w - layer.width))), int(rng.integers(0, max(1, h - layer.height)))),
           ink, rng)


def _emblems(im: Image.Image, rng: np.random.Generator, fonts: list[str]) -> None:
    """A brand's own logo printed opaque in the picture (wallpaper art, a product, a shirt)."""
    w, h = im.size
    size = int(min(w, h) * rng.uniform(0.1, 0.35))
    layer = _logo_layer(rng, size, _font(fonts, rng, size // 2), _art_word(rng))
    ink = (255, 255, 255) if rng.random() < 0.3 else _colour(rng)
    _paint(im, layer, (int(rng.integers(0, max(1, w - size))), int(rng.integers(0, max(1, h - size)))), ink, rng)


def _icons(im: Image.Image, rng: np.random.Generator, fonts: list[str]) -> None:
    """UI-like graphics: a grid of app icons (rounded tiles with a white glyph), sometimes on a dock bar."""
    w, h = im.size
    d = ImageDraw.Draw(im)
    s = int(min(w, h) * rng.uniform(0.05, 0.12))
    gap = int(s * rng.uniform(0.2, 0.8))
    cols, rows = int(rng.integers(2, 7)), int(rng.integers(1, 4))
    x0 = int(rng.integers(0, max(1, w - cols * (s + gap))))
    y0 = int(rng.integers(0, max(1, h - rows * (s + gap))))
    if rng.random() < 0.4:
        d.rounded_rectangle((x0 - gap // 2, y0 - gap // 2, x0 + cols * (s + gap) - gap // 2,
                             y0 + rows * (s + gap) - gap // 2), radius=gap, fill=_colour(rng, 20, 90))
    glyph_font = _font(fonts, rng, int(s * 0.6))
    for r in range(rows):
        for c in range(cols):
            x, y = x0 + c * (s + gap), y0 + r * (s + gap)
            d.rounded_rectangle((x, y, x + s, y + s), radius=s // 5, fill=_colour(rng, 30, 230))
            if rng.random() < 0.5:
                glyph = _text_layer(chr(int(rng.integers(65, 91))), glyph_font)
                glyph.thumbnail((int(s * 0.7), int(s * 0.7)))
                im.paste((255, 255, 255), (x + (s - glyph.width) // 2, y + (s - glyph.height) // 2), glyph)
            else:
                m = s // 4
                d.ellipse((x + m, y + m, x + s - m, y + s - m), outline=(255, 255, 255), width=max(1, s // 12))


def _glow_lines(im: Image.Image, rng: np.random.Generator, fonts: list[str]) -> None:
    """Light art: bright thin curves and outlines with a soft glow (neon, abstract wallpapers)."""
    w, h = im.size
    cover = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(cover)
    lw = max(1, int(min(w, h) * rng.uniform(0.003, 0.012)))
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.1, 0.6) * w, rng.uniform(0.1, 0.6) * h
        start = float(rng.uniform(0, 360))
        d.arc((cx - rx, cy - ry, cx + rx, cy + ry), start, start + float(rng.uniform(60, 360)), fill=255, width=lw)
    ink = _colour(rng, 160)
    halo = cover.filter(ImageFilter.GaussianBlur(lw * 3))
    im.paste(ink, (0, 0), Image.fromarray(np.minimum(255, np.asarray(halo, np.float32) * 3).astype(np.uint8)))
    im.paste((255, 255, 255) if rng.random() < 0.5 else ink, (0, 0), cover)


ARTWORK = {"titles": _titles, "emblems": _emblems, "icons": _icons, "glow": _glow_lines}


def add_artwork(img: np.ndarray, rng: np.random.Generator, fonts: list[str]) -> np.ndarray:
    """Hard negatives that are printed in the picture, opaque (mask 0): titles and release numbers, a brand's
    own emblem, app icons, glowing light art. Marks let the ground show through (opacity <= alpha_range's top);
    these do not, which is what tells them apart."""
    im = Image.fromarray(img)
    names = list(ARTWORK)
    for _ in range(int(rng.integers(1, 3))):
        ARTWORK[names[rng.integers(len(names))]](im, rng, fonts)
    return np.asarray(im)


def _place(canvas: np.ndarray, layer: Image.Image, rng: np.random.Generator) -> None:
    """Max-composite `layer` (coverage 0..255) at a random position, allowed to run off the edge a little."""
    h, w = canvas.shape
    lh, lw = layer.height, layer.width
    y = int(rng.integers(-lh // 6, max(-lh // 6 + 1, h - lh + lh // 6)))
    x = int(rng.integers(-lw // 6, max(-lw // 6 + 1, w - lw + lw // 6)))
    _composite(canvas, layer, y, x)


def _composite(canvas: np.ndarray, layer: Image.Image, y: int, x: int) -> None:
    """Max-composite `layer` (coverage 0..255) with its corner at (y, x), clipped to the canvas."""
    h, w = canvas.shape
    lh, lw = layer.height, layer.width
    a = np.asarray(layer, np.float32) / 255.0
    y0, x0 = max(0, y), max(0, x)
    y1, x1 = min(h, y + lh), min(w, x + lw)
    if y1 <= y0 or x1 <= x0:
        return
    sub = a[y0 - y : y1 - y, x0 - x : x1 - x]
    canvas[y0:y1, x0:x1] = np.maximum(canvas[y0:y1, x0:x1], sub)


def _mark_colour(rng: np.random.Generator, region_mean: float) -> np.ndarray:
    r = rng.random()
    if r < 0.45:  # white or black, whichever stands out
        return np.full(3, 255.0 if region_mean < 150 else 0.0)
    if r < 0.6:
        return np.full(3, rng.uniform(0, 60) if region_mean > 128 else rng.uniform(190, 255))
    c = rng.random(3) * 255
    if abs(c.mean() - region_mean) < 60:
        c = 255 - c
    return c


def add_watermark(
    img: np.ndarray, rng: np.random.Generator, words: list[str], fonts: list[str],
    alpha_range: tuple[float, float] = (0.3, 0.8),
) -> tuple[np.ndarray, np.ndarray]:
    """Return (watermarked uint8 RGB, alpha map float32 in [0, 1])."""
    h, w = img.shape[:2]
    short = min(h, w)
    out = img.astype(np.float32)
    total_alpha = np.zeros((h, w), np.float32)
    for _ in range(1 + int(rng.random() < 0.35)):
        cov = np.zeros((h, w), np.float32)
        kind = rng.choice(["text", "text", "tiled", "logo", "corner", "outlined"])
        text = str(words[rng.integers(len(words))])
        if kind == "corner":  # a small copyright line near a corner
            font = _font(fonts, rng, int(short * rng.uniform(0.03, 0.06)))
            layer = _text_layer(f"\u00a9 {text}", font)
            layer = _fit_width(layer, w, 0.9)
            m = int(short * rng.uniform(0.01, 0.05))
            y = m if rng.random() < 0.3 else h - layer.height - m
            x = m if rng.random() < 0.5 else w - layer.width - m
            _composite(cov, layer, y, x)
        elif kind == "outlined":  # hollow letters: only the outline is the mark
            font = _font(fonts, rng, int(short * rng.uniform(0.08, 0.2)))
            layer = _text_layer(text, font, stroke=max(1, font.size // 18), hollow=True)
            layer = _fit_width(layer, w, 0.95)
            layer = layer.rotate(float(rng.uniform(-30, 30)), expand=True, resample=Image.BICUBIC)
            _place(cov, layer, rng)
        elif kind == "text":
            font = _font(fonts, rng, int(short * rng.uniform(0.06, 0.18)))
            layer = _text_layer(text, font, stroke=int(rng.integers(0, 2)))
            layer = _fit_width(layer, w, 0.95)
            layer = layer.rotate(float(rng.uniform(-35, 35)), expand=True, resample=Image.BICUBIC)
            _place(cov, layer, rng)
        elif kind == "tiled":
            font = _font(fonts, rng, int(short * rng.uniform(0.04, 0.09)))
            unit = _text_layer(text, font)
            gap_x, gap_y = unit.width + int(rng.integers(10, 60)), unit.height * int(rng.integers(2, 4))
            big = Image.new("L", (2 * (w + h), 2 * (w + h)), 0)
            for row, yy in enumerate(range(0, big.height, gap_y)):
                for xx in range(-(row % 2) * gap_x // 2, big.width, gap_x):
                    big.paste(unit, (xx, yy))
            big = big.rotate(float(rng.choice([-1, 1]) * rng.uniform(20, 45)), resample=Image.BICUBIC)
            cy, cx = (big.height - h) // 2, (big.width - w) // 2
            cov = np.maximum(cov, np.asarray(big, np.float32)[cy : cy + h, cx : cx + w] / 255.0)
        else:
            size = int(short * rng.uniform(0.15, 0.35))
            layer = _logo_layer(rng, size, _font(fonts, rng, size // 2), text)
            layer = layer.rotate(float(rng.uniform(-20, 20)), expand=True, resample=Image.BICUBIC)
            _place(cov, layer, rng)
        alpha = float(rng.uniform(*alpha_range))
        a = cov * alpha
        region = cov > 0.5
        mean = float(out[region].mean()) if region.any() else 128.0
        colour = _mark_colour(rng, mean)
        out = out * (1 - a[..., None]) + colour * a[..., None]
        total_alpha = 1 - (1 - total_alpha) * (1 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), total_alpha


@dataclass
class SplitPlan:
    name: str
    count: int
    words: list[str]
    fonts: list[str]
    sizes: list[tuple[int, int]] | None = None  # (w, h) cycled; None = train_size squares
    jpeg_share: float = 0.5
    backgrounds: str | Path | None = None  # the user's clean images (data.backgrounds_dir), or None


def _write_sample(out: Path, cfg: SynthConfig, plan: SplitPlan, split_id: int, i: int) -> None:
    """Draw and write image `i` of a split; its own seeds make it independent of every other image."""
    rng = np.random.default_rng([cfg.seed, split_id, i])
    if plan.sizes:
        w, h = plan.sizes[i % len(plan.sizes)]
        detail = 1.0
    else:
        w = h = cfg.train_size
        # Test images are large and shrunk to the detection scale, which makes their
        # textures finer than a 256-px texture drawn at its own size ever is (a 1600-px
        # checker of 16-px cells reaches the detector as 4-px cells). Training images
        # draw textures at the detail a 256-1600 px image has at detection scale. Own
        # stream, so the other draws (and the test split) stay as they were.
        detail = float(np.exp(np.random.default_rng([cfg.seed, split_id, i, 1]).uniform(np.log(0.25), 0)))
    clean = make_background(rng, h, w, detail, plan.backgrounds)
    # Own streams for the draws below, so that the choices above stay as they were.
    extra = np.random.default_rng([cfg.seed, split_id, i, 2])
    if extra.random() < cfg.scene_fraction:
        clean = add_scene_elements(clean, extra, plan.fonts, plan.words)
    if np.random.default_rng([cfg.seed, split_id, i, 3]).random() < cfg.structure_fraction:
        clean = add_structures(clean, np.random.default_rng([cfg.seed, split_id, i, 4]))
    if np.random.default_rng([cfg.seed, split_id, i, 5]).random() < cfg.artwork_fraction:
        clean = add_artwork(clean, np.random.default_rng([cfg.seed, split_id, i, 6]), plan.fonts)
    if extra.random() < cfg.negative_fraction:  # a negative: no mark at all (mask all 0)
        wm, alpha = clean.copy(), np.zeros((h, w), np.float32)
    else:
        wm, alpha = add_watermark(clean, rng, plan.words, plan.fonts, cfg.alpha_range)
    name = f"{plan.name}_{i:05d}"
    ext = ".jpg" if rng.random() < plan.jpeg_share else ".png"
    q = int(rng.integers(75, 96))
    atomic_write_bytes(out / plan.name / "watermarked" / f"{name}{ext}", encode_image(wm, ext, jpeg_quality=q))
    atomic_write_bytes(out / plan.name / "clean" / f"{name}.png", encode_image(clean, ".png"))
    write_mask(out / plan.name / "masks" / f"{name}.png", alpha >= 0.1)


def synthesize(out_dir: str | Path, config: SynthConfig | None = None, progress: bool = True,
               workers: int | None = None, backgrounds_dir: str | Path | None = None) -> dict:
    """Write `<out>/<split>/{watermarked,clean,masks}/` for train/val/test (and dev); returns counts.

    `dev` (only with `n_dev` > 0) looks like test (same image sizes) but uses the
    training words and fonts: it is for tuning inference settings, so that the
    test split stays unseen. Images are drawn on `workers` threads (default: every
    usable core; numpy and Pillow release the GIL; the same files for any count:
    every image has its own seeds). `backgrounds_dir` (the user's clean images)
    adds its pictures to the training and validation backgrounds, marked and as
    negatives; the test split keeps the shipped ones.
    """
    cfg = config or SynthConfig()
    out = Path(out_dir)
    plans = [
        SplitPlan("train", cfg.n_train, TRAIN_WORDS, TRAIN_FONTS, jpeg_share=cfg.jpeg_fraction,
                  backgrounds=backgrounds_dir),
        SplitPlan("val", cfg.n_val, TRAIN_WORDS, TRAIN_FONTS, jpeg_share=cfg.jpeg_fraction, backgrounds=backgrounds_dir),
        SplitPlan("test", cfg.n_test, TEST_WORDS, TEST_FONTS, cfg.test_sizes),
        SplitPlan("dev", cfg.n_dev, TRAIN_WORDS, TRAIN_FONTS, cfg.test_sizes),
    ]
    jobs = [(out, cfg, plan, split_id, i) for split_id, plan in enumerate(plans) for i in range(plan.count)]
    _backgrounds(backgrounds_dir)  # load the photos once, before threads could race to fill the cache
    with tqdm(total=len(jobs), desc="synthesize", unit="img", disable=not progress) as bar, \
            ThreadPoolExecutor(max(1, workers or usable_cpus())) as pool:
        for f in as_completed([pool.submit(_write_sample, *job) for job in jobs]):
            f.result()
            bar.update()
    counts = {p.name: p.count for p in plans if p.count or p.name != "dev"}
    meta = {"config": asdict(cfg), "counts": counts,
            "backgrounds_dir": str(backgrounds_dir) if backgrounds_dir else None}
    (out / "synth.json").write_text(json.dumps(meta, indent=2))
    return meta
