#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests drive (idempotently), checks
# the Dockerfile's steps without a Docker engine, builds once, runs the library's unit tests in a
# fresh clone and the integration tests (real node processes, real clients, a PostgreSQL server),
# then the OCI conformance suite and the IPFS gateway conformance suite, every fuzz target for
# 20 s, and the dependency checks.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# /usr/sbin: dnsmasq (the DNS server of the DNSLink tests) lives there, off some users' PATH.
export PATH="${GOBIN:-$HOME/go/bin}:$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"

# Each step says when it starts (minutes since the start), so a slow CI run says where it went.
step() { printf '== %dm%02ds: %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
# A CI machine builds once: incremental state would only take disk (gigabytes of it).
[ -n "${CI:-}" ] && export CARGO_INCREMENTAL=0
# CI starts from a clean clone. What it compiles is kept between runs outside the clone, where
# the machine keeps it (cargo's fingerprints decide what is stale), as the Go tools and cargo's
# own are: a run then compiles the node, not its dependencies, for each of the debug build,
# clippy and the fuzz targets (three cold builds of some 500 crates were most of a run's time).
# Stale builds pile up as dependencies change: past 30 GB the cache starts again.
if [ -n "${CI:-}" ] && [ ! -e target ]; then
  cache=${AF_CI_CACHE:-$HOME/.cache/af-registry-ci}
  if [ -d "$cache" ] && [ "$(du -s --block-size=1G "$cache" | cut -f1)" -gt 30 ]; then rm -rf "$cache"; fi
  mkdir -p "$cache/target" "$cache/fuzz-target"
  ln -s "$cache/target" target
  [ -e fuzz/target ] || ln -s "$cache/fuzz-target" fuzz/target
  echo "build cache: $cache ($(du -sh "$cache" | cut -f1))"
fi
# The disk is what ran out on a CI machine once; the log says how much there was.
df -h . /tmp | sed 's/^/disk: /'
trap 'df -h . /tmp | sed "s/^/disk at exit: /"' EXIT
step install the test dependencies
scripts/install-test-deps.sh
# A PostgreSQL server for the metadata tests and the conformance run on PostgreSQL.
AF_TEST_POSTGRES_URL=$(scripts/postgres.sh)
export AF_TEST_POSTGRES_URL
# The container image, built for real from the Dockerfile where podman can run containers (root,
# as CI), in the background at the lowest priority while the rest builds and the tests run (the
# Debian bases from the network, and a build of the node with Cargo's image-test profile: the
# release profile without link-time optimisation, a third of its CPU); tests/container.rs runs
# it as Akash would once the integration tests are done. Elsewhere the Dockerfile's steps are
# imitated (scripts/check-dockerfile.sh) and that test is skipped.
image_build=
mkdir -p target
if command -v podman >/dev/null && [ "$(id -u)" = 0 ]; then
  step start building the container image
  AF_TEST_IMAGE=af-registry:$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
  export AF_TEST_IMAGE
  AF_IMAGE_PROFILE=${AF_IMAGE_PROFILE:-image-test} setsid -w nice -n 19 ionice -c3 scripts/build-image.sh "$AF_TEST_IMAGE" >target/image-build.log 2>&1 &
  image_build=$!
  trap 'kill -- -"$image_build" 2>/dev/null || true; df -h . /tmp | sed "s/^/disk at exit: /"' EXIT
else
  step check the Dockerfile without an engine
  scripts/check-dockerfile.sh
fi
step check the formatting
cargo fmt --check || { echo "the code is not formatted as rustfmt.toml says: run cargo fmt" >&2; exit 1; }
# Everything but the library's unit tests, which run below in a fresh clone (one build of them),
# and the benches, which clippy's --all-targets compiles (their code is checked, not linked).
step build
cargo build --locked --lib --bins --test '*'
# A fresh clone with nothing beside it (no ../shared): the unit tests, Kubo's golden CIDs among
# them, take their data from the project's own files. Shares this build's dependencies.
step unit tests in a fresh clone
fresh=$(mktemp -d)
git clone -q . "$fresh/af-registry"
(cd "$fresh/af-registry" && CARGO_TARGET_DIR="$OLDPWD/target" cargo test --locked --lib -q) \
  || { rm -rf "$fresh"; echo "the unit tests fail in a fresh clone without ../shared" >&2; exit 1; }
rm -rf "$fresh"
# The fuzz targets (nightly, sanitizers, their own target directory) and cargo deny build
# meanwhile on what the tests leave of the cores: one compile job, lowest priority, idle I/O
# class, so the timing-sensitive tests (swarm dials, visibility flips) do not feel it. Once the
# tests are done the same builds are started again with every core; cargo carries on from what
# the background build finished.
export AF_FUZZ_PROFILE=${AF_FUZZ_PROFILE:-dev}
tools_build() {
  scripts/fuzz.sh --build-only &&
    { command -v cargo-deny >/dev/null || cargo install --locked --target-dir target/tools cargo-deny@0.20.2; }
}
export -f tools_build
mkdir -p target
CARGO_BUILD_JOBS=1 setsid -w nice -n 19 ionice -c3 bash -c tools_build >target/fuzz-build.log 2>&1 &
background=$!
# A failure below ends the run: the background builds (their own process groups) go with it.
trap 'kill -- -"$background" 2>/dev/null || true; [ -z "$image_build" ] || kill -- -"$image_build" 2>/dev/null || true; df -h . /tmp | sed "s/^/disk at exit: /"' EXIT
step integration tests
AF_TEST_NO_CONTAINER=1 cargo test --locked --bins --test '*' -- --test-threads "${AF_TEST_THREADS:-4}"
step OCI conformance
scripts/conformance.sh target/debug/af
step gateway conformance
scripts/gateway-conformance.sh target/debug/af
if [ -n "$image_build" ]; then
  step finish building the container image, and run it as Akash would
  wait "$image_build" || { tail -30 target/image-build.log >&2; echo "the container image did not build (target/image-build.log)" >&2; exit 1; }
  grep '^build-image:' target/image-build.log
  cargo test --locked --test container
fi
# Clippy checks in the build's own target directory, once the tests no longer use it: the
# dependencies' build scripts (C compiles of SQLite and aws-lc among them) and proc macros are
# the build's, not done again.
step clippy
cargo clippy --locked --all-targets -q -- -D warnings || { echo "clippy finds warnings (cargo clippy --all-targets -- -D warnings)" >&2; exit 1; }
step finish building the fuzz targets and cargo deny
kill -- -"$background" 2>/dev/null || true
wait "$background" 2>/dev/null || true
tools_build || { echo "the fuzz targets or cargo deny did not build" >&2; exit 1; }
step fuzz
scripts/fuzz.sh "${AF_FUZZ_SECONDS:-20}"
step cargo deny
scripts/deny.sh
step done
