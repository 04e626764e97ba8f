#!/usr/bin/env bash
# The device check: one GPU, a fresh copy of the tree, under 8 minutes. Writes its results to $OUT
# (default benchmarks/out/gpu): summary.json plus the JSON of each step.
#   bash benchmarks/gpu_check.sh
# Steps (each under its own timeout; a failed step is recorded, the next one still runs):
#   1. install: the python3 that holds a CUDA torch; missing packages from wheels carried in .whl/
#      (offline machines; opencv-contrib-python-headless among them, for the texture fill's cv2.xphoto)
#      or from PyPI; the ONNX Runtime / TensorRT providers where installable
#   2. tests/gpu (fp16 + GradScaler, bf16, a real CUDA OOM, predictor GPU == CPU)
#   3. wmrepair bench predict: torch fp32 / bf16 / fp16, compile, ONNX Runtime CUDA and TensorRT
#   4. wmrepair bench repair: full repair images/s against `iopaint run` on the same GPU
#   5. a two-chunk workflow run with --resources gpu=1
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu}
source benchmarks/gpu_common.sh

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

$PY - "$OUT" "$WF" "$(( $(date +%s) - T0 ))" "$(statuses)" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from gpu_summary import load, write
out, wf = Path(sys.argv[1]), Path(sys.argv[2])
write(out, int(sys.argv[3]), sys.argv[4], predict=load(out / "predict.json"), repair=load(out / "repair.json"),
      workflow_performance=sorted(str(p) for p in (wf / "results/repair/manifests").glob("*.performance.json")))
EOF
