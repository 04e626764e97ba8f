"""The real-photo benchmark: photographs and illustrations training never sees, marked as people mark them.

Backgrounds are Debian's wallpaper packages and marks are drawn in Debian's
fonts. Training draws its backgrounds from scikit-image and procedural
textures and its fonts from matplotlib, so none of this reaches it: the figures
say how the detector does on pictures it never saw. Every picture appears
twice, once with a mark in one of four styles and once unmarked, so the harm
figures (unmarked images altered, marked images made worse) stand beside IoU
and PSNR. The team chooses defaults on dev data and reads these figures once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from wmrepair.files import atomic_write_bytes
from wmrepair.imageio import encode_image, write_mask

PACKAGES = ("gnome-backgrounds", "mate-backgrounds", "ukui-wallpapers", "fonts-freefont-ttf")
WALLPAPERS = (Path("/usr/share/backgrounds"),)
FONT_DIR = Path("/usr/share/fonts/truetype/freefont")
FONTS = ("FreeSansBold.ttf", "FreeSerifBold.ttf", "FreeSans.ttf", "FreeMonoBold.ttf", "FreeSerifItalic.ttf")
STYLES = ("word", "tiled", "logo", "corner")
WORDS = ("ARCHIVE", "Photobank", "© Northlight", "PREVIEW ONLY", "stockfolio", "COMP", "Lumen Studio",
         "sample image", "RIGHTS MANAGED", "pixelhaus")
LONG_SIDE = 1024


def missing_packages() -> list[str]:
    return [p for p in PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]


def ensure_packages() -> None:
    """Install the Debian packages the benchmark draws on (root), or say which are missing."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"the real-photo benchmark needs Debian packages {' '.join(missing)}: "
                           f"sudo apt-get install -y {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True).returncode:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, check=True, capture_output=True)


def wallpapers() -> list[Path]:
    """Every opaque wallpaper of at least 800 px on its short side, once (not its other resolutions)."""
    import re

    seen, names, out = set(), set(), []
    for root in WALLPAPERS:
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp") or p.resolve() in seen:
                continue
            seen.add(p.resolve())
            # Elephants_3840x2160 is Elephants again; GNOME's -d/-l are one picture's dark and light takes
            name = re.sub(r"(_\d+x\d+|-[dl])$", "", p.stem)
            with Image.open(p) as im:
                if min(im.size) < 800 or name in names:
                    continue
                has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
                if not has_alpha or np.asarray(im.convert("RGBA").getchannel("A")).min() >= 250:
                    names.add(name)
                    out.append(p)
    return out


def _font(rng: np.random.Generator, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / FONTS[rng.integers(len(FONTS))]), max(8, size))


