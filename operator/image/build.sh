#!/usr/bin/env bash
# Builds kelp's container image without a container engine and without pulling anything:
# the release binary, its shared libraries and Debian's CA certificates (rootfs.sh), as an
# OCI image layout (oci-layout.py). The Dockerfile at the top of the repository builds the
# same layout with a container engine.
#
#   operator/image/build.sh [--binary PATH] [--out DIR] [--tag TAG] [--archive FILE]
#
# --binary  a kelp binary to package (default: cargo build --release --no-default-features,
#           without `kelp dev` and the test API server; then target/release/kelp)
# --out     where the OCI layout goes (default: target/image/kelp-oci)
# --tag     the reference name in the layout (default: kelp:VERSION, the workspace version)
# --archive also write the layout as one tar file (for `podman load`, `skopeo copy`,
#           `ctr images import`)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$top/target}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)
binary="" out="$target/image/kelp-oci" tag="kelp:$version" archive=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --archive) archive=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  (cd "$top" && cargo build --release --locked --no-default-features -p kelp-operator --bin kelp)
  binary="$target/release/kelp"
fi
# Reproducible: the layer's times are the last commit's (or SOURCE_DATE_EPOCH).
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || echo 0)}"
rootfs="$out.rootfs"
"$here/rootfs.sh" "$binary" "$rootfs"
rm -rf "$out"
mkdir -p "$out"
KELP_VERSION="$version" python3 "$here/oci-layout.py" "$rootfs" "$out" "$tag" ${archive:+--archive "$archive"}
