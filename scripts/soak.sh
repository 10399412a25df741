#!/usr/bin/env bash
# The soak (tests/soak.rs): 200 concurrent clients on loopback pushing, pulling, retagging,
# deleting and running GCs against one node for MINUTES (default 10), then stopping by itself.
# Prints, each minute, operations per second, p99 latency per operation, errors, the node's RSS
# (anonymous and file-backed) and open descriptors; fails on any unexpected error, anonymous
# memory or descriptors growing after warm-up, an acknowledged image not pullable at the end, or
# `af registry verify` not clean.
#   scripts/soak.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
AF_SOAK_MINUTES=${1:-10} cargo test --locked --test soak -- --ignored --nocapture
