#!/usr/bin/env bash
# End-to-end benchmark (BENCHMARKS.md): edgefilter beside the broker ceiling, the Python
# seed-equivalent and Node-RED, on one mosquitto, same messages and sink, in one run.
#   scripts/bench.sh                      # everything, 3 repetitions (~15 min)
#   scripts/bench.sh --reps 1 --qos 1     # a quicker look
#   scripts/bench.sh --help
# The peers need `../shared/peers/run.sh setup` once (venv + Node-RED under /tmp/peers).
#
# The IoT Edge path (issue 9): edgefilter and the seed's own module on the real Python SDK
# behind the edgeHub stand-in with edgeHub's one-at-a-time delivery (scripts/edge_path.py;
# needs root for its network namespace; installs the SDK venv via scripts/peers/setup.sh):
#   scripts/bench.sh edge                 # store delays 0.2, 1, 5 ms: edgefilter's default
#                                         # (outbox), --ack-policy alert, the seed (~15 min)
#   scripts/bench.sh edge --modules edgefilter,edgefilter-alert,edgefilter-fsync,seed
#                                         # and fsync durability (~20 min)
#   scripts/bench.sh edge --help
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "edge" ]; then
  shift
  cargo build --release --locked -p edgefilter -p loadgen -p edgehub-standin --bins --examples -q
  scripts/peers/setup.sh >/dev/null
  exec python3 scripts/edge_path.py "$@"
fi
cargo build --release --locked --workspace --examples -q
exec python3 scripts/bench.py "$@"
