#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (RELIABILITY.md), one at a time, niced: each for SECONDS
# (default 600) with its corpus in fuzz/corpus/<target> (kept between runs, not committed),
# seeded from fuzz/seeds/<target>. Prints per target: runs, corpus size, and any crash
# (libFuzzer writes it to fuzz/artifacts/<target>/).
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # targets default to every one in fuzz/Cargo.toml
# cargo-fuzz needs nightly features: `cargo +nightly` when a nightly toolchain is installed,
# else the stable toolchain with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-600}; shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v edgefilter-fuzz)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then CARGO=(cargo +nightly); else CARGO=(cargo); export RUSTC_BOOTSTRAP=1; fi
nice -n 15 "${CARGO[@]}" fuzz build -O "${TARGETS[@]:0:1}" >/dev/null 2>&1 || true
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  log=$(mktemp)
  status=ok
  nice -n 15 "${CARGO[@]}" fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1 || status=CRASH
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "$t: ${SECONDS_EACH}s, ${runs:-?} runs, corpus $(ls "corpus/$t" | wc -l) files ($(du -sh "corpus/$t" | cut -f1)), $status"
  if [ "$status" != ok ]; then grep -E "panicked|ERROR|Test unit written" "$log" | head -5; fi
  rm -f "$log"
done
