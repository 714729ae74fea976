#!/usr/bin/env python3
"""The IoT Edge path, measured (issue 9): edgefilter and the seed's own module (the tutorial's
logic on the real Python SDK, scripts/peers/seed_module.py) behind the edgeHub stand-in with
edgeHub's delivery semantics (tests/edgehub-standin: one message at a time per module, each
waiting for the module's PUBACK; the module's own publishes PUBACKed after a store delay).

For every store delay and module, in one run, each with a fresh stand-in and module:
  capacity   a burst of --burst messages (30 % alerts): messages / (start → last alert)
  sustained  paced runs of --duration s at fractions of the capacity; the highest rate with
             0 lost and every alert within 0.5 s of its intended send time (max latency)
  kill -9    paced at --kill-fraction of the slower module's sustained rate at that delay
             (the same rate for both), the module killed with SIGKILL once edgeHub has
             delivered half the window's messages, and started again 1 s later (as edgeAgent
             restarts a module); what each loses; then the same during a burst of --burst
             (edgeHub holding a backlog), killed at half of it
Results: one JSON line per run in bench-results/edge-<stamp>.jsonl and a markdown table.

The SDK connects to edgeHub's port 8883, fixed in its transport, so everything runs in a
private network namespace (`unshare -n`, root; the script re-executes itself there) where
the stand-in listens on 127.0.0.1:8883 as edgeHub; the workload API is a unix socket.

Modules: edgefilter (its default under IoT Edge, --ack-policy auto = outbox with `written`
durability: an alerting input is PUBACKed once its alert is committed to the outbox),
edgefilter-alert (--ack-policy alert: an input is PUBACKed after its alert's PUBACK),
edgefilter-fsync (--outbox-durability fsync), seed (the SDK peer: paho PUBACKs on receipt).
(The outbox policy's earlier prototype, examples/outbox_module.rs, measured in BENCHMARKS.md
§8's earlier runs, was removed once `--ack-policy auto` superseded it.)

usage: scripts/edge_path.py [--delays 200us,1ms,5ms] [--modules edgefilter,edgefilter-alert,seed] ...
       scripts/edge_path.py --from bench-results/edge-<stamp>.jsonl   (the table again)
       scripts/edge_path.py --from <run1>.jsonl,<run2>.jsonl,…        (each, then the medians)
Needs: cargo build --release -p edgefilter -p loadgen -p edgehub-standin --bins --examples,
and the SDK venv (scripts/peers/setup.sh); scripts/bench.sh edge does both.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import cpu_s  # noqa: E402  (the same /proc reading as the other benchmarks)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target/release")
EDGEFILTER = os.path.join(REL, "edgefilter")
LOADGEN = os.path.join(REL, "loadgen")
STANDIN = os.path.join(REL, "edgehub-standin")
SEED = os.path.join(ROOT, "scripts/peers/seed_module.py")
LAG_LIMIT_S = 0.5
# edgefilter's acknowledgement policies: `edgefilter` is the default (under IoT Edge: the
# outbox, written); the others name a flag.
EDGEFILTER_VARIANTS = {
    "edgefilter-alert": ["--ack-policy", "alert"],
    "edgefilter-fsync": ["--outbox-durability", "fsync"],
}


def log(*a):
    print("[edge_path]", *a, file=sys.stderr, flush=True)


class Path:
    """One stand-in (with a store delay) and one module process behind it."""

    def __init__(self, module, delay, tmp, venv):
        self.module, self.delay, self.tmp, self.venv = module, delay, tmp, venv
        self.standin = self.proc = None
        self.cpu_before_kill = 0.0

    def start(self):
        out = open(os.path.join(self.tmp, "standin.out"), "w+")
        self.standin_out = out
        self.standin = subprocess.Popen(
            [STANDIN, "--dir", self.tmp, "--module", self.module, "--store-delay", self.delay],
            stdout=out, stderr=subprocess.STDOUT)
        end = time.time() + 15
        while time.time() < end:
            out.seek(0)
            line = out.readline()
            if line.endswith("\n"):
                self.info = json.loads(line)
                break
            if self.standin.poll() is not None:
                raise RuntimeError("stand-in exited: " + open(out.name).read()[-300:])
            time.sleep(0.05)
        else:
            raise RuntimeError("stand-in did not start")
        self.env = dict(self.info["modules"][self.module]["env"])
        self.spawn_module()

    def spawn_module(self):
        env = dict(self.env, PATH=os.environ.get("PATH", ""), RUST_LOG="warn")
        if self.module == "edgefilter" or self.module.startswith("edgefilter-"):
            # The default under IoT Edge is the outbox policy; its outbox survives the kill -9
            # in this run's directory (as on the deployment's volume).
            cmd = [EDGEFILTER, "run", "--metrics-addr", "off", "--stats-interval", "0",
                   "--outbox-dir", os.path.join(self.tmp, "outbox")]
            cmd += EDGEFILTER_VARIANTS.get(self.module, [])
        else:
            cmd = [os.path.join(self.venv, "bin/python"), SEED]
        mlog = open(os.path.join(self.tmp, f"{self.module}.log"), "a")
        self.proc = subprocess.Popen(cmd, stdout=mlog, stderr=subprocess.STDOUT, env=env)

    def kill9_and_restart(self, pause):
        c = cpu_s(self.proc.pid)
        self.cpu_before_kill += c or 0.0
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        time.sleep(pause)
        self.spawn_module()

    def completed(self):
        """Messages the module has acknowledged so far (the stand-in's stats.json)."""
        try:
            with open(os.path.join(self.tmp, "stats.json")) as f:
                return json.load(f)[self.module]["completed"]
        except (OSError, ValueError, KeyError):
            return 0

    def module_cpu(self):
        return self.cpu_before_kill + (cpu_s(self.proc.pid) or 0.0)

    def loadgen_cmd(self, args, summary):
        if "--alert-ratio" not in args:
            args = args + ["--alert-ratio", "0.3"]
        return [LOADGEN, "--target", "azure", "--broker", f"mqtt://127.0.0.1:{self.info['side_port']}",
                "--device-id", self.env["IOTEDGE_DEVICEID"], "--module-id", self.module,
                "--qos", "1", "--seed", "7", "--no-progress",
                "--summary", summary, "--ready-timeout", "60s"] + args

    def stop(self):
        stats = None
        for p in (self.proc,):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.standin and self.standin.poll() is None:
            self.standin.send_signal(signal.SIGTERM)
            try:
                self.standin.wait(10)
            except subprocess.TimeoutExpired:
                self.standin.kill()
            self.standin_out.seek(0)
            for line in self.standin_out.read().splitlines():
                if line.startswith('{"stats"'):
                    stats = json.loads(line)["stats"].get(self.module)
        return stats


def run(module, delay, mode, args, a, venv, kill_at=None):
    tmp = tempfile.mkdtemp(prefix=f"edge-{module}-", dir=a.tmp)
    path = Path(module, delay, tmp, venv)
    summary = os.path.join(tmp, "summary.json")
    result = {"module": module, "delay": delay, "mode": mode}
    try:
        path.start()
        lg = subprocess.Popen(path.loadgen_cmd(args, summary), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        if mode == "no-alerts":
            # No alerts to time the end by: time edgeHub's completions (the stand-in's stats).
            n = int(args[args.index("--count") + 1])
            end = time.time() + a.timeout
            while path.completed() < 1 and time.time() < end:
                time.sleep(0.002)
            t0 = time.time()
            while path.completed() < n + 1 and time.time() < end:
                time.sleep(0.002)
            result["turn_rate"] = n / max(1e-9, time.time() - t0)
        if kill_at is not None:
            # Kill once edgeHub has delivered `kill_at` messages: halfway through the window.
            end = time.time() + a.timeout
            while path.completed() < kill_at and time.time() < end and lg.poll() is None:
                time.sleep(0.02)
            result["killed_after"] = path.completed()
            path.kill9_and_restart(1.0)
        try:
            _, err = lg.communicate(timeout=a.timeout)
            result["rc"] = lg.returncode
            if lg.returncode not in (0, 1):
                result["error"] = err.strip().splitlines()[-1:]
        except subprocess.TimeoutExpired:
            lg.kill()
            result["rc"] = "timeout"
        if os.path.exists(summary):
            with open(summary) as f:
                result["summary"] = json.load(f)
        result["module_cpu_s"] = path.module_cpu()
    except Exception as e:  # a module that cannot start is a result, not a crash
        result["rc"], result["error"] = "error", [str(e)]
    finally:
        result["standin"] = path.stop()
    s = result.get("summary", {})
    log(f"{module} {delay} {mode}: rate {s.get('rate', 0):,.0f} thr {s.get('throughput', 0):,.0f} "
        f"lost {s.get('lost')} dup {s.get('duplicates')} max {s.get('latency_us', {}).get('max', 0) / 1000:.0f} ms "
        f"rc {result.get('rc')} {result.get('error', '')}")
    return result


def lag_s(s):
    """Last intended send → end of the drain (the last alert), as in ../shared/peers."""
    return s["duration_s"] - s["send_s"]


def sustained_ok(r):
    s = r.get("summary")
    return bool(s) and s["lost"] == 0 and s["unexpected"] == 0 and lag_s(s) < LAG_LIMIT_S


def summarize(records, title):
    """The markdown table from a run's records (also for --from FILE)."""
    rows = {}
    for r in records:
        mode, module, delay, s = r.get("mode"), r.get("module"), r.get("delay"), r.get("summary") or {}
        if mode == "no-alerts":
            rows[("turn (no alerts)", module)] = {"capacity": r.get("turn_rate", 0), "sustained": "–"}
            continue
        row = rows.setdefault((delay, module), {"capacity": 0, "sustained": 0, "cpu_us": None})
        if mode == "burst" and s:
            row["capacity"] = s["throughput"]
            if r.get("module_cpu_s") is not None:
                row["cpu_us"] = r["module_cpu_s"] * 1e6 / max(1, s["sent"])
        elif mode == "paced" and sustained_ok(r) and s["rate"] >= row["sustained"]:
            row["sustained"], row["p99_ms"] = s["rate"], s["latency_us"]["p99"] / 1000
        elif mode in ("kill", "kill-burst") and s:
            row[mode] = {"rate": s["rate"], "lost": s["lost"], "dup": s["duplicates"],
                         "expected": s["expected_alerts"],
                         "redelivered": (r.get("standin") or {}).get("redelivered")}
    out = [title, "",
           "| store delay | module | capacity msg/s | sustained msg/s (0 lost, lag < 0.5 s) | p99 ms there "
           "| module µs CPU/msg | kill -9, paced: alerts lost / dup (redelivered) "
           "| kill -9 mid-burst: alerts lost / dup (redelivered) |",
           "|---|---|---|---|---|---|---|---|"]
    dash = "–"

    def kill(k):
        if not k:
            return dash
        return f"{k['lost']} of {k['expected']} / {k['dup']} ({k['redelivered']})" + (
            f" at {k['rate']:,.0f} msg/s" if k["rate"] else "")

    for (delay, module), row in rows.items():
        cpu = dash if row.get("cpu_us") is None else f"{row['cpu_us']:.0f}"
        sus = row["sustained"] if isinstance(row["sustained"], str) else f"{row['sustained']:,.0f}"
        p99 = f"{row['p99_ms']:.1f}" if "p99_ms" in row else dash
        out.append(f"| {delay} | {module} | {row['capacity']:,.0f} | {sus} | {p99} | {cpu} | "
                   f"{kill(row.get('kill'))} | {kill(row.get('kill-burst'))} |")
    return "\n".join(out)


def medians(runs):
    """Per store delay and module, the medians over several runs of the capacity, the
    sustained rate and the module's CPU per message (from each run's burst and paced runs)."""
    cells = {}
    for records in runs:
        best = {}
        for r in records:
            s, key = r.get("summary") or {}, (r.get("delay"), r.get("module"))
            if r.get("mode") == "no-alerts":
                cells.setdefault(("turn (no alerts)", r.get("module")), []).append(
                    {"capacity": r.get("turn_rate", 0)})
                continue
            cell = best.setdefault(key, {"capacity": 0, "sustained": 0, "cpu_us": None})
            if r.get("mode") == "burst" and s:
                cell["capacity"] = s["throughput"]
                if r.get("module_cpu_s") is not None:
                    cell["cpu_us"] = r["module_cpu_s"] * 1e6 / max(1, s["sent"])
            elif r.get("mode") == "paced" and sustained_ok(r):
                cell["sustained"] = max(cell["sustained"], s["rate"])
        for key, cell in best.items():
            cells.setdefault(key, []).append(cell)

    def med(values):
        values = sorted(v for v in values if v is not None)
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    out = [f"## Medians of {len(runs)} runs", "",
           "| store delay | module | capacity msg/s | sustained msg/s | module µs CPU/msg |",
           "|---|---|---|---|---|"]
    for (delay, module), cs in cells.items():
        cap = med([c.get("capacity") for c in cs])
        sus, cpu = med([c.get("sustained") for c in cs]), med([c.get("cpu_us") for c in cs])
        out.append(f"| {delay} | {module} | {cap:,.0f} | " + ("–" if sus is None else f"{sus:,.0f}")
                   + " | " + ("–" if cpu is None else f"{cpu:.0f}") + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delays", default="200us,1ms,5ms", help="store delays (humantime)")
    ap.add_argument("--modules", default="edgefilter,edgefilter-alert,seed")
    ap.add_argument("--burst", type=int, default=5000, help="messages of the capacity burst")
    ap.add_argument("--duration", type=int, default=10, help="seconds per paced run")
    ap.add_argument("--fractions", default="0.5,0.7,0.85,1.0", help="paced rates, of the capacity")
    ap.add_argument("--kill-fraction", type=float, default=0.8)
    ap.add_argument("--no-kill", action="store_true")
    ap.add_argument("--timeout", type=int, default=180)
    ap.add_argument("--from", dest="from_file",
                    help="only print the table of a recorded run (.jsonl); several, comma-separated: "
                         "each run's table, then the medians of capacity, sustained rate and CPU")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.from_file:
        runs = []
        for path in a.from_file.split(","):
            with open(path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
            m = lines[0]["machine"]
            runs.append(lines[1:])
            print(summarize(lines[1:], f"## IoT Edge path {m['stamp']} ({m['cpus']} CPUs, load {' '.join(m['load'])})"))
            print()
        if len(runs) > 1:
            print(medians(runs))
        return
    if not a.in_netns:
        # edgeHub's port 8883 in a network namespace of our own: no clash, no privilege.
        os.execvp("unshare", ["unshare", "-n", sys.executable, os.path.abspath(__file__), "--in-netns"]
                  + sys.argv[1:])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for tool in (EDGEFILTER, LOADGEN, STANDIN):
        if not os.path.exists(tool):
            sys.exit(f"edge_path: {tool} is missing: scripts/bench.sh edge builds it")
    modules = a.modules.split(",")
    venv = None
    if "seed" in modules:
        venv = subprocess.run([os.path.join(ROOT, "scripts/peers/setup.sh")], check=True,
                              capture_output=True, text=True).stdout.strip()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    out_path = os.path.join(ROOT, "bench-results", f"edge-{stamp}.jsonl")
    machine = {"stamp": stamp, "cpus": os.cpu_count(), "load": open("/proc/loadavg").read().split()[:3],
               "delays": a.delays, "burst": a.burst, "duration": a.duration, "fractions": a.fractions}
    records = []
    with open(out_path, "w") as out, tempfile.TemporaryDirectory() as tmp:
        a.tmp = tmp
        out.write(json.dumps({"machine": machine}) + "\n")

        def record(r):
            out.write(json.dumps(r) + "\n")
            out.flush()
            records.append(r)
            return r

        if "edgefilter" in modules:
            # Every input PUBACKed right after its verdict (no alert to wait for): the rate
            # edgeHub's one-at-a-time turn allows, the ceiling of any policy that
            # acknowledges an input before its alert's PUBACK.
            record(run("edgefilter", "0ms", "no-alerts", ["--count", str(4 * a.burst), "--alert-ratio", "0"],
                       a, venv))
        for delay in a.delays.split(","):
            sustained = {}
            for module in modules:
                burst = record(run(module, delay, "burst", ["--count", str(a.burst)], a, venv))
                cap = burst.get("summary", {}).get("throughput", 0)
                sustained[module] = 0
                for f in [float(x) for x in a.fractions.split(",")]:
                    rate = max(10, int(cap * f))
                    r = record(run(module, delay, "paced", ["--rate", str(rate), "--duration", f"{a.duration}s",
                                                            "--tick", "1ms"], a, venv))
                    if sustained_ok(r):
                        sustained[module] = max(sustained[module], rate)
            if a.no_kill:
                continue
            base = min((v for v in sustained.values() if v), default=0)
            rate = max(10, int(base * a.kill_fraction))
            for module in modules:
                record(run(module, delay, "kill", ["--rate", str(rate), "--duration", f"{a.duration}s",
                                                   "--tick", "1ms", "--drain-timeout", "40s"],
                           a, venv, kill_at=rate * a.duration // 2))
                record(run(module, delay, "kill-burst", ["--count", str(a.burst), "--drain-timeout", "60s"],
                           a, venv, kill_at=a.burst // 2))
    print("\n" + summarize(records, f"## IoT Edge path {stamp} ({machine['cpus']} CPUs, load "
                                    f"{' '.join(machine['load'])}; burst {a.burst}, paced {a.duration} s at "
                                    f"{a.fractions} of capacity, 30 % alerts)"))
    print(f"\nraw: {os.path.relpath(out_path, ROOT)}")


if __name__ == "__main__":
    main()
