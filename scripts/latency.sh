#!/usr/bin/env bash
# Latency at one offered rate (BENCHMARKS.md §5): mosquitto with the peers' settings on a free
# port, edgefilter, loadgen paced for 6 s with --tick 100us. Prints loadgen's latency line and
# edgefilter's CPU per message.
#   scripts/latency.sh QOS RATE [extra edgefilter flags...]      e.g. scripts/latency.sh 0 20000
set -euo pipefail
cd "$(dirname "$0")/.."
QOS=${1:?qos}; RATE=${2:?rate}; shift 2
cargo build --release --locked --workspace -q
TMP=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 2000000\nmax_queued_bytes 0\nmax_inflight_messages 1000\nset_tcp_nodelay false\n' "$PORT" > "$TMP/mosquitto.conf"
MQ= EF=
trap 'for p in $EF $MQ; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT
mosquitto -c "$TMP/mosquitto.conf" 2>"$TMP/mosquitto.log" & MQ=$!
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.05; done
target/release/edgefilter run --broker "mqtt://127.0.0.1:$PORT" --qos "$QOS" --metrics-addr off \
  --stats-interval 0 "$@" 2>"$TMP/edgefilter.log" & EF=$!
sleep 0.5
c0=$(awk '{print $14+$15}' "/proc/$EF/stat")
target/release/loadgen --broker "mqtt://127.0.0.1:$PORT" --qos "$QOS" --rate "$RATE" --duration 6s \
  --alert-ratio 0.3 --no-progress --tick 100us | grep -E "lost|latency" | head -2
c1=$(awk '{print $14+$15}' "/proc/$EF/stat")
python3 -c "print(f'  edgefilter cpu    {($c1-$c0)*1e6/$(getconf CLK_TCK)/($RATE*6):.2f} us/msg')"
