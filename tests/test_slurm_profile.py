"""The SLURM profile on a real one-node cluster (loopback; `.ci/slurm-up.sh` starts it, .ci/run calls that).

Every non-local rule becomes an sbatch job; the jobs that declare `gpu=1`
must reach SLURM as a GPU request (the node's GPU is a fake gres device, so
they still compute on the CPU).
"""

import re
import shutil
import subprocess
from datetime import datetime

import pandas as pd
import pytest
import yaml
from test_workflow import ROOT, SNAKEMAKE, TINY


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return p.returncode == 0 and any(s.strip() in ("idle", "mixed", "allocated") for s in p.stdout.split())


pytestmark = pytest.mark.skipif(not _cluster_up(), reason="no SLURM cluster (sinfo finds no node up); "
                                "sudo .ci/slurm-up.sh starts a loopback one")

# On top of profiles/slurm: a 2-CPU node, small jobs, and short status polls for a fast test.
LOOPBACK = ["--set-threads", "train=2", "repair_chunk=2", "estimate_stamps=2",
            "--default-resources", "mem_mb=3000", "runtime=30",
            "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2"]


def run_profile(wd, *extra):
    (wd / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(wd), "--configfile", str(ROOT / "config/config.yaml"),
           str(wd / "tiny.yaml"), "--profile", str(ROOT / "profiles/slurm"), *LOOPBACK, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def test_workflow_through_slurm_profile(tmp_path):
    p = run_profile(tmp_path)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-5000:]
    jobs = dict(re.findall(r"slurm_logs/rule_(\w+)/(?:[^/\s]+/)?(\d+)\.log", log))
    for rule in ("synthesize_dataset", "cache_dataset", "train", "repair_chunk", "evaluate"):
        assert rule in jobs, f"{rule} was not submitted to SLURM:\n{log[-3000:]}"
    assert "select_checkpoint" not in jobs  # a local rule: runs in the Snakemake process

    def gres(job_id: str) -> str:
        out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        return re.search(r"TresPerJob=(\S*)", out).group(1) if "TresPerJob=" in out else ""

    assert "gpu:1" in gres(jobs["train"]) and "gpu:1" in gres(jobs["repair_chunk"])
    assert "gpu" not in gres(jobs["synthesize_dataset"])

    r = tmp_path / "results"
    manifest = pd.read_csv(r / "repair/manifest.csv")
    # Every image processed, none failed (a 2-epoch model may leave them all below predict.gate: clean)
    assert len(manifest) == TINY["data"]["synth"]["n_test"] and set(manifest.status) <= {"ok", "clean"}
    assert (r / "eval/metrics.json").exists() and (r / "report/report.html").exists()

    again = run_profile(tmp_path, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def _stamp(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def test_two_chunks_run_at_once_on_the_two_gpus_slurm_hands_out(tmp_path):
    """The loopback node has two fake GPUs: SLURM gives each chunk job its own CUDA_VISIBLE_DEVICES
    and the job's GPU lease (wmrepair.gpulease) stays within it, so the two never share a device."""
    cfg = {**TINY, "model": {"path": "shipped"}, "data": {"synth": {**TINY["data"]["synth"], "n_test": 8,
                                                                     "test_sizes": [[320, 240]]}}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    loopback = [a if a != "repair_chunk=2" else "repair_chunk=1" for a in LOOPBACK]
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile",
           str(ROOT / "config/config.yaml"), str(tmp_path / "tiny.yaml"), "--profile", str(ROOT / "profiles/slurm"),
           *loopback]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-5000:]
    spans = []
    for log in sorted((tmp_path / "logs/repair_chunk").glob("chunk_*.log")):
        lines = [ln for ln in log.read_text().splitlines() if ln[:4].isdigit()]
        lease = next(ln for ln in lines if "GPU lease: device" in ln)
        spans.append((lease.split("GPU lease: device ")[1].split()[0], _stamp(lines[0]), _stamp(lines[-1])))
    assert len(spans) >= 2 and {d for d, _, _ in spans} == {"0", "1"}, spans
    together = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if a[1] < b[2] and b[1] < a[2]]
    assert together, f"no two chunks ran at once: {spans}"
    assert all(a[0] != b[0] for a, b in together), f"two chunks shared a GPU: {spans}"
