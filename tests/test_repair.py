import csv
import time

import numpy as np
import pytest
import torch
from conftest import ColourDetector, make_image
from PIL import Image

from wmrepair.inpaint import Inpainter, InpaintModelUnavailable, resolve_weights
from wmrepair.optimization import OptimizationConfig
from wmrepair.predict import OptimizedWatermarkPredictor
from wmrepair.repair import (
    RepairConfig,
    RepairEngine,
    dilate,
    keep_along_mark,
    postprocess_mask,
    refine_by_change,
)


@pytest.fixture(scope="module")
def cv2_inpainter():
    return Inpainter("cv2")  # the real IOPaint model, in-process


def _engine(detector, inpainter, predict=None, **kw):
    p = OptimizedWatermarkPredictor(detector, OptimizationConfig(), predict)
    return RepairEngine(p, inpainter, RepairConfig(**kw))


def _rows(path):
    return list(csv.DictReader(open(path)))


def _folder(root, n=5):
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        ext = ".jpg" if i % 2 else ".png"
        sub = root / ("nested" if i == 3 else "")
        sub.mkdir(exist_ok=True)
        Image.fromarray(make_image(120 + 10 * i, 160, seed=i)).save(sub / f"img{i}{ext}", quality=95)
        names.append(str((sub / f"img{i}{ext}").relative_to(root)))
    return sorted(names)


def test_predict_threshold_decides_what_repair_treats_as_mark(tmp_path, colour_detector, cv2_inpainter):
    """One probability threshold (predict.threshold) for the predictor and the repair path."""
    from wmrepair.config import PredictConfig

    _folder(tmp_path / "in", n=2)
    for threshold, status in ((0.5, "ok"), (0.9999, "clean")):  # the red box scores sigmoid(8) = 0.99966
        eng = _engine(colour_detector, cv2_inpainter, PredictConfig(threshold=threshold, gate=0))
        rows = eng.run(tmp_path / "in", tmp_path / f"out{threshold}", progress=False)
        assert {r["status"] for r in rows} == {status}, threshold


def test_weak_components_are_dropped():
    prob = np.zeros((100, 100), np.float32)
    prob[10:20, 10:20] = 0.95  # a confident blob
    prob[50:60, 50:60] = 0.6  # a weak one
    both = postprocess_mask(prob, 0.5, 0.0)
    strong = postprocess_mask(prob, 0.5, 0.0, component_confidence=0.8)
    assert both[55, 55] and both[15, 15] and strong[15, 15] and not strong[55, 55]


def test_image_confidence_reads_the_most_confident_pixels():
    from wmrepair.predict import image_confidence

    prob = np.full((400, 500), 0.2, np.float32)
    assert image_confidence(prob) == pytest.approx(0.2)
    prob[10:14, 10:60] = 0.95  # a corner line: 0.1 % of the image
    assert image_confidence(prob) > 0.9
    assert image_confidence(np.zeros((3, 3), np.float32)) == 0.0  # tiny images: every pixel counts


def test_the_gate_leaves_images_below_it_untouched(tmp_path, colour_detector, cv2_inpainter):
    """predict.gate: an image whose confidence is below it is not repaired (status clean, bytes kept)."""
    from wmrepair.config import PredictConfig

    _folder(tmp_path / "in", n=2)
    for gate, status in ((0.99, "ok"), (0.9999, "clean")):  # the red box scores sigmoid(8) = 0.99966
        eng = _engine(colour_detector, cv2_inpainter, PredictConfig(gate=gate))
        rows = eng.run(tmp_path / "in", tmp_path / f"out{gate}", progress=False)
        assert {r["status"] for r in rows} == {status}, gate
        result = eng.p.predict(str(tmp_path / "in" / "img0.png"))
        assert result["has_watermark"] == (status == "ok") and result["confidence"] > 0.999


