"""The HTML report: jinja2 over whatever the run produced (missing parts are simply left out)."""

from __future__ import annotations

import base64
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape


def _json(path: str | Path | None) -> Any:
    if path and Path(path).is_file():
        return json.loads(Path(path).read_text())
    return None


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plot_history(history_csv: str | Path) -> str | None:
    if not Path(history_csv).is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = pd.read_csv(history_csv)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.2))
    ax[0].plot(h.epoch, h.train_loss, label="train")
    ax[0].plot(h.epoch, h.val_loss, label="val")
    ax[0].set_title("loss")
    ax[0].legend()
    ax[1].plot(h.epoch, h.val_iou, label="IoU")
    ax[1].plot(h.epoch, h.val_f1, label="F1")
    ax[1].set_title("validation")
    ax[2].plot(h.epoch, h.samples_per_s)
    ax[2].set_title("samples/s")
    small = h[h.train_side < h.train_side.max()] if "train_side" in h else h.iloc[:0]
    for a in ax:
        a.set_xlabel("epoch")
        if len(small):  # progressive resizing: these epochs train and validate on shrunk images
            a.axvspan(small.epoch.min() - 0.5, small.epoch.max() + 0.5, color="0.9", zorder=0,
                      label=f"trained and validated at {int(small.train_side.min())} px")
    ax[1].legend()  # after the shading, so that it names the band too
    return _png(fig)


def plot_resources(resources_csv: str | Path) -> str | None:
    if not Path(resources_csv).is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = pd.read_csv(resources_csv)
    if r.empty:
        return None
    fig, ax = plt.subplots(1, 2, figsize=(13, 3))
    ax[0].plot(r.t, r.cpu_percent)
    ax[0].set_title("train: CPU % (100 = one core)")
    ax[1].plot(r.t, r.rss_mb, label="RSS")
    if r.gpu_mem_used_mb.max() > 0:
        ax[1].plot(r.t, r.gpu_mem_used_mb, label="GPU memory")
    ax[1].set_title("memory (MB)")
    ax[1].legend()
    for a in ax:
        a.set_xlabel("seconds")
    return _png(fig)


def read_benchmarks(bench_dir: str | Path | None) -> list[dict[str, Any]]:
    out = []
    if bench_dir and Path(bench_dir).is_dir():
        for f in sorted(Path(bench_dir).rglob("*.tsv")):
            df = pd.read_csv(f, sep="\t")
            if df.empty:
                continue
            row = df.iloc[-1]
            out.append({"job": str(f.relative_to(bench_dir).with_suffix("")), "s": float(row.get("s", 0)),
                        "max_rss": float(row.get("max_rss", 0) if row.get("max_rss", "-") != "-" else 0),
                        "mean_load": float(row.get("mean_load", 0) if row.get("mean_load", "-") != "-" else 0),
                        "cpu_time": float(row.get("cpu_time", 0) if row.get("cpu_time", "-") != "-" else 0)})
    return out


def stamp_cards(stamps_dir: str | Path | None, manifest: str | Path | None) -> list[dict[str, Any]]:
    """Each stamp collection mode learnt: its alpha and colour as pictures, its support, the images that used it."""
    import numpy as np
    from PIL import Image

    from wmrepair.stamps import load_stamps, png_bytes

    used: dict[str, list[str]] = {}
    if manifest and Path(manifest).is_file():
        m = pd.read_csv(manifest, keep_default_na=False)
        if "method" in m:
            for inp, method in zip(m.input, m.method):
                if str(method).startswith("stamp:"):
                    used.setdefault(str(method)[6:], []).append(Path(inp).name)
    cards = []
    for st in load_stamps(stamps_dir):
        y0, x0, y1, x1 = st.box
        alpha = Image.fromarray((st.alpha.clip(0, 1) * 255).astype(np.uint8))
        colour = Image.fromarray(st.colour().astype(np.uint8))
        cards.append({"name": st.name, "size": f"{st.size[1]}x{st.size[0]}", "box": f"x {x0}-{x1}, y {y0}-{y1}",
                      "support": st.support, "quality": st.quality,
                      "alpha": base64.b64encode(png_bytes(alpha)).decode(),
                      "colour": base64.b64encode(png_bytes(colour)).decode(), "used": used.get(st.name, [])})
    return cards


