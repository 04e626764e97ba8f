"""Image files in and out, faithfully: format, bit depth, alpha, palette, colour profile and EXIF kept.

Detection and inpainting work on an 8-bit RGB view. A file with more than 8
bits per channel keeps its depth: the pixels the repair did not change are
written back exactly, the changed ones scaled up from the view. What cannot
be repaired faithfully (multi-frame files, unknown pixel formats, images over
the pixel bound) raises `UnsupportedImage`, which becomes a `failed` row with
the reason; nothing is flattened or clipped silently.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin

from wmrepair.files import atomic_write_bytes

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
            ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF"}
# TIFF tags that describe the picture (camera, date, author); TIFF's EXIF sub-IFDs do not
# survive Pillow's TIFF writer, so these travel as base tags.
_TIFF_TAGS = (270, 271, 272, 305, 306, 315, 33432)


class UnsupportedImage(ValueError):
    """A file wmrepair will not repair because it could not write it back faithfully."""


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTS and not name.startswith(".")


def iter_images(root: str | Path) -> Iterator[Path]:
    """Image files under `root`, relative to it, in directory order; hidden files and folders are skipped.

    Hidden folders hold tools' state (.git, .snakemake, wmrepair's own .wmrepair-tmp),
    never photos to repair.
    """
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath)
        for f in filenames:
            if is_image_name(f) and (base / f).is_file():
                yield (base / f).relative_to(root)


def list_images(root: str | Path) -> list[Path]:
    """Image files under `root` (recursive, sorted), relative to `root`."""
    return sorted(iter_images(root))


@dataclass
class LoadedImage:
    rgb: np.ndarray  # HxWx3 uint8, writable (IOPaint writes into its input): what detection sees
    alpha: np.ndarray | None  # HxW uint8 when the file had transparency
    mode: str  # the file's PIL mode, to write the same kind back
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation already applied to the pixels
    deep: np.ndarray | None = None  # HxW or HxWxC in the file's own dtype when deeper than 8 bits
    deep_range: tuple[float, float] = (0.0, 255.0)  # the deep values that map to 0 and 255 of `rgb`
    palette: Image.Image | None = None  # a P-mode file's palette, to write the same palette back
    # An RGB JPEG's quantisation tables and chroma subsampling: written back with them, the
    # pixels a repair left alone decode as they did (re-encoding at quality 95 moved them: 50 dB).
    jpeg_tables: tuple[dict[int, list[int]], int] | None = None


def is_lossy(path: str | Path) -> bool:
    """Whether a file's pixels carry compression error (JPEG, by its name)."""
    return _FORMATS.get(Path(path).suffix.lower()) == "JPEG"


def picture_hash(im: Image.Image | np.ndarray) -> np.ndarray:
    """A 64-bit difference hash: pictures that are one another's resize, recompression or lightly
    marked copy agree on nearly all bits (`same_picture`)."""
    im = Image.fromarray(im) if isinstance(im, np.ndarray) else im
    g = np.asarray(im.convert("L").resize((9, 8), Image.BILINEAR), np.float32)
    return (g[:, 1:] > g[:, :-1]).ravel()