def test_real_iopaint_repairs_and_keeps_names(tmp_path, colour_detector, cv2_inpainter):
    names = _folder(tmp_path / "in")
    eng = _engine(colour_detector, cv2_inpainter)
    rows = eng.run(tmp_path / "in", tmp_path / "out", masks_dir=tmp_path / "masks", progress=False)
    assert len(rows) == len(names) and all(r["status"] == "ok" for r in rows)
    for n in names:
        src, out = tmp_path / "in" / n, tmp_path / "out" / n
        assert out.exists()
        assert Image.open(out).format == Image.open(src).format  # JPEG stays JPEG
        assert Image.open(out).size == Image.open(src).size
        before = np.asarray(Image.open(src).convert("RGB")).astype(int)
        after = np.asarray(Image.open(out).convert("RGB")).astype(int)
        red = (before[..., 0] > 200) & (before[..., 1] < 50)
        assert after[red][:, 1].mean() > 60  # the red mark was painted over
        mask = np.asarray(Image.open(tmp_path / "masks" / f"{n}.mask.png"))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255} and mask.shape == before.shape[:2]
    assert {r["input"] for r in _rows(tmp_path / "out" / "manifest.csv")} == {str(tmp_path / "in" / n) for n in names}


def test_failures_are_isolated(tmp_path, colour_detector, cv2_inpainter):
    _folder(tmp_path / "in", n=6)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    calls = {"n": 0}

    def flaky(rgb, mask):
        calls["n"] += 1
        key = rgb.shape[0]  # image i has height 120 + 10 i
        if key == 130:
            raise ValueError("forced failure")
        if key == 140:
            time.sleep(5)  # forced timeout
        if key == 160:
            raise MemoryError("simulated OOM")
        return cv2_inpainter(rgb, mask)

    eng = _engine(colour_detector, flaky, image_timeout_s=1.0, inpaint_workers=2)  # concurrent passes too
    rows = eng.run(tmp_path / "in", tmp_path / "out", progress=False)
    by = {r["input"].rsplit("/", 1)[-1]: r for r in rows}
    assert len(rows) == 7
    assert by["broken.png"]["status"] == "failed" and by["broken.png"]["error"]
    assert by["img1.jpg"]["status"] == "failed" and "forced failure" in by["img1.jpg"]["error"]
    assert by["img2.png"]["status"] == "failed" and "timed out" in by["img2.png"]["error"]
    assert by["img4.png"]["status"] == "failed" and "out of memory" in by["img4.png"]["error"]
    for ok in ("img0.png", "img3.jpg", "img5.jpg"):
        assert by[ok]["status"] == "ok"
    assert eng.memory.stats.oom_events >= 1
    assert not (tmp_path / "out" / "img1.jpg").exists()  # no half-written outputs
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_rerun_keeps_finished_images_and_their_record(tmp_path, colour_detector, cv2_inpainter):
    _folder(tmp_path / "in", n=3)
    eng = _engine(colour_detector, cv2_inpainter)
    first = eng.run(tmp_path / "in", tmp_path / "out", progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("img*")}
    again = _engine(colour_detector, cv2_inpainter)
    rows = again.run(tmp_path / "in", tmp_path / "out", progress=False)
    assert again.resumed == 3
    assert [{k: str(v) for k, v in r.items()} for r in rows] == [{k: str(v) for k, v in r.items()} for r in first]
    assert {r["status"] for r in _rows(tmp_path / "out" / "manifest.csv")} == {"ok"}  # figures kept, not 'skipped'
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("img*")}


