#!/usr/bin/env bash
# Fuzzes every parser that hostile input reaches (fuzz/fuzz_targets/, one per input kind) with
# cargo fuzz (libFuzzer, AddressSanitizer with leak detection, nightly Rust), each for SECONDS
# (default 20), as many at once as there are cores:
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   scripts/fuzz.sh --build-only
# Each run starts from the committed seeds (fuzz/corpus/<target>, left as they are) and a scratch
# corpus in target/fuzz-corpus/<target> that grows from run to run on this machine. A crash, a
# leak, an input slower than 10 s or one that needs over 512 MiB fails the run; its input lands
# in fuzz/artifacts/<target>/, to be made a regression test (fuzz/README.md). Prints executions
# and coverage per target, also kept in target/fuzz-report.txt. AF_FUZZ_OUT=DIR puts the logs and
# the report in DIR instead, so that a long run and a short one can go on side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
# Optimised, with debug assertions (overflow checks) on; codegen split so the build uses every
# core (cargo fuzz builds each crate as one unit by default). AF_FUZZ_PROFILE=dev builds
# unoptimised instead, quicker to build, for short runs (scripts/test.sh) where the
# build costs more than the executions it would gain.
if [ "${AF_FUZZ_PROFILE:-release}" = dev ]; then
  profile=(--dev -a)
else
  profile=(-O -a --codegen-units 16)
fi
build() { (cd fuzz && cargo +nightly fuzz build "${profile[@]}" "$@"); }
if [ "${1:-}" = "--build-only" ]; then
  build
  exit 0
fi
seconds=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^af-registry-fuzz$')
fi
if [ ${#targets[@]} -eq 1 ]; then build "${targets[0]}"; else build; fi
jobs=${FUZZ_JOBS:-$(nproc)}
out=${AF_FUZZ_OUT:-target}
mkdir -p "$out"
run() { # target
  local t=$1 scratch=target/fuzz-corpus/$1
  mkdir -p "$scratch" "fuzz/artifacts/$t"
  (cd fuzz && cargo +nightly fuzz run "${profile[@]}" "$t" "../$scratch" "corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=512 -malloc_limit_mb=512 -timeout=10 \
      -print_final_stats=1 -close_fd_mask=3) >"$out/fuzz-$t.log" 2>&1
}
declare -A pid
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run "$t" & pid[$t]=$!
done
report=$out/fuzz-report.txt
printf '%-14s %10s %12s %8s %10s\n' target seconds executions cov features | tee "$report"
failed=()
for t in "${targets[@]}"; do
  if wait "${pid[$t]}"; then status=ok; else status=FAILED; failed+=("$t"); fi
  log=$out/fuzz-$t.log
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  printf '%-14s %10s %12s %8s %10s %s\n' "$t" "$seconds" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$status" | tee -a "$report"
done
if [ ${#failed[@]} -gt 0 ]; then
  for t in "${failed[@]}"; do
    echo "--- $t ($out/fuzz-$t.log):"
    grep -E 'ERROR|panicked|SUMMARY|Test unit written|==[0-9]+==' "$out/fuzz-$t.log" | head -20
  done
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
