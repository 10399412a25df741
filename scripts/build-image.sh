#!/usr/bin/env bash
# Builds the node's container image with podman from the Dockerfile as it is, on a machine that
# reaches no image registry, only Debian's packages and crates.io:
#  1. the runtime stage's base, debian:bookworm-slim, unless present: a Debian root file system
#     made from Debian's packages by mmdebstrap (minbase, without documentation, as the official
#     slim image is), imported under that name;
#  2. the build stage's base (the Dockerfile's rust:X.Y-bookworm), unless present: that Debian
#     with what the official Rust image builds with (gcc, libc, make, pkg-config, certificates)
#     and this machine's Rust toolchain of version X.Y, where the official image puts it;
#  3. `podman build` of the Dockerfile, unchanged, tagged IMAGE (default af-registry:VERSION, the
#     crate's version: the name akash/deploy.yaml deploys, under the operator's registry).
# Then prints the image's size compressed (its layers as a registry stores them, gzip) and
# unpacked. Root, podman, mmdebstrap (Debian packages); nothing else.
#
#   scripts/build-image.sh [IMAGE]
# Environment: AF_IMAGE_WORK (scratch space, default /var/tmp/af-image), PODMAN (the command),
# AF_IMAGE_PROFILE (the Dockerfile's PROFILE: Cargo's profile of the node's binary, default
# release; scripts/test.sh builds its test image with image-test, a fraction of the CPU time).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-af-registry:$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)}
podman=${PODMAN:-podman}
work=${AF_IMAGE_WORK:-/var/tmp/af-image}
mkdir -p "$work"
fail() { echo "build-image: $*" >&2; exit 1; }
command -v "$podman" >/dev/null || fail "podman is not installed (apt-get install podman buildah)"
present() { $podman image exists "$1"; }
# This kind of machine (cgroups v1) runs containers with runc, not crun, and refuses the default
# rlimits: a containers.conf saying so, unless the caller brings one.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' >"$work/containers.conf"
  export CONTAINERS_CONF="$work/containers.conf"
fi

base_of() { awk -v n="$1" 'toupper($1) == "FROM" { i++; if (i == n) { print $2; exit } }' Dockerfile; }
build_base=$(base_of 1)
runtime_base=$(base_of 2)
[ "$runtime_base" = "debian:bookworm-slim" ] || fail "the runtime stage is FROM $runtime_base; this script makes debian:bookworm-slim only"
[[ "$build_base" =~ ^rust:([0-9]+\.[0-9]+)-bookworm$ ]] || fail "the build stage is FROM $build_base; this script makes rust:X.Y-bookworm only"
rust_version=${BASH_REMATCH[1]}

if ! present "$runtime_base"; then
  command -v mmdebstrap >/dev/null || fail "mmdebstrap is not installed (apt-get install mmdebstrap): it makes $runtime_base from Debian's packages"
  echo "build-image: making $runtime_base from Debian's packages (mmdebstrap)"
  rm -f "$work/rootfs.tar"
  # As in Debian's own images: apt keeps no package caches (80 MB after an `apt-get update`) and
  # fetches no translations.
  mkdir -p "$work/apt.conf.d"
  cat >"$work/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$work/apt.conf.d/docker-no-languages"
  # The official slim image's exclusions: documentation, manuals, translations (copyrights stay).
  # /usr is merged by mmdebstrap's hook, as Debian's images are, not by the usrmerge package
  # (which would bring perl).
  mmdebstrap --variant=minbase --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --aptopt='APT::Install-Recommends "false"' \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    --customize-hook="copy-in $work/apt.conf.d/docker-clean $work/apt.conf.d/docker-no-languages /etc/apt/apt.conf.d/" \
    bookworm "$work/rootfs.tar" || fail "mmdebstrap could not make a Debian root file system (is a Debian mirror reachable?)"
  $podman import --quiet --change 'CMD ["bash"]' "$work/rootfs.tar" "$runtime_base" >/dev/null
  rm -f "$work/rootfs.tar"
fi

if ! present "$build_base"; then
  toolchain=
  for dir in "${RUSTUP_HOME:-$HOME/.rustup}"/toolchains/*-x86_64-unknown-linux-gnu; do
    version=$("$dir/bin/rustc" --version 2>/dev/null | awk '{print $2}') || continue
    case "$version" in "$rust_version" | "$rust_version".*) toolchain=$(readlink -f "$dir"); break ;; esac
  done
  [ -n "$toolchain" ] || fail "no Rust $rust_version toolchain here for $build_base (rustup toolchain install $rust_version), or change the Dockerfile's tag to the rustc here"
  echo "build-image: making $build_base from $runtime_base and the Rust toolchain at $toolchain"
  ctx="$work/rust-context"
  rm -rf "$ctx"
  mkdir -p "$ctx/toolchain"
  # The compiler and the standard library; documentation stays out.
  cp -a "$toolchain/bin" "$toolchain/lib" "$toolchain/libexec" "$ctx/toolchain/" 2>/dev/null || cp -a "$toolchain/bin" "$toolchain/lib" "$ctx/toolchain/"
  # Certificate authorities this machine added to its own trust (a proxy that intercepts TLS on
  # the way to crates.io, say) are trusted by the build stage too, as the host's cargo trusts them.
  mkdir -p "$ctx/certs"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/certs/" 2>/dev/null || true
  cat >"$ctx/Containerfile" <<EOF
FROM $runtime_base
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev make pkg-config git \\
    && rm -rf /var/lib/apt/lists/*
COPY certs /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY toolchain /usr/local/rustup/toolchains/$rust_version-x86_64-unknown-linux-gnu
RUN mkdir -p /usr/local/cargo/bin && ln -s /usr/local/rustup/toolchains/$rust_version-x86_64-unknown-linux-gnu/bin/* /usr/local/cargo/bin/
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin RUST_VERSION=$rust_version
EOF
  $podman build --quiet --network host -t "$build_base" "$ctx" >/dev/null || fail "the stand-in for $build_base did not build"
  rm -rf "$ctx"
fi

echo "build-image: podman build of the Dockerfile as $image (profile ${AF_IMAGE_PROFILE:-release})"
# Docker's image format: OCI's has no HEALTHCHECK, and podman would drop it.
$podman build --format docker --network host --build-arg "PROFILE=${AF_IMAGE_PROFILE:-release}" -t "$image" . || fail "podman build of the Dockerfile failed"

# Compressed: each layer as a registry would store it (tar, gzip). Unpacked: podman's own figure.
size_dir="$work/size"
rm -rf "$size_dir"
$podman save --quiet --format oci-dir -o "$size_dir" "$image"
compressed=$(python3 - "$size_dir" <<'PY'
import gzip, json, sys, zlib
d = sys.argv[1]
blob = lambda digest: f"{d}/blobs/sha256/{digest.split(':')[1]}"
manifest = json.load(open(blob(json.load(open(f"{d}/index.json"))["manifests"][0]["digest"])))
total = 0
for layer in manifest["layers"]:
    data = open(blob(layer["digest"]), "rb").read()
    # Layers saved uncompressed are gzipped as a push would; gzipped ones count as they are.
    total += len(data) if data[:2] == b"\x1f\x8b" else len(gzip.compress(data, 6))
print(total)
PY
)
rm -rf "$size_dir"
unpacked=$($podman image inspect --format '{{.Size}}' "$image")
echo "build-image: $image: $(awk -v c="$compressed" -v u="$unpacked" 'BEGIN { printf "%.1f MB compressed (gzip layers), %.1f MB unpacked", c / 1e6, u / 1e6 }')"
