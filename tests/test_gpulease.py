"""GPU leases on a CPU machine with a faked device list (CUDA_VISIBLE_DEVICES names devices that
need not exist: the lease only narrows the variable, it never touches CUDA)."""

import os
import signal
import subprocess
import sys
import time

from wmrepair import gpulease

HOLD = """
import os, sys, time
from wmrepair.gpulease import acquire_gpu
lease = acquire_gpu()
t0 = time.time()
print("held", os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(float(sys.argv[1]))
print(lease.device, t0, time.time(), flush=True)
"""


def _env(tmp_path, devices):
    return {**os.environ, "CUDA_VISIBLE_DEVICES": devices, gpulease.LOCK_DIR_ENV: str(tmp_path)}


def test_four_jobs_on_two_gpus_never_share_one(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", HOLD, "0.6"], env=_env(tmp_path, "0,1"),
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    spans = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        held, last = out.strip().splitlines()
        dev, t0, t1 = last.split()
        assert held == f"held {dev}"  # the job saw only the device it leased
        spans.append((dev, float(t0), float(t1)))
    assert {d for d, _, _ in spans} == {"0", "1"}
    for i, (d1, a1, b1) in enumerate(spans):
        for d2, a2, b2 in spans[i + 1:]:
            assert d1 != d2 or b1 <= a2 or b2 <= a1, f"device {d1} held by two jobs at once: {spans}"


def test_a_killed_holder_frees_its_gpu_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, "600"], env=_env(tmp_path, "7"),
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held 7"
    waiter = subprocess.run([sys.executable, "-c", HOLD.replace("acquire_gpu()", "acquire_gpu(wait_s=0.5)"), "0"],
                            env=_env(tmp_path, "7"), capture_output=True, text=True, timeout=60)
    assert waiter.returncode != 0 and "stayed leased" in waiter.stderr  # held: nobody else gets it
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    t = time.monotonic()
    after = subprocess.run([sys.executable, "-c", HOLD.replace("acquire_gpu()", "acquire_gpu(wait_s=5)"), "0"],
                           env=_env(tmp_path, "7"), capture_output=True, text=True, timeout=60)
    assert after.returncode == 0 and after.stdout.startswith("held 7"), after.stderr
    assert time.monotonic() - t < 30


def test_lease_stays_within_a_list_set_by_slurm_or_the_user(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setenv(gpulease.LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(gpulease, "_held", [])
    assert gpulease.visible_devices() == ["3", "5"]
    lease = gpulease.acquire_gpu()
    try:
        assert lease.device == "3" and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert gpulease.acquire_gpu() is lease  # one lease per process
    finally:
        lease.release()


def test_no_gpu_is_a_no_op(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(gpulease, "_held", [])
    assert gpulease.visible_devices() == []
    assert gpulease.acquire_gpu() is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert not gpulease.wants_lease("cpu") and not gpulease.wants_lease("cuda:1")
