#!/usr/bin/env bash
# Issue 21's long capture on a GPU machine, in ONE command that fits the device's 10-minute limit:
# benchmarks/long_run.py builds the >= 10-million-packet capture (the samples and DATA_DIR replayed, with a
# CIC-IDS2017 CSV and an IoT-23 conn.log), trains the native backend on the flow traces of its first
# --train-packets packets (labels from the CSV), generates, cuts real flow traces and evaluates; the results
# are packed under $OUT (long_run.json, the log, the model card and loss, the generated pcaps, the real cuts).
#
#   bash benchmarks/gpu_long_run.sh [DATA_DIR] [-- LONG_RUN_ARGS...]
#
# e.g. bash benchmarks/gpu_long_run.sh -- --config base --train-budget 240 --train-packets 2000000
# DATA_DIR defaults to shared/data/iot-sentinel. The evaluate stage needs nfstream; where the machine has none,
# its pcaps come back and `netdiff evaluate` runs elsewhere on them.
set -euo pipefail
DATA=shared/data/iot-sentinel
if [[ $# -gt 0 && $1 != "--" ]]; then DATA=$1; shift; fi
[[ ${1:-} == "--" ]] && shift
OUT=${OUT:-$PWD/gpu-long-out}
WORK=${WORK:-$(mktemp -d /tmp/netdiff-long.XXXXXX)}
DEADLINE=${DEADLINE:-560}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
pack() {
  set +e
  cp "$WORK/long_run.json" "$WORK/long_run.log" "$WORK/capture/build.json" "$OUT/" 2>/dev/null
  tar czf "$OUT/model_meta.tar.gz" -C "$WORK" --exclude='model/checkpoints' --exclude='model/*.safetensors' model \
    2>/dev/null
  tar czf "$OUT/pcaps.tar.gz" -C "$WORK" synthetic real_a real_b 2>/dev/null
  ls -la "$OUT"
}
trap pack EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
git rev-parse HEAD 2>/dev/null | sed 's/^/commit /' || true
timeout "$DEADLINE" python3 -m benchmarks.long_run --work "$WORK" --source "$DATA" --stages build,train,evaluate "$@"
