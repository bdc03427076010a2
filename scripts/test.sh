#!/usr/bin/env bash
# Set up (scripts/setup.sh --tests: system packages, docker.io and debootstrap for the container test, and the
# virtual environment .venv) and run the whole test suite on CPU in that environment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
VENV=${NETDIFF_VENV:-.venv}
export VIRTUAL_ENV="$(cd "$VENV" && pwd)" PATH="$(cd "$VENV" && pwd)/bin:$PATH"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
ruff check .
python -m pytest -q "$@"
