#!/usr/bin/env bash
# The native generator's real run on a GPU machine, end to end, in ONE command that fits the device's 10-minute
# limit (default budget 300 s; optional phases are skipped as DEADLINE, 570 s after the start, nears): install ->
# split 80/20 by capture (stratified, seed 0) -> train for a fixed time -> generate 5x the test captures per class
# (pcaps + raw arrays) -> throughput at 1,024 packets (eager and torch.compile side by side in one run;
# --no-compile: eager only) -> pack the results under $OUT.
#
#   bash benchmarks/gpu_native.sh [DATA_DIR] [--gpus N] [--budget SECONDS] [--config base|small|tiny]
#                                 [--guidance "1.0 1.5"] [--times 5] [--skip-generate] [--no-compile]
#                                 [--variant NAME=SECTION.KEY=VALUE,...]... [--throughput N]
#                                 [--throughput-steps "16 25"] [--gen-steps "16 25"] [--decode-workers "0 -1"]
#                                 [--long-quality "ARGS"]
#
# Each --variant (an ablation arm) trains its own model for the same --budget with `--set` overrides (e.g.
# `--variant noslots=model.port_slots=0 --variant slots=`) and generates its own set; without
# --variant there is one arm, "default". --throughput N times N traces at 1,024 packets for the last arm (once
# per sampler step count in --throughput-steps). --gen-steps generates each arm's set once per sampler step count
# (16 is the library's default; another count names the set <arm>s<steps>). --decode-workers times each throughput
# run once per value: 0 decodes in a thread of the sampling process (the old path), -1 (default) as generation
# does by default (worker processes on CUDA), N in N processes.
#
# --long-quality runs benchmarks/long_quality.py after the split instead of the arms above: per-file traces beside
# flow and window traces cut from each class's captures laid end to end, each arm trained for --budget seconds
# with --config; ARGS go to it as they are (e.g. "--arms 'file flow window:60' --per-class 10"); its table is
# printed and long_quality.json joins results.json.
#
# DATA_DIR defaults to shared/data/iot-sentinel (under the repo root). When diffusers is not importable, the
# wheels in ./wheels (diffusers) are installed into a temporary folder; netdiff runs from this checkout.
# --gpus 2 trains with `netdiff train --gpus 2`, one process per GPU (the scaling figure; default 1).
#
# Results (at most 8 files, as the device returns): results.json (timings, memory, throughput), log.txt,
# split.json, model_meta.tar.gz (per arm: card, loss curve, config, codec; no weights), and per arm and guidance
# value G generated_<arm>_g<G>.npz (raw generator output, ternary packed: matrix = where(unpackbits(present),
# unpackbits(bits), -1), see benchmarks/train_native.py load_generated; pcaps are rebuilt from it off the GPU
# with the same seed, `python -m benchmarks.train_native pcaps`). Keep arms x guidance values <= 5.
set -euo pipefail

DATA=shared/data/iot-sentinel
GPUS=1
BUDGET=300
CONFIG=base
GUIDANCE="1.0"
TIMES=5
GENERATE=1
COMPILE=1
VARIANTS=()
THROUGHPUT=256
THROUGHPUT_STEPS="16"
GEN_STEPS="16"
DECODE_WORKERS="-1"
LONG=0
LONG_ARGS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpus) GPUS=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --guidance) GUIDANCE=$2; shift 2 ;;
    --times) TIMES=$2; shift 2 ;;
    --skip-generate) GENERATE=0; shift ;;
    --no-compile) COMPILE=0; shift ;;
    --variant) VARIANTS+=("$2"); shift 2 ;;
    --throughput) THROUGHPUT=$2; shift 2 ;;
    --throughput-steps) THROUGHPUT_STEPS=$2; shift 2 ;;
    --gen-steps) GEN_STEPS=$2; shift 2 ;;
    --decode-workers) DECODE_WORKERS=$2; shift 2 ;;
    --long-quality) LONG=1; LONG_ARGS=$2; shift 2 ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    *) DATA=$1; shift ;;
  esac
done

OUT=${OUT:-$PWD/gpu-native-out}
WORK=${WORK:-$(mktemp -d /tmp/netdiff-gpu.XXXXXX)}
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 DIFFUSERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
DEADLINE=${DEADLINE:-570}  # seconds: the device kills a command at 600 s, and packing must still run
stamp() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }

