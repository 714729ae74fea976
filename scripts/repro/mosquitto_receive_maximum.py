#!/usr/bin/env python3
"""Two defects of mosquitto 2.0.11 (Debian 12's package) that an MQTT 5 subscriber meets under
overload, shown with the smallest client that exhibits each: raw sockets, no MQTT library.

1. overshoot: a subscriber with Receive Maximum RM holds RM unacknowledged QoS 1 messages while a
   queue waits behind them; it then acknowledges the OLDEST one, in order, as MQTT requires. A
   compliant broker sends exactly one more message (the quota freed by that PUBACK). mosquitto
   2.0.11 sends up to RM more: `db__message_delete_outgoing` counts only the in-flight messages
   *before* the acknowledged one (it stops at it), so an in-order PUBACK sees an empty window and
   moves up to RM queued messages into flight (fixed upstream in 2.0.12, "Various fixes around
   inflight quota management", eclipse/mosquitto#2306).
2. reuse: once more than 65,535 messages are in flight to one client (which (1) allows), mosquitto
   gives a new message a packet id that an unacknowledged one still has. A PUBACK then removes the
   FIRST message with that id. A client that acknowledges out of order -- here: it leaves message
   X unacknowledged and acknowledges a later message Y that got X's id -- deletes X from its
   session: after a reconnect the broker redelivers Y (whose PUBACK it applied to X) and never X.
   edgefilter up to 34a67a8 did exactly that under overload (it left inputs past its held-input
   bound unacknowledged and went on acknowledging the retained twin document the broker resends
   after every SUBSCRIBE): RELIABILITY.md, "Overload: root causes".

usage: mosquitto_receive_maximum.py [--mosquitto PATH] [overshoot|reuse|all]
Starts its own mosquitto (max_queued_messages 0, i.e. unbounded) on a free port; prints what it
saw and exits 1 when the broker misbehaved, 0 when it behaved as MQTT 5 requires.
"""
import argparse
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect(client_id, receive_maximum=None, clean=True):
    """An MQTT 5 CONNECT: session expiry one hour, our Receive Maximum when given."""
    props = b"\x11" + struct.pack(">I", 3600)
    if receive_maximum:
        props += b"\x21" + struct.pack(">H", receive_maximum)
    flags = 0x02 if clean else 0x00
    body = utf8("MQTT") + bytes([5, flags]) + struct.pack(">H", 60) + varint(len(props)) + props
    return packet(0x10, body + utf8(client_id))


