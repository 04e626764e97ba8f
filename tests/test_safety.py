"""Never lose, corrupt or mis-handle a user's file: a generated hostile folder through the real CLI and engine.

Every test checks the same invariants where they apply: no input changed (hash
before and after), every input exactly one manifest row, no partial or stale
temp files, every written image decodes fully.
"""

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, ColourDetector, make_image
from PIL import Image

from wmrepair.checkpoints import save_model
from wmrepair.chunks import chunk_mem_mb, group_by_pixels
from wmrepair.files import PathError, check_dedicated_dir, check_no_overlap
from wmrepair.imageio import read_image
from wmrepair.inpaint import Inpainter
from wmrepair.optimization import OptimizationConfig
from wmrepair.predict import OptimizedWatermarkPredictor
from wmrepair.repair import RepairConfig, RepairEngine

CMYK_ICC = Path("/usr/share/color/icc/ghostscript/ps_cmyk.icc")  # Debian's libgs-common (.ci/run installs it)
TESTS = Path(__file__).parent


class BrightRedDetector(ColourDetector):
    """The colour detector, also on grey images: any pixel above 95 % in every channel is 'watermark'."""

    def forward(self, x):
        return torch.maximum(super().forward(x), 80 * (x.min(dim=1, keepdim=True).values - 0.95))


@pytest.fixture(scope="module")
def cv2_inpainter():
    return Inpainter("cv2")


def engine(inpainter, detector=None, **kw):
    p = OptimizedWatermarkPredictor(detector or BrightRedDetector(), OptimizationConfig())
    return RepairEngine(p, inpainter, RepairConfig(**kw))


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def rows(manifest: Path) -> list[dict]:
    with open(manifest, newline="") as f:
        return list(csv.DictReader(f))


def assert_invariants(src: Path, out: Path, manifest: Path, before: dict[str, str], n_inputs: int) -> list[dict]:
    assert hashes(src) == before, "an input changed"
    rs = rows(manifest)
    assert len(rs) == n_inputs and len({r["input"] for r in rs}) == n_inputs, "not one row per input"
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".wmrepair-tmp" in p.parts]
    assert not leftovers, leftovers
    for r in rs:
        if r["status"] in ("ok", "clean"):
            with Image.open(r["output"]) as im:
                im.load()  # decodes fully
    return rs


def red_folder(root: Path, n: int = 4, size: int = 64) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(make_image(size, size + 8 * i, seed=i)).save(root / f"img{i}.png")
    return root


