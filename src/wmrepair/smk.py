"""Workflow glue: config checks that run before any job, and helpers for the thin rule scripts."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any


def setup(snakemake: Any) -> None:
    """Send stdout/stderr and logging of a `script:` job to its `log:` file; honour `threads`; lease
    one GPU for a job that declares the `gpu` resource (wmrepair.gpulease)."""
    if snakemake.log:
        f = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stdout = sys.stderr = f
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    if int(getattr(snakemake, "resources", {}).get("gpu", 0) or 0) > 0:  # before torch touches CUDA
        from wmrepair.gpulease import acquire_gpu, wants_lease

        train = (getattr(snakemake.params, "settings", None) or {}).get("train") or {}
        if wants_lease(train.get("device", "auto")):
            acquire_gpu()
    try:
        import torch

        from wmrepair.hardware import usable_cpus

        # --cores 8 on a 2-core box would oversubscribe torch (measured 6x slower).
        torch.set_num_threads(max(1, min(int(snakemake.threads), usable_cpus())))
    except ImportError:  # pragma: no cover
        pass


def settings(snakemake: Any):
    """The typed settings of the sections the rule passes as `params.settings` (what its job runs).

    Built from the params, not the whole config: the rerun trigger (Snakemake
    compares params) and the settings the job uses cannot drift apart.
    """
    from wmrepair.config import Settings

    return Settings.from_config(snakemake.params.settings)


def written_dirs(config: dict[str, Any]) -> dict[str, str]:
    """The folders a run of this config writes, by the name a user sees in an error."""
    subdirs = ["repair", "eval", "report", "benchmarks"]
    if not config["data"]["train_dir"] or not config["repair"]["input_dir"]:
        subdirs.append("data")
    if not config["model"]["path"]:
        subdirs += ["cache", "train", "model"]
    return {**{f"results/{d}": f"{config['results']}/{d}" for d in subdirs}, "logs": config["logs"]}


def check_config(config: dict[str, Any], cwd: str | Path | None = None) -> None:
    """The checks a schema cannot make; ValueError with one line naming the setting.

    Folders exist, an input folder holds images, nothing the run writes overlaps
    anything it reads (both directions), and `results`/`logs` are folders of
    their own (not '', '/', a system folder or the working folder).
    """
    from wmrepair.files import PathError, check_dedicated_dir, check_no_overlap
    from wmrepair.imageio import IMAGE_EXTS, iter_images

    data, rep, model = config["data"], config["repair"], config["model"]
    if bool(data["train_dir"]) != bool(data["val_dir"]):
        raise ValueError("data.train_dir and data.val_dir must be set together")
    folders = {"data.train_dir": data["train_dir"], "data.val_dir": data["val_dir"],
               "data.backgrounds_dir": data.get("backgrounds_dir"),
               "repair.input_dir": rep["input_dir"], "repair.clean_dir": rep.get("clean_dir"),
               "repair.mask_dir": rep.get("mask_dir"), "inpaint.model_dir": config.get("inpaint", {}).get("model_dir")}
    for key, d in folders.items():
        if d and not Path(d).is_dir():
            raise ValueError(f"{key}: folder {d} does not exist")
    if data.get("backgrounds_dir") and next(iter_images(data["backgrounds_dir"]), None) is None:
        raise ValueError(f"data.backgrounds_dir: no images under {data['backgrounds_dir']}")
    if rep["input_dir"] and next(iter_images(rep["input_dir"]), None) is None:
        raise ValueError(f"repair.input_dir: no images ({', '.join(e[1:] for e in IMAGE_EXTS)}) under {rep['input_dir']}")
    from wmrepair.shipped import SHIPPED, init_weights, resolve_model

    key = "model.path" if model["path"] else "train.init"
    try:
        if model["path"] and not resolve_model(model["path"]).is_file():
            raise ValueError(f"model.path: file {model['path']} does not exist")
        if not model["path"]:
            init_weights(config["train"]["init"])
            key = "train.teachers"
            for teacher in config["train"].get("teachers") or []:
                init_weights(teacher, key)
    except FileNotFoundError as exc:  # no shipped detector in this install, or no such file
        msg = str(exc) if str(exc).startswith(key) else f"{key}: {exc}"
        raise ValueError(msg) from None
    try:
        for key in ("results", "logs"):
            check_dedicated_dir(key, config.get(key), cwd)
        own = model["path"] if model["path"] != SHIPPED else None
        check_no_overlap({**{k: v for k, v in folders.items() if v}, "model.path": own},
                         written_dirs(config))
    except PathError as exc:
        raise ValueError(str(exc)) from None


def input_listing(input_dir: str | Path | None) -> str:
    """The rerun trigger of `split_inputs`: a user folder's listing fingerprint (synthetic inputs follow synth.json)."""
    from wmrepair.chunks import listing_fingerprint

    return listing_fingerprint(input_dir) if input_dir else "synthetic"
