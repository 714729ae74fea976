#!/usr/bin/env bash
# Tooling: the broker-path ceiling as loadgen sees it — loadgen → mosquitto → loadgen, no
# filter (the sink subscribes to the input topics and every message counts as an alert).
# Same broker settings as the peers' ../shared/peers/mosquitto.conf, but on a free port.
# Prints one line per run: QoS, msg/s, loadgen CPU µs/msg (getrusage and /usr/bin/time).
#
#   loadgen/scripts/broker_path.sh [N=500000] [REPS=3] [extra loadgen flags...]
#   MOSQUITTO=/path/to/mosquitto (default: mosquitto from PATH)
#   ALERT_FILTER=... (default telemetry/#). IoT Edge topics:
#   ALERT_FILTER='devices/dev1/modules/edgefilter/inputs/#' loadgen/scripts/broker_path.sh 500000 3 --target azure --no-property-check
set -euo pipefail
N=${1:-500000}; REPS=${2:-3}; shift $(( $# < 2 ? $# : 2 )) || true
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cargo build -q --release -p loadgen --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release/loadgen
TMP=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$TMP/mosquitto.conf" <<CONF
listener $PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 2000000
max_queued_bytes 0
max_inflight_messages 1000
log_dest stderr
log_type error
set_tcp_nodelay false
CONF
BP=
trap '[ -n "$BP" ] && kill "$BP" 2>/dev/null; rm -rf "$TMP"' EXIT
echo "# $(date -u +%FT%TZ) N=$N load=$(cut -d' ' -f1-3 /proc/loadavg) $("${MOSQUITTO:-mosquitto}" -h | head -1)"
for q in 0 1; do
  for r in $(seq 1 "$REPS"); do
    "${MOSQUITTO:-mosquitto}" -c "$TMP/mosquitto.conf" 2>>"$TMP/mosquitto.log" & BP=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.05; done
    /usr/bin/time -v -o "$TMP/time.txt" "$BIN" --broker "mqtt://127.0.0.1:$PORT" \
      --count "$N" --qos "$q" --alert-ratio 1 --alert-filter "${ALERT_FILTER:-telemetry/#}" \
      --no-progress --summary "$TMP/s.json" "$@" > /dev/null
    kill "$BP"; wait "$BP" 2>/dev/null || true; BP=
    python3 - "$TMP/s.json" "$TMP/time.txt" "$q" "$r" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1])); t = open(sys.argv[2]).read()
cpu = sum(float(re.search(p + r": ([\d.]+)", t).group(1)) for p in ("User time \(seconds\)", "System time \(seconds\)"))
print(f"qos={sys.argv[3]} rep={sys.argv[4]} msg/s={s['throughput']:.0f} send_rate={s['send_rate']:.0f} "
      f"lost={s['lost']} cpu_us/msg={s['cpu_us_per_msg']:.2f} (publishers {s['cpu_publishers_s']*1e6/s['sent']:.2f}, "
      f"sink {s['cpu_sink_s']*1e6/s['sent']:.2f}) time_v_us/msg={cpu*1e6/s['sent']:.2f} p50_ms={s['latency_us']['p50']/1000:.1f}")
PY
  done
done
