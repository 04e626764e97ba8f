# Shared by the device scripts (gpu_check.sh, gpu_pretrain.sh): `step` runs one timed step and keeps its
# log under $OUT; `install` makes the python3 that holds a CUDA torch able to import wmrepair.
# The caller sets OUT (and LOGDIR, where the step logs go; default $OUT) and sources this file from the
# repository root. PYTHON picks the interpreter (default python3).
mkdir -p "$OUT"
PY=${PYTHON:-python3}
T0=$(date +%s)
declare -A RC

statuses() {  # "step=rc ..." of every step run so far, for gpu_summary.write
  local k
  for k in "${!RC[@]}"; do printf '%s=%s ' "$k" "${RC[$k]}"; done
}

step() {  # step NAME SECONDS CMD...: run, keep the log, record the exit status
  local name=$1 limit=$2
  shift 2
  local log=${LOGDIR:-$OUT}/$name.log
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$log" 2>&1
  RC[$name]=$?
  tail -n 15 "$log"
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
