#!/usr/bin/env bash
# Soak test (BENCHMARKS.md): edgefilter through mosquitto at a steady rate for a long time,
# sampling its RSS every 10 s, to show memory does not grow. Prints the samples and a verdict
# line; loadgen's summary (lost/duplicates/latency) follows.
#   scripts/soak.sh [minutes=10] [rate=40000] [qos=1] [extra edgefilter flags...]
# Environment:
#   SOAK_BROKER=embedded   edgefilter's embedded broker instead of mosquitto (RSS is then the
#                          whole process: broker and filter)
#   SOAK_DEVICES=N         loadgen --devices (default 10)
#   SOAK_STUCK_SUB=1       also a subscriber to '#' (QoS 1) that never reads after its SUBACK;
#                          the broker's drops for it are read from /metrics at the end
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}; RATE=${2:-40000}; QOS=${3:-1}; shift $(( $# < 3 ? $# : 3 )) || true
cargo build --release --locked --workspace -q
TMP=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MQ= EF= LG= SS=
trap 'for p in $SS $LG $EF $MQ; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT
if [ "${SOAK_BROKER:-mosquitto}" = embedded ]; then
  target/release/edgefilter run --listen "127.0.0.1:$PORT" --qos "$QOS" --metrics-addr "127.0.0.1:$MPORT" \
    --stats-interval 60s "$@" 2>"$TMP/edgefilter.log" & EF=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.05; done
else
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 2000000\nmax_inflight_messages 1000\n' "$PORT" > "$TMP/mosquitto.conf"
  mosquitto -c "$TMP/mosquitto.conf" 2>"$TMP/mosquitto.log" & MQ=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.05; done
  target/release/edgefilter run --broker "mqtt://127.0.0.1:$PORT" --qos "$QOS" --metrics-addr "127.0.0.1:$MPORT" \
    --stats-interval 60s "$@" 2>"$TMP/edgefilter.log" & EF=$!
fi
if [ "${SOAK_STUCK_SUB:-0}" = 1 ]; then
  # CONNECT (keep-alive off), SUBSCRIBE '#' at QoS 1, read the SUBACK, then never read again.
  python3 - "$PORT" <<'PY' & SS=$!
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"\x10\x14\x00\x04MQTT\x04\x02\x00\x00\x00\x08stuck-ss")
s.recv(4)
s.sendall(b"\x82\x06\x00\x01\x00\x01#\x01")
s.recv(5)
time.sleep(1e9)
PY
fi
target/release/loadgen --broker "mqtt://127.0.0.1:$PORT" --qos "$QOS" --rate "$RATE" --devices "${SOAK_DEVICES:-10}" \
  --duration "${MINUTES}m" --alert-ratio 0.3 --no-progress --tick 1ms --summary "$TMP/summary.json" \
  > "$TMP/loadgen.out" 2>&1 & LG=$!
echo "# soak: ${MINUTES} min at ${RATE} msg/s, QoS ${QOS}, $(nproc) CPUs; edgefilter RSS (MB) every 10 s"
samples=()
while kill -0 "$LG" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$EF/status")
  cpu=$(awk '{print $14+$15}' "/proc/$EF/stat")
  echo "$(date -u +%T) rss_mb=$rss cpu_ticks=$cpu"
  samples+=("$rss")
  sleep 10
done
wait "$LG" || true
cat "$TMP/loadgen.out" | tail -12
echo "# /metrics at the end:"
curl -s "http://127.0.0.1:$MPORT/metrics" | grep -E '^edgefilter_(broker_|messages_received|alerts_published)' || true
python3 - "${samples[@]}" <<'PY'
import sys
s = [float(x) for x in sys.argv[1:]]
if len(s) < 6:
    sys.exit("too few samples")
warm = s[len(s) // 5:]            # after the first fifth (warm-up)
first, last = warm[: len(warm) // 3], warm[-(len(warm) // 3):]
a, b = sum(first) / len(first), sum(last) / len(last)
print(f"RSS after warm-up: first third {a:.1f} MB, last third {b:.1f} MB, peak {max(s):.1f} MB, "
      f"growth {b - a:+.1f} MB ({'flat' if b - a < 2 else 'GROWING'})")
PY
