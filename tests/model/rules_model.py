#!/usr/bin/env python3
"""Reference model of edgefilter's alert rules (README "Alert rules"), written from their
documented semantics, independently of the Rust implementation. tests/it/rules_model.rs feeds the
same long random stream to the real verdict stage and to this script, and requires identical
outputs.

stdin: one JSON operation per line
  {"op":"rules","threshold":T,"mode":"every"|"edge","hysteresis":H,"clear":B,
   "min_interval_us":N,"window_us":N,"lateness_us":N,"idle_us":N,"event_field":"t"|null,
   "now_us":N}
  {"op":"read","device":D,"body":"<payload>","arrival_us":N}
  {"op":"tick","now_us":N}
  {"op":"flush"}
stdout: one line per operation, the list of what it published, in order:
  ["alert"], ["clear"], ["summary", device, start_us, end_us, count, min, max, mean, last,
  alerts, first_arrival_us, last_arrival_us, partial]
"""
import json
import math
import sys
from datetime import datetime


def event_time(doc, path):
    """The payload's time at `path`: RFC 3339 string or Unix seconds, in µs; else None."""
    v = doc
    for key in path.split("."):
        if not isinstance(v, dict) or key not in v:
            return None
        v = v[key]
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v * 1_000_000
    if isinstance(v, float):
        return round(v * 1e6) if math.isfinite(v) else None
    if isinstance(v, str):
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            return None
        if t.tzinfo is None or "T" not in v:
            return None
        return int(t.timestamp()) * 1_000_000 + t.microsecond
    return None


def reading_of(body, threshold):
    """(value, above) of machine.temperature, or None when the verdict is not a number."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    m = doc.get("machine")
    if not isinstance(m, dict) or "temperature" not in m:
        return None, doc
    v = m["temperature"]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None, doc
    return (float(v), v > threshold), doc


class Window:
    def __init__(self, start, end):
        self.start, self.end = start, end
        self.values, self.arrivals, self.alerts = [], [], 0

    def doc(self, device, partial):
        total = 0.0
        for v in self.values:
            total += v
        return ["summary", device, self.start, self.end, len(self.values), min(self.values),
                max(self.values), total / len(self.values), self.values[-1], self.alerts,
                self.arrivals[0], self.arrivals[-1], partial]


class Device:
    def __init__(self):
        self.live = []            # windows taking readings, oldest first (at most two)
        self.closed_until = None  # end of the newest closed window
        self.last_alert = None
        self.last_seen = None
        self.max_time = None
        self.armed = True


class Model:
    def __init__(self):
        self.rules = None
        self.devices = {}

    def keep(self):
        r = self.rules
        return max(r["idle_us"], r["window_us"] + self.lateness(), r["min_interval_us"])

    def lateness(self):
        return self.rules["lateness_us"] if self.rules["event_field"] else 0

    def stateless(self, r):
        return r["mode"] == "every" and r["min_interval_us"] == 0 and r["window_us"] == 0

    def close(self, name, dev, w, partial, out):
        dev.live.remove(w)
        dev.closed_until = w.end if dev.closed_until is None else max(dev.closed_until, w.end)
        out.append(w.doc(name, partial))

    def close_until(self, name, dev, watermark, out):
        for w in list(dev.live):
            if w.end <= watermark:
                self.close(name, dev, w, False, out)

    def flush(self, out):
        for name, dev in self.devices.items():
            for w in list(dev.live):
                self.close(name, dev, w, True, out)

    def set_rules(self, new, out):
        old, self.rules = self.rules, new
        if old is None:
            return
        if self.stateless(new):
            self.flush(out)
            self.devices.clear()
            return
        if old["window_us"] > 0 and new["window_us"] == 0:
            self.flush(out)
        if new["mode"] == "edge" and old["mode"] != "edge":
            for dev in self.devices.values():
                dev.armed = True

    def read(self, name, body, arrival, out):
        r = self.rules
        got, doc = reading_of(body, r["threshold"])
        if self.stateless(r) and not self.devices:
            if got is not None and got[1]:
                out.append(["alert"])
            return
        if got is None:
            return
        value, above = got
        dev = self.devices.setdefault(name, Device())
        t = arrival
        if r["event_field"]:
            e = event_time(doc, r["event_field"])
            if e is not None:
                t = e
        dev.last_seen = arrival
        dev.max_time = t if dev.max_time is None else max(dev.max_time, t)
        window = None
        if r["window_us"] > 0:
            window = self.place(name, dev, t, value, arrival, out)
            self.close_until(name, dev, dev.max_time - self.lateness(), out)
        edge = r["mode"] == "edge"
        if above:
            if edge and not dev.armed:
                return
            if r["min_interval_us"] > 0 and dev.last_alert is not None \
                    and t - dev.last_alert < r["min_interval_us"]:
                return
            dev.last_alert = t
            if edge:
                dev.armed = False
            if window is not None:
                window.alerts += 1
            out.append(["alert"])
        elif edge and not dev.armed and value <= r["threshold"] - r["hysteresis"]:
            dev.armed = True
            if r["clear"]:
                out.append(["clear"])

    def place(self, name, dev, t, value, arrival, out):
        """The window the reading goes into (None: late)."""
        for w in dev.live:
            if w.start <= t < w.end:
                w.values.append(value)
                w.arrivals.append(arrival)
                return w
        if dev.live and t < dev.live[-1].start:
            return None
        if not dev.live and dev.closed_until is not None and t < dev.closed_until:
            return None
        last_end = dev.live[-1].end if dev.live else dev.closed_until
        # A later window begins: what is due closes; what still waits for late readings stays,
        # but no more than one window (the older one closes).
        self.close_until(name, dev, dev.max_time - self.lateness(), out)
        if len(dev.live) == 2:
            self.close(name, dev, dev.live[0], False, out)
        w_us = self.rules["window_us"]
        aligned = (t // w_us) * w_us
        w = Window(aligned if last_end is None else max(aligned, last_end), aligned + w_us)
        w.values.append(value)
        w.arrivals.append(arrival)
        dev.live.append(w)
        return w

    def tick(self, now, out):
        if self.stateless(self.rules):
            return
        for name in list(self.devices):
            dev = self.devices[name]
            now_t = now
            if self.rules["event_field"] and dev.max_time is not None:
                now_t = dev.max_time + max(0, now - dev.last_seen)
            self.close_until(name, dev, now_t - self.lateness(), out)
            if now - dev.last_seen >= self.keep():
                for w in list(dev.live):
                    self.close(name, dev, w, True, out)
                del self.devices[name]


def main():
    model = Model()
    for line in sys.stdin:
        op = json.loads(line)
        out = []
        kind = op["op"]
        if kind == "rules":
            # A rule change reaches the stages with a tick at its arrival point.
            model.set_rules(op, out)
            model.tick(op["now_us"], out)
        elif kind == "read":
            model.read(op["device"], op["body"], op["arrival_us"], out)
        elif kind == "tick":
            model.tick(op["now_us"], out)
        elif kind == "flush":
            model.flush(out)
        sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
