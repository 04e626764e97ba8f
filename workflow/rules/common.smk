# Config validation, paths derived from config, and input functions.
import os
import sys
from pathlib import Path

from snakemake.utils import validate


def _validate_config():
    """Schema first (snakemake.utils.validate), then the library's own checks; one line on failure."""
    from snakemake.exceptions import WorkflowError

    from wmrepair.config import Settings, check_moved
    from wmrepair.smk import check_config

    try:
        check_moved(config)
    except ValueError as exc:
        sys.exit(f"wmrepair config error: {exc}")
    try:
        validate(config, workflow.source_path("../schemas/config.schema.yaml"))
    except WorkflowError as exc:
        import jsonschema
        import yaml

        schema = yaml.safe_load(open(workflow.source_path("../schemas/config.schema.yaml")))
        err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
        where = ".".join(str(p) for p in err.absolute_path) if err is not None else "?"
        msg = err.message if err is not None else str(exc).splitlines()[0]
        sys.exit(f"wmrepair config error: {where}: {msg}")
    try:
        Settings.from_config(config)  # the checks across fields (batch bounds, scales, ...), once, before any job
        check_config(config)
    except ValueError as exc:
        sys.exit(f"wmrepair config error: {exc}")


_validate_config()


def job_threads():
    """Threads of the heavy jobs (train, repair_chunk): every core of --cores when run locally.

    Cluster executors (--profile profiles/slurm) leave --cores unset; there each
    job asks for 8 CPUs, or what the profile's `set-threads` says.
    """
    from snakemake.exceptions import WorkflowError

    try:
        return workflow.cores
    except WorkflowError:
        return 8

RESULTS = config["results"]
LOGS = config["logs"]
BENCH = f"{RESULTS}/benchmarks"
SYNTH = f"{RESULTS}/data/synth"
USE_SYNTH_TRAIN = not config["data"]["train_dir"]
USE_SYNTH_TEST = not config["repair"]["input_dir"]
USE_OWN_MODEL = bool(config["model"]["path"])
SHIP_TO = config["model"].get("ship_to")


def made_by():
    """The command that runs this workflow's configuration (the --configfile overlays in their order), for
    the shipped detector's card."""
    overlays = [os.path.relpath(f) for f in workflow.overwrite_configfiles]
    # One --configfile with every file: Snakemake keeps only the last of repeated --configfile flags.
    return " ".join(["snakemake --cores 8 --resources gpu=1", *(["--configfile", *overlays] if overlays else [])])


def train_data_dir(split):
    """Folder with watermarked/ + masks/ (or clean/) for `split` (train or val)."""
    if USE_SYNTH_TRAIN:
        return f"{SYNTH}/{split}"
    return config["data"][f"{split}_dir"]


def synth_for_train():
    """The synthetic dataset's marker file when training uses it (else nothing)."""
    return [f"{SYNTH}/synth.json"] if USE_SYNTH_TRAIN else []


def synth_for_test():
    """The synthetic dataset's marker file when repair uses its test split (else nothing)."""
    return [f"{SYNTH}/synth.json"] if USE_SYNTH_TEST else []


def repair_input_dir():
    return f"{SYNTH}/test/watermarked" if USE_SYNTH_TEST else config["repair"]["input_dir"]


def ground_truth(kind):
    """clean/ or masks/ folder of the images being repaired, or None."""
    if USE_SYNTH_TEST:
        return f"{SYNTH}/test/{kind}"
    return config["repair"][f"{kind[:-1] if kind == 'masks' else kind}_dir"]


def input_listing(folder=None):
    """The listing fingerprint of a user folder (default `repair.input_dir`), as a rerun trigger."""
    from wmrepair.smk import input_listing as listing

    return listing(folder if folder is not None else config["repair"]["input_dir"])


def repair_chunk_mem_mb(wildcards):
    """Memory (MB) a repair_chunk job asks for before the retry multiplier: `repair.mem_mb`, or
    what its largest group of images needs (pixel counts from the chunk list)."""
    from wmrepair.chunks import chunk_mem_mb, chunk_pixels

    if config["repair"].get("mem_mb"):
        return config["repair"]["mem_mb"]
    return chunk_mem_mb(chunk_pixels(f"{RESULTS}/repair/chunks/chunk_{wildcards.i}.jsonl"), config["repair"])


def model_file():
    """The detector repair uses: model.path ('shipped' = the package's), else the one trained here."""
    from wmrepair.shipped import resolve_model

    return str(resolve_model(config["model"]["path"])) if USE_OWN_MODEL else f"{RESULTS}/model/model.pt"


def stamps_dir():
    """The stamps collection mode learnt from the inputs (repair.collection), as a chunk's input."""
    return [f"{RESULTS}/repair/stamps"] if config["repair"].get("collection", "auto") != "off" else []


def init_model():
    """The weights training starts from (train.init), as an input: new weights retrain."""
    from wmrepair.shipped import init_weights

    path = init_weights(config["train"]["init"])
    return [str(path)] if path else []


def teacher_models():
    """The detectors training distils from (train.teachers), as inputs: new teachers retrain."""
    from wmrepair.shipped import init_weights

    return [str(init_weights(t, "train.teachers")) for t in config["train"].get("teachers") or []]


def settings_of(*sections, drop=()):
    """The config sections a rule's results depend on, as a param: Snakemake
    reruns the rule (and what follows) when they change. `drop` names the
    "section.key" settings its job does not use, so changing them reruns nothing."""
    out = {s: dict(config.get(s) or {}) for s in sections}
    for key in drop:
        section, _, name = key.partition(".")
        out[section].pop(name, None)
    return out


def chunk_manifests(wildcards):
    """All chunk manifests, known once the split_inputs checkpoint has run."""
    out = checkpoints.split_inputs.get().output[0]
    ids = glob_wildcards(f"{out}/chunk_{{i}}.jsonl").i
    return expand(f"{RESULTS}/repair/manifests/chunk_{{i}}.csv", i=sorted(ids))


def final_outputs():
    outs = [f"{RESULTS}/repair/manifest.csv", f"{RESULTS}/eval/metrics.json", f"{RESULTS}/report/report.html"]
    if not USE_OWN_MODEL:
        outs += [f"{RESULTS}/model/model.pt", f"{RESULTS}/model/model.json"]
    if SHIP_TO:
        outs += [SHIP_TO]
    return outs
