#!/usr/bin/env python3
"""Scale-out on the embedded broker's cluster (BENCHMARKS.md §9, issue 10): 1 node vs 3 nodes
on loopback, with --share-group, in one run, with the same three loadgens.

  1 node    one `edgefilter run --listen …` with --share-group (its embedded broker alone)
  3 nodes   three `edgefilter run --listen … --cluster-node-id i --cluster-peers …`, one rmqtt
            cluster (broadcast plugin, gRPC on loopback), one --share-group: the filters split
            the input through the cluster

Both get the same client side: three loadgens at once, each with its own devices
(`--input-prefix telemetry/g<i>`) and its own alert topics (`alerts/telemetry/g<i>/#`), each
sending N/3 messages as fast as it can; with 3 nodes loadgen i publishes to node i and reads
its alerts there (alerts made on another node cross the cluster), with 1 node all three use
it. Every loadgen checks that each of its expected alerts arrived exactly once (lost,
duplicates).

msg/s = all messages / the longest loadgen's processing window (each loadgen's `sent /
throughput`: start → the later of its last acknowledgement and its last alert). CPU is read
per process (/proc/<pid>/stat) over the loadgens' run; peak RSS per process (VmHWM).

Needs a release build with the `cluster` feature:
  cargo build --release --locked -p edgefilter -p loadgen --features edgefilter/cluster
(or --edgefilter PATH to such a binary).
Only the standard library is used. Raw results: bench-results/cluster-<stamp>.jsonl.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import EDGEFILTER, LOADGEN, ROOT, cpu_s, free_port, log, peak_rss_mb, stop, wait_port  # noqa: E402

BIN = {"edgefilter": EDGEFILTER}  # --edgefilter


def node_cmds(nodes, qos):
    """The edgefilter command line of each node, and the MQTT port each listens on."""
    mqtt = [free_port() for _ in range(nodes)]
    grpc = [free_port() for _ in range(nodes)]
    metrics = [free_port() for _ in range(nodes)]
    peers = ",".join(f"{i + 1}@127.0.0.1:{grpc[i]}" for i in range(nodes))
    cmds = []
    for i in range(nodes):
        cmd = [BIN["edgefilter"], "run", "--listen", f"127.0.0.1:{mqtt[i]}", "--share-group", "bench",
               "--client-id", f"ef-cluster-{os.getpid()}-{i + 1}", "--qos", str(qos),
               # A stats line per second and /metrics: what a stalled run leaves behind.
               "--metrics-addr", f"127.0.0.1:{metrics[i]}", "--stats-interval", "1s"]
        if nodes > 1:
            cmd += ["--cluster-node-id", str(i + 1), "--cluster-peers", peers]
        cmds.append(cmd)
    return cmds, mqtt, metrics


def scrape(port):
    """The node's /metrics (edgefilter_* and process_* lines), or why not."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError as e:
        return f"# scrape failed: {e}\n"


def threads(pid):
    """Each thread's name, state and CPU ticks, then gdb's backtrace of every thread."""
    out = []
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            out.append(f"{tid} {name} state={fields[0]} utime={fields[11]} stime={fields[12]}")
        except OSError:
            pass
    if shutil.which("gdb"):
        try:
            out.append(subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                                      capture_output=True, text=True, timeout=60).stdout)
        except (OSError, subprocess.TimeoutExpired) as e:
            out.append(f"gdb: {e}")
    return "\n".join(out) + "\n"


