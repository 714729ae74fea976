#!/usr/bin/env python3
"""Reference model of edgefilter's conditions and per-device thresholds (README "Conditions
and per-device thresholds"), written from their documented semantics over `json.loads`,
independently of the Rust implementation. tests/it/condition_model.rs feeds random documents,
conditions, devices and threshold maps to the real verdict stage and to this script, and
requires the same verdict for every case.

stdin: one JSON case per line
  {"condition": "<text>" | null, "threshold": T, "thresholds": {filter: number},
   "device": "<topic>", "field": "machine.temperature", "body": "<payload>"}
stdout: one line per case: "alert", "unmatched" or the rejection reason
  ("not_json", "not_object", "not_a_number")
"""
import json
import re
import sys


# --- per-device thresholds: the most specific matching MQTT filter --------------------------

def matches(topic, filt):
    """MQTT 5 §4.7: `+` one level, `#` the rest including the parent level; a filter starting
    with a wildcard does not match a topic starting with `$`."""
    if topic.startswith("$") and filt[:1] in ("+", "#"):
        return False
    t = topic.split("/")
    f = filt.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(t) == len(f)


def specificity(filt, topic):
    """Level by level: a literal beats `+`, `+` beats the filter's end, which beats `#`."""
    f = filt.split("/")
    key = []
    for i in range(len(topic.split("/")) + 1):
        if i >= len(f):
            key.append(1)  # the filter ended with the topic
            break
        level = f[i]
        key.append(0 if level == "#" else 2 if level == "+" else 3)
        if level == "#":
            break
    return key


def device_threshold(device, thresholds, default):
    best = None
    for filt, value in thresholds.items():
        if matches(device, filt):
            k = specificity(filt, device)
            if best is None or k > best[0]:
                best = (k, value)
    return default if best is None else float(best[1])


# --- the condition grammar ------------------------------------------------------------------

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<op>>=|<=|==|!=|>|<)
  | (?P<paren>[()])
  | (?P<num>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<path>(?:"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_-]*)(?:\.(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_-]+))*)
""", re.X)


def tokenize(text):
    out = []
    i = 0
    while i < len(text):
        m = TOKEN.match(text, i)
        if not m:
            raise SyntaxError(text[i:])
        i = m.end()
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "ws":
            continue
        if kind == "path":
            if value in ("and", "or", "not", "threshold"):
                out.append((value, value))
                continue
            keys = []
            for part in re.findall(r'"(?:[^"\\]|\\.)*"|[^.]+', value):
                keys.append(json.loads(part) if part.startswith('"') else part)
            out.append(("path", tuple(keys)))
        elif kind == "num":
            out.append(("num", float(value)))
        else:
            out.append((value, value))
    out.append(("end", None))
    return out


def parse(text):
    """The condition as a tree: ("or", a, b), ("and", a, b), ("not", a),
    ("cmp", path, op, value) where value is a float or "threshold"."""
    toks = tokenize(text)
    pos = [0]

    def peek():
        return toks[pos[0]][0]

    def take():
        t = toks[pos[0]]
        pos[0] += 1
        return t

    def or_():
        left = and_()
        while peek() == "or":
            take()
            left = ("or", left, and_())
        return left

    def and_():
        left = unary()
        while peek() == "and":
            take()
            left = ("and", left, unary())
        return left

    def unary():
        if peek() == "not":
            take()
            return ("not", unary())
        if peek() == "(":
            take()
            inner = or_()
            assert take()[0] == ")"
            return inner
        a = take()
        op = take()[0]
        b = take()
        flip = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}
        if a[0] == "path":
            return ("cmp", a[1], op, b[1] if b[0] == "num" else "threshold")
        return ("cmp", b[1], flip[op], a[1] if a[0] == "num" else "threshold")

    tree = or_()
    assert peek() == "end"
    return tree


def fields(tree, out):
    if tree[0] == "cmp":
        out.append(tree[1])
    else:
        for sub in tree[1:]:
            fields(sub, out)
    return out


def lookup(doc, path):
    """(present, value): absent when a key is missing or a level is not an object."""
    v = doc
    for key in path:
        if not isinstance(v, dict) or key not in v:
            return False, None
        v = v[key]
    return True, v


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def evaluate(tree, doc, threshold):
    kind = tree[0]
    if kind == "or":
        return evaluate(tree[1], doc, threshold) | evaluate(tree[2], doc, threshold)
    if kind == "and":
        return evaluate(tree[1], doc, threshold) & evaluate(tree[2], doc, threshold)
    if kind == "not":
        return not evaluate(tree[1], doc, threshold)
    _, path, op, value = tree
    present, v = lookup(doc, path)
    if not present:
        return False  # an absent field makes its comparison false
    c = threshold if value == "threshold" else value
    # Python compares int and float exactly.
    return {">": v > c, ">=": v >= c, "<": v < c, "<=": v <= c, "==": v == c, "!=": v != c}[op]


def reject_constant(name):
    raise ValueError(name)


def verdict(case):
    try:
        doc = json.loads(case["body"], parse_constant=reject_constant)
    except (ValueError, RecursionError):
        return "not_json"
    if not isinstance(doc, dict):
        return "not_object"
    threshold = device_threshold(case["device"], case["thresholds"], float(case["threshold"]))
    if case["condition"] is None:
        present, v = lookup(doc, case["field"].split("."))
        if not present:
            return "unmatched"
        if not is_number(v):
            return "not_a_number"
        return "alert" if v > threshold else "unmatched"
    tree = parse(case["condition"])
    for path in fields(tree, []):
        present, v = lookup(doc, path)
        if present and not is_number(v):
            return "not_a_number"  # whatever the rest of the condition says
    return "alert" if evaluate(tree, doc, threshold) else "unmatched"


def main():
    out = []
    for line in sys.stdin:
        out.append(verdict(json.loads(line)))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