def _text(text: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    x0, y0, x1, y1 = font.getbbox(text)
    im = Image.new("L", (x1 - x0 + 4, y1 - y0 + 4), 0)
    ImageDraw.Draw(im).text((2 - x0, 2 - y0), text, fill=255, font=font)
    return im


def _logo(rng: np.random.Generator, size: int, word: str) -> Image.Image:
    """A ring with a star inside and a word beside it: the lock-up stock sites and studios stamp."""
    ring = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(ring)
    lw = max(2, size // 14)
    d.ellipse((lw, lw, size - lw, size - lw), outline=255, width=lw)
    pts = [(size / 2 + (size / 2 - 3 * lw) * (1.0 if k % 2 == 0 else 0.42) * np.cos(np.pi * k / 5 - np.pi / 2),
            size / 2 + (size / 2 - 3 * lw) * (1.0 if k % 2 == 0 else 0.42) * np.sin(np.pi * k / 5 - np.pi / 2))
           for k in range(10)]
    d.polygon(pts, fill=255)
    text = _text(word, _font(rng, int(size * 0.45)))
    im = Image.new("L", (size + size // 5 + text.width, max(size, text.height)), 0)
    im.paste(ring, (0, (im.height - size) // 2))
    im.paste(text, (size + size // 5, (im.height - text.height) // 2))
    return im


def _coverage(style: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    short = min(h, w)
    cov = Image.new("L", (w, h), 0)
    word = str(WORDS[rng.integers(len(WORDS))])
    if style == "word":
        layer = _text(word, _font(rng, int(short * rng.uniform(0.08, 0.15))))
        layer = layer.rotate(float(rng.uniform(-30, 30)), expand=True, resample=Image.BICUBIC)
        cov.paste(layer, ((w - layer.width) // 2 + int(rng.integers(-w // 8, w // 8 + 1)),
                          (h - layer.height) // 2 + int(rng.integers(-h // 8, h // 8 + 1))))
    elif style == "tiled":
        unit = _text(word, _font(rng, int(short * rng.uniform(0.035, 0.06))))
        gx, gy = unit.width + int(rng.integers(20, 80)), unit.height * int(rng.integers(2, 5))
        big = Image.new("L", (2 * (w + h), 2 * (w + h)), 0)
        for row, y in enumerate(range(0, big.height, gy)):
            for x in range(-(row % 2) * gx // 2, big.width, gx):
                big.paste(unit, (x, y))
        big = big.rotate(float(rng.uniform(25, 45)), resample=Image.BICUBIC)
        cov = big.crop(((big.width - w) // 2, (big.height - h) // 2, (big.width - w) // 2 + w, (big.height - h) // 2 + h))
    elif style == "logo":
        layer = _logo(rng, int(short * rng.uniform(0.12, 0.22)), word)
        cov.paste(layer, (int(rng.integers(0, max(1, w - layer.width))), int(rng.integers(0, max(1, h - layer.height)))))
    else:  # a corner copyright line
        layer = _text(f"© 2024 {word}", _font(rng, int(short * rng.uniform(0.025, 0.04))))
        m = int(short * 0.03)
        x = m if rng.random() < 0.5 else w - layer.width - m
        y = h - layer.height - m if rng.random() < 0.7 else m
        cov.paste(layer, (x, y))
    return np.asarray(cov, np.float32) / 255.0


_OPACITY = {"word": (0.35, 0.7), "tiled": (0.2, 0.45), "logo": (0.4, 0.75), "corner": (0.6, 0.95)}


def mark(img: np.ndarray, style: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(marked image, coverage x opacity); J = a W + (1 - a) I with a white, black or grey W."""
    h, w = img.shape[:2]
    a = _coverage(style, rng, h, w) * float(rng.uniform(*_OPACITY[style]))
    under = img[a > 0.05].mean() if (a > 0.05).any() else 128.0
    grey = style != "tiled" and rng.random() < 0.25  # tiled grids are white or black: grey ones vanish
    colour = np.full(3, 128.0) if grey else np.full(3, 255.0 if under < 140 else 20.0)
    out = img.astype(np.float32) * (1 - a[..., None]) + colour * a[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), a


def build(out_dir: str | Path, limit: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Write watermarked/ (marked `<name>.jpg` and unmarked `<name>_none.jpg`), clean/, masks/, styles.json."""
    out = Path(out_dir)
    styles: dict[str, str] = {}
    for i, src in enumerate(wallpapers()[:limit]):
        rng = np.random.default_rng([seed, i])
        with Image.open(src) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((LONG_SIDE, LONG_SIDE), Image.LANCZOS)
            clean = np.array(im)
        style = STYLES[i % len(STYLES)]
        name = f"{i:03d}_{src.stem.replace(' ', '_')}"
        marked, a = mark(clean, style, rng)
        for stem, pixels, alpha in ((name, marked, a), (f"{name}_none", clean, np.zeros_like(a))):
            atomic_write_bytes(out / "watermarked" / f"{stem}.jpg", encode_image(pixels, ".jpg", jpeg_quality=92))
            atomic_write_bytes(out / "clean" / f"{stem}.png", encode_image(clean, ".png"))
            write_mask(out / "masks" / f"{stem}.png", alpha >= 0.1 * alpha.max() if alpha.any() else alpha > 0)
            styles[stem] = style if stem == name else "none"
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
