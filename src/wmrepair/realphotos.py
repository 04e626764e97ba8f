"""The real-photo benchmark: photographs and illustrations training never sees, marked as people mark them.

Backgrounds are Debian's wallpaper packages and marks are drawn in Debian's
fonts. Training draws its backgrounds from scikit-image and procedural
textures and its fonts from matplotlib, so none of this reaches it: the figures
say how the detector does on pictures it never saw. Every picture appears
twice, once with a mark in one of four styles and once unmarked, so the harm
figures (unmarked images altered, marked images made worse) stand beside IoU
and PSNR.

Two sets, from disjoint packages and fonts: `dev` (Ubuntu Touch and KDE
wallpapers, Liberation fonts) is where the team chooses defaults; `test`
(GNOME, MATE and UKUI wallpapers, FreeFont) is read once, to report. A dev
picture that looks like a test picture (some wallpapers travel between
desktops) is left out of dev.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from wmrepair.files import atomic_write_bytes
from wmrepair.imageio import encode_image, picture_hash, same_picture, write_mask


@dataclass(frozen=True)
class PhotoSet:
    """Where a set's pictures and fonts come from, and the words and seed its marks are drawn with."""

    wallpaper_packages: tuple[str, ...]
    font_package: str
    font_dir: Path
    fonts: tuple[str, ...]
    words: tuple[str, ...]
    seed: int

    @property
    def packages(self) -> tuple[str, ...]:
        return (*self.wallpaper_packages, self.font_package)


SETS = {
    "test": PhotoSet(("gnome-backgrounds", "mate-backgrounds", "ukui-wallpapers"), "fonts-freefont-ttf",
                     Path("/usr/share/fonts/truetype/freefont"),
                     ("FreeSansBold.ttf", "FreeSerifBold.ttf", "FreeSans.ttf", "FreeMonoBold.ttf", "FreeSerifItalic.ttf"),
                     ("ARCHIVE", "Photobank", "© Northlight", "PREVIEW ONLY", "stockfolio", "COMP", "Lumen Studio",
                      "sample image", "RIGHTS MANAGED", "pixelhaus"), seed=0),
    "dev": PhotoSet(("lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "plasma-workspace-wallpapers"),
                    "fonts-liberation", Path("/usr/share/fonts/truetype/liberation"),
                    ("LiberationSans-Bold.ttf", "LiberationSerif-Bold.ttf", "LiberationSans-Regular.ttf",
                     "LiberationMono-Bold.ttf", "LiberationSerif-Italic.ttf"),
                    ("Fotoarchiv", "PROOF", "© Brightwater", "DRAFT COPY", "imagemill", "LICENSED", "Harbor Photo",
                     "watermarked", "NOT FOR RESALE", "snapyard"), seed=1),
}
STYLES = ("word", "tiled", "logo", "corner")
LONG_SIDE = 1024
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def photo_set(name: str) -> PhotoSet:
    if name not in SETS:
        raise ValueError(f"unknown real-photo set {name!r}; choose one of {', '.join(SETS)}")
    return SETS[name]


def missing_packages(name: str = "test") -> list[str]:
    return [p for p in photo_set(name).packages
            if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]


def ensure_packages(name: str = "test") -> None:
    """Install the Debian packages the set draws on (root), or say which are missing."""
    missing = missing_packages(name)
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"the real-photo {name} set needs Debian packages {' '.join(missing)}: "
                           f"sudo apt-get install -y {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True).returncode:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, check=True, capture_output=True)


def _package_files(packages: tuple[str, ...]) -> list[Path]:
    """The image files the packages installed (dpkg -L), so other installed wallpapers never join a set."""
    out = set()
    for pkg in packages:
        listing = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=True).stdout
        out |= {Path(line) for line in listing.splitlines() if line.lower().endswith(IMAGE_SUFFIXES)}
    return sorted(p for p in out if p.is_file())


def _kde_name(p: Path) -> str | None:
    """The folder name of a KDE wallpaper (Name/contents/images*/WxH.jpg: its file is named by its size)."""
    return p.parent.parent.parent.name if p.parent.parent.name == "contents" else None


def _picture_name(p: Path) -> str:
    """One name per picture: Elephants_3840x2160 is Elephants again, GNOME's -d/-l are one picture's dark and
    light takes, and a KDE wallpaper folder is one picture in several sizes."""
    return _kde_name(p) or re.sub(r"(_\d+x\d+|-[dl])$", "", p.stem)


