#!/usr/bin/env bash
# Training scaling of the native token model on several GPUs of one machine, in ONE run: the same data and
# time budget with `netdiff train --gpus 1`, then `--gpus N` (one process per GPU, DDP), and the ratio of their
# packet tokens/s (the model cards' tokens_per_s) -> $OUT/scaling.json. For BENCHMARKS.md ("Training on two GPUs").
#
#   bash benchmarks/gpu_scaling.sh [DATA_DIR] [--gpus N] [--budget SECONDS] [--config base|small|tiny]
#
# DATA_DIR defaults to shared/data/iot-sentinel; --gpus 2, --budget 120, --config base. Needs N CUDA devices.
set -euo pipefail

DATA=shared/data/iot-sentinel
GPUS=2
BUDGET=120
CONFIG=base
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpus) GPUS=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) DATA=$1; shift ;;
  esac
done
OUT=${OUT:-$PWD/gpu-scaling-out}
WORK=${WORK:-$(mktemp -d /tmp/netdiff-scaling.XXXXXX)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || true
git rev-parse HEAD 2>/dev/null | sed 's/^/commit /' || true
for N in 1 "$GPUS"; do
  echo "training on $N GPU(s), ${BUDGET}s budget, preset $CONFIG"
  python3 -m netdiff_lib.cli train --data "$DATA" --out "$WORK/model_$N" --config "$CONFIG" \
    --time-budget "$BUDGET" --gpus "$N" -q --workers 8
done
python3 - "$WORK" "$GPUS" "$OUT/scaling.json" <<'PY'
import json, sys, pathlib
work, n, out = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
cards = {g: json.loads((work / f"model_{g}" / "model_card.json").read_text())["training"] for g in ("1", n)}
keys = ("processes", "device", "steps", "elapsed_s", "tokens_seen", "tokens_per_s", "final_loss", "peak_gpu_memory_gib")
res = {f"gpus_{g}": {k: c.get(k) for k in keys} for g, c in cards.items()}
res["scaling"] = round(cards[n]["tokens_per_s"] / cards["1"]["tokens_per_s"], 3)
out.write_text(json.dumps(res, indent=1))
print(json.dumps(res, indent=1))
PY