def test_clean_image_copied_bit_for_bit_and_alpha_kept(tmp_path, colour_detector, cv2_inpainter):
    (tmp_path / "in").mkdir()
    clean = make_image(64, 64, red_box=False)
    Image.fromarray(clean).save(tmp_path / "in" / "clean.jpg", quality=80)
    rgba = np.dstack([make_image(64, 64), np.full((64, 64), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in" / "alpha.png")
    _engine(colour_detector, cv2_inpainter).run(tmp_path / "in", tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "clean.jpg").read_bytes() == (tmp_path / "in" / "clean.jpg").read_bytes()
    out = Image.open(tmp_path / "out" / "alpha.png")
    assert out.mode == "RGBA" and np.asarray(out)[..., 3].max() == 128


def test_a_repaired_jpeg_keeps_its_own_tables_so_untouched_pixels_decode_as_before(tmp_path, colour_detector,
                                                                                 cv2_inpainter):
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "photo.jpg"
    Image.fromarray(make_image(96, 128)).save(src, quality=80, subsampling=2)  # 4:2:0, as cameras write
    before = np.asarray(Image.open(src).convert("RGB")).astype(np.float32)
    for keep, out in ((True, "out"), (False, "out95")):
        _engine(colour_detector, cv2_inpainter, keep_jpeg_tables=keep).run(tmp_path / "in", tmp_path / out,
                                                                          progress=False)
    kept, q95 = Image.open(tmp_path / "out" / "photo.jpg"), Image.open(tmp_path / "out95" / "photo.jpg")
    assert kept.quantization == Image.open(src).quantization and q95.quantization != kept.quantization
    box = np.zeros(before.shape[:2], bool)
    box[64:] = True  # 16-px blocks below make_image's red box (rows 32-41) and its repair

    def psnr(im):
        d = np.asarray(im.convert("RGB")).astype(np.float32)[box] - before[box]
        return 10 * np.log10(255 ** 2 / max((d ** 2).mean(), 1e-10))
    assert psnr(kept) > 55 and psnr(kept) > psnr(q95) + 5  # the file's own tables: near-idempotent
    assert (tmp_path / "out" / "photo.jpg").stat().st_size < 1.2 * src.stat().st_size


def test_exif_orientation_honoured(tmp_path, colour_detector, cv2_inpainter):
    (tmp_path / "in").mkdir()
    img = Image.fromarray(make_image(60, 100))  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    img.save(tmp_path / "in" / "phone.jpg", exif=exif, quality=95)
    _engine(colour_detector, cv2_inpainter).run(tmp_path / "in", tmp_path / "out", progress=False)
    assert Image.open(tmp_path / "out" / "phone.jpg").size == (60, 100)  # as the user sees it


def test_iterates_while_residual_exceeds_threshold(colour_detector):
    calls = []

    def weak(rgb, mask):  # removes only half the mark per call
        calls.append(mask.sum())
        out = rgb.copy()
        ys, xs = np.nonzero(mask & (rgb == (255, 0, 0)).all(-1))
        half = len(ys) // 2
        out[ys[:half], xs[:half]] = (120, 120, 120)
        return out

    eng = _engine(colour_detector, weak, max_iterations=3, threshold=0.0, dilation=0.0)
    out, mask, iters = eng.repair_image(make_image(100, 100), OptimizedWatermarkPredictor(
        colour_detector, OptimizationConfig()).predict_proba([make_image(100, 100)])[0])
    assert iters == 3 and len(calls) == 3


def test_mask_postprocessing():
    prob = np.zeros((100, 100), np.float32)
    prob[10:30, 10:30] = 0.9
    prob[80, 80] = 0.9  # a speck
    m = postprocess_mask(prob, 0.5, min_component=1e-3)
    assert m[20, 20] and not m[80, 80]
    assert dilate(m, 0.05).sum() > m.sum()


def test_missing_weights_fail_fast_with_guidance(tmp_path, monkeypatch):
    monkeypatch.delenv("LAMA_MODEL_URL", raising=False)
    with pytest.raises(InpaintModelUnavailable) as e:
        resolve_weights("lama", tmp_path)
    assert "LAMA_MODEL_URL" in str(e.value) and "torch/hub/checkpoints/big-lama.pt" in str(e.value)
    with pytest.raises(InpaintModelUnavailable, match="unknown inpaint model"):
        resolve_weights("nonsense")
    f = tmp_path / "torch" / "hub" / "checkpoints" / "big-lama.pt"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"weights")
    assert resolve_weights("lama", tmp_path) == {"LAMA_MODEL_URL": str(f.resolve())}


def _grating_with_a_word(smooth: bool = False):
    """A striped texture (or a smooth ramp) with a white word-like block blended over it at 0.6."""
    h, w = 96, 160
    yy, xx = np.mgrid[0:h, 0:w]
    ground = 128 + (0 if smooth else 60) * np.sin(xx * 0.9 + yy * 0.35)
    clean = np.repeat(np.clip(ground + 0.2 * xx, 0, 255)[..., None], 3, axis=2).astype(np.uint8)
    hole = np.zeros((h, w), bool)
    hole[40:52, 50:110] = True
    marked = clean.copy()
    marked[hole] = (0.4 * clean[hole] + 0.6 * 255).astype(np.uint8)
    return clean, marked, hole


def _cv2_without_fill() -> Inpainter:
    from wmrepair.config import InpaintConfig

    return Inpainter(config=InpaintConfig(texture_fill=None))


def test_texture_fill_keeps_texture_that_cv2_smooths_away(cv2_inpainter):
    from wmrepair.inpaint import fill_textured

    clean, marked, hole = _grating_with_a_word()
    cv2_only = _cv2_without_fill()(marked, hole)
    painted = cv2_only.copy()
    assert fill_textured(marked, hole, painted, min_texture=3.0) == 1
    assert np.array_equal(painted[~hole], cv2_only[~hole])  # only the hole is re-filled

    def err(x):
        return float(np.abs(x[hole].astype(float) - clean[hole]).mean())

    assert err(painted) < 0.5 * err(cv2_only)  # the stripes run on through the hole
    assert np.array_equal(cv2_inpainter(marked, hole), painted)  # the inpainter applies it (default 3.0)


def test_texture_fill_keeps_to_its_pixel_budget_smallest_marks_first():
    from wmrepair.inpaint import fill_textured

    yy, xx = np.mgrid[0:96, 0:320]
    rgb = np.repeat((128 + 60 * np.sin(xx * 0.9 + yy * 0.35))[..., None], 3, axis=2).astype(np.uint8)
    small, large = np.zeros((96, 320), bool), np.zeros((96, 320), bool)
    small[40:52, 20:80] = True  # 720 px
    large[30:60, 180:300] = True  # 3600 px, 100 px away: its own group
    for budget, filled, large_kept in ((1000, 1, True), (5000, 2, False), (None, 2, False)):
        painted = np.zeros_like(rgb)
        assert fill_textured(rgb, small | large, painted, 3.0, budget) == filled
        assert painted[small].any() and (not painted[large].any()) == large_kept


def test_texture_fill_leaves_smooth_ground_to_cv2():
    from wmrepair.inpaint import fill_textured, ring_texture

    _, marked, hole = _grating_with_a_word(smooth=True)
    painted = _cv2_without_fill()(marked, hole)
    before = painted.copy()
    grey = marked.mean(axis=2).astype(np.float32)
    assert ring_texture(grey, hole) < 3.0
    assert fill_textured(marked, hole, painted, min_texture=3.0) == 0 and np.array_equal(painted, before)


def test_texture_fill_off_and_missing_contrib(monkeypatch):
    import cv2

    assert _cv2_without_fill().texture_fill is None
    monkeypatch.delattr(cv2, "xphoto")  # opencv-python without the contrib modules
    with pytest.raises(InpaintModelUnavailable, match="opencv-contrib-python-headless"):
        Inpainter("cv2")
    _cv2_without_fill()  # off: plain OpenCV is enough


def test_hd_strategy_auto_and_concurrent_cv2(colour_detector, cv2_inpainter):
    from wmrepair.inpaint import resolve_hd_strategy

    assert resolve_hd_strategy("cv2") == "Original" and resolve_hd_strategy("lama") == "Crop"
    assert resolve_hd_strategy("cv2", "Crop") == "Crop"
    assert cv2_inpainter.request.hd_strategy == "Original" and cv2_inpainter.thread_safe
    from wmrepair.hardware import usable_cpus

    assert _engine(colour_detector, cv2_inpainter).inpaint_workers == usable_cpus()  # one per core for cv2
    assert _engine(colour_detector, lambda rgb, mask: rgb).inpaint_workers == 1  # unknown callables: one at a time


class BlobbyDetector(ColourDetector):
    """The colour detector with its hits grown by 4 px: blobby, like an under-trained UNet's strokes."""

    def forward(self, x):
        return torch.nn.functional.max_pool2d(super().forward(x), 9, stride=1, padding=4)


def _strokes_on_gradient(h=96, w=128):
    img = np.zeros((h, w, 3), np.uint8)
    img[...] = np.linspace(90, 160, w, dtype=np.uint8)[None, :, None]  # smooth ground: inpaintable
    stroke = np.zeros((h, w), bool)
    for y in (30, 50, 70):
        stroke[y : y + 2, 20:108] = True  # thin text-like strokes
    img[stroke] = (255, 0, 0)
    return img, stroke


def test_refinement_trims_blobby_detections_to_the_mark(cv2_inpainter):
    img, stroke = _strokes_on_gradient()
    prob = OptimizedWatermarkPredictor(BlobbyDetector(), OptimizationConfig()).predict_proba([img])[0]
    blob = prob > 0.5
    assert blob.sum() > 3 * stroke.sum()  # the detector really is blobby

    def iou(m):
        return (m & stroke).sum() / (m | stroke).sum()

    eng = _engine(BlobbyDetector(), cv2_inpainter, refine_diff=0, max_iterations=1)
    _, unrefined, _ = eng.repair_image(img, prob)
    eng = _engine(BlobbyDetector(), cv2_inpainter, refine_diff=16, max_iterations=1)
    out, refined, _ = eng.repair_image(img, prob)
    assert iou(unrefined) < 0.35 and iou(refined) > 0.9
    assert out[stroke][:, 1].mean() > 60  # the mark is still painted over
    far = ~dilate(refined, 0.05)
    assert (out[far] == img[far]).all()  # ground the blob caught comes back bit for bit


def test_refine_by_change_keeps_only_changed_pixels():
    before = np.full((20, 20, 3), 100, np.uint8)
    painted = before.copy()
    painted[5:8, 5:15] = 180  # inpainting changed these a lot
    painted[12:15, 5:15] = 110  # and these only a little
    det = np.zeros((20, 20), bool)
    det[3:17, 3:17] = True
    out, keep = refine_by_change(before, painted, det, 16, 0.0)
    assert keep.sum() == 30 and keep[5:8, 5:15].all()
    assert (out[12:15, 5:15] == 100).all()  # small changes undone
    out, keep = refine_by_change(before, painted, det, 0, 0.0)
    assert (keep == det).all() and out is painted  # 0 = off


def test_relative_refinement_follows_each_marks_own_contrast():
    before = np.full((40, 60, 3), 100, np.uint8)
    painted = before.copy()
    det = np.zeros((40, 60), bool)
    # a strong mark (changed by 200) with a faint halo (30) inside the detection
    painted[8:12, 5:20] = 255
    painted[6:8, 5:20] = 130
    det[5:14, 4:21] = True
    # a weak mark (40) whose soft edge (20) lies on the detection's 1-px rim, plus a change 3 px out
    painted[25:29, 35:50] = 140
    painted[29, 35:50] = 120
    painted[31, 35:50] = 140
    det[24:29, 34:51] = True

    _, keep = refine_by_change(before, painted, det, 16, 0.0)  # absolute only: the halo stays, the rim is ignored
    assert keep[6:8, 5:20].all() and not keep[29:, :].any()

    _, keep = refine_by_change(before, painted, det, 16, 0.0, relative=0.25, radius=7)
    assert keep[8:12, 5:20].all() and not keep[6:8, 5:20].any()  # 30 < 0.25 x 200: the halo goes
    assert keep[25:29, 35:50].all() and keep[29, 35:50].all()  # 20 > 0.25 x 40 and > 16: the soft edge stays
    assert not keep[31].any()  # beyond the rim: never
    assert keep.sum() == 4 * 15 + 4 * 15 + 15


def test_painted_pixels_that_did_not_move_the_marks_way_get_their_own_back():
    """A white mark at 40 % on textured ground, painted as inpainting paints it (a smooth fill over
    the stroke and a dilated ring): every mark pixel moved darker, the ring's texture every which way."""
    rng = np.random.default_rng(0)
    clean = rng.integers(60, 140, (40, 60, 3)).astype(np.float32)
    stroke = np.zeros((40, 60), bool)
    stroke[18:22, 10:50] = True
    before = clean.copy()
    before[stroke] = 0.6 * clean[stroke] + 0.4 * 255
    before = before.round().astype(np.uint8)
    ring = dilate(stroke, 0.05) & ~stroke
    painted = before.copy()
    painted[stroke | ring] = 100  # the fill: the texture's mean
    out = keep_along_mark(before, painted, stroke, 4.0, 7)
    assert (out[stroke] == 100).all()  # the mark is painted over, each of its pixels lost > 4 levels of white
    moved_up = ring & (before.astype(int).mean(-1) < 100 - 4)  # painting brightened these: not the mark's way
    assert moved_up.sum() > 50 and (out[moved_up] == before[moved_up]).all()
    assert (out[~(stroke | ring)] == before[~(stroke | ring)]).all()
    err = lambda x: np.abs(x.astype(np.float32) - clean)[ring].mean()  # noqa: E731
    assert err(out) < 0.7 * err(painted)  # the ring is nearer the clean picture than the fill was
    # an engine setting: off (null), the fill stays as painted
    off, _ = refine_by_change(before, painted, stroke, 0, 0.0, along=None)
    assert off is painted
    on, keep = refine_by_change(before, painted, stroke, 0, 0.0, along=4.0)
    assert (on == out).all() and (keep == stroke).all()


def test_overlapping_detection_and_inpainting_changes_no_pixel(tmp_path, colour_detector, cv2_inpainter):
    """optimization.repair.overlap (on by default when detection runs on a GPU) inpaints a group while
    the next one is detected; forced on here, it must write what the sequential loop writes."""
    _folder(tmp_path / "in", n=7)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    out = {}
    for mode in ("off", "on"):
        opt = OptimizationConfig()
        opt.repair.overlap = mode
        eng = RepairEngine(OptimizedWatermarkPredictor(colour_detector, opt), cv2_inpainter,
                           RepairConfig(group_size=2))
        assert eng.overlap == (mode == "on")
        rows = eng.run(tmp_path / "in", tmp_path / mode, progress=False)
        out[mode] = {r["input"]: (r["status"], (tmp_path / mode / r["input"].split("/in/")[1]).read_bytes()
                                  if r["status"] == "ok" else b"") for r in rows}
        manifest = _rows(tmp_path / mode / "manifest.csv")
        assert [r["input"] for r in manifest] == [r["input"] for r in rows]
    assert out["on"] == out["off"]
    assert sorted(s for s, _ in out["on"].values()) == ["failed"] + ["ok"] * 7


def test_tiled_copies_the_detector_missed_are_repaired_too(colour_detector, cv2_inpainter, grid):
    """The colour detector sees the red copies of a tiled word, not the blue ones; the grid the red
    ones lie on marks the blue ones for inpainting (repair.tile_share), and null turns that off."""
    from wmrepair.config import PredictConfig

    full, copies = grid
    img = np.zeros(full.shape + (3,), np.uint8)
    img[...] = np.linspace(100, 170, full.shape[1], dtype=np.uint8)[None, :, None]
    ground = img.copy()
    rng = np.random.default_rng(3)
    blue = np.zeros_like(full)
    for c in copies:
        if rng.random() < 0.25:
            blue |= c
    img[full] = (255, 0, 0)
    img[blue] = (0, 0, 255)
    errs = {}
    for share in (None, 0.5):
        eng = _engine(colour_detector, cv2_inpainter, PredictConfig(gate=0), tile_share=share, max_iterations=1)
        out, mask, _ = eng.repair_image(img, eng.p.gated_proba([img])[0])
        errs[share] = np.abs(out.astype(int) - ground)[blue].mean()
        assert mask[full & ~blue].mean() > 0.9
    assert errs[None] > 60 and errs[0.5] < 10, errs
