#!/usr/bin/env bash
# Every GPU check and timing of a lent-GPU session in one call (device time is short):
#   bash bench/gpu_session.sh OUTDIR [DATADIR]
# DATADIR holds tinyshakespeare.txt (a copy of ../shared/data's); the pretrain run is skipped
# without it. Each part has its own time limit (together under 600 s, one device call).
set -u
out=${1:?usage: gpu_session.sh OUTDIR [DATADIR]}
data=${2:-}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
summary() {  # the validation losses and the last training record of a run's metrics.jsonl
  $py -c "
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for r in rows:
    if 'val_loss' in r or 'train_eval_loss' in r:
        print(r)
print([r for r in rows if 'loss' in r][-1])" "$1/metrics.jsonl"
}
part() {  # part NAME SECONDS CMD...: run with a limit, log to OUTDIR/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
$py -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
part check 60 $py bench/gpu_check.py
part train 330 $py bench/gpu_train.py --peak --reps 3 --contenders transformers,ours,minimal,ours-cudnn,ours-graphs,ours-tuned,ours-cudnn-graphs-tuned --profile ours
if [ -n "$data" ]; then
  part shakespeare 60 $py -m scratchllm pretrain --config examples/shakespeare-char.toml \
    --data "$data/tinyshakespeare.txt" --out /tmp/run-shakespeare --no-progress
  summary /tmp/run-shakespeare
fi
part generate 130 $py bench/gpu_generate.py --reps 3 --profile
