#!/usr/bin/env python3
"""Fault suite driver (scripts/faults.sh runs it): edgefilter between a persistent mosquitto
and loadgen at QoS 1, with one fault per case, and one table at the end:
case, sent, lost, duplicates, peak RSS of edgefilter (VmHWM), recovery time, result.

Every case gets a fresh mosquitto (persistence on, its own directory, a free port) and a fresh
edgefilter session. Counts come from loadgen's --summary JSON (exact: loadgen knows the verdict
of every message), except for the broker-restart case: loadgen's connections do not survive a
broker restart, so that case uses the small persistent-session publisher below and a
persistent mosquitto_sub, and counts the same way (every seq, lost = expected - received).

Cases in KNOWN_FAILING are open defects. They run in the full suite and report what
happens (FAIL is printed as KNOWN-FAIL and does not fail the run); `--short` (CI) lists them
without running them. When a fix lands, remove the case from KNOWN_FAILING: from then on it
runs in CI and must pass. Cases in RELEASE_ONLY (overload at about three times a release
build's capacity) run in the full suite only; each overload case repeats its run
(--overload-reps, 5 by default) and fails on any lost alert, any duplicate, any reconnect or
session takeover, or a peak RSS over 64 MB in any of them.
"""

import argparse
import concurrent.futures
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port  # noqa: E402  (scripts/bench.py, importable without side effects)

# Case name -> why it fails today.
KNOWN_FAILING = {}

# Cases `--short` (CI's debug build) does not run: they measure a release build at its limits.
RELEASE_ONLY = {
    name: "150,000 msg/s for 15 s, about three times a release build's capacity; the full suite runs it"
    for name in ("overload-sink0", "overload-sink1", "overload-embedded")
}

RSS_LIMIT_MB = 64  # peak RSS under 64 MB under sustained overload