pack() {
  set +e
  stamp "packing results into $OUT"
  [[ -f $WORK/split/split.json ]] && cp "$WORK/split/split.json" "$OUT/split.json"
  (cd "$WORK" && ls -d model_* >/dev/null 2>&1) && \
    tar czf "$OUT/model_meta.tar.gz" -C "$WORK" --exclude='model_*/checkpoints' --exclude='model_*/*.safetensors' \
      $(cd "$WORK" && ls -d model_*)
  for D in "$WORK"/synthetic_*/g*; do  # per arm and guidance: the raw generator output
    A=$(basename "$(dirname "$D")"); A=${A#synthetic_}
    [[ -f $D/generated.npz ]] && cp "$D/generated.npz" "$OUT/generated_${A}_$(basename "$D").npz"
  done
  find "$OUT" -type f -size +15M -exec echo "WARNING: {} is over 15 MB and may not come back" \;
  python3 - "$WORK" "$OUT" <<'EOF'
import json, sys, pathlib
work, out = map(pathlib.Path, sys.argv[1:])
res = {}
for f in sorted(work.glob("*.json")):
    res[f.stem] = json.loads(f.read_text())
for card in sorted(work.glob("model_*/model_card.json")):
    c = json.loads(card.read_text())
    res[card.parent.name] = {"training": c["training"], "data": c["data"]}
(out / "results.json").write_text(json.dumps(res, indent=1))
print(json.dumps(res, indent=1))
EOF
  ls -la "$OUT"
  stamp "done"
}
trap pack EXIT

stamp "netdiff native GPU run: data=$DATA gpus=$GPUS budget=${BUDGET}s config=$CONFIG guidance='$GUIDANCE'"
if (( BUDGET + 150 > DEADLINE )); then
  echo "WARNING: a ${BUDGET}s training budget leaves too little of the ${DEADLINE}s deadline for generation"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
env | grep -E '^(NCCL_NVLS_ENABLE|TORCH_SYMM_MEM_DISABLE_MULTICAST|NVSHMEM_DISABLE_NVLS)=' || true
if ! python3 -c "import diffusers" 2>/dev/null; then
  stamp "installing diffusers from ./wheels (into $WORK/site)"
  ls wheels/*.whl >/dev/null || { echo "diffusers is missing and ./wheels holds no wheels"; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" wheels/*.whl
  export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # netdiff itself, from this checkout (no install)
python3 - <<'EOF'
import torch, diffusers, accelerate, sys
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "gpus", torch.cuda.device_count(), "diffusers", diffusers.__version__, "accelerate", accelerate.__version__)
EOF
git rev-parse HEAD 2>/dev/null | sed 's/^/commit /' || true

stamp "split 80/20 by capture, stratified, seed 0"
python3 -m netdiff_lib.cli split "$DATA" --out "$WORK/split" --test-fraction 0.2 --seed 0 --mode link

if [[ $LONG -eq 1 ]]; then
  stamp "long-capture quality (${BUDGET}s per arm, $CONFIG): $LONG_ARGS"
  eval "EXTRA=($LONG_ARGS)"  # ARGS split as a shell would (quotes kept)
  python3 -m benchmarks.long_quality --split "$WORK/split" --work "$WORK/long" --config "$CONFIG" \
    --budget "$BUDGET" --deadline "$(( $(left) - 15 ))" --json "$WORK/long_quality.json" "${EXTRA[@]}" \
    || stamp "long-capture quality: not every arm was evaluated"
  exit 0
fi

(( ${#VARIANTS[@]} )) || VARIANTS=("default=")
LAST=""
for SPEC in "${VARIANTS[@]}"; do
  ARM=${SPEC%%=*}; SETS=${SPEC#*=}; LAST=$ARM
  SET_ARGS=()
  IFS=',' read -ra KV <<< "$SETS"
  for item in "${KV[@]}"; do [[ -n $item ]] && SET_ARGS+=(--set "$item"); done
  stamp "arm $ARM: train ($CONFIG ${SET_ARGS[*]}, ${BUDGET}s budget, $GPUS GPU)"
  TRAIN_ARGS=(--data "$WORK/split/train" --out "$WORK/model_$ARM" --config "$CONFIG" --time-budget "$BUDGET"
              -q "${SET_ARGS[@]}")
  TS=$(date +%s.%N)
  python3 -m netdiff_lib.cli train "${TRAIN_ARGS[@]}" --gpus "$GPUS"  # N > 1: one process per GPU (DDP)
  python3 -c "import json,sys; json.dump({'wall_s': round($(date +%s.%N) - $TS, 1), 'gpus': $GPUS, 'budget_s': $BUDGET}, open('$WORK/train_wall_$ARM.json','w'))"
  stamp "trained: $(python3 -c "import json; t=json.load(open('$WORK/model_$ARM/model_card.json'))['training']; print(t)")"
  if [[ $GENERATE -eq 1 ]]; then
    if (( $(left) < 40 )); then
      stamp "only $(left)s left: skipping generation of arm $ARM"
    else
      for S in $GEN_STEPS; do
        SET=$ARM; [[ $S == 16 ]] || SET=${ARM}s$S
        stamp "arm $ARM: generate ${TIMES}x the test captures per class (guidance $GUIDANCE, $S steps)"
        # shellcheck disable=SC2086  # GUIDANCE is a list of numbers
        timeout $(( $(left) - 20 )) python3 -m benchmarks.train_native generate-set --model "$WORK/model_$ARM" \
          --split "$WORK/split/split.json" --times "$TIMES" --guidance $GUIDANCE --sample-steps "$S" \
          --out "$WORK/synthetic_$SET" --no-pcaps --json "$WORK/generate_$SET.json" || stamp "generation failed"
      done
    fi
  fi
done

G=${GUIDANCE%% *}
if [[ $GENERATE -eq 1 ]] && (( THROUGHPUT > 0 )) && (( $(left) > 60 )); then
  MODE=(--compile); [[ $COMPILE -eq 1 ]] || MODE=(--eager)
  for S in $THROUGHPUT_STEPS; do
    stamp "arm $LAST: throughput at 1024 packets, guidance $G, $S steps, ${MODE[*]} (at most $(( $(left) - 25 ))s)"
    # shellcheck disable=SC2086  # DECODE_WORKERS is a list of numbers
    timeout $(( $(left) - 25 )) python3 -m benchmarks.train_native throughput --model "$WORK/model_$LAST" \
      --packets 1024 --traces "$THROUGHPUT" --guidance "$G" --sample-steps "$S" "${MODE[@]}" \
      --decode-workers $DECODE_WORKERS \
      --json "$WORK/throughput_s$S.json" || stamp "throughput run failed or ran out of time"
  done
fi