def render_report(out_html: str | Path, *, metrics: str | Path | None = None, per_image: str | Path | None = None,
                  card: str | Path | None = None, train_dir: str | Path | None = None,
                  manifest: str | Path | None = None, bench_dir: str | Path | None = None,
                  performance: dict[str, str | Path] | None = None, level: str = "balanced",
                  stamps_dir: str | Path | None = None) -> Path:
    train_dir = Path(train_dir) if train_dir else None
    perf = {k: v for k, v in ((k, _json(p)) for k, p in (performance or {}).items()) if v}
    bottlenecks = [{**b, "source": name} for name, p in perf.items() for b in p.get("bottlenecks", [])]
    train = _json(train_dir / "summary.json") if train_dir else None
    failed = []
    if manifest and Path(manifest).is_file():
        m = pd.read_csv(manifest, keep_default_na=False)
        failed = m[m.status == "failed"][["input", "error"]].to_dict("records")
    per = pd.read_csv(per_image).to_dict("records") if per_image and Path(per_image).is_file() else []
    eff = (train or {}).get("effective_optimization", {})
    # What the jobs ran on: training's summary and each repair profile (a run with your own model has no training).
    ran = next((p.get("settings", {}) for p in perf.values() if p.get("settings", {}).get("device")), {})
    devices = sorted({d for d in [(train or {}).get("device"), *(p.get("settings", {}).get("device") for p in perf.values())]
                      if d})
    env = Environment(loader=PackageLoader("wmrepair", "templates"), autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("report.html.j2").render(
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        level=eff.get("level") or ran.get("level") or level, device=", ".join(devices) or "device not recorded",
        metrics=_json(metrics), card=_json(card), train=train,
        plots={"history": plot_history(train_dir / "history.csv") if train_dir else None,
               "resources": plot_resources(train_dir / "resources.csv") if train_dir else None},
        benchmarks=read_benchmarks(bench_dir), performance=perf, bottlenecks=bottlenecks,
        failed=failed, per_image=per, decisions=eff.get("decisions", []), gallery=gallery(manifest, per_image),
        stamps=stamp_cards(stamps_dir, manifest),
    )
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
    return out


# The gallery: before/after thumbnails in the report, worst first, within a byte budget.
GALLERY_IMAGES = 12
GALLERY_SIDE = 360  # thumbnail long side (px)
GALLERY_BYTES = 8_000_000  # the whole gallery's embedded JPEGs, so that the report stays one portable file


def _thumb(rgb: Any, mask: Any | None = None) -> str:
    """A JPEG thumbnail as base64; `mask` tints the detected pixels red."""
    import numpy as np
    from PIL import Image

    im = Image.fromarray(rgb)
    scale = GALLERY_SIDE / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    if mask is not None:
        m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(im.size, Image.NEAREST)) > 0
        a = np.asarray(im).astype(np.float32)
        a[m] = 0.45 * a[m] + 0.55 * np.array([255, 0, 0], np.float32)
        im = Image.fromarray(a.astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode()


def gallery(manifest: str | Path | None, per_image: str | Path | None = None, limit: int = GALLERY_IMAGES,
            budget: int = GALLERY_BYTES) -> list[dict[str, Any]]:
    """Input (detected mark in red) beside output for the images a reader should look at.

    Repaired images: with ground truth, those the repair harmed most (PSNR change)
    and helped most, and two at random; without, the largest repairs. Then every
    `failed` and `clean` row (the input alone: a clean output is the same bytes).
    Stops before the embedded thumbnails pass `budget` bytes.
    """
    from wmrepair.imageio import read_image, read_mask

    if not manifest or not Path(manifest).is_file():
        return []
    rows = pd.read_csv(manifest, keep_default_na=False)
    ok = rows[rows.status == "ok"]
    per = pd.read_csv(per_image) if per_image and Path(per_image).is_file() else None
    if per is not None and "psnr_output" in per and per["psnr_output"].notna().any():
        per = per.assign(change=per.psnr_output - per.psnr_input).dropna(subset=["change"])
        ok = ok.merge(per[["input", "change", "marked"]], on="input", how="inner").sort_values("change")
        k = max(1, (limit - 2) // 2)
        ends = pd.concat([ok.head(k), ok.iloc[max(k, len(ok) - k):]])
        rest = ok.drop(ends.index)
        picked = pd.concat([ends, rest.sample(min(2, len(rest)), random_state=0)]).head(limit)
    else:
        picked = ok.assign(change=float("nan")).sort_values("mask_fraction", ascending=False).head(limit)
    others = rows[rows.status.isin(["failed", "clean"])].sort_values("status")
    out, used = [], 0
    for r in [*picked.to_dict("records"), *others.to_dict("records")]:
        repaired = r["status"] == "ok"
        try:
            before = read_image(r["input"]).rgb
            after = read_image(r["output"]).rgb if repaired else None
            mask = read_mask(r["mask"]) if repaired and r.get("mask") and Path(r["mask"]).is_file() else None
        except Exception:  # a file that cannot be read back is in the manifest table anyway
            continue
        change = r.get("change")
        item = {"input": Path(r["input"]).name, "status": r["status"], "error": r.get("error", ""),
                "before": _thumb(before, mask), "after": _thumb(after) if after is not None else None,
                "change": None if change is None or change != change else float(change),
                "marked": r.get("marked"), "mask_fraction": float(r.get("mask_fraction") or 0)}
        size = len(item["before"]) + len(item["after"] or "")
        if used + size > budget:
            break
        used += size
        out.append(item)
    return out
