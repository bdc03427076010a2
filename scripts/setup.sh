#!/usr/bin/env bash
# Install everything netdiff, its tests and its demo need on a fresh Debian/Ubuntu machine (idempotent).
# System packages: tshark (validation), tcpdump (benchmarks, re-recording samples), tcpreplay and iproute2
# (replay tests in a network namespace), libpcap (loaded by `netdiff nprint` for -f BPF filters and -d live
# capture), python3-venv where python3 has no venv module, docker.io and debootstrap (the container test builds
# the images from a local base and runs the pipeline in them).
# Python: a virtual environment in .venv (NETDIFF_VENV overrides the place; NETDIFF_PYTHON the interpreter it
# is made from), so stock Debian 12 / Ubuntu 24.04 python3 ("externally-managed-environment") is left alone;
# it sees the interpreter's own packages and pip adds what is missing or too old: torch's CPU build first
# (torch==2.13.0: any other torch request pulls a multi-GB CUDA build), then netdiff, editable, with all extras.
# Use it with `source .venv/bin/activate`; demo.sh and test.sh do.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${NETDIFF_VENV:-.venv}
PYTHON=${NETDIFF_PYTHON:-python3}

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
need_apt=()
for tool in tshark:tshark tcpdump:tcpdump tcpreplay:tcpreplay ip:iproute2 dockerd:docker.io debootstrap:debootstrap; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
done
# grep without -q: an early exit would kill ldconfig with SIGPIPE, which pipefail reports as "not found"
ldconfig -p 2>/dev/null | grep 'libpcap\.so' >/dev/null || need_apt+=(libpcap0.8)
command -v "$PYTHON" >/dev/null 2>&1 || need_apt+=(python3)
if [[ ! -x "$VENV/bin/python" ]] && ! "$PYTHON" -c "import venv, ensurepip" >/dev/null 2>&1; then
  need_apt+=(python3-venv)   # Debian/Ubuntu split venv and ensurepip off python3
fi
if ((${#need_apt[@]})); then
  echo "setup: apt-get install ${need_apt[*]}" >&2
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections || true
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating the virtual environment $VENV ($("$PYTHON" --version 2>&1))" >&2
  "$PYTHON" -m venv --system-site-packages "$VENV"  # what the system has (apt, a provisioned python) is reused
fi
PY="$VENV/bin/python"
STAMP="$VENV/.netdiff-installed"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) $(pwd)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && "$PY" -c "import netdiff_lib, torch, kfp, minio, sklearn" 2>/dev/null
then
  exit 0  # installed from this pyproject.toml, for this checkout
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: pip install torch==2.13.0 (the CPU build) into $VENV" >&2
  "$PY" -m pip install -q "torch==2.13.0"
fi
echo "setup: pip install -e '.[all,dev]' into $VENV" >&2
"$PY" -m pip install -q -e ".[all,dev]"
"$PY" -c "import netdiff_lib, torch, kfp, minio, sklearn" # fail here, not in the tests, if something is missing
echo "$want" > "$STAMP"
