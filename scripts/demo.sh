#!/usr/bin/env bash
# Set up (scripts/setup.sh: system packages and the virtual environment .venv), then run the main job: the
# whole Kubeflow pipeline, locally through kfp.local, on the bundled sample captures with the tiny model (CPU).
# Results in out/demo/; a one-screen summary at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${NETDIFF_VENV:-.venv}
export VIRTUAL_ENV="$(cd "$VENV" && pwd)" PATH="$(cd "$VENV" && pwd)/bin:$PATH"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
OUT=${OUT:-out/demo}
rm -rf "$OUT"
netdiff run --input samples/captures --out "$OUT" --config tiny
