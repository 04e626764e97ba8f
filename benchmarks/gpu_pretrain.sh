#!/usr/bin/env bash
# Train a candidate shipped detector on one GPU: both stages of config/pretrain.yaml and
# config/pretrain_structure.yaml, with a wider UNet and a larger set, sized for one device command
# (at most 10 minutes).
# Nothing is shipped: the two selected models (fp32) and their figures come back in $OUT, and the
# choice is made afterwards on the real-photo dev set, here on the CPU:
#   python benchmarks/tune_repair.py $OUT/stage2.pt OUT --split benchmarks/out/real_dev/real_dev/data ''
#   bash benchmarks/gpu_pretrain.sh                  # defaults below; each is an environment variable
#   WIDTH=32 N_TRAIN=12000 bash benchmarks/gpu_pretrain.sh
#   INIT1=pretrained EPOCHS1=20 bash benchmarks/gpu_pretrain.sh   # stage 1 from the shipped detector, widened
# Files in $OUT (default benchmarks/out/gpu_pretrain): stage1.pt, stage2.pt (with .json cards),
# summary.json (settings, seconds, val IoU and samples/s per epoch, synthetic dev figures of the
# shipped detector and of stage 2), logs.tar.gz (the step and rule logs). The defaults are sized
# from the 2-core CPU's throughput scaled by guesswork: the first GPU run should read samples/s in
# summary.json and set N_TRAIN, the epochs and the budgets from it. SKIP_INSTALL=1 and ALLOW_CPU=1
# run it on a CPU with tiny sizes (how it is tested).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu_pretrain}
WIDTH=${WIDTH:-24}         # base channels: 24 has 2.25x the shipped 16's compute, ~3.3 M parameters (fp16 ~6.6 MB)
N_TRAIN=${N_TRAIN:-6000}   # per stage, each with its own seed (1 and 2, as the shipped stages)
EPOCHS1=${EPOCHS1:-40}     # stage 1 from scratch (40 % of the epochs at 128 px)
EPOCHS2=${EPOCHS2:-20}     # stage 2, fine-tuned from stage 1 with the scene structures
BATCH=${BATCH:-32}
BUDGET1=${BUDGET1:-150}    # seconds: each stage stops at the first epoch end past its budget
BUDGET2=${BUDGET2:-90}
CORES=${CORES:-$(nproc)}
INIT1=${INIT1:-}           # stage 1's start: empty = random weights; pretrained = the shipped detector, widened to WIDTH
HARD_NEG=${HARD_NEG:-0.1}  # train.hard_negative_weight of both stages (the shipped third stage's; 0 = the first two stages' loss)
WF=$(mktemp -d)
LOGDIR=$WF/steps  # into logs.tar.gz: $OUT brings back at most 8 files
mkdir -p "$LOGDIR"
source benchmarks/gpu_common.sh

if [ "${SKIP_INSTALL:-0}" = 1 ]; then RC[install]=skipped; else step install 240 install; fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD/src PYTHONUNBUFFERED=1
if [ "${ALLOW_CPU:-0}" != 1 ]; then
  $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
fi

overlay() {  # overlay STAGE N_TRAIN EPOCHS BUDGET [INIT]: the keys this script changes in a stage's config
  cat <<EOF
results: $WF/$1/results
logs: $WF/$1/logs
data: {synth: {n_train: $2, n_test: 8}}
train:
  epochs: $3
  batch_size: $BATCH
  time_budget_s: $4
  hard_negative_weight: $HARD_NEG
  model: {base_channels: $WIDTH}
${5:+  init: $5}
model: {ship_to: null}
EOF
}
overlay stage1 "$N_TRAIN" "$EPOCHS1" "$BUDGET1" "$INIT1" >"$WF/stage1.yaml"
overlay stage2 "$N_TRAIN" "$EPOCHS2" "$BUDGET2" "$WF/stage1/results/model/model.pt" >"$WF/stage2.yaml"
step stage1 $((BUDGET1 + 200)) $PY -m snakemake --cores "$CORES" --resources gpu=1 \
  --configfile config/pretrain.yaml "$WF/stage1.yaml" -- "$WF/stage1/results/model/model.pt"
step stage2 $((BUDGET2 + 150)) $PY -m snakemake --cores "$CORES" --resources gpu=1 \
  --configfile config/pretrain_structure.yaml "$WF/stage2.yaml" -- "$WF/stage2/results/model/model.pt"
for s in stage1 stage2; do
  cp "$WF/$s/results/model/model.pt" "$OUT/$s.pt" 2>/dev/null && cp "$WF/$s/results/model/model.json" "$OUT/$s.json"
done
# Synthetic dev splits (training words and fonts, test sizes; seeds 0 and 7 as in DEVNOTES): shipped and stage 2.
step dev 240 $PY - "$WF" "$OUT" <<'EOF'
import json, subprocess, sys
from pathlib import Path
from wmrepair.config import SynthConfig
from wmrepair.synth import synthesize
wf, out = Path(sys.argv[1]), Path(sys.argv[2])
figures = {}
for seed in (0, 7):
    split = wf / f"dev{seed}"
    synthesize(split, SynthConfig(seed=seed, n_train=0, n_val=0, n_test=0, n_dev=48), progress=False)
    for name, model in (("shipped", "shipped"), ("stage2", str(out / "stage2.pt"))):
        if model != "shipped" and not Path(model).is_file():
            continue
        run = wf / f"tune_{name}_{seed}"
        subprocess.run([sys.executable, "benchmarks/tune_repair.py", model, str(run), "--split", str(split / "dev"), ""],
                       check=True)
        figures[f"{name}_seed{seed}"] = json.loads((run / "tune.json").read_text())[0]
(wf / "dev.json").write_text(json.dumps(figures, indent=1))
keys = ("mask_iou", "psnr_output", "clean_altered", "n_unmarked", "marked_worse", "n_marked")
for k, v in figures.items():
    print(k, {key: v.get(key) for key in keys})
EOF
tar -czf "$OUT/logs.tar.gz" -C "$WF" --exclude='*/results/data' --exclude='*/results/cache' \
  --exclude='*/results/train/checkpoints' --exclude='*/results/model' --exclude='dev?' --exclude='tune_*' . 2>/dev/null

$PY - "$OUT" "$WF" "$(( $(date +%s) - T0 ))" "$(statuses)" \
  "width=$WIDTH init1=${INIT1:-scratch} hard_neg=$HARD_NEG n_train=$N_TRAIN epochs1=$EPOCHS1 epochs2=$EPOCHS2 batch=$BATCH budget1=$BUDGET1 budget2=$BUDGET2" <<'EOF'
import csv, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from gpu_summary import load, write
out, wf = Path(sys.argv[1]), Path(sys.argv[2])
stages = {}
for s in ("stage1", "stage2"):
    history = wf / s / "results/train/history.csv"
    stages[s] = {"card": load(out / f"{s}.json"), "train": load(wf / s / "results/train/summary.json"),
                 "history": list(csv.DictReader(history.open())) if history.is_file() else None}
write(out, int(sys.argv[3]), sys.argv[4], settings=dict(kv.split("=") for kv in sys.argv[5].split()),
      dev=load(wf / "dev.json"), **stages)
EOF
