#!/usr/bin/env python3
"""Issue 11's cut in cloud-bound messages, measured by loadgen: on the sensor profile (loadgen's
SimulatedTemperatureSensor, one per device, no --alert-ratio), edgefilter with edge mode and 10 s
summaries against the seed's behaviour (an alert per reading above the threshold).

Each repetition starts a fresh mosquitto (bench.py's settings, a free port) and a fresh
`edgefilter run --alert-mode edge --summary-window 10s`; loadgen paces --rate msg/s over
--devices for --duration with the same rules, checks every alert and summary (lost,
unexpected) and reports `seed_alerts` (readings above the threshold: the seed's alerts),
`cloud_messages` (alerts + summaries received) and their ratio. Prints one line per run and
the medians. Only the standard library; needs `cargo build --release --workspace`.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import EDGEFILTER, LOADGEN, MOSQUITTO_CONF, free_port, stop, wait_port  # noqa: E402

RULES = ["--alert-mode", "edge", "--summary-window", "10s"]


def one(a, tmp):
    port = free_port()
    conf = os.path.join(tmp, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(MOSQUITTO_CONF.format(port=port))
    logs = [open(os.path.join(tmp, n), "w") for n in ("mosquitto.log", "filter.log")]
    broker = subprocess.Popen(["mosquitto", "-c", conf], stdout=logs[0], stderr=subprocess.STDOUT)
    filt = None
    try:
        if not wait_port(port):
            raise RuntimeError("mosquitto did not start")
        filt = subprocess.Popen(
            [EDGEFILTER, "run", "--broker", f"mqtt://127.0.0.1:{port}", "--metrics-addr", "off",
             "--stats-interval", "0", "--client-id", f"ef-cut-{os.getpid()}"] + RULES,
            stdout=logs[1], stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn"))
        summary = os.path.join(tmp, "summary.json")
        # Windows close on the filter's clock: the last one up to 10 s after the last reading.
        lg = subprocess.run(
            [LOADGEN, "--broker", f"mqtt://127.0.0.1:{port}", "--rate", str(a.rate),
             "--duration", f"{a.duration}s", "--devices", str(a.devices), "--no-progress",
             "--ready-timeout", "60s", "--drain-timeout", "20s", "--summary", summary,
             "--seed", str(a.seed)] + RULES,
            capture_output=True, text=True, timeout=a.duration + 120)
        if not os.path.exists(summary):
            raise RuntimeError(f"loadgen failed: {lg.stderr.strip()[-300:]}")
        with open(summary) as f:
            return json.load(f), lg.returncode
    finally:
        stop(filt, signal.SIGINT)
        stop(broker)
        for f in logs:
            f.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=2000, help="msg/s over all devices (the demo's)")
    ap.add_argument("--duration", type=int, default=30, help="seconds of sending")
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    cuts = []
    for rep in range(a.reps):
        with tempfile.TemporaryDirectory() as tmp:
            s, rc = one(a, tmp)
        lost = s["lost"] + s["summaries"]["lost"]
        unexpected = s["unexpected"] + s["summaries"]["unexpected"]
        print(f"run {rep + 1}: sent {s['sent']}  seed alerts {s['seed_alerts']}  cloud messages "
              f"{s['cloud_messages']} (alerts {s['received_alerts']}, "
              f"summaries {s['summaries']['received']})  {s['reduction']:.0f}x fewer  "
              f"lost {lost}  unexpected {unexpected}  loadgen rc {rc}", flush=True)
        cuts.append(s["reduction"])
    print(f"median of {a.reps}: {statistics.median(cuts):.0f}x fewer cloud-bound messages "
          f"({a.devices} devices, {a.rate} msg/s, {a.duration} s, rules: {' '.join(RULES)})")


if __name__ == "__main__":
    main()