# ---- overlaps and unwritable outputs -----------------------------------------
def cli(*args: str, env: dict | None = None, umask: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wmrepair", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=env, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    from wmrepair.model import UNet, UNetConfig

    p = tmp_path / "model" / "tiny.pt"
    save_model(UNet(UNetConfig(base_channels=4, depth=2)), p, epoch=1, metrics={"val_iou": 0.0})
    return p


def test_cli_refuses_every_overlap_and_unwritable_output_before_any_work(tmp_path, model_file):
    src = red_folder(tmp_path / "P" / "d")
    (src / "d").mkdir()
    shutil.copy(src / "img0.png", src / "d" / "img0.png")  # P/d/d/img0.png: its repair would land on P/d/img0.png
    (tmp_path / "afile").write_text("x")
    (tmp_path / "link").symlink_to(src / "d")
    before = hashes(tmp_path / "P")
    m = str(model_file)
    cases = {
        "--manifest inside --input": ["--output", str(tmp_path / "o1"), "--manifest", str(src / "img1.png")],
        "--output is --input": ["--output", str(src)],
        "--output inside --input": ["--output", str(src / "out")],
        "--input inside --output": ["--output", str(tmp_path / "P"), "--overwrite"],
        "--save-masks inside --input": ["--output", str(tmp_path / "o2"), "--save-masks", str(src / "masks")],
        "--input inside --save-masks": ["--output", str(tmp_path / "o3"), "--save-masks", str(tmp_path)],
        "--output a symlink into --input": ["--output", str(tmp_path / "link")],
        "--output is a file": ["--output", str(tmp_path / "afile")],
        "--manifest is a folder": ["--output", str(tmp_path / "o4"), "--manifest", str(tmp_path)],
    }
    for what, extra in cases.items():
        p = cli("repair", "--input", str(src), "--model", m, "--quiet", *extra)
        assert p.returncode == 2, (what, p.stderr)
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith("wmrepair: error:") and "Traceback" not in p.stderr, (what, p.stderr)
    assert hashes(tmp_path / "P") == before
    written = [q for q in tmp_path.rglob("*") if q.is_file() and "P" not in q.relative_to(tmp_path).parts]
    assert sorted(q.name for q in written) == ["afile", "tiny.pt"]  # refused before any work: nothing written


def test_overlap_rules():
    check_no_overlap({"in": "/a/b"}, {"out": "/a/c", "manifest": "/a/b.csv"}, files=("manifest",))
    check_no_overlap({"in": "/a/b"}, {"manifest": "/a/manifest.csv"}, files=("manifest",))  # beside: fine
    for outs in ({"out": "/a/b"}, {"out": "/a/b/c"}, {"out": "/a"}, {"out": "/"}):
        with pytest.raises(PathError, match="never writes where it reads"):
            check_no_overlap({"in": "/a/b"}, outs)
    with pytest.raises(PathError):
        check_no_overlap({"in": "/a/b"}, {"manifest": "/a/b/m.csv"}, files=("manifest",))
    for bad in ("", " ", "/", ".", "..", "/etc", "/usr/share/x", str(Path.home())):
        with pytest.raises(PathError):
            check_dedicated_dir("results", bad, cwd="/tmp/wd")
    check_dedicated_dir("results", "results", cwd="/tmp/wd")
    check_dedicated_dir("results", "/data/run1", cwd="/tmp/wd")


def _mount_tmpfs(where: Path, opts: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {p.stderr.strip()}")


def test_read_only_output_is_refused_before_any_work(tmp_path, model_file):
    ro = tmp_path / "ro"
    _mount_tmpfs(ro, "size=1m,ro")
    try:
        p = cli("repair", "--input", str(red_folder(tmp_path / "in")), "--output", str(ro / "out"),
                "--model", str(model_file), "--quiet")
        assert p.returncode == 2 and "is not writable" in p.stderr and "Traceback" not in p.stderr, p.stderr
    finally:
        subprocess.run(["umount", str(ro)], check=False)


# ---- resume ------------------------------------------------------------------
def test_resume_redoes_whatever_is_not_done(tmp_path, cv2_inpainter):
    src = red_folder(tmp_path / "in", n=5)
    (src / "broken.png").write_bytes(b"not an image")
    before = hashes(src)
    out, masks = tmp_path / "out", tmp_path / "masks"
    first = {r["input"]: r for r in engine(cv2_inpainter).run(src, out, masks_dir=masks, progress=False)}
    assert first[str(src / "broken.png")]["status"] == "failed"
    # Damage: a zero-byte output, a truncated one, a missing mask, a stale temp file and staging folder of a dead run.
    (out / "img0.png").write_bytes(b"")
    data = (out / "img1.png").read_bytes()
    (out / "img1.png").write_bytes(data[: len(data) // 2])
    (masks / "img2.png.mask.png").unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    import socket

    host = socket.gethostname().replace("-", "_")
    (out / f".manifest.csv.wmrepair-{host}-{pid}-abcd1234.tmp").write_text("half")
    (out / ".wmrepair-tmp" / f"{host}-{pid}-abcd1234").mkdir(parents=True)
    (out / ".wmrepair-tmp" / f"{host}-{pid}-abcd1234" / "00000001-abc.tmp").write_bytes(b"partial")
    kept = {p: p.stat().st_mtime_ns for p in (out / "img3.png", out / "img4.png")}
    again = engine(cv2_inpainter)
    second = {r["input"]: r for r in again.run(src, out, masks_dir=masks, progress=False)}
    assert again.resumed == 2  # img3, img4: untouched and their rows as they were
    for name in ("img3.png", "img4.png"):
        assert second[str(src / name)] == {k: str(v) for k, v in first[str(src / name)].items()}
    assert kept == {p: p.stat().st_mtime_ns for p in kept}
    for name in ("img0.png", "img1.png", "img2.png"):
        assert second[str(src / name)]["status"] in ("ok", "clean")
        assert (masks / f"{name}.mask.png").stat().st_size > 0
    assert second[str(src / "broken.png")]["status"] == "failed" and second[str(src / "broken.png")]["error"]
    assert_invariants(src, out, out / "manifest.csv", before, 6)
    assert not list(out.glob(".manifest.csv.*.tmp"))


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {tests!r})
    import wmrepair.repair as r
    from test_safety import BrightRedDetector
    from wmrepair.optimization import OptimizationConfig
    from wmrepair.inpaint import Inpainter
    from wmrepair.predict import OptimizedWatermarkPredictor
    calls = []
    real = r.encode_mask
    def encode_mask(mask):
        calls.append(1)
        if len(calls) == {kill_at}:  # the image of this call is written; its mask is not
            time.sleep(1.5)  # the main thread records the images finished before this one
            os.kill(os.getpid(), signal.SIGKILL)
        return real(mask)
    r.encode_mask = encode_mask
    p = OptimizedWatermarkPredictor(BrightRedDetector(), OptimizationConfig())
    eng = r.RepairEngine(p, Inpainter("cv2"), r.RepairConfig(group_size=1, io_workers=1))
    eng.run({src!r}, {out!r}, masks_dir={masks!r}, progress=False)
""")


def test_sigkill_between_image_and_mask_then_resume(tmp_path, cv2_inpainter):
    """A real SIGKILL after an image is written and before its mask: the record keeps what finished."""
    src = red_folder(tmp_path / "in", n=6)
    before = hashes(src)
    out, masks = tmp_path / "out", tmp_path / "masks"
    script = KILL_SCRIPT.format(tests=str(TESTS), kill_at=4, src=str(src), out=str(out), masks=str(masks))
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert (out / "img3.png").exists() and not (masks / "img3.png.mask.png").exists()  # the torn state
    recorded = rows(out / "manifest.csv")  # a killed run still leaves its manifest
    assert [Path(r["input"]).name for r in recorded] == ["img0.png", "img1.png", "img2.png"]
    assert list((out / ".wmrepair-tmp").iterdir())  # the dead run's staging folder
    eng = engine(cv2_inpainter)
    eng.run(src, out, masks_dir=masks, progress=False)
    assert eng.resumed == 3
    assert (masks / "img3.png.mask.png").stat().st_size > 0
    assert_invariants(src, out, out / "manifest.csv", before, 6)
    assert not (out / ".wmrepair-tmp").exists()


def test_full_disk_fails_the_image_and_a_rerun_with_space_redoes_it(tmp_path, cv2_inpainter):
    """Masks on a real, full tmpfs: each image fails with the reason, nothing partial stays, space makes a rerun redo them."""
    src = red_folder(tmp_path / "in", n=3, size=256)
    before = hashes(src)
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=256k")
    try:
        out, masks = tmp_path / "out", disk / "masks"
        masks.mkdir()
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill it: whatever the masks weigh, they do not fit
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        failed = engine(cv2_inpainter).run(src, out, masks_dir=masks, progress=False)
        assert {r["status"] for r in failed} == {"failed"}, failed
        assert all("No space left" in r["error"] for r in failed), failed
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]
        filler.unlink()
        again = engine(cv2_inpainter)
        rs = again.run(src, out, masks_dir=masks, progress=False)
        assert again.resumed == 0 and {r["status"] for r in rs} <= {"ok", "clean"}
        assert all((masks / f"{Path(r['input']).name}.mask.png").stat().st_size > 0 for r in rs)
        assert_invariants(src, out, out / "manifest.csv", before, 3)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_two_concurrent_runs_on_one_folder(tmp_path, model_file):
    src = red_folder(tmp_path / "in", n=12, size=96)
    before = hashes(src)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "wmrepair", "repair", "--input", str(src), "--output", str(out), "--model",
           str(model_file), "--quiet", "--save-masks", str(tmp_path / "masks")]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert_invariants(src, out, out / "manifest.csv", before, 12)
    assert not [p for p in (tmp_path / "masks").rglob("*") if p.name.endswith(".tmp")]


# ---- formats -----------------------------------------------------------------
def test_formats_are_kept_or_refused_never_mangled(tmp_path, cv2_inpainter):
    src = tmp_path / "in"
    src.mkdir()
    # 16-bit grey: mid-grey ground with a bright (watermark) bar.
    g16 = np.full((64, 80), 30000, np.uint16) + np.arange(80, dtype=np.uint16)[None] * 50
    g16[20:26, 10:70] = 65535
    Image.fromarray(g16).save(src / "grey16.png")
    # 16-bit RGB with a red box (Pillow would read it as 8-bit).
    rgb16 = (make_image(64, 80).astype(np.uint16) * 257) + 3
    rgb16[20:26, 10:70] = (65535, 0, 0)
    cv2.imwrite(str(src / "rgb16.png"), rgb16[..., ::-1])
    # float TIFF in [0, 1]
    f32 = np.random.default_rng(0).random((48, 48)).astype(np.float32) * 0.5
    Image.fromarray(f32).save(src / "float.tif")
    # multi-frame files
    frames = [Image.fromarray(make_image(32, 32, seed=i)) for i in range(3)]
    frames[0].save(src / "anim.png", save_all=True, append_images=frames[1:])
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(src / "pages.tif", save_all=True, append_images=frames[1:])
    # EXIF: camera, date, GPS and an orientation to apply
    exif = Image.Exif()
    exif[0x010F], exif[0x0132], exif[0x0112] = "Canon", "2024:05:01 10:00:00", 6
    exif.get_ifd(0x8825)[1] = "N"
    Image.fromarray(make_image(60, 100)).save(src / "phone.jpg", exif=exif, quality=95)
    # a palette PNG with a red mark: the repair keeps the palette
    Image.fromarray(make_image(40, 40)).quantize(64).save(src / "palette.png")
    before = hashes(src)
    out = tmp_path / "out"
    rs = {Path(r["input"]).name: r for r in engine(cv2_inpainter).run(src, out, progress=False)}
    assert_invariants(src, out, out / "manifest.csv", before, 8)

    g = np.array(Image.open(out / "grey16.png"))
    assert Image.open(out / "grey16.png").mode == "I;16" and g.dtype == np.uint16
    assert rs["grey16.png"]["status"] == "ok" and g[20:26, 12:68].max() < 60000  # the bar is painted over
    far = np.ones_like(g, bool)
    far[12:34, :] = False
    assert (g[far] == g16[far]).all()  # untouched pixels keep every bit
    back = cv2.imread(str(out / "rgb16.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert back.dtype == np.uint16 and rs["rgb16.png"]["status"] == "ok"
    assert back[20:26, 12:68, 1].mean() > 5000  # the red box is gone
    assert (back[far] == rgb16[far]).all()
    f_out = np.array(Image.open(out / "float.tif"))
    assert Image.open(out / "float.tif").mode == "F" and (f_out == f32).all()  # nothing detected: exact copy
    assert read_image(src / "float.tif").rgb.max() > 100  # seen as an image, not as black
    for name in ("anim.png", "anim.gif", "pages.tif"):
        assert rs[name]["status"] == "failed" and "multi-frame" in rs[name]["error"]
        assert not (out / name).exists()
    with Image.open(out / "phone.jpg") as im:
        e = im.getexif()
        assert im.size == (60, 100) and e.get(0x0112, 1) == 1  # pixels turned, tag normalised
        assert e[0x010F] == "Canon" and e[0x0132] == "2024:05:01 10:00:00" and e.get_ifd(0x8825)[1] == "N"
    assert Image.open(out / "palette.png").mode == "P"


@pytest.mark.skipif(not CMYK_ICC.is_file(), reason=f"no CMYK ICC profile at {CMYK_ICC} (Debian's libgs-common)")
def test_cmyk_jpeg_is_converted_through_its_profile(tmp_path, cv2_inpainter):
    from PIL import ImageCms

    src = tmp_path / "in"
    src.mkdir()
    cmyk = Image.new("CMYK", (64, 48), (10, 60, 90, 5))
    cmyk.paste((0, 255, 255, 0), (10, 10, 50, 20))  # pure red in CMYK
    cmyk.save(src / "print.jpg", icc_profile=CMYK_ICC.read_bytes(), quality=95)
    out = tmp_path / "out"
    (row,) = engine(cv2_inpainter).run(src, out, progress=False)
    with Image.open(out / "print.jpg") as im:
        prof = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
        assert im.mode == "RGB" and "sRGB" in ImageCms.getProfileDescription(prof)
        ground = np.array(im)[35:45, 5:60].astype(int).mean(axis=(0, 1))
    want = np.array(ImageCms.profileToProfile(Image.new("CMYK", (1, 1), (10, 60, 90, 5)),
                                              ImageCms.ImageCmsProfile(io.BytesIO(CMYK_ICC.read_bytes())),
                                              ImageCms.createProfile("sRGB"), outputMode="RGB"))[0, 0]
    assert np.abs(ground - want).max() < 6, (ground, want)  # colours as the profile says, not Pillow's naive map
    assert row["status"] in ("ok", "clean")


def test_outputs_honour_the_umask(tmp_path, model_file):
    src = red_folder(tmp_path / "in", n=2)
    for mask, want in ((0o022, 0o644), (0o002, 0o664)):
        out = tmp_path / f"out{mask:o}"
        p = cli("repair", "--input", str(src), "--output", str(out), "--model", str(model_file), "--quiet",
                "--save-masks", str(out / "m"), umask=mask)
        assert p.returncode == 0, p.stderr
        for f in [out / "manifest.csv", *out.glob("img*"), *(out / "m").glob("*.png")]:
            assert f.stat().st_mode & 0o777 == want, (f, oct(f.stat().st_mode))


# ---- memory and models --------------------------------------------------------
def test_pixels_not_counts_bound_memory(tmp_path, cv2_inpainter):
    sizes = [10, 10, 30, 5, 5, 5, 100, 1]
    groups = list(group_by_pixels(sizes, int, group_size=4, group_pixels=30))
    assert groups == [[10, 10], [30], [5, 5, 5], [100], [1]]
    assert chunk_mem_mb([24_000_000, 1_000_000]) > chunk_mem_mb([1_000_000] * 8) > 800
    src = red_folder(tmp_path / "in", n=2, size=64)
    Image.fromarray(make_image(200, 200)).save(src / "huge.png")
    rs = {Path(r["input"]).name: r for r in engine(cv2_inpainter, max_pixels=100 * 100).run(
        src, tmp_path / "out", progress=False)}
    assert rs["huge.png"]["status"] == "failed" and "max_pixels" in rs["huge.png"]["error"]
    assert {rs[n]["status"] for n in ("img0.png", "img1.png")} <= {"ok", "clean"}


def test_model_declaring_a_huge_network_is_refused_without_allocating(tmp_path, model_file):
    ck = torch.load(model_file, weights_only=True)
    ck["meta"]["model"]["base_channels"] = 4096
    torch.save(ck, tmp_path / "evil.pt")
    assert (tmp_path / "evil.pt").stat().st_size < 100_000
    p = cli("repair", "--input", str(red_folder(tmp_path / "in")), "--output", str(tmp_path / "out"),
            "--model", str(tmp_path / "evil.pt"), "--quiet")
    assert p.returncode == 2 and "parameters" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_model_card_sha256_is_checked(tmp_path, model_file):
    from wmrepair.checkpoints import sha256_file

    card = model_file.with_suffix(".json")
    card.write_text(json.dumps({"sha256": sha256_file(model_file)}))
    args = ["repair", "--input", str(red_folder(tmp_path / "in")), "--output", str(tmp_path / "out"),
            "--model", str(model_file), "--quiet"]
    assert cli(*args).returncode == 0
    with open(model_file, "ab") as f:
        f.write(b"tampered")
    p = cli(*args, "--overwrite")
    assert p.returncode == 2 and "does not match its card" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert cli(*args, "--overwrite", "--no-verify-model").returncode == 0
