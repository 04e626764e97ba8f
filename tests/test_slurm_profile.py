"""The SLURM profile on a real one-node cluster (loopback; `.ci/slurm-up.sh` starts it, .ci/run calls that).

Every non-local rule becomes an sbatch job; the jobs that declare `gpu=1`
must reach SLURM as a GPU request (the node's GPU is a fake gres device, so
they still compute on the CPU).
"""

import re
import shutil
import subprocess

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
LOOPBACK = ["--set-threads", "train=2", "repair_chunk=2",
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