def measure(nodes, qos, n, timeout, tmp):
    cmds, ports, metrics = node_cmds(nodes, qos)
    logs, procs = [], []
    env = dict(os.environ)
    # The stats lines (edgefilter, info) and every warning of the broker.
    env.setdefault("RUST_LOG", "warn,edgefilter=info")
    result = {"nodes": nodes, "qos": qos}
    try:
        # All at once: a node's filter subscribes through the cluster, which needs its peers.
        for i, cmd in enumerate(cmds):
            out = open(os.path.join(tmp, f"node{i + 1}.log"), "w")
            logs.append(out)
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp))
        for p in ports:
            if not wait_port(p, 30):
                raise RuntimeError(f"a node did not listen on {p}")
        lgs = []
        before = [cpu_s(p.pid) for p in procs]
        t0 = time.time()
        for g in range(3):
            summary = os.path.join(tmp, f"summary{g}.json")
            cmd = [LOADGEN, "--broker", f"mqtt://127.0.0.1:{ports[g % nodes]}", "--qos", str(qos),
                   "--count", str(n // 3), "--devices", "10", "--alert-ratio", "0.3",
                   "--input-prefix", f"telemetry/g{g}", "--alert-filter", f"alerts/telemetry/g{g}/#",
                   "--client-id", f"lg{g}-{os.getpid()}", "--seed", str(7 + g), "--no-progress",
                   "--summary", summary, "--ready-timeout", "60s", "--drain-timeout", "5s"]
            lgs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
                        summary))
        summaries, errors = [], []
        for lg, summary in lgs:
            try:
                _, err = lg.communicate(timeout=max(1, timeout - (time.time() - t0)))
            except subprocess.TimeoutExpired:
                lg.kill()
                _, err = lg.communicate()
                errors.append("loadgen timed out")
            if lg.returncode not in (0, 1):
                errors.append((err or "").strip().splitlines()[-1:] or [f"rc {lg.returncode}"])
            if os.path.exists(summary):
                with open(summary) as f:
                    summaries.append(json.load(f))
        wall = time.time() - t0
        after = [cpu_s(p.pid) for p in procs]
        result["cpu_s"] = [round(b - a, 3) if a is not None and b is not None else None
                           for a, b in zip(before, after)]
        result["rss_mb"] = [peak_rss_mb(p.pid) for p in procs]
        result["wall_s"] = round(wall, 2)
        result["errors"] = errors
        result["summaries"] = summaries
        if len(summaries) == 3 and all(s["throughput"] > 0 for s in summaries):
            window = max(s["sent"] / s["throughput"] for s in summaries)
            result["sent"] = sum(s["sent"] for s in summaries)
            result["msg_s"] = result["sent"] / window
            for k in ("expected_alerts", "received_alerts", "lost", "duplicates", "unexpected"):
                result[k] = sum(s[k] for s in summaries)
    except Exception as e:  # a node that cannot start is a result, not a crash of the bench
        result["errors"] = [str(e)]
    finally:
        if result.get("errors") or "msg_s" not in result:
            # Evidence of a failed run, taken before the nodes stop: each node's counters.
            for i, port in enumerate(metrics[: len(procs)]):
                with open(os.path.join(tmp, f"node{i + 1}.metrics"), "w") as f:
                    f.write(scrape(port))
                # Where each thread is (gdb, if installed), and what each thread did (CPU).
                with open(os.path.join(tmp, f"node{i + 1}.threads"), "w") as f:
                    f.write(threads(procs[i].pid))
        for p in procs:
            stop(p, signal.SIGINT)
        for f in logs:
            f.close()
    return result


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=150_000, help="messages per run, over the three loadgens")
    ap.add_argument("--qos", default="1", help="comma-separated QoS levels (default 1)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--nodes", default="1,3", help="comma-separated node counts (default 1,3)")
    ap.add_argument("--timeout", type=int, default=180, help="seconds per run")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep every run's node logs, stats lines and summaries under DIR (a stall hunt)")
    ap.add_argument("--edgefilter", default=EDGEFILTER,
                    help="the edgefilter binary (built with the cluster feature; default target/release)")
    a = ap.parse_args()
    BIN["edgefilter"] = a.edgefilter
    for b in (a.edgefilter, LOADGEN):
        if not os.path.exists(b):
            sys.exit(f"{b} is missing: cargo build --release -p edgefilter -p loadgen --features edgefilter/cluster")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    out_path = os.path.join(ROOT, "bench-results", f"cluster-{stamp}.jsonl")
    results = []
    with open(out_path, "w") as out, tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        for qos in [int(q) for q in a.qos.split(",")]:
            # Repetition outermost, 1 and 3 nodes alternating: the machine's load hits both.
            for rep in range(a.reps):
                for nodes in [int(x) for x in a.nodes.split(",")]:
                    d = os.path.join(tmp, f"{nodes}-{qos}-{rep}")
                    os.makedirs(d)
                    r = measure(nodes, qos, a.n, a.timeout, d)
                    r["rep"] = rep
                    if a.keep:
                        shutil.copytree(d, os.path.join(a.keep, f"{stamp}-{nodes}-{qos}-{rep}"))
                    if "msg_s" not in r or r.get("errors"):
                        # The nodes' logs of a failed run are kept (RUST_LOG=info for more).
                        kept = os.path.join(ROOT, "bench-results", f"cluster-{stamp}-{nodes}-{qos}-{rep}")
                        shutil.copytree(d, kept)
                        r["logs"] = os.path.relpath(kept, ROOT)
                    out.write(json.dumps(r) + "\n")
                    out.flush()
                    results.append(r)
                    log(f"{nodes} node(s) qos{qos} #{rep}: {r.get('msg_s', 0):,.0f} msg/s, lost {r.get('lost')}, "
                        f"duplicates {r.get('duplicates')}, cpu {r.get('cpu_s')} {r.get('errors') or ''}")
    print(f"# run {stamp}, medians of {a.reps}, {a.n:,} messages per run over 3 loadgens, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print("| nodes | QoS | msg/s (median, min–max) | vs 1 node | expected alerts | lost | duplicates | "
          "nodes' cores busy (sum) | µs CPU/msg (all nodes) | peak RSS MB per node |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for qos in sorted({r["qos"] for r in results}):
        counts = sorted({r["nodes"] for r in results})
        base = med([r.get("msg_s") for r in results if r["qos"] == qos and r["nodes"] == counts[0]])
        for nodes in counts:
            rs = [r for r in results if r["qos"] == qos and r["nodes"] == nodes and "msg_s" in r]
            if not rs:
                print(f"| {nodes} | {qos} | failed | | | | | | | |")
                continue
            rate = med([r["msg_s"] for r in rs])
            cpu = [sum(r["cpu_s"]) for r in rs if None not in r["cpu_s"]]
            cores = med([sum(r["cpu_s"]) / r["wall_s"] for r in rs if None not in r["cpu_s"]])
            us = med([c * 1e6 / r["sent"] for c, r in zip(cpu, rs)])
            rss = " / ".join(f"{med([r['rss_mb'][i] for r in rs]):.0f}" for i in range(nodes))
            print(f"| {nodes} | {qos} | {rate:,.0f} ({min(r['msg_s'] for r in rs):,.0f}–{max(r['msg_s'] for r in rs):,.0f}) "
                  f"| {rate / base if base else 0:.2f}× | {med([r['expected_alerts'] for r in rs]):,.0f} "
                  f"| {max(r['lost'] for r in rs)} | {max(r['duplicates'] for r in rs)} "
                  f"| {cores:.2f} | {us:.1f} | {rss} |")
    print(f"\nraw: {os.path.relpath(out_path, ROOT)}")


if __name__ == "__main__":
    main()
