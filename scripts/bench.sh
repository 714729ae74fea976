#!/usr/bin/env bash
# End-to-end benchmark (BENCHMARKS.md): edgefilter beside the broker ceiling, the Python
# seed-equivalent and Node-RED, on one mosquitto, same messages and sink, in one run.
#   scripts/bench.sh                      # everything, 3 repetitions (~15 min)
#   scripts/bench.sh --reps 1 --qos 1     # a quicker look
#   scripts/bench.sh --help
# The peers need `../shared/peers/run.sh setup` once (venv + Node-RED under /tmp/peers).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --workspace --examples -q
exec python3 scripts/bench.py "$@"