@functools.cache
def _picture_info(path: Path) -> tuple[bool, np.ndarray]:
    """(usable: opaque and at least 800 px on its short side, signature); decoding a 5K PNG takes a second,
    so each file is read once per process."""
    with Image.open(path) as im:
        if min(im.size) < 800:
            return False, np.zeros(64, bool)
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        # a transparent PNG flattened onto black is not a photograph
        opaque = not has_alpha or np.asarray(im.convert("RGBA").getchannel("A")).min() >= 250
        return opaque, picture_hash(im)


@functools.cache
def _wallpapers(name: str) -> tuple[Path, ...]:
    names, out = set(), []
    exclude = [] if name == "test" else [_picture_info(p)[1] for p in _wallpapers("test")]
    for p in _package_files(photo_set(name).wallpaper_packages):
        key = _picture_name(p)
        if key in names:
            continue
        usable, sig = _picture_info(p)
        if usable and not any(same_picture(sig, e) for e in exclude):
            names.add(key)
            out.append(p)
    return tuple(out)


def wallpapers(name: str = "test") -> list[Path]:
    """Every opaque picture of the set, at least 800 px on its short side, once (not its other resolutions);
    for dev, none that looks like a test picture."""
    return list(_wallpapers(name))


def _font(ps: PhotoSet, rng: np.random.Generator, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(ps.font_dir / ps.fonts[rng.integers(len(ps.fonts))]), max(8, size))


