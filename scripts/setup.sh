#!/usr/bin/env bash
# Install everything netdiff and its demo need on a fresh Debian/Ubuntu machine, and with --tests (or
# NETDIFF_SETUP_TESTS=1) what the test suite needs too (idempotent). Prints a line per phase with its time.
# System packages: tshark (validation), tcpdump (benchmarks, re-recording samples), tcpreplay and iproute2
# (replay tests in a network namespace), libpcap (loaded by `netdiff nprint` for -f BPF filters and -d live
# capture), python3-venv where python3 has no venv module; with --tests also docker.io and debootstrap (the
# container test builds the images from a local base and runs the pipeline in them).
# Python: a virtual environment in .venv (NETDIFF_VENV overrides the place; NETDIFF_PYTHON the interpreter it
# is made from), so stock Debian 12 / Ubuntu 24.04 python3 ("externally-managed-environment") is left alone;
# it sees the interpreter's own packages and pip adds what is missing or too old: torch's CPU build first
# (torch==2.13.0: any other torch request pulls a multi-GB CUDA build), then netdiff, editable, with all extras.
# Use it with `source .venv/bin/activate`; demo.sh and test.sh do.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${NETDIFF_VENV:-.venv}
PYTHON=${NETDIFF_PYTHON:-python3}
TESTS=${NETDIFF_SETUP_TESTS:-0}
for arg in "$@"; do
  case "$arg" in
    --tests) TESTS=1 ;;
    *) echo "usage: scripts/setup.sh [--tests]" >&2; exit 2 ;;
  esac
done
START=$SECONDS
phase() { echo "setup [$((SECONDS - START)) s] $*" >&2; }  # a line per phase, with the time so far

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
need_apt=()
tools="tshark:tshark tcpdump:tcpdump tcpreplay:tcpreplay ip:iproute2"
[[ $TESTS == 1 ]] && tools+=" dockerd:docker.io debootstrap:debootstrap"  # the container test only
for tool in $tools; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
done
# grep without -q: an early exit would kill ldconfig with SIGPIPE, which pipefail reports as "not found"
ldconfig -p 2>/dev/null | grep 'libpcap\.so' >/dev/null || need_apt+=(libpcap0.8)
command -v "$PYTHON" >/dev/null 2>&1 || need_apt+=(python3)
if [[ ! -x "$VENV/bin/python" ]] && ! "$PYTHON" -c "import venv, ensurepip" >/dev/null 2>&1; then
  need_apt+=(python3-venv)   # Debian/Ubuntu split venv and ensurepip off python3
fi
if ((${#need_apt[@]})); then
  phase "system packages: apt-get update"
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections || true
  $SUDO apt-get update -qq
  phase "system packages: apt-get install ${need_apt[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  phase "creating the virtual environment $VENV ($("$PYTHON" --version 2>&1))"
  "$PYTHON" -m venv --system-site-packages "$VENV"  # what the system has (apt, a provisioned python) is reused
fi
PY="$VENV/bin/python"
STAMP="$VENV/.netdiff-installed"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) $(pwd)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && "$PY" -c "import netdiff_lib, torch, kfp, minio, sklearn" 2>/dev/null
then
  exit 0  # installed from this pyproject.toml, for this checkout
fi
# pip without -q: a line per package and download progress bars, so a long install shows that it moves
PIP=("$PY" -m pip install --progress-bar on --disable-pip-version-check)
if ! "$PY" -c "import torch" 2>/dev/null; then
  phase "pip install torch==2.13.0 (the CPU build, about 200 MB) into $VENV"
  "${PIP[@]}" "torch==2.13.0"
fi
phase "pip install -e '.[all,dev]' into $VENV (kfp, scikit-learn, diffusers, ...)"
"${PIP[@]}" -e ".[all,dev]"
phase "checking the environment"
"$PY" -c "import netdiff_lib, torch, kfp, minio, sklearn" # fail here, not in the tests, if something is missing
echo "$want" > "$STAMP"
phase "done"
