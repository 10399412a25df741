#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests drive (idempotently), checks
# the Dockerfile's steps without a Docker engine, builds once, runs the Rust unit and integration
# tests (real node processes, real clients, a PostgreSQL server), then the OCI conformance suite
# and the IPFS gateway conformance suite. Exits non-zero on any failure.
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
cargo test --locked -- --test-threads "${AF_TEST_THREADS:-4}"
scripts/conformance.sh target/debug/af
scripts/gateway-conformance.sh target/debug/af
