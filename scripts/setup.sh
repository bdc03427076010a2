#!/usr/bin/env bash
# Install everything netdiff, its tests and its demo need on a fresh Debian/Ubuntu machine (idempotent).
# System packages: tshark (validation), tcpdump (benchmarks, re-recording samples), tcpreplay and iproute2
# (replay tests in a network namespace), libpcap (loaded by `netdiff nprint` for -f BPF filters and -d live
# capture), docker.io and debootstrap (the container test builds the images from a local base and runs the
# pipeline in them). Python: torch's CPU build first, then netdiff with all extras.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in tshark:tshark tcpdump:tcpdump tcpreplay:tcpreplay ip:iproute2 dockerd:docker.io debootstrap:debootstrap; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
done
ldconfig -p 2>/dev/null | grep -q 'libpcap\.so' || need_apt+=(libpcap0.8)
if ((${#need_apt[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections || true
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PIP="python3 -m pip"
python3 -c "import torch" 2>/dev/null || $PIP install -q "torch==2.13.0"   # the CPU wheel; see README
$PIP install -q -e ".[all,dev]"
python3 -c "import netdiff_lib, torch, kfp, minio, sklearn" # fail here, not in the tests, if something is missing
