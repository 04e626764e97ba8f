#!/usr/bin/env bash
# The device check: one GPU, a fresh copy of the tree, under 8 minutes. Writes its results to $OUT
# (default benchmarks/out/gpu): summary.json plus the JSON of each step.
#   bash benchmarks/gpu_check.sh
# Steps (each under its own timeout; a failed step is recorded, the next one still runs):
#   1. install: the python3 that holds a CUDA torch; missing packages from wheels carried in .whl/
#      (offline machines) or from PyPI; the ONNX Runtime / TensorRT providers where installable
#   2. tests/gpu (fp16 + GradScaler, bf16, a real CUDA OOM, predictor GPU == CPU)
#   3. wmrepair bench predict: torch fp32 / bf16 / fp16, compile, ONNX Runtime CUDA and TensorRT
#   4. wmrepair bench repair: full repair images/s against `iopaint run` on the same GPU
#   5. a two-chunk workflow run with --resources gpu=1
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
T0=$(date +%s)
declare -A RC

step() {  # step NAME SECONDS CMD...: run, keep the log, record the exit status
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  RC[$name]=$?
  tail -n 15 "$OUT/$name.log"
}

install() {
  if [ -d .whl ]; then  # offline: wheels carried beside the tree
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || return 1
    export PYTHONPATH=/tmp/site:$PWD/src
  else
    grep -v -E '^(torch|onnxruntime)==' requirements.txt >/tmp/req-gpu.txt
    $PY -m pip install -q -r /tmp/req-gpu.txt || return 1
    $PY -m pip install -q onnxruntime-gpu || echo "onnxruntime-gpu not installable: the ONNX Runtime rows will say so"
    $PY -m pip install -q --no-deps iopaint==1.6.0 || return 1
    $PY -m pip install -q --no-deps -e . || return 1
  fi
  $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
}

step install 240 install
export PYTHONPATH=${PYTHONPATH:-}:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/nvidia-smi.csv" 2>&1
step tests_gpu 150 $PY -m pytest -q -p no:cacheprovider tests/gpu tests/test_onnxrt.py tests/test_gpulease.py
step bench_predict 120 $PY -m wmrepair bench predict --quick --out "$OUT" --model shipped
step bench_repair 120 $PY -m wmrepair bench repair --quick --out "$OUT" --model shipped
WF=$(mktemp -d)
cat >"$WF/gpu.yaml" <<EOF
results: $WF/results
logs: $WF/logs
model: {path: shipped}
data: {synth: {n_train: 8, n_val: 4, n_test: 48}}
repair: {chunk_size: 24}
EOF
step workflow 120 $PY -m snakemake --cores 16 --resources gpu=1 --configfile config/config.yaml "$WF/gpu.yaml"

$PY - "$OUT" "$WF" "$(( $(date +%s) - T0 ))" \
  "install=${RC[install]} tests_gpu=${RC[tests_gpu]} bench_predict=${RC[bench_predict]} bench_repair=${RC[bench_repair]} workflow=${RC[workflow]}" <<'EOF'
import json, sys
from pathlib import Path
out, wf, seconds, rcs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def load(p):
    try:
        return json.loads(Path(p).read_text())
    except (OSError, ValueError):
        return None
summary = {"seconds": seconds, "exit_status": dict(kv.split("=") for kv in rcs.split()),
           "predict": load(out / "predict.json"), "repair": load(out / "repair.json"),
           "workflow_performance": sorted(str(p) for p in (wf / "results/repair/manifests").glob("*.performance.json"))}
try:
    import torch
    summary["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except Exception as exc:
    summary["gpu"] = f"unknown ({exc})"
(out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
print(json.dumps({k: summary[k] for k in ("seconds", "exit_status", "gpu")}))
EOF
