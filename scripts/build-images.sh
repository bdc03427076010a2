#!/usr/bin/env bash
# Build netdiff's container images: <registry>/netdiff:<version> (CPU) and <registry>/netdiff:<version>-cuda (GPU).
#
#   bash scripts/build-images.sh                 # both, from registry bases (python:3.11 slim, pytorch/pytorch CUDA)
#   bash scripts/build-images.sh --cpu           # only the CPU image
#   bash scripts/build-images.sh --local-base    # no registry reachable: debootstrap a Debian base (cached) and use
#                                                # torch's CPU wheel on it as the GPU image's base
#   bash scripts/build-images.sh --push          # then push both tags
#   bash scripts/build-images.sh --print-tags    # cpu=<ref> and gpu=<ref>, the references the pipelines compile with
#
# The tags come from the one setting the components use (components/_image.py): NETDIFF_REGISTRY,
# NETDIFF_IMAGE_TAG, or whole references in NETDIFF_IMAGE / NETDIFF_GPU_IMAGE. Bases: BASE_IMAGE and
# CUDA_BASE_IMAGE (build arguments of images/netdiff/Dockerfile). pip never reaches an index inside the build:
# this script puts netdiff's wheel (built from this tree) and the pinned dependencies' wheels (pip download, with
# images/netdiff/constraints.txt) under build/images/, and the Dockerfile installs from there.
# Needs Python 3.11 (the images' Python) for the wheels, and a Docker engine with BuildKit (docker buildx, or the
# docker.io 20.10 client). NETDIFF_IMAGE_CACHE (default /var/cache/netdiff-images) keeps the debootstrap base.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CACHE=${NETDIFF_IMAGE_CACHE:-/var/cache/netdiff-images}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
LOCAL_BASE=local/debian-python:bookworm
LOCAL_TORCH_BASE=local/netdiff-torch:2.13.0-cpu
targets=() local_base=0 push=0 print_tags=0
for arg in "$@"; do
  case $arg in
    --cpu) targets+=(cpu) ;;
    --gpu) targets+=(cuda) ;;
    --local-base) local_base=1 ;;
    --push) push=1 ;;
    --print-tags) print_tags=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "build-images.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