def wait_until(pred, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Mosquitto:
    """mosquitto with persistence in its own directory; restart keeps port and database."""

    def __init__(self, workdir):
        self.dir = tempfile.mkdtemp(prefix="mosq-", dir=workdir)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                f"persistence true\npersistence_location {self.dir}/\n"
                "max_queued_messages 2000000\nmax_inflight_messages 1000\n"
                "message_size_limit 0\nuser root\n"
                f"log_dest file {self.dir}/mosquitto.log\n"
            )
        self.proc = None
        self.start()

    def start(self):
        for _ in range(50):
            self.proc = subprocess.Popen(["mosquitto", "-c", self.conf],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if wait_until(lambda: listening(self.port), 5):
                return
            self.proc.kill()
            self.proc.wait()
            time.sleep(0.1)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop_gracefully(self):
        """SIGTERM: mosquitto writes its database (sessions, queued messages) and exits."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Filter:
    """edgefilter as a child process; samples its VmHWM until it exits. With `embedded`, it
    runs its own broker on `broker_port` instead of connecting to mosquitto there."""

    def __init__(self, binary, broker_port, workdir, extra=(), embedded=False):
        self.binary, self.broker_port, self.extra = binary, broker_port, list(extra)
        self.embedded = embedded
        self.log_path = os.path.join(workdir, "edgefilter.log")
        self.metrics_port = free_port()
        self.log = open(os.path.join(workdir, "edgefilter.log"), "ab")
        self.peak_kb = 0
        self.proc = None
        self._sampler = None

    def start(self):
        """Starts it; returns the seconds until /healthz answered 200 (connected)."""
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [self.binary, "run",
             *(["--listen", f"127.0.0.1:{self.broker_port}"] if self.embedded
               else ["--broker", f"mqtt://127.0.0.1:{self.broker_port}"]),
             "--client-id", "faults-edgefilter", "--metrics-addr",
             f"127.0.0.1:{self.metrics_port}", "--stats-interval", "5s", *self.extra],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "info"})
        proc = self.proc
        self._sampler = threading.Thread(target=self._sample, args=(proc,), daemon=True)
        self._sampler.start()
        if not wait_until(self.healthy, 60, 0.01):
            raise RuntimeError("edgefilter did not connect within 60 s")
        return time.monotonic() - t0

    def _sample(self, proc):
        path = f"/proc/{proc.pid}/status"
        while proc.poll() is None:
            self._read_hwm(path)
            time.sleep(0.1)

    def _read_hwm(self, path):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass

    def healthy(self):
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=0.5) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self, sig):
        self._read_hwm(f"/proc/{self.proc.pid}/status")
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.kill(signal.SIGTERM)


def loadgen(args, broker_port, summary, rate, duration, extra=(), sink_qos=1, alert_ratio=0.3):
    cmd = [args.loadgen, "--broker", f"mqtt://127.0.0.1:{broker_port}", "--qos", "1",
           "--sink-qos", str(sink_qos), "--rate", str(rate), "--duration", duration,
           "--connections", "2", "--alert-ratio", str(alert_ratio), "--no-progress", "--tick",
           "1ms", "--drain-timeout", "20s", "--ready-timeout", "60s", "--summary", summary,
           *extra]
    out = open(summary + ".out", "w")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def read_summary(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        with open(path + ".out") as f:
            raise RuntimeError("loadgen wrote no summary: " + f.read()[-500:])


class Case:
    def __init__(self, name, proves):
        self.name, self.proves = name, proves
        self.sent = self.lost = self.dup = 0
        self.peak_mb = 0.0
        self.recovery = "-"
        self.ok = False
        self.note = ""


def with_loadgen(args, case, work, fault, rate, duration, ef_extra=(), lg_extra=()):
    """mosquitto + edgefilter + loadgen; fault(ctx) runs in a thread while loadgen sends."""
    mq = Mosquitto(work)
    ef = Filter(args.edgefilter, mq.port, work, ef_extra)
    ctx = {"mq": mq, "ef": ef, "recoveries": [], "extra_lost": 0, "notes": []}
    try:
        ef.start()
        summary = os.path.join(work, "summary.json")
        lg = loadgen(args, mq.port, summary, rate, duration, lg_extra)
        ctx["t_start"] = time.monotonic()
        def guarded(ctx):
            try:
                fault(ctx)
            except Exception as e:  # the fault could not be applied: the case fails
                ctx["notes"].append(f"fault failed: {e!r}")
                ctx["extra_lost"] += 1
        th = threading.Thread(target=guarded, args=(ctx,), daemon=True)
        time.sleep(1.0)  # loadgen's readiness probe, then the fault
        th.start()
        lg.wait(timeout=600)
        th.join(timeout=120)
        s = read_summary(summary)
        case.sent, case.lost, case.dup = s["sent"], s["lost"] + ctx["extra_lost"], s["duplicates"]
        if ctx["recoveries"]:
            case.recovery = f"{max(ctx['recoveries']):.2f} s"
        else:
            case.recovery = f"{max(0.0, s['duration_s'] - s['send_s']):.2f} s catch-up"
        case.ok = case.lost == 0 and s["unexpected"] == 0 and ef.alive()
        if s["unexpected"]:
            ctx["notes"].append(f"{s['unexpected']} unexpected alerts")
        if not ef.alive():
            ctx["notes"].append("edgefilter died")
        ef.stop()
        case.peak_mb = ef.peak_kb / 1024
    finally:
        ef.stop()
        mq.stop()
    case.note = "; ".join(ctx["notes"])
    return ctx


def restarts(sig, n):
    def fault(ctx):
        ef = ctx["ef"]
        for _ in range(n):
            time.sleep(2.0)
            ef.kill(sig)
            ctx["recoveries"].append(ef.start())
    return fault


def case_signal(args, work, sig, name):
    case = Case(name, "")
    with_loadgen(args, case, work, restarts(sig, 3), args.rate, args.duration)
    return case


def mosquitto_pub(port, topic, payload_file=None, message=None, qos=1, lines=False):
    cmd = ["mosquitto_pub", "-p", str(port), "-h", "127.0.0.1", "-q", str(qos), "-t", topic]
    if lines:
        cmd += ["-l"]
        return subprocess.run(cmd, input=message.encode(), check=True, timeout=120,
                              stdout=subprocess.DEVNULL)
    cmd += ["-f", payload_file] if payload_file else ["-m", message]
    subprocess.run(cmd, check=True, timeout=120, stdout=subprocess.DEVNULL)


def dead_letter_sub(port, count, timeout):
    return subprocess.Popen(
        ["mosquitto_sub", "-p", str(port), "-h", "127.0.0.1", "-q", "1", "-t",
         "edgefilter/deadletter", "-C", str(count), "-W", str(timeout), "-F", "%l %t"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def case_twin_hammer(args, work):
    case = Case("twin-hammer", "")
    patches = []
    for i in range(args.patches):
        patches.append([
            f'{{"Note":{i}}}',                                   # applied, changes nothing
            '{"TemperatureThreshold":"hot"}',                     # refused
            '{"TemperatureThreshold":25}',                        # applied, same threshold
            '[1]',                                                # refused: not an object
            '{"TemperatureThreshold":null,"$version":99}',        # refused
        ][i % 5])

    def fault(ctx):
        mosquitto_pub(ctx["mq"].port, "edgefilter/twin/desired", message="\n".join(patches) + "\n",
                      lines=True)
        # The last document decides the reported status; then the threshold must still be 25.
        mosquitto_pub(ctx["mq"].port, "edgefilter/twin/desired", message='{"Note":"end"}')
        out = subprocess.run(["mosquitto_sub", "-p", str(ctx["mq"].port), "-h", "127.0.0.1",
                              "-t", "edgefilter/twin/reported", "-C", "1", "-W", "10"],
                             capture_output=True, text=True)
        try:
            doc = json.loads(out.stdout)
            if doc.get("TemperatureThreshold") != 25:
                ctx["notes"].append(f"threshold moved: {doc}")
                ctx["extra_lost"] += 1
        except ValueError:
            ctx["notes"].append("no reported document")
            ctx["extra_lost"] += 1
    with_loadgen(args, case, work, fault, args.rate, args.duration)
    case.note = (case.note + f"; {args.patches} patches").lstrip("; ")
    return case


def case_dead_letters(args, work, name, topic, size, count):
    """`count` messages of `size` bytes on `topic` during load; each must be dead-lettered."""
    case = Case(name, "")
    body = os.path.join(work, f"{name}.body")
    with open(body, "wb") as f:
        f.write(b'{"machine":{"temperature":99},"pad":"' + b"x" * max(0, size - 40) + b'"}')

    def fault(ctx):
        port = ctx["mq"].port
        sub = dead_letter_sub(port, count, 60)
        time.sleep(0.5)
        for _ in range(count):
            mosquitto_pub(port, topic, payload_file=body)
        got = sub.communicate(timeout=120)[0].splitlines()
        missing = count - len(got)
        ctx["extra_lost"] += missing
        ctx["notes"].append(f"{len(got)}/{count} dead-lettered")
        if missing:
            # Whether the filter is still publishing alerts at all after the bad input.
            ctx["notes"].append("filter connected" if ctx["ef"].healthy() else "filter NOT connected")
    ctx = with_loadgen(args, case, work, fault, args.rate, args.duration)
    case.sent += count
    return case


def case_overload(args, work, name, sink_qos, embedded=False):
    """The load of the overload issue (QoS 1 in, half of it alerts, at about three times what
    passes), --overload-reps times, each with a fresh broker and filter. Fails on any lost
    alert, duplicate, reconnect or takeover, or a peak RSS over the limit."""
    case = Case(name, "")
    case.ok = True
    notes, rates = [], []
    for rep in range(args.overload_reps):
        rep_dir = tempfile.mkdtemp(prefix=f"rep{rep}-", dir=work)
        port = free_port()
        mq = None if embedded else Mosquitto(rep_dir)
        ef = Filter(args.edgefilter, port if embedded else mq.port, rep_dir, embedded=embedded)
        try:
            ef.start()
            summary = os.path.join(rep_dir, "summary.json")
            lg = loadgen(args, port if embedded else mq.port, summary, args.overload_rate,
                         args.overload_duration, sink_qos=sink_qos, alert_ratio=0.5)
            lg.wait(timeout=900)
            s = read_summary(summary)
            ef.stop()
        finally:
            ef.stop()
            if mq:
                mq.stop()
        with open(ef.log_path, errors="replace") as f:
            log = f.read()
        connects = log.count("connected to")
        # One connection, or two with a publisher connection of its own (also on the embedded
        # broker); every further "connected to" is a reconnect.
        reconnects = connects - (2 if "publisher connection" in log else 1)
        takeovers = 0
        if mq:
            with open(os.path.join(mq.dir, "mosquitto.log"), errors="replace") as f:
                takeovers = f.read().count("already connected")
        case.sent += s["sent"]
        case.lost += s["lost"]
        case.dup += s["duplicates"]
        case.peak_mb = max(case.peak_mb, ef.peak_kb / 1024)
        rates.append(s["throughput"])
        bad = []
        if s["lost"] or s["unexpected"]:
            bad.append(f"lost {s['lost']}, unexpected {s['unexpected']}")
        if s["duplicates"]:
            bad.append(f"{s['duplicates']} duplicates")
        if reconnects or takeovers:
            bad.append(f"{reconnects} reconnects, {takeovers} takeovers")
        if ef.peak_kb / 1024 >= RSS_LIMIT_MB:
            bad.append(f"peak RSS {ef.peak_kb / 1024:.1f} MB")
        if bad:
            case.ok = False
            notes.append(f"rep {rep + 1}: " + ", ".join(bad))
    rates.sort()
    notes.insert(0, f"{args.overload_reps} runs, end-to-end msg/s median {rates[len(rates) // 2]:,.0f}"
                    f" (min {rates[0]:,.0f})")
    case.recovery = "-"
    case.note = "; ".join(notes)
    return case


# --- broker restart: a persistent-session publisher (MQTT 3.1.1, QoS 1) -------------------

def mqtt_connect_packet(client_id):
    var = b"\x00\x04MQTT\x04\x00\x00\x3c"  # clean session 0, keep-alive 60 s
    payload = struct.pack("!H", len(client_id)) + client_id.encode()
    return b"\x10" + remaining(len(var) + len(payload)) + var + payload


def remaining(n):
    out = b""
    while True:
        b, n = n % 128, n // 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def publish_packet(topic, pkid, payload, dup):
    var = struct.pack("!H", len(topic)) + topic.encode() + struct.pack("!H", pkid)
    return bytes([0x3A if dup else 0x32]) + remaining(len(var) + len(payload)) + var + payload


class PersistentPublisher:
    """Publishes `count` bodies at `rate`; on a lost connection reconnects with the same
    session and resends the unacknowledged ones (DUP), as a well-behaved sensor does."""

    def __init__(self, port, count, rate):
        self.port, self.count, self.rate = port, count, rate
        self.inflight = {}  # pkid -> packet
        self.lock = threading.Condition()
        self.sock = None
        self.reconnects = 0

    def connect(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                s.sendall(mqtt_connect_packet("faults-publisher"))
                ack = s.recv(4)
                if len(ack) == 4 and ack[0] == 0x20 and ack[3] == 0:
                    s.settimeout(None)
                    return s
                s.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("publisher could not reconnect within 60 s")
            time.sleep(0.05)

    def reader(self, sock):
        buf = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                return
            buf += data
            while len(buf) >= 4 and buf[0] == 0x40:
                pkid = struct.unpack("!H", buf[2:4])[0]
                buf = buf[4:]
                with self.lock:
                    self.inflight.pop(pkid, None)
                    self.lock.notify_all()

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.resume()  # resends everything in flight, this one included

    def resume(self):
        with self.lock:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = self.connect()
            self.reconnects += 1
            threading.Thread(target=self.reader, args=(self.sock,), daemon=True).start()
            pending = [publish_packet_dup(p) for p in self.inflight.values()]
        for p in pending:
            self.sock.sendall(p)

    def run(self, expected):
        self.sock = self.connect()
        threading.Thread(target=self.reader, args=(self.sock,), daemon=True).start()
        t0 = time.monotonic()
        for seq in range(self.count):
            due = t0 + seq / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            temp = 30.0 if seq % 3 == 0 else 20.0
            if temp > 25:
                expected.add(seq)
            body = json.dumps({"machine": {"temperature": temp}, "seq": seq}).encode()
            pkid = seq % 65000 + 1
            with self.lock:
                while len(self.inflight) >= 1000 or pkid in self.inflight:
                    if not self.lock.wait(timeout=5):
                        break
                if len(self.inflight) >= 1000 or pkid in self.inflight:
                    wedged = True
                else:
                    wedged = False
                    pkt = publish_packet(f"telemetry/dev-{seq % 10}", pkid, body, False)
                    self.inflight[pkid] = pkt
            if wedged:  # no acks for 5 s: the connection is dead without an error
                self.resume()
                continue
            self.send(pkt)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with self.lock:
                if not self.inflight:
                    return
                self.lock.wait(timeout=5)
                stuck = bool(self.inflight)
            if stuck:
                self.resume()
        raise RuntimeError(f"{len(self.inflight)} publishes never acknowledged")


def publish_packet_dup(pkt):
    return bytes([pkt[0] | 0x08]) + pkt[1:]


def case_broker_restart(args, work):
    case = Case("broker-restart-x2", "")
    mq = Mosquitto(work)
    ef = Filter(args.edgefilter, mq.port, work)
    sink = None
    try:
        ef.start()
        # The consumer: a persistent session at QoS 1 that reconnects by itself.
        sink = subprocess.Popen(["mosquitto_sub", "-p", str(mq.port), "-h", "127.0.0.1",
                                 "-i", "faults-sink", "-c", "-q", "1", "-t", "alerts/#"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        seqs = []
        reader = threading.Thread(
            target=lambda: [seqs.append(int(m.group(1))) for line in sink.stdout
                            for m in [re.search(r'"seq": (\d+)', line)] if m], daemon=True)
        reader.start()
        time.sleep(0.5)
        count = int(args.rate * 10)
        pub = PersistentPublisher(mq.port, count, args.rate)
        expected = set()
        errors = []
        th = threading.Thread(target=lambda: _run(pub, expected, errors), daemon=True)
        th.start()
        recoveries = []
        for _ in range(2):
            time.sleep(3.0)
            mq.stop_gracefully()
            wait_until(lambda: not ef.healthy(), 10)  # the filter saw the broker go
            time.sleep(0.5)
            mq.start()
            t0 = time.monotonic()
            wait_until(ef.healthy, 60)
            recoveries.append(time.monotonic() - t0)
        th.join(timeout=300)
        # Drain: until every expected alert is in or nothing new for 15 s.
        last, since = -1, time.monotonic()
        while len(set(seqs) & expected) < len(expected) and time.monotonic() - since < 15:
            if len(seqs) != last:
                last, since = len(seqs), time.monotonic()
            time.sleep(0.2)
        got = set(seqs)
        case.sent = count
        case.lost = len(expected - got)
        case.dup = len(seqs) - len(got)
        case.recovery = f"{max(recoveries):.2f} s"
        unexpected = len(got - expected)
        case.ok = case.lost == 0 and unexpected == 0 and not errors and ef.alive()
        case.note = "; ".join(errors + ([f"{unexpected} unexpected"] if unexpected else [])
                              + [f"publisher reconnected {pub.reconnects}x"])
        ef.stop()
        case.peak_mb = ef.peak_kb / 1024
    finally:
        if sink:
            sink.kill()
        ef.stop()
        mq.stop()
    return case


def _run(pub, expected, errors):
    try:
        pub.run(expected)
    except Exception as e:  # reported in the table's note
        errors.append(str(e))


PROVES = {
    "kill-9-x3": "a crash loses nothing: the broker keeps the persistent session's input and the filter resends",
    "sigterm-x3": "a stop drains: acknowledged input has its alert out before exit",
    "broker-restart-x2": "the filter resumes its session after broker restarts (with persistence)",
    "overload-sink0": "sustained overload through mosquitto (sink QoS 0): flow control, no reconnect, nothing lost or duplicated, memory bounded",
    "overload-sink1": "the same with the sink at QoS 1",
    "overload-embedded": "the same overload on the embedded broker",
    "twin-hammer": "refused, stale and no-op twin patches under load never move the threshold or lose alerts",
    "poison-topic": "one message whose alert topic cannot be published does not stop the stream",
    "oversize-300KB": "bodies over --max-payload are dead-lettered, the stream goes on",
    "oversize-2MB": "bodies over the advertised Maximum Packet Size are accounted for",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edgefilter", required=True)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--short", action="store_true", help="CI form: shorter, known failures listed only")
    ap.add_argument("--only", action="append", help="run just these cases")
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--duration", default="12s")
    ap.add_argument("--overload-rate", type=int, default=150000)
    ap.add_argument("--overload-duration", default="15s")
    ap.add_argument("--overload-reps", type=int, default=5)
    ap.add_argument("--patches", type=int, default=1000)
    ap.add_argument("--jobs", type=int, help="cases run side by side (default 1; --short: 4)")
    args = ap.parse_args()
    if args.short:
        args.rate, args.duration, args.patches = min(args.rate, 2000), "9s", 300
    if args.jobs is None:
        # --short's cases run a debug build at 2,000 msg/s: a fraction of a core each, mostly
        # waiting out their 9 s. The full suite measures a release build at its limits, alone.
        args.jobs = 4 if args.short else 1

    poison = "telemetry/" + "M" * 65520
    cases = {
        "kill-9-x3": lambda w: case_signal(args, w, signal.SIGKILL, "kill-9-x3"),
        "sigterm-x3": lambda w: case_signal(args, w, signal.SIGTERM, "sigterm-x3"),
        "broker-restart-x2": lambda w: case_broker_restart(args, w),
        "overload-sink0": lambda w: case_overload(args, w, "overload-sink0", 0),
        "overload-sink1": lambda w: case_overload(args, w, "overload-sink1", 1),
        "overload-embedded": lambda w: case_overload(args, w, "overload-embedded", 1, embedded=True),
        "twin-hammer": lambda w: case_twin_hammer(args, w),
        "poison-topic": lambda w: case_dead_letters(args, w, "poison-topic", poison, 40, 1),
        "oversize-300KB": lambda w: case_dead_letters(args, w, "oversize-300KB", "telemetry/big", 300_000, 10),
        "oversize-2MB": lambda w: case_dead_letters(args, w, "oversize-2MB", "telemetry/huge", 2_000_000, 2),
    }
    names = args.only or list(cases)
    skipped = [n for n in names if args.short and (n in KNOWN_FAILING or n in RELEASE_ONLY)]
    to_run = [n for n in names if n not in skipped]

    def run_case(name, root):
        work = tempfile.mkdtemp(prefix=name + "-", dir=root)
        print(f"# {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            case = cases[name](work)
        except Exception as e:  # a case that cannot even run is a failure, shown as such
            case = Case(name, "")
            case.note = f"error: {e}"
            log = os.path.join(work, "edgefilter.log")
            if os.path.exists(log):
                with open(log, errors="replace") as f:
                    print(f.read()[-2000:], file=sys.stderr)
        case.proves = PROVES[name]
        print(f"# {name}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        return case

    # Each case has its own mosquitto, filter and loadgen on ports of its own, so cases can
    # run side by side (--jobs); the results are printed in the cases' order.
    with tempfile.TemporaryDirectory(prefix="faults-") as root:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(lambda n: run_case(n, root), to_run))

    print(f"{'case':<19} {'sent':>8} {'lost':>6} {'dups':>6} {'peak RSS':>9} {'recovery':>17}  result")
    failed = 0
    for c in results:
        known = c.name in KNOWN_FAILING
        result = "PASS" if c.ok else ("KNOWN-FAIL" if known else "FAIL")
        if result == "PASS" and known:
            result = "PASS (listed as known-failing: remove it from KNOWN_FAILING)"
        failed += result == "FAIL"
        print(f"{c.name:<19} {c.sent:>8} {c.lost:>6} {c.dup:>6} {c.peak_mb:>6.1f} MB {c.recovery:>17}  "
              f"{result}{'  (' + c.note + ')' if c.note else ''}")
    for name in skipped:
        why = f"known failing, {KNOWN_FAILING[name]}" if name in KNOWN_FAILING else RELEASE_ONLY[name]
        print(f"{name:<19} not run (--short): {why}")
    passed = sum(c.ok for c in results)
    known = len(results) - passed - failed + len(skipped)
    print(f"known failing (KNOWN_FAILING): {', '.join(KNOWN_FAILING) or 'none'}")
    print(f"faults: {passed} passed, {failed} failed, {known} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