def same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Two `picture_hash`es of one picture: at most 6 of 64 bits differ."""
    return int((a != b).sum()) <= 6


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                return im.size
        except Image.DecompressionBombError as exc:
            raise UnsupportedImage(str(exc)) from None


def _bit_depth(path: Path, im: Image.Image) -> int:
    """Bits per channel as stored (Pillow reads 16-bit RGB PNG/TIFF as 8-bit RGB without saying so)."""
    if im.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(26)
        return head[24] if len(head) == 26 and head[12:16] == b"IHDR" else 8
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 8


def _deep_view(arr: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """An 8-bit view of a deep array and the value range mapped onto 0..255."""
    if arr.dtype == np.uint16:
        lo, hi = 0.0, 65535.0
    else:
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if arr.dtype.kind == "f" and lo >= 0 and hi <= 1:
            lo, hi = 0.0, 1.0  # the usual float convention
        if hi <= lo:
            hi = lo + 1
    view = np.clip(np.rint((np.nan_to_num(arr.astype(np.float64)) - lo) * (255 / (hi - lo))), 0, 255).astype(np.uint8)
    return view, (lo, hi)


def read_image(path: str | Path, max_pixels: int | None = None) -> LoadedImage:
    """Decode `path` for repair; UnsupportedImage for what cannot be written back faithfully."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im0 = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise UnsupportedImage(str(exc)) from None
    with im0:
        w, h = im0.size
        if max_pixels and w * h > max_pixels:
            raise UnsupportedImage(f"{w}x{h} = {w * h / 1e6:.1f} MP exceeds repair.max_pixels "
                                   f"({max_pixels / 1e6:.1f} MP); raise it for such images")
        frames = getattr(im0, "n_frames", 1)
        if frames > 1:
            raise UnsupportedImage(f"multi-frame image ({frames} frames) is not supported; left untouched")
        depth = _bit_depth(path, im0)
        icc = im0.info.get("icc_profile")
        im = ImageOps.exif_transpose(im0)  # phone photos: pixels as the user sees them
        exif_obj = im.getexif()
        mode = im0.mode
        exif = None
        if len(exif_obj) and im0.format != "TIFF":
            exif = exif_obj.tobytes()
        elif im0.format == "TIFF":
            tags, kept = im0.getexif(), Image.Exif()  # a TIFF's tags stay with the file, not the turned copy
            for tag in _TIFF_TAGS:
                if tag in tags:
                    kept[tag] = tags[tag]
            exif = kept if len(kept) else None
        alpha = deep = palette = None
        deep_range = (0.0, 255.0)
        if depth > 8 and mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
            import cv2  # Pillow has no 16-bit RGB; OpenCV reads it whole

            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if arr is None or arr.ndim != 3 or arr.shape[2] not in (3, 4):
                raise UnsupportedImage(f"{depth}-bit {mode} image is not supported")
            arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]  # BGR(A) -> RGB(A)
            arr = _orient(arr, im0.getexif().get(0x0112, 1))  # EXIF rotation applies to the deep pixels too
            deep = np.ascontiguousarray(arr)
            view, deep_range = _deep_view(deep[..., :3])
            rgb = view
            if deep.shape[2] == 4:
                alpha = _deep_view(deep[..., 3])[0]
            mode = f"RGB{'A' if deep.shape[2] == 4 else ''};{depth}"
        elif mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.array(im)
            deep = arr
            view, deep_range = _deep_view(arr)
            rgb = np.repeat(view[..., None], 3, axis=2)
        elif mode == "CMYK" or mode == "LAB" or mode == "YCbCr":
            rgb, icc = _to_srgb(im, icc)
        elif im0.format == "GIF" and "transparency" in im.info:
            raise UnsupportedImage("GIF with transparency is not supported; left untouched")
        elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            alpha = np.array(rgba.getchannel("A"))
            rgb = np.array(rgba.convert("RGB"))
        elif mode in ("RGB", "L", "1", "P"):
            if mode == "P":
                palette = Image.new("P", (1, 1))
                palette.putpalette(im.getpalette())
            rgb = np.array(im.convert("RGB"))
        else:
            raise UnsupportedImage(f"pixel format {mode} is not supported")
        tables = None
        if im0.format == "JPEG" and mode == "RGB" and len(getattr(im0, "quantization", {}) or {}) == 2:
            sampling = JpegImagePlugin.get_sampling(im0)
            if sampling in (0, 2) or (sampling == 1 and im.size == im0.size):  # a turned 4:2:2 is no 4:2:2
                tables = ({k: list(v) for k, v in im0.quantization.items()}, sampling)
    return LoadedImage(rgb=rgb, alpha=alpha, mode=mode, icc_profile=icc, exif=exif, deep=deep,
                       deep_range=deep_range, palette=palette, jpeg_tables=tables)


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """An HxW(xC) array turned as ImageOps.exif_transpose turns the image for EXIF `orientation`."""
    t = arr.swapaxes(0, 1)
    return {2: arr[:, ::-1], 3: arr[::-1, ::-1], 4: arr[::-1], 5: t, 6: t[:, ::-1], 7: t[::-1, ::-1],
            8: t[::-1]}.get(orientation, arr)


def _to_srgb(im: Image.Image, icc: bytes | None) -> tuple[np.ndarray, bytes | None]:
    """CMYK/LAB pixels to sRGB through the file's own profile; the output then carries an sRGB profile."""
    srgb = ImageCms.createProfile("sRGB")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(im, src, srgb, outputMode="RGB")
            return np.array(out), ImageCms.ImageCmsProfile(srgb).tobytes()
        except ImageCms.PyCMSError as exc:
            raise UnsupportedImage(f"{im.mode} image with an unreadable colour profile ({exc})") from None
    return np.array(im.convert("RGB")), None  # no profile: Pillow's naive conversion, and no profile claimed


def read_mask(path: str | Path) -> np.ndarray:
    """Binary mask (bool HxW) from an 8-bit image; > 127 is watermark."""
    with Image.open(path) as im:
        return np.array(im.convert("L")) > 127