((${#targets[@]})) || targets=(cpu cuda)

read -r CPU_TAG GPU_TAG VERSION < <(PYTHONPATH=$PWD "$PYTHON" -c '
import netdiff_lib
from components._image import GPU_IMAGE, IMAGE
print(IMAGE, GPU_IMAGE, netdiff_lib.__version__)')
if ((print_tags)); then
  echo "cpu=$CPU_TAG"
  echo "gpu=$GPU_TAG"
  exit 0
fi

say() { printf '[build-images %(%T)T] %s\n' -1 "$*" >&2; }
die() { echo "build-images.sh: $*" >&2; exit 1; }

# A client that builds with BuildKit (RUN --mount): docker buildx, or a pre-23 docker with BuildKit built in.
docker_build() {
  local cli
  for cli in docker /usr/bin/docker; do
    command -v "$cli" >/dev/null || continue
    if "$cli" buildx version >/dev/null 2>&1; then
      "$cli" buildx build --load "$@"; return
    fi
    if [[ $("$cli" version --format '{{.Client.Version}}' 2>/dev/null) =~ ^(1[89]|2[0-2])\. ]]; then
      DOCKER_BUILDKIT=1 "$cli" build "$@"; return
    fi
  done
  die "no Docker client with BuildKit: install docker buildx (or Debian's docker.io)"
}
docker info >/dev/null 2>&1 || die "no Docker engine answers at ${DOCKER_HOST:-the default socket} (docker info failed)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "the wheels are prepared for the images' Python 3.11: run with PYTHON=python3.11"

# Wheels: netdiff from this tree, the pinned third-party set, and the requirement lists the Dockerfile installs.
WHEELS=build/images
start=$SECONDS
rm -rf "$WHEELS/dist"
mkdir -p "$WHEELS/dist" "$WHEELS/deps" "$WHEELS/download"
say "netdiff $VERSION wheel from the tree"
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS/dist" . >/dev/null
cp images/netdiff/constraints.txt "$WHEELS/deps/constraints.txt"
"$PYTHON" - "$WHEELS/deps" <<'EOF'
import sys, tomllib
from pathlib import Path
out = Path(sys.argv[1])
project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
pins = dict(line.split("==") for line in Path("images/netdiff/constraints.txt").read_text().splitlines()
            if line and not line.startswith("#"))
extras = project["optional-dependencies"]
for target, names in {"cpu": ["eval", "s3"], "gpu": ["eval", "s3", "ml"]}.items():
    reqs = project["dependencies"] + [r for n in names for r in extras[n]] + [f"kfp=={pins['kfp']}"]
    (out / f"requirements-{target}.txt").write_text("\n".join(reqs) + "\n")
EOF
# Downloaded into download/, copied into deps/ only when new: unchanged deps/ keeps Docker's layer cache valid;
# skipped when the requirements and pins are the ones the last download got.
stamp=$(cat "$WHEELS/deps/requirements-gpu.txt" images/netdiff/constraints.txt | sha256sum | cut -c1-16)
if [[ $(cat "$WHEELS/download/.stamp" 2>/dev/null) == "$stamp" ]]; then
  say "third-party wheels: unchanged since the last build"
else
  say "third-party wheels (pip download, constraints.txt)"
  torch_pin=$(sed -n 's/^torch==//p' images/netdiff/constraints.txt)
  if ! "$PYTHON" -m pip download -q -d "$WHEELS/download" -c images/netdiff/constraints.txt \
      -r "$WHEELS/deps/requirements-gpu.txt" "torch==$torch_pin" >"$WHEELS/download.log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$WHEELS/download.log" >&2
    die "pip download failed (log: $WHEELS/download.log)"
  fi
  for file in "$WHEELS"/download/*; do
    name=$(basename "$file")
    case $name in
      *.whl) [[ -e $WHEELS/deps/$name ]] || cp "$file" "$WHEELS/deps/" ;;
      *.tar.gz)  # sdist-only packages (kfp-server-api) become wheels once: the build needs no compiler or index
        [[ -e $WHEELS/download/.built-$name ]] && continue
        "$PYTHON" -m pip wheel -q --no-deps -w "$WHEELS/deps" "$file" >/dev/null
        touch "$WHEELS/download/.built-$name" ;;
    esac
  done
  echo "$stamp" >"$WHEELS/download/.stamp"
fi
say "wheels ready ($((SECONDS - start)) s, $(du -sh "$WHEELS/deps" | cut -f1))"

build_args=(--build-arg "NETDIFF_VERSION=$VERSION")
network=()
if ((local_base)); then
  if ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    tarball=$CACHE/debian-python-bookworm.tar
    if [[ ! -s $tarball ]]; then
      command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
      say "debootstrap Debian bookworm with Python into $CACHE (once)"
      rootfs=$(mktemp -d "$CACHE/rootfs.XXXX" 2>/dev/null || { mkdir -p "$CACHE" && mktemp -d "$CACHE/rootfs.XXXX"; })
      debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
        "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed: see $CACHE/debootstrap.log"
      cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main
EOF
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
      tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
      rm -rf "$rootfs"
    fi
    say "import $LOCAL_BASE from $tarball"
    docker import -c 'CMD ["/bin/bash"]' "$tarball" "$LOCAL_BASE" >/dev/null
  fi
  say "build $LOCAL_TORCH_BASE (torch's CPU wheel on $LOCAL_BASE)"
  docker_build -q -f images/torch-cpu/Dockerfile --network none --build-arg "BASE_IMAGE=$LOCAL_BASE" \
    -t "$LOCAL_TORCH_BASE" . >/dev/null
  build_args+=(--build-arg "BASE_IMAGE=$LOCAL_BASE" --build-arg "CUDA_BASE_IMAGE=$LOCAL_TORCH_BASE")
  network=(--network host)  # apt (tshark) reaches the Debian mirror; pip stays offline
fi
[[ -n ${BASE_IMAGE:-} ]] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[[ -n ${CUDA_BASE_IMAGE:-} ]] && build_args+=(--build-arg "CUDA_BASE_IMAGE=$CUDA_BASE_IMAGE")

for target in "${targets[@]}"; do
  tag=$CPU_TAG; [[ $target == cuda ]] && tag=$GPU_TAG
  say "build $tag (target $target)"
  t0=$SECONDS
  docker_build -f images/netdiff/Dockerfile --target "$target" "${network[@]}" "${build_args[@]}" -t "$tag" . \
    >"$WHEELS/build-$target.log" 2>&1 || { tail -40 "$WHEELS/build-$target.log" >&2; die "building $tag failed"; }
  say "built $tag in $((SECONDS - t0)) s, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
  ((push)) && docker push "$tag"
done
say "done in $((SECONDS - start)) s"
