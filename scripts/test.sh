#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests drive (idempotently), checks
# the Dockerfile's steps without a Docker engine, builds once, runs the Rust unit and integration
# tests (real node processes, real clients, a PostgreSQL server), then the OCI conformance suite
# and the IPFS gateway conformance suite, every fuzz target for 20 s, and the dependency checks.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# /usr/sbin: dnsmasq (the DNS server of the DNSLink tests) lives there, off some users' PATH.
export PATH="${GOBIN:-$HOME/go/bin}:$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"

scripts/install-test-deps.sh
# A PostgreSQL server for the metadata tests and the conformance run on PostgreSQL.
AF_TEST_POSTGRES_URL=$(scripts/postgres.sh)
export AF_TEST_POSTGRES_URL
scripts/check-dockerfile.sh
cargo build --locked --all-targets
# The fuzz targets (nightly, sanitizers) and cargo deny build meanwhile at the lowest priority,
# on what the tests leave of the cores; they run at the end, each fuzz target for 20 s.
mkdir -p target
# One compile job, idle I/O class: the timing-sensitive tests (swarm dials, visibility flips)
# must not feel it.
setsid -w bash -c '
  set -e
  export CARGO_BUILD_JOBS=1
  nice -n 19 ionice -c3 scripts/fuzz.sh --build-only
  command -v cargo-deny >/dev/null || nice -n 19 ionice -c3 cargo install --locked cargo-deny@0.20.2
' >target/fuzz-build.log 2>&1 &
fuzz_build=$!
# A failure below ends the run: the background build (its own process group) goes with it.
trap 'kill -- -"$fuzz_build" 2>/dev/null || true' EXIT
cargo test --locked -- --test-threads "${AF_TEST_THREADS:-4}"
scripts/conformance.sh target/debug/af
scripts/gateway-conformance.sh target/debug/af
wait "$fuzz_build" || { tail -40 target/fuzz-build.log; echo "the fuzz targets or cargo deny did not build" >&2; exit 1; }
scripts/fuzz.sh "${AF_FUZZ_SECONDS:-20}"
scripts/deny.sh
# A fresh clone with nothing beside it (no ../shared): the unit tests, Kubo's golden CIDs among
# them, take their data from the project's own files. Shares this build's dependencies.
fresh=$(mktemp -d)
git clone -q . "$fresh/af-registry"
(cd "$fresh/af-registry" && CARGO_TARGET_DIR="$OLDPWD/target" cargo test --locked --lib -q) \
  || { rm -rf "$fresh"; echo "the unit tests fail in a fresh clone without ../shared" >&2; exit 1; }
rm -rf "$fresh"