def _text(text: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    x0, y0, x1, y1 = font.getbbox(text)
    im = Image.new("L", (x1 - x0 + 4, y1 - y0 + 4), 0)
    ImageDraw.Draw(im).text((2 - x0, 2 - y0), text, fill=255, font=font)
    return im


def _logo(ps: PhotoSet, rng: np.random.Generator, size: int, word: str) -> Image.Image:
    """A ring with a star inside and a word beside it: the lock-up stock sites and studios stamp."""
    ring = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(ring)
    lw = max(2, size // 14)
    d.ellipse((lw, lw, size - lw, size - lw), outline=255, width=lw)
    pts = [(size / 2 + (size / 2 - 3 * lw) * (1.0 if k % 2 == 0 else 0.42) * np.cos(np.pi * k / 5 - np.pi / 2),
            size / 2 + (size / 2 - 3 * lw) * (1.0 if k % 2 == 0 else 0.42) * np.sin(np.pi * k / 5 - np.pi / 2))
           for k in range(10)]
    d.polygon(pts, fill=255)
    text = _text(word, _font(ps, rng, int(size * 0.45)))
    im = Image.new("L", (size + size // 5 + text.width, max(size, text.height)), 0)
    im.paste(ring, (0, (im.height - size) // 2))
    im.paste(text, (size + size // 5, (im.height - text.height) // 2))
    return im


def _coverage(ps: PhotoSet, style: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    short = min(h, w)
    cov = Image.new("L", (w, h), 0)
    word = str(ps.words[rng.integers(len(ps.words))])
    if style == "word":
        layer = _text(word, _font(ps, rng, int(short * rng.uniform(0.08, 0.15))))
        layer = layer.rotate(float(rng.uniform(-30, 30)), expand=True, resample=Image.BICUBIC)
        cov.paste(layer, ((w - layer.width) // 2 + int(rng.integers(-w // 8, w // 8 + 1)),
                          (h - layer.height) // 2 + int(rng.integers(-h // 8, h // 8 + 1))))
    elif style == "tiled":
        unit = _text(word, _font(ps, rng, int(short * rng.uniform(0.035, 0.06))))
        gx, gy = unit.width + int(rng.integers(20, 80)), unit.height * int(rng.integers(2, 5))
        big = Image.new("L", (2 * (w + h), 2 * (w + h)), 0)
        for row, y in enumerate(range(0, big.height, gy)):
            for x in range(-(row % 2) * gx // 2, big.width, gx):
                big.paste(unit, (x, y))
        big = big.rotate(float(rng.uniform(25, 45)), resample=Image.BICUBIC)
        cov = big.crop(((big.width - w) // 2, (big.height - h) // 2, (big.width - w) // 2 + w, (big.height - h) // 2 + h))
    elif style == "logo":
        layer = _logo(ps, rng, int(short * rng.uniform(0.12, 0.22)), word)
        cov.paste(layer, (int(rng.integers(0, max(1, w - layer.width))), int(rng.integers(0, max(1, h - layer.height)))))
    else:  # a corner copyright line
        layer = _text(f"© 2024 {word}", _font(ps, rng, int(short * rng.uniform(0.025, 0.04))))
        m = int(short * 0.03)
        x = m if rng.random() < 0.5 else w - layer.width - m
        y = h - layer.height - m if rng.random() < 0.7 else m
        cov.paste(layer, (x, y))
    return np.asarray(cov, np.float32) / 255.0


_OPACITY = {"word": (0.35, 0.7), "tiled": (0.2, 0.45), "logo": (0.4, 0.75), "corner": (0.6, 0.95)}


def mark(ps: PhotoSet, img: np.ndarray, style: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(marked image, coverage x opacity); J = a W + (1 - a) I with a white, black or grey W."""
    h, w = img.shape[:2]
    a = _coverage(ps, style, rng, h, w) * float(rng.uniform(*_OPACITY[style]))
    under = img[a > 0.05].mean() if (a > 0.05).any() else 128.0
    grey = style != "tiled" and rng.random() < 0.25  # tiled grids are white or black: grey ones vanish
    colour = np.full(3, 128.0) if grey else np.full(3, 255.0 if under < 140 else 20.0)
    out = img.astype(np.float32) * (1 - a[..., None]) + colour * a[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), a


def build(out_dir: str | Path, limit: int | None = None, name: str = "test") -> dict[str, Any]:
    """Write watermarked/ (marked `<name>.jpg` and unmarked `<name>_none.jpg`), clean/, masks/, styles.json."""
    out = Path(out_dir)
    styles: dict[str, str] = {}
    ps = photo_set(name)
    for i, src in enumerate(wallpapers(name)[:limit]):
        rng = np.random.default_rng([ps.seed, i])
        with Image.open(src) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((LONG_SIDE, LONG_SIDE), Image.LANCZOS)
            clean = np.array(im)
        style = STYLES[i % len(STYLES)]
        marked_stem = f"{i:03d}_{(_kde_name(src) or src.stem).replace(' ', '_')}"
        marked, a = mark(ps, clean, style, rng)
        for stem, pixels, alpha in ((marked_stem, marked, a), (f"{marked_stem}_none", clean, np.zeros_like(a))):
            atomic_write_bytes(out / "watermarked" / f"{stem}.jpg", encode_image(pixels, ".jpg", jpeg_quality=92))
            atomic_write_bytes(out / "clean" / f"{stem}.png", encode_image(clean, ".png"))
            write_mask(out / "masks" / f"{stem}.png", alpha >= 0.1 * alpha.max() if alpha.any() else alpha > 0)
            styles[stem] = style if stem == marked_stem else "none"
    (out / "styles.json").write_text(json.dumps(styles, indent=1))
    return styles


def by_style(per_image: Any, styles: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The harm and quality figures per style ("none": the unmarked copies)."""
    import pandas as pd

    from wmrepair.evaluate import harm

    df = per_image.copy()
    df["style"] = [styles.get(Path(p).stem, "?") for p in df["input"]]
    out = {}
    for style, g in df.groupby("style"):
        rec: dict[str, Any] = {"n": len(g), **{k: v for k, v in harm(g).items() if k not in ("false_mark_share",)}}
        for col in ("psnr_input", "psnr_output", "ssim_input", "ssim_output", "mask_iou"):
            keep = col in g and not (col == "mask_iou" and style == "none")  # no mark: no IoU to speak of
            rec[col] = float(pd.to_numeric(g[col], errors="coerce").mean()) if keep else None
        out[str(style)] = rec
    return out


# ------------------------------------------------------------ collections ----
# A stock site's previews: every picture cut to one size and blended with one stamp (the blend
# J = a W + (1 - a) I of mark()), plus pictures in the same folder that carry none.
COLLECTION_SIZE = (960, 640)  # width, height
# Previews of several aspect ratios carrying one centred stamp: the case that needs stamps placed by matching.
COLLECTION_SIZES = ((960, 640), (900, 600), (1024, 683), (800, 600), (854, 640))
COLLECTION_KINDS = ("logo", "tiled")
COLLECTION_PLAIN = 12  # unstamped pictures in each folder: mirrored, differently cut copies


def collection_stamp(name: str, kind: str, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, colour) of the set's shared stamp: a white ring logo + word at 0.5, or a tiled grey phrase at 0.35.

    `size` (width, height): the stamp on an image of that size, centred (the tiled grid is cut from one
    made for the largest of COLLECTION_SIZES); None: COLLECTION_SIZE.
    """
    ps = photo_set(name)
    w, h = size or COLLECTION_SIZE
    rng = np.random.default_rng([ps.seed, 1000, COLLECTION_KINDS.index(kind)])
    if kind == "logo":
        layer = _logo(ps, rng, int(COLLECTION_SIZE[1] * 0.2), ps.words[1])
        cov = Image.new("L", (w, h), 0)
        cov.paste(layer, ((w - layer.width) // 2, (h - layer.height) // 2))
        return np.asarray(cov, np.float32) / 255.0 * 0.5, np.full(3, 255.0, np.float32)
    if size is None:
        return _coverage(ps, "tiled", rng, h, w) * 0.35, np.full(3, 128.0, np.float32)
    big_w, big_h = max(s[0] for s in COLLECTION_SIZES), max(s[1] for s in COLLECTION_SIZES)
    big = _coverage(ps, "tiled", rng, big_h, big_w)
    y, x = (big_h - h) // 2, (big_w - w) // 2
    return big[y:y + h, x:x + w] * 0.35, np.full(3, 128.0, np.float32)


@functools.lru_cache(maxsize=2)
def _collection_pictures(name: str, limit: int | None, sizes: tuple[tuple[int, int], ...] | None = None
                         ) -> list[tuple[str, np.ndarray]]:
    """The set's pictures cut to COLLECTION_SIZE (`s_<i>`), and COLLECTION_PLAIN mirrored, differently cut
    copies (`p_<i>`: other pictures than their stamped twins). Decoded once for all cases. `sizes`:
    picture i is cut to sizes[i % len(sizes)] instead."""
    out = []
    pictures = wallpapers(name)[:limit]
    for i, (stem, src, mirror) in enumerate(
            [(f"s_{i:03d}", p, False) for i, p in enumerate(pictures)]
            + [(f"p_{i:03d}", p, True) for i, p in enumerate(pictures[:COLLECTION_PLAIN])]):
        size = sizes[i % len(sizes)] if sizes else COLLECTION_SIZE
        with Image.open(src) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im = ImageOps.mirror(im) if mirror else im
            out.append((stem, np.array(ImageOps.fit(im, size, Image.LANCZOS,
                                                    centering=(0.2, 0.3) if mirror else (0.5, 0.5)))))
    return out


def build_collection(out_dir: str | Path, kind: str, fmt: str, name: str = "test",
                     limit: int | None = None, mixed: bool = False) -> dict[str, Any]:
    """Write watermarked/ (`s_<i>` stamped, `p_<i>` plain), clean/ (PNG) and stamp_alpha.png; returns the layout.

    `mixed`: the pictures are cut to the several COLLECTION_SIZES, each carrying the stamp centred
    (stamp_alpha.png is then the stamp on COLLECTION_SIZE; `collection_stamp` gives it for each size).
    """
    out = Path(out_dir)
    items = _collection_pictures(name, limit, COLLECTION_SIZES if mixed else None)
    for stem, clean in items:
        stamped = stem.startswith("s_")
        alpha, colour = collection_stamp(name, kind, clean.shape[1::-1] if mixed else None)
        a = alpha if stamped else np.zeros_like(alpha)
        marked = np.clip(clean * (1 - a[..., None]) + colour * a[..., None] + 0.5, 0, 255).astype(np.uint8)
        data = encode_image(marked, f".{fmt}", jpeg_quality=90)
        atomic_write_bytes(out / "watermarked" / f"{stem}.{fmt}", data)
        atomic_write_bytes(out / "clean" / f"{stem}.png", encode_image(clean, ".png"))
    from wmrepair.stamps import png_bytes

    alpha, _ = collection_stamp(name, kind)
    atomic_write_bytes(out / "stamp_alpha.png", png_bytes(Image.fromarray(np.round(alpha * 255).astype(np.uint8))))
    stamped = sum(stem.startswith("s_") for stem, _ in items)
    layout = {"kind": kind, "format": fmt, "set": name, "stamped": stamped, "plain": len(items) - stamped,
              "mixed": mixed}
    (out / "layout.json").write_text(json.dumps(layout))
    return layout
