#!/usr/bin/env bash
# Issue 20 on a GPU machine, in ONE device command: the native backend (CONFIG, default base; the privacy gate on,
# the preset's default) trained once for BUDGET seconds on the 80/20 split of shared/data/iot-sentinel, then
# benchmarks/conv_rules.py samples 15 traces per class once and decodes them per decoding-rule arm (`--no-meter`:
# pcaps only, metered elsewhere). Results under $OUT: the model card (the gate's evaluations), the model's metadata
# without weights, the arms' pcaps (meter them with `netdiff evaluate` elsewhere), split.json.
#
#   OUT=... BUDGET=240 bash benchmarks/gpu_conv_rules.sh
#
# On the H100 at 8ec694a the arms did not finish in the 300 s left after 240 s of training: give them more.
set -uo pipefail
OUT=${OUT:-$PWD/out}; W=/tmp/conv; mkdir -p $OUT $W
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
T0=$(date +%s); stamp() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv
stamp split; python3 -m netdiff_lib.cli split shared/data/iot-sentinel --out $W/split --test-fraction 0.2 --seed 0 --mode link -q
stamp train; timeout 420 python3 -m netdiff_lib.cli train --data $W/split/train -o $W/model --config ${CONFIG:-base} --time-budget ${BUDGET:-270} -q
stamp "train rc $?"
cp $W/model/model_card.json $OUT/ 2>/dev/null; tar czf $OUT/meta.tar.gz -C $W --exclude='model/checkpoints' --exclude='model/*.safetensors' model
stamp arms; timeout $(( 570 - ($(date +%s) - T0) )) python3 -m benchmarks.conv_rules arms $W/model --train $W/split/train --out $W/arms --per-class 15 --steps 16 --no-meter
stamp "arms rc $?"
tar czf $OUT/arms.tar.gz --exclude=nfstream -C $W arms; cp $W/split/split.json $OUT/ 2>/dev/null; ls -la $OUT; stamp done
