#!/usr/bin/env bash
# Dependency checks with cargo deny (deny.toml): licences, bans and sources always (crates.io is
# enough for them); RustSec advisories when the advisory database (GitHub) is reachable, else
# said so and skipped: this machine and CI reach crates.io but not GitHub.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny@0.20.2
cargo deny check licenses bans sources
if git ls-remote https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
  cargo deny check advisories
else
  echo "cargo deny: advisories not checked: the RustSec database (github.com) is not reachable from here" >&2
fi
