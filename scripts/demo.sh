#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the main job on the bundled sample captures; results in out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
OUT=${OUT:-out/demo}
rm -rf "$OUT"
netdiff encode samples/captures -o "$OUT/nprint" --format both
netdiff render "$OUT"/nprint/*.npz -o "$OUT/images" -q
netdiff decode "$OUT"/nprint/*.npz -o "$OUT/decoded" -q
echo "demo outputs in $OUT: nprint/ (array files + nPrint CSV), images/ (NetDiffusion PNGs), decoded/ (pcaps)"
