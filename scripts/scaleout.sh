#!/usr/bin/env bash
# Scale-out through one broker (BENCHMARKS.md "Scale-out"): 1 vs 3 edgefilter instances with
# one --share-group on one mosquitto, in the same run, with the same loadgen (burst and
# paced, QoS 1 and 0), CPU per process (mosquitto, each filter). A thin wrapper over
# scripts/bench.py; extra arguments go to it (e.g. --reps 1 -n 100000 --report-dir reports).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mosquitto >/dev/null 2>&1 || export PATH="$PATH:/usr/sbin"
cargo build --release --locked -q -p edgefilter -p loadgen
exec python3 scripts/bench.py --scenarios broker,share1,share3 "$@"