class Client:
    """A blocking MQTT 5 client that decodes just what these checks need."""

    def __init__(self, port, client_id, receive_maximum=None, clean=True):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""
        self.sock.sendall(connect(client_id, receive_maximum, clean))
        kind, body = self.read_packet(5)
        assert kind == 0x20 and body[1] == 0, f"CONNACK refused: {body!r}"
        self.session_present = bool(body[0] & 1)

    def read_packet(self, timeout):
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf):
                    b = self.buf[i]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    i = None
                if i is not None and len(self.buf) >= i + n:
                    first, body = self.buf[0], self.buf[i:i + n]
                    self.buf = self.buf[i + n:]
                    return first & 0xF0, body if first & 0xF0 != 0x30 else (first, body)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                return None, None
            if not chunk:
                return None, None
            self.buf += chunk

    def publishes(self, timeout):
        """Every PUBLISH that arrives until the connection is quiet for `timeout` s:
        (packet id, payload, dup)."""
        out = []
        while True:
            kind, body = self.read_packet(timeout)
            if kind is None:
                return out
            if kind == 0x30:
                first, body = body
                tlen = struct.unpack(">H", body[:2])[0]
                rest = body[2 + tlen:]
                pkid = struct.unpack(">H", rest[:2])[0]
                plen, j, mult = 0, 2, 1
                while True:  # property length
                    b = rest[j]
                    plen += (b & 0x7F) * mult
                    mult *= 128
                    j += 1
                    if not b & 0x80:
                        break
                out.append((pkid, rest[j + plen:], bool(first & 0x08)))

    def subscribe(self, topic):
        body = struct.pack(">H", 1) + b"\x00" + utf8(topic) + b"\x01"  # QoS 1
        self.sock.sendall(packet(0x82, body))
        while True:
            kind, _ = self.read_packet(5)
            if kind == 0x90:
                return
            assert kind is not None, "no SUBACK"

    def puback(self, pkid):
        self.sock.sendall(packet(0x40, struct.pack(">H", pkid)))

    def publish_many(self, topic, payloads):
        """QoS 1 publishes, acknowledged by the broker before this returns."""
        out = bytearray()
        for n, p in enumerate(payloads):
            body = utf8(topic) + struct.pack(">H", n % 65535 + 1) + b"\x00" + p
            out += packet(0x32, body)
            if len(out) > 1 << 20:
                self.sock.sendall(out)
                out.clear()
                self.drain_pubacks()
        self.sock.sendall(out)
        self.drain_pubacks()

    def drain_pubacks(self):
        self.sock.setblocking(False)
        try:
            while True:
                if not self.sock.recv(1 << 16):
                    break
        except BlockingIOError:
            pass
        self.sock.setblocking(True)

    def close(self):
        self.sock.sendall(packet(0xE0, b"\x00\x00"))
        self.sock.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_mosquitto(path, work):
    port = free_port()
    conf = os.path.join(work, "m.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    proc = subprocess.Popen([path, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def overshoot(port, rm=10, n=100):
    sub = Client(port, "rm-sub", receive_maximum=rm)
    sub.subscribe("t/#")
    pub = Client(port, "rm-pub")
    pub.publish_many("t/x", [b"%d" % i for i in range(n)])
    first = sub.publishes(1.0)
    sub.puback(first[0][0])  # the oldest, in order
    more = sub.publishes(1.0)
    sub.close()
    pub.close()
    ok = len(first) == rm and len(more) == 1
    print(f"overshoot: Receive Maximum {rm}, {n} queued: {len(first)} arrived unacknowledged; "
          f"one PUBACK (the oldest) brought {len(more)} more (MQTT 5: 1) -> "
          f"{len(first) - 1 + len(more)} unacknowledged: {'OK' if ok else 'BROKER OVERSHOOTS'}")
    return ok


def reuse(port, rm=40000, n=100000):
    sub = Client(port, "reuse-sub", receive_maximum=rm, clean=True)
    sub.subscribe("r/#")
    pub = Client(port, "reuse-pub")
    pub.publish_many("r/x", [b"%d" % i for i in range(n)])
    got = sub.publishes(2.0)
    # Acknowledge the oldest once, in order: with (1) the broker moves another `rm` into flight.
    sub.puback(got[0][0])
    got += sub.publishes(2.0)
    by_id = {}
    x = y = None
    for pkid, payload, _ in got[1:]:
        if pkid in by_id:
            x, y = by_id[pkid], (pkid, payload)
            break
        by_id[pkid] = (pkid, payload)
    if y is None:
        print(f"reuse: {len(got)} unacknowledged messages in flight, no packet id in use twice: OK")
        sub.close()
        pub.close()
        return True
    # Out of order: acknowledge Y (the later message with that id), leave X unacknowledged.
    sub.puback(y[0])
    sub.close()
    again = Client(port, "reuse-sub", receive_maximum=65535, clean=False)
    redelivered = {payload for _, payload, _ in again.publishes(3.0)}
    again.close()
    pub.close()
    lost = x[1] not in redelivered
    print(f"reuse: {len(got)} unacknowledged in flight; packet id {x[0]} given to message {x[1].decode()} "
          f"and again to message {y[1].decode()} while the first was unacknowledged; after a PUBACK for "
          f"{y[0]} meant for {y[1].decode()} and a reconnect, the broker redelivered "
          f"{'both' if not lost and y[1] in redelivered else (y[1].decode() + ' but not ' + x[1].decode())}: "
          f"{'LOST ' + x[1].decode() if lost else 'OK'}")
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mosquitto", default="mosquitto" if any(
        os.access(os.path.join(d, "mosquitto"), os.X_OK) for d in os.environ.get("PATH", "").split(":"))
        else "/usr/sbin/mosquitto")
    ap.add_argument("check", nargs="?", default="all", choices=["overshoot", "reuse", "all"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        ok = True
        for check in (["overshoot", "reuse"] if args.check == "all" else [args.check]):
            proc, port = start_mosquitto(args.mosquitto, work)
            try:
                ok &= overshoot(port) if check == "overshoot" else reuse(port)
            finally:
                proc.terminate()
                proc.wait()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
