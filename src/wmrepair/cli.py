"""`wmrepair` command line. User mistakes end in one `wmrepair: error: ...` line, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("wmrepair")

EPILOG = """examples:
  wmrepair synth --out data/synth
  wmrepair repair --input photos/ --output repaired/
  wmrepair repair --input photos/ --output repaired/ --model results/model/model.pt --optimize
  wmrepair repair --input photos/ --output repaired/ --model model.pt --fast --save-masks masks/
  wmrepair bench predict
"""


class UserError(Exception):
    """A mistake in the command line or the files it names."""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


# Default of a flag whose value may be None (switched off): tells "not given" from "none".
_UNSET = object()


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def _number_in(lo: float, hi: float, unit: str = ""):
    """An argparse type: a number from lo to hi."""
    def number(s: str) -> float:
        v = float(s)
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo:g} and {hi:g}{unit}, got {s}")
        return v
    return number


def _int_in(lo: int, hi: int):
    """An argparse type: a whole number from lo to hi."""
    def whole(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {s}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {s}")
        return v
    return whole


_fraction = _number_in(0, 1)
_grey = _number_in(0, 255, " grey levels")


def _grey_or_none(s: str) -> float | None:
    """An argparse type: grey levels, or none/off for a setting that can be switched off."""
    return None if s.lower() in ("none", "off", "null") else _grey(s)


def _factors(s: str) -> tuple[float, ...]:
    """An argparse type: comma-separated scale factors, checked like `predict.scales`."""
    try:
        vals = tuple(float(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be numbers separated by commas, e.g. 0.917,1,1.083; got {s}") from None
    from wmrepair.config import check_scales

    try:
        return check_scales(vals)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---- subcommands -----------------------------------------------------------
def cmd_synth(a: argparse.Namespace) -> int:
    from wmrepair.synth import SynthConfig, synthesize

    meta = synthesize(a.out, SynthConfig(seed=a.seed, n_train=a.n_train, n_val=a.n_val, n_test=a.n_test))
    print(json.dumps(meta["counts"]))
    return 0


def cmd_cache(a: argparse.Namespace) -> int:
    from wmrepair.cache import build_cache

    cache, counts = build_cache(a.data, a.out, size=a.size)
    cache.write_index(Path(a.out) / "index.json", {"counts": counts})
    print(json.dumps(counts))
    return 0


def _optimization(a: argparse.Namespace):
    from wmrepair.optimization import OptimizationConfig

    if getattr(a, "config", None):
        import yaml

        raw = yaml.safe_load(Path(a.config).read_text()) or {}
        cfg = OptimizationConfig.from_dict(raw.get("optimization", raw))
    else:
        cfg = OptimizationConfig.from_level(getattr(a, "level", None) or "balanced")
    return cfg


def cmd_train(a: argparse.Namespace) -> int:
    from wmrepair.config import Settings
    from wmrepair.train import train_from_cache

    s = Settings.from_yaml(a.config) if a.config else Settings.from_config({})
    if a.epochs:
        s.train.epochs = a.epochs
    if a.init:
        s.train.init = a.init
    summary = train_from_cache(a.train_cache, a.val_cache, a.out, s.train, s.optimization)
    print(json.dumps({"best": summary["best"], "epochs_run": summary["epochs_run"]}, default=float))
    return 0


def cmd_select(a: argparse.Namespace) -> int:
    from wmrepair.checkpoints import export_model, select_best

    path, _ = select_best(a.checkpoints, a.monitor)
    card = export_model(path, a.model, a.card)
    print(json.dumps({"selected": str(path), "metrics": card["metrics"]}))
    return 0


def repair_settings(a: argparse.Namespace):
    """(optimization, predict, repair, inpaint settings, optimised path?) for `wmrepair repair`.

    `--config` (a workflow config) comes first, else the library's defaults (which
    equal the embedded config/config.yaml); then only the flags the user gave.
    """
    from wmrepair.config import Settings
    from wmrepair.optimization import OptimizationConfig

    raw: dict = {}
    if a.config:
        import yaml

        try:
            raw = yaml.safe_load(Path(a.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"--config {a.config}: {exc}") from None
        if not isinstance(raw, dict):
            raise UserError(f"--config {a.config} is not a mapping of config sections")
    keep = {k: raw[k] for k in ("optimization", "predict", "repair", "inpaint") if k in raw}
    s = Settings.from_config(keep)
    opt_raw = dict(raw.get("optimization") or {})
    if a.fast or a.conservative or not a.config:
        level = "aggressive" if a.fast else "conservative" if a.conservative else (
            "balanced" if a.optimize else opt_raw.get("level", "conservative"))
        s.optimization = OptimizationConfig.from_dict({**opt_raw, "level": level})
    optimized = bool(a.optimize or a.fast or a.config)
    opt, pc, rc, inpaint = s.optimization, s.predict, s.repair, s.inpaint
    if a.batch_size:
        opt.batch.initial_batch_size = a.batch_size
        opt.batch.max_batch_size = max(opt.batch.max_batch_size, a.batch_size)
        opt.batch.min_batch_size = min(opt.batch.min_batch_size, a.batch_size)
    rc.skip_existing = not a.overwrite
    for flag, obj, name in (("jpeg_quality", rc, "jpeg_quality"), ("timeout", rc, "image_timeout_s"),
                            ("pause_interval", rc, "pause_interval"), ("max_iterations", rc, "max_iterations"),
                            ("threshold", rc, "threshold"), ("mask_threshold", pc, "threshold"), ("gate", pc, "gate"),
                            ("refine_diff", rc, "refine_diff"), ("refine_relative", rc, "refine_relative"),
                            ("max_side", pc, "max_side"), ("scales", pc, "scales"),
                            ("margin_band", pc, "margin_band")):
        if getattr(a, flag) is not None:
            setattr(obj, name, getattr(a, flag))
    if a.jpeg_quality is not None:  # a quality asked for on the command line is the quality JPEGs get
        rc.keep_jpeg_tables = False
    if a.no_tta:
        pc.flip_tta = False
    for flag, key in (("inpaint_model", "model"), ("model_dir", "model_dir")):
        if getattr(a, flag) is not None:
            setattr(inpaint, key, getattr(a, flag))
    if a.texture_fill is not _UNSET:
        inpaint.texture_fill = a.texture_fill
    return opt, pc, rc, inpaint, optimized


def cmd_repair(a: argparse.Namespace) -> int:
    from wmrepair.imageio import IMAGE_EXTS, iter_images
    from wmrepair.repair import build_engine, check_paths

    inp = Path(a.input)
    if not inp.is_dir():
        raise UserError(f"--input {inp} is not a folder")
    from wmrepair.shipped import NoShippedModel, resolve_model

    try:
        a.model = str(resolve_model(a.model))
    except NoShippedModel as exc:
        raise UserError(str(exc)) from None
    if not Path(a.model).is_file():
        raise UserError(f"--model {a.model} does not exist (train one with `make run`, or point at a .pt file)")
    out = Path(a.output)
    manifest = Path(a.manifest) if a.manifest else out / "manifest.csv"
    check_paths(inp, out, manifest, a.save_masks)  # before any work: overlaps, unwritable outputs
    if not any(iter_images(inp)):
        raise UserError(f"no images ({', '.join(e[1:] for e in IMAGE_EXTS)}) under {inp}")
    opt, pc, rc, inpaint, optimized = repair_settings(a)
    from wmrepair.gpulease import acquire_gpu, wants_lease

    if wants_lease(a.device):  # one GPU per process, before torch touches CUDA (wmrepair.gpulease)
        acquire_gpu()
    if not optimized:
        log.info("optimised path off: fp32, NCHW (add --optimize or --fast for the fast path)")
    engine = build_engine(a.model, opt, pc, rc, inpaint, device=a.device, threads=a.threads, optimized=optimized,
                          verify_model=not a.no_verify_model)
    if a.collection or a.stamps:
        from wmrepair.files import PathError, check_no_overlap
        from wmrepair.stamps import estimate_folder, load_stamps

        folder = Path(a.stamps) if a.stamps else out / ".wmrepair-stamps"
        try:  # stamp pictures inside --input would come back as inputs
            check_no_overlap({"--input": inp}, {"--stamps": folder})
        except PathError as exc:
            raise UserError(str(exc)) from None
        stamps = estimate_folder(inp, engine.p, out_dir=folder) if a.collection else load_stamps(folder)
        if a.stamps and not a.collection and not (folder / "stamps.json").is_file():
            raise UserError(f"--stamps {folder}: no stamps.json there (make them with `wmrepair stamps estimate`)")
        engine.use_stamps(stamps)
        print(f"collection mode: {len(stamps)} shared stamp(s) in {folder}" +
              "".join(f"; {st.name}: {st.size[1]}x{st.size[0]}, carried by {st.support} of the sample, "
                      f"quality {st.quality:.2f}" for st in stamps))
    rows = engine.run(inp, out, manifest=manifest, masks_dir=a.save_masks, progress=not a.quiet)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "clean", "failed")}
    unstamped = sum(str(r.get("method", "")).startswith("stamp:") for r in rows)
    print(f"repaired {counts['ok']} ({unstamped} by inverting a shared stamp), clean {counts['clean']} "
          f"(copied as they were), failed {counts['failed']}; "
          f"{engine.resumed} of them done before and kept -> {out} (manifest {manifest})")
    if a.report:
        engine.analyzer.generate_performance_report(a.report, memory=engine.memory.summary())
    return 1 if counts["failed"] else 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from wmrepair.evaluate import evaluate, write_metrics

    m = evaluate(a.manifest, a.input, a.clean, a.masks, a.pred_masks)
    if a.out:
        write_metrics(m, a.out)
    print(json.dumps(m, indent=2))
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from wmrepair.report import render_report

    p = Path(a.results)
    out = render_report(a.out or p / "report" / "report.html", metrics=p / "eval/metrics.json",
                        per_image=p / "eval/per_image.csv", card=p / "model/model.json", train_dir=p / "train",
                        manifest=p / "repair/manifest.csv", bench_dir=Path(a.benchmarks),
                        performance={"train": p / "train/performance.json"})
    print(out)
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from wmrepair import bench

    return bench.main(a.what, out_dir=a.out, quick=a.quick, model=a.model, photo_set=a.set)


def cmd_info(a: argparse.Namespace) -> int:
    from wmrepair.manager import create_optimization_manager

    with create_optimization_manager(_optimization(a)) as m:
        print(json.dumps(m.get_optimization_summary(), indent=2, default=str))
    return 0


def cmd_schema(a: argparse.Namespace) -> int:
    from wmrepair.config import SCHEMA_FILE, schema_text

    if a.write:
        SCHEMA_FILE.write_text(schema_text())
        print(SCHEMA_FILE)
    else:
        print(schema_text(), end="")
    return 0


def cmd_stamps(a: argparse.Namespace) -> int:
    from wmrepair.stamps import estimate_folder, load_stamps

    if a.stamps_cmd == "show":
        if not (Path(a.folder) / "stamps.json").is_file():
            raise UserError(f"{a.folder}: no stamps.json there (make them with `wmrepair stamps estimate`)")
        stamps = load_stamps(a.folder)
    else:
        from wmrepair.predict import OptimizedWatermarkPredictor
        from wmrepair.shipped import resolve_model

        if not Path(a.input).is_dir():
            raise UserError(f"{a.input} is not a folder")
        stamps = estimate_folder(a.input, OptimizedWatermarkPredictor(resolve_model(a.model), device=a.device),
                                 out_dir=a.out)
    print(f"{len(stamps)} stamp(s)")
    for st in stamps:
        y0, x0, y1, x1 = st.box
        print(f"  {st.name}: images {st.size[1]}x{st.size[0]}, box x {x0}-{x1} y {y0}-{y1}, carried by {st.support} "
              f"of the sampled images, quality {st.quality:.2f}, peak opacity {float(st.alpha.max()):.2f}")
    return 0


def cmd_doctor(a: argparse.Namespace) -> int:
    """Check that the environment can run the whole chain offline."""
    import importlib
    import platform

    problems = []
    for mod in ("torch", "numpy", "PIL", "cv2", "skimage", "snakemake", "psutil", "pynvml", "pandas",
                "yaml", "jinja2", "matplotlib"):
        try:
            importlib.import_module(mod)
        except Exception as exc:
            problems.append(f"{mod}: {exc}")
    try:
        from wmrepair.inpaint import Inpainter

        Inpainter("cv2")
    except Exception as exc:
        problems.append(f"iopaint: {exc}")
    shipped_line = ""
    try:
        from wmrepair.checkpoints import load_model
        from wmrepair.shipped import shipped_model

        path = shipped_model()
        card = load_model(path)[1]  # checks the card's sha256 too
        shipped_line = f"shipped detector {path.name} (epoch {card.get('epoch')}) loads"
    except Exception as exc:
        problems.append(f"shipped detector: {exc}")
    import PIL
    import torch

    print(f"python {platform.python_version()}, torch {torch.__version__}, Pillow {PIL.__version__}, "
          f"CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
    if problems:
        for p in problems:
            print("problem:", p)
        return 1
    print(f"wmrepair doctor: all parts import; IOPaint cv2 model loads offline; OpenCV FSR present; {shipped_line}")
    return 0


# ---- parser ----------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wmrepair", description="Find visible watermarks with a UNet and repair them with IOPaint.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    # Defaults and help of the flags that set a config field come from its one definition (no torch).
    from wmrepair.config import (
        LEVELS,
        DataConfig,
        InpaintConfig,
        PredictConfig,
        RepairConfig,
        SynthConfig,
        TrainConfig,
    )
    from wmrepair.schema import default_of, help_for

    def setting_flag(parser: argparse.ArgumentParser, flag: str, cls: type, name: str, default: bool = False,
                     **kw) -> None:
        """A flag for `cls.name`: help (and with `default`, the default) from the definition."""
        if default:
            kw["default"] = default_of(cls, name)
        parser.add_argument(flag, help=help_for(cls, name).replace("%", "%%"), **kw)  # argparse formats help

    s = sub.add_parser("synth", help="make the offline synthetic watermark dataset")
    s.add_argument("--out", required=True, help="output folder (train/ val/ test/ inside)")
    for name in ("seed", "n_train", "n_val", "n_test"):
        setting_flag(s, "--" + name.replace("_", "-"), SynthConfig, name, default=True,
                     type=int if name == "seed" else _positive_int)
    s.set_defaults(fn=cmd_synth)

    s = sub.add_parser("cache", help="decode + resize training pairs once into memory-mapped shards")
    s.add_argument("--data", required=True, help="folder with watermarked/ and masks/ (or clean/)")
    s.add_argument("--out", required=True, help="cache folder")
    setting_flag(s, "--size", DataConfig, "cache_size", default=True, type=_positive_int)
    s.set_defaults(fn=cmd_cache)

    s = sub.add_parser("train", help="train the detector from two caches")
    s.add_argument("--train-cache", required=True, help="train cache index.json")
    s.add_argument("--val-cache", required=True, help="validation cache index.json")
    s.add_argument("--out", required=True, help="output folder (checkpoints/, history.csv, ...)")
    s.add_argument("--config", help="workflow config YAML (train: and optimization: sections)")
    setting_flag(s, "--epochs", TrainConfig, "epochs", type=_positive_int)
    setting_flag(s, "--init", TrainConfig, "init", metavar="pretrained|scratch|PATH")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("select", help="export the best checkpoint as model + JSON card")
    s.add_argument("--checkpoints", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--card", required=True)
    setting_flag(s, "--monitor", TrainConfig, "monitor", default=True,
                 choices=TrainConfig.__dataclass_fields__["monitor"].metadata["bounds"]["enum"])
    s.set_defaults(fn=cmd_select)

    rc, pc = RepairConfig, PredictConfig
    s = sub.add_parser("repair", help="repair a folder of images (no Snakemake needed)",
                       description="Detect watermarks, inpaint them with IOPaint, write each image to the same "
                                   "relative path and extension under --output, plus manifest.csv.")
    s.add_argument("--input", required=True, help="folder of images (searched recursively)")
    s.add_argument("--output", required=True, help="output folder (created)")
    s.add_argument("--model", help="detector model file, e.g. results/model/model.pt "
                                   "(default: the detector shipped in the package)")
    s.add_argument("--config", metavar="YAML",
                   help="a workflow config (its optimization, predict, repair and inpaint sections); "
                        "flags given here override it")
    s.add_argument("--optimize", action="store_true", help="optimised path: batching, channels_last, bf16/fp16 where it pays")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--fast", action="store_true", help="aggressive level (implies --optimize)")
    g.add_argument("--conservative", action="store_true", help="conservative level: small batches, fp32")
    s.add_argument("--batch-size", type=_positive_int, help="initial detection batch size (tiles)")
    setting_flag(s, "--pause-interval", rc, "pause_interval", type=_positive_int)
    setting_flag(s, "--max-iterations", rc, "max_iterations", type=int)
    setting_flag(s, "--threshold", rc, "threshold", type=_fraction)
    setting_flag(s, "--mask-threshold", pc, "threshold", type=_fraction)  # predict.threshold
    setting_flag(s, "--gate", pc, "gate", type=_fraction)
    setting_flag(s, "--margin-band", pc, "margin_band", type=_number_in(0, 0.5), metavar="SHARE")  # the setting's bounds
    setting_flag(s, "--refine-diff", rc, "refine_diff", type=_grey, metavar="LEVELS")
    setting_flag(s, "--refine-relative", rc, "refine_relative", type=_fraction, metavar="SHARE")
    setting_flag(s, "--max-side", pc, "max_side", type=int)
    s.add_argument("--no-tta", action="store_true", help="skip mirrored-tile averaging (faster detection)")
    setting_flag(s, "--scales", pc, "scales", type=_factors, metavar="F,F,...")
    s.add_argument("--save-masks", metavar="DIR", help="write <rel>.mask.png for each image under DIR")
    s.add_argument("--manifest", metavar="FILE", help="manifest CSV path (default OUTPUT/manifest.csv)")
    setting_flag(s, "--inpaint-model", InpaintConfig, "model")
    setting_flag(s, "--model-dir", InpaintConfig, "model_dir")
    setting_flag(s, "--texture-fill", InpaintConfig, "texture_fill", type=_grey_or_none, metavar="G|none")
    s.set_defaults(texture_fill=_UNSET)  # "none" switches it off, so None cannot mean "not given"
    s.add_argument("--overwrite", action="store_true",
                   help="redo every image (default: keep those the manifest records as done, redo the rest)")
    s.add_argument("--collection", action="store_true",
                   help="collection mode: first learn the stamps that 16+ images of --input share (of one "
                        "size, or centred/anchored alike on several sizes), then invert their blend on the images that carry one (the rest: per-image repair); "
                        "stamps are kept in --stamps (default OUTPUT/.wmrepair-stamps)")
    s.add_argument("--stamps", metavar="DIR", help="use the stamps in DIR (from `wmrepair stamps estimate`)")
    s.add_argument("--no-verify-model", action="store_true",
                   help="use --model even when it does not match the sha256 of the card (model.json) beside it")
    s.add_argument("--jpeg-quality", type=_int_in(1, 100), metavar="Q",
                   help="re-encode repaired JPEGs at this quality (default: each keeps its own quantisation tables, "
                        f"repair.keep_jpeg_tables) and WebP (default {default_of(rc, 'jpeg_quality')})")
    setting_flag(s, "--timeout", rc, "image_timeout_s", type=_number_in(1e-3, 1e9, " s"))
    setting_flag(s, "--device", TrainConfig, "device", default=True)
    setting_flag(s, "--threads", TrainConfig, "threads", default=True, type=int)
    s.add_argument("--report", metavar="DIR", help="write performance.json to DIR")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_repair)

    s = sub.add_parser("stamps", help="collection mode: find the stamps a folder's images share, or show them",
                       description="A stamp many images share (a stock site's preview mark) is learnt from the "
                                   "folder: where it is, its opacity and its colour. Images of several sizes are "
                                   "aligned by matching. `wmrepair repair "
                                   "--stamps DIR` then inverts its blend instead of inpainting.")
    st = s.add_subparsers(dest="stamps_cmd", required=True)
    e = st.add_parser("estimate", help="learn the shared stamps of a folder")
    e.add_argument("input", help="folder of images (searched recursively)")
    e.add_argument("--out", required=True, help="folder for the stamps (alpha.png, colour.png, stamp.json each)")
    e.add_argument("--model", help="detector (default: the shipped one)")
    setting_flag(e, "--device", TrainConfig, "device", default=True)
    e.set_defaults(fn=cmd_stamps)
    v = st.add_parser("show", help="list the stamps in a folder")
    v.add_argument("folder")
    v.set_defaults(fn=cmd_stamps)

    s = sub.add_parser("evaluate", help="PSNR/SSIM and mask IoU against ground truth")
    s.add_argument("--manifest", required=True, help="manifest.csv written by `wmrepair repair`")
    s.add_argument("--input", required=True, help="the input folder the manifest refers to")
    s.add_argument("--clean", help="clean images (same relative names, any extension): PSNR/SSIM")
    s.add_argument("--masks", help="ground-truth masks (same relative names): mask IoU/F1, needs --pred-masks")
    s.add_argument("--pred-masks", help="folder given to --save-masks")
    s.add_argument("--out", help="write the metrics JSON here (printed either way)")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("report", help="render the HTML report from a results folder")
    s.add_argument("--results", default="results")
    s.add_argument("--benchmarks", default="results/benchmarks")
    s.add_argument("--out")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("bench", help="side-by-side benchmarks (naive vs optimised)")
    s.add_argument("what", choices=["train", "predict", "repair", "real", "collection", "all"],
                   help="real: detection, repair and harm on Debian wallpaper photos training never sees "
                        "(installs the set's wallpaper and font packages; not part of all); collection: "
                        "collection mode on those pictures sharing one stamp (logo or tiled, PNG or JPEG)")
    s.add_argument("--set", choices=["test", "dev"], default="test",
                   help="real-photo set: test (GNOME/MATE/UKUI wallpapers, FreeFont: the figures the docs report) "
                        "or dev (Ubuntu Touch/KDE wallpapers, Liberation fonts: where defaults are chosen)")
    s.add_argument("--model", help="detector to measure: a .pt or shipped (default results/model/model.pt, else shipped)")
    s.add_argument("--out", default="benchmarks/out", help="where JSON results go")
    s.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser("info", help="print the effective optimisation settings for this machine")
    s.add_argument("--level", choices=list(LEVELS))
    s.add_argument("--config", help="YAML with an optimization: section")
    s.set_defaults(fn=cmd_info)

    s = sub.add_parser("schema", help="print the workflow config's JSON schema, generated from wmrepair.config",
                       description="The schema under workflow/schemas/ is generated from the settings' one "
                                   "definition in src/wmrepair/config.py; --write refreshes it after a change there.")
    s.add_argument("--write", action="store_true", help="write it to workflow/schemas/config.schema.yaml")
    s.set_defaults(fn=cmd_schema)

    s = sub.add_parser("doctor", help="check the installation (imports, IOPaint offline)")
    s.set_defaults(fn=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("wmrepair: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from wmrepair.inpaint import InpaintModelUnavailable

        if isinstance(exc, (UserError, FileNotFoundError, ValueError, InpaintModelUnavailable, NotADirectoryError)) and not args.verbose:
            print(f"wmrepair: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