def _deep_from_view(src: LoadedImage, rgb: np.ndarray) -> np.ndarray:
    """The deep array with the pixels the repair changed replaced by the repaired view, scaled back."""
    changed = (rgb != src.rgb).any(axis=-1)
    out = src.deep.copy()
    lo, hi = src.deep_range
    vals = rgb[changed].astype(np.float64) * ((hi - lo) / 255) + lo
    if out.ndim == 2:
        vals = vals.mean(axis=-1)
    else:
        vals = np.concatenate([vals, out[changed][:, 3:].astype(np.float64)], axis=1) if out.shape[2] == 4 else vals
    if out.dtype.kind in "ui":
        info = np.iinfo(out.dtype)
        vals = np.clip(np.rint(vals), info.min, info.max)
    out[changed] = vals.astype(out.dtype)
    return out


def encode_image(
    rgb: np.ndarray, ext: str, alpha: np.ndarray | None = None, mode: str = "RGB",
    jpeg_quality: int = 95, icc_profile: bytes | None = None, source: LoadedImage | None = None,
    keep_jpeg_tables: bool = True,
) -> bytes:
    """Encode in the format that `ext` names, keeping alpha, greyscale, palette, depth and metadata where it can.

    With `source` (the decoded input), its mode, alpha, profile, EXIF, palette and
    bit depth are what is kept, and with `keep_jpeg_tables` a JPEG's own quantisation
    tables and chroma subsampling (else `jpeg_quality`).
    """
    fmt = _FORMATS.get(ext.lower())
    if fmt is None:
        raise ValueError(f"unsupported image extension {ext!r}")
    exif = None
    if source is not None:
        alpha, mode, icc_profile, exif = source.alpha, source.mode, source.icc_profile, source.exif
        if source.deep is not None:
            return _encode_deep(_deep_from_view(source, rgb), ext, fmt, source)
    im = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if alpha is not None and fmt not in ("JPEG", "GIF"):
        im.putalpha(Image.fromarray(alpha, "L"))
    elif mode in ("L", "LA") and fmt != "JPEG":
        im = im.convert("L")
    elif mode == "1" and fmt != "JPEG":
        im = im.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)
    if (source is not None and source.palette is not None and alpha is None) or fmt == "GIF":
        # The file's own palette: untouched pixels map back to their exact colours.
        pal = source.palette if source is not None and source.palette is not None else None
        im = im.convert("RGB").quantize(palette=pal, dither=Image.Dither.NONE) if pal else im.convert("RGB").quantize()
    kwargs: dict = {}
    if icc_profile:
        kwargs["icc_profile"] = icc_profile
    if exif is not None and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        kwargs["exif"] = exif
    if fmt == "JPEG" and keep_jpeg_tables and source is not None and source.jpeg_tables is not None:
        kwargs.update(qtables=source.jpeg_tables[0], subsampling=source.jpeg_tables[1])
    elif fmt == "JPEG":
        kwargs.update(quality=jpeg_quality, subsampling=0 if jpeg_quality >= 90 else 2)
    elif fmt == "PNG":
        kwargs.update(compress_level=3)  # level 6 (default) is ~2x slower for ~3% smaller files
    elif fmt == "WEBP":
        kwargs.update(quality=jpeg_quality)
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _encode_deep(arr: np.ndarray, ext: str, fmt: str, source: LoadedImage) -> bytes:
    if arr.ndim == 2:  # 16-bit or 32-bit grey, float: Pillow writes these with their metadata
        im = Image.fromarray(arr)
        kwargs: dict = {}
        if source.icc_profile:
            kwargs["icc_profile"] = source.icc_profile
        if fmt == "PNG":
            kwargs["compress_level"] = 3
        buf = io.BytesIO()
        im.save(buf, fmt, **kwargs)
        return buf.getvalue()
    import cv2

    ok, data = cv2.imencode(ext, np.ascontiguousarray(arr[..., [2, 1, 0, 3][: arr.shape[2]]]))
    if not ok:
        raise UnsupportedImage(f"could not encode a {source.mode} image as {fmt}")
    return data.tobytes()


def write_image(path: str | Path, rgb: np.ndarray, **kw) -> None:
    path = Path(path)
    atomic_write_bytes(path, encode_image(rgb, path.suffix, **kw))


def encode_mask(mask: np.ndarray) -> bytes:
    """8-bit PNG, 255 = watermark."""
    buf = io.BytesIO()
    Image.fromarray((mask > 0).astype(np.uint8) * 255, "L").save(buf, "PNG", compress_level=3)
    return buf.getvalue()


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    atomic_write_bytes(Path(path), encode_mask(mask))
