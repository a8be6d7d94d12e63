"""MQTT scenarios run against Warren and against RabbitMQ's MQTT plugin with the same
assertions (tests/tests/mqtt.rs runs one scenario per test, per broker).

Usage: mqtt_compat.py SCENARIO --mqtt HOST:PORT --ws HOST:PORT --amqp URL

Clients: paho-mqtt (TCP and WebSocket), pika for the AMQP side, mosquitto_pub/mosquitto_sub,
and raw sockets for bad input. Every topic, client id and queue is unique to the run, since the
reference node is shared; what a scenario leaves behind (kept sessions) it removes.
"""
import argparse
import queue
import socket
import struct
import subprocess
import sys
import uuid

from mqtt_wire import mqtt_string, remaining_length

import paho.mqtt.client as mqtt
import pika

WAIT = 10  # seconds a scenario waits for something that must happen


def uniq(what):
    return f"{what}-{uuid.uuid4().hex[:10]}"


class Client:
    """A paho client whose events land in queues, so scenarios wait for them in order."""

    def __init__(self, addr, client_id=None, clean=True, transport="tcp", will=None,
                 user="guest", password="guest", keepalive=60):
        self.msgs, self.connacks = queue.Queue(), queue.Queue()
        self.subacks, self.gone = queue.Queue(), queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or uniq("c"),
                             clean_session=clean, transport=transport, reconnect_on_failure=False)
        if transport == "websockets":
            self.c.ws_set_options(path="/ws")
        if user is not None:
            self.c.username_pw_set(user, password)
        if will:
            self.c.will_set(*will)
        self.c.on_connect = lambda c, u, flags, rc, p: self.connacks.put((flags.session_present, rc.value))
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put([r.value for r in rcs])
        self.c.on_disconnect = lambda c, u, flags, rc, p: self.gone.put(rc)
        host, port = addr
        self.c.connect(host, port, keepalive=keepalive)
        self.c.loop_start()
        self.session_present, self.rc = self.connacks.get(timeout=WAIT)

    def subscribe(self, *filters):
        self.c.subscribe(list(filters))
        return self.subacks.get(timeout=WAIT)

    def publish(self, topic, payload, qos=0, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(WAIT)  # for QoS 1: the PUBACK arrived
        assert info.is_published(), f"no PUBACK for {topic}"

    def next(self):
        return self.msgs.get(timeout=WAIT)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def scenario_qos(a):
    t = uniq("q") + "/x"
    s0, s1, p = Client(a.mqtt), Client(a.mqtt), Client(a.mqtt)
    expect(s0.subscribe((t, 0)) == [0], "QoS 0 granted")
    expect(s1.subscribe((t, 2)) == [1], "QoS 2 is granted as 1")
    p.publish(t, b"one", qos=1)
    p.publish(t, b"zero", qos=0)
    for s, want in ((s0, [(b"one", 0), (b"zero", 0)]), (s1, [(b"one", 1), (b"zero", 0)])):
        got = [(m.payload, m.qos) for m in (s.next(), s.next())]
        expect(got == want, f"deliveries {got} != {want}")
        expect(s.msgs.empty(), "nothing else")
    for c in (s0, s1, p):
        c.close()


def scenario_wildcards(a):
    base = uniq("w")
    plus, hash_, p = Client(a.mqtt), Client(a.mqtt), Client(a.mqtt)
    plus.subscribe((f"{base}/+/x", 1))
    hash_.subscribe((f"{base}/#", 1))
    for t in (f"{base}/a/x", f"{base}/a/b/x", f"{base}/b"):
        p.publish(t, t.encode(), qos=1)
    p.publish(f"{base}/end/x", b"end", qos=1)
    got = [plus.next().topic for _ in range(2)]
    expect(got == [f"{base}/a/x", f"{base}/end/x"], f"+ matched {got}")
    got = [hash_.next().topic for _ in range(4)]
    expect(got == [f"{base}/a/x", f"{base}/a/b/x", f"{base}/b", f"{base}/end/x"], f"# matched {got}")
    for c in (plus, hash_, p):
        c.close()


def scenario_retained(a):
    t = uniq("r") + "/k"
    p = Client(a.mqtt)
    p.publish(t, b"kept", qos=1, retain=True)
    s = Client(a.mqtt)
    expect(s.subscribe((t, 1)) == [1], "granted")
    m = s.next()
    expect((m.topic, m.payload, m.qos, m.retain) == (t, b"kept", 1, True), f"retained {m.payload}")
    # Live messages to a subscriber carry no retain flag; wildcard filters get no retained
    # message (RabbitMQ looks retained messages up by the exact filter).
    w = Client(a.mqtt)
    w.subscribe((t.rsplit("/", 1)[0] + "/+", 1))
    p.publish(t, b"live", qos=1)
    m = w.next()
    expect((m.payload, m.retain) == (b"live", False), f"first to the wildcard: {m.payload} {m.retain}")
    m = s.next()
    expect((m.payload, m.retain) == (b"live", False), "live message")
    p.publish(t, b"", qos=1, retain=True)  # clears the retained message
    late = Client(a.mqtt)
    late.subscribe((t, 1))
    p.publish(t, b"after", qos=1)
    expect(late.next().payload == b"after", "cleared: nothing retained before the live message")
    for c in (p, s, w, late):
        c.close()


def raw_connect(addr, client_id, will_topic=None, will_payload=b"", keepalive=60):
    """A CONNECT written by hand on a plain socket, for closing it abruptly."""
    sock = socket.create_connection(addr, timeout=WAIT)
    sock.sendall(connect_packet(client_id=client_id, will=(will_topic, will_payload) if will_topic else None,
                                keepalive=keepalive))
    expect(sock.recv(4) == b"\x20\x02\x00\x00", "CONNACK accepted")
    return sock


def scenario_will(a):
    t = uniq("will") + "/t"
    watcher = Client(a.mqtt)
    watcher.subscribe((t, 1))
    # An abnormal close (the socket just closes): the will is published.
    sock = raw_connect(a.mqtt, uniq("w"), t, b"gone")
    sock.close()
    m = watcher.next()
    expect((m.topic, m.payload, m.qos) == (t, b"gone", 1), f"will {m.payload}")
    # DISCONNECT first: no will. The marker published afterwards is the next message.
    sock = raw_connect(a.mqtt, uniq("w"), t, b"must-not-arrive")
    sock.sendall(b"\xe0\x00")
    expect(sock.recv(1) == b"", "closed after DISCONNECT")
    sock.close()
    p = Client(a.mqtt)
    p.publish(t, b"marker", qos=1)
    expect(watcher.next().payload == b"marker", "no will after DISCONNECT")
    # A client silent past its keep-alive (1 s) vanished: its will goes out too.
    sock = raw_connect(a.mqtt, uniq("w"), t, b"timed-out", keepalive=1)
    expect(watcher.next().payload == b"timed-out", "will after the keep-alive timeout")
    sock.settimeout(WAIT)
    expect(sock.recv(1) == b"", "the silent client was closed")
    for c in (watcher, p):
        c.close()


def scenario_session(a):
    cid, t = uniq("persist"), uniq("s") + "/t"
    c = Client(a.mqtt, client_id=cid, clean=False)
    expect(not c.session_present, "no session at first")
    c.subscribe((t, 1))
    c.close()
    p = Client(a.mqtt)
    p.publish(t, b"m1", qos=1)
    p.publish(t, b"m2", qos=1)
    c = Client(a.mqtt, client_id=cid, clean=False)
    expect(c.session_present, "session present")
    got = [c.next().payload for _ in range(2)]
    expect(got == [b"m1", b"m2"], f"queued while away: {got}")
    c.close()
    c = Client(a.mqtt, client_id=cid, clean=True)  # drops the kept session
    expect(not c.session_present, "a clean session has no session present")
    c.close()
    c = Client(a.mqtt, client_id=cid, clean=False)
    expect(not c.session_present, "the clean session removed the kept one")
    c.close()
    Client(a.mqtt, client_id=cid, clean=True).close()
    p.close()


def scenario_takeover(a):
    cid, t = uniq("dup"), uniq("d") + "/t"
    first = Client(a.mqtt, client_id=cid)
    second = Client(a.mqtt, client_id=cid)
    first.gone.get(timeout=WAIT)  # the first connection was closed by the broker
    second.subscribe((t, 1))
    p = Client(a.mqtt)
    p.publish(t, b"to-second", qos=1)
    expect(second.next().payload == b"to-second", "the new connection works")
    for c in (second, p):
        c.close()
    first.c.loop_stop()


def amqp(a):
    return pika.BlockingConnection(pika.URLParameters(a.amqp))


def scenario_mqtt_to_amqp(a):
    base = uniq("m2a")
    conn = amqp(a)
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", routing_key=f"{base}.*.x")
    p = Client(a.mqtt)
    p.publish(f"{base}/one/x", b"q1", qos=1)
    p.publish(f"{base}/zero/x", b"q0", qos=0)
    p.publish(f"{base}/two/x", b"q2", qos=2)
    seen = []
    for _ in range(3):
        for _ in range(WAIT * 10):
            method, props, body = ch.basic_get(q, auto_ack=True)
            if method:
                break
            conn.sleep(0.1)
        expect(method is not None, "AMQP consumer got the MQTT publish")
        seen.append((method.exchange, method.routing_key, body, props.delivery_mode,
                     props.headers.get("x-mqtt-publish-qos"), props.headers.get("x-mqtt-dup")))
    want = [("amq.topic", f"{base}.one.x", b"q1", 2, 1, False),
            ("amq.topic", f"{base}.zero.x", b"q0", 1, 0, False),
            ("amq.topic", f"{base}.two.x", b"q2", 2, 1, False)]
    expect(seen == want, f"{seen} != {want}")
    p.close()
    conn.close()


def scenario_amqp_to_mqtt(a):
    base = uniq("a2m")
    s = Client(a.mqtt)
    s.subscribe((f"{base}/#", 1))
    conn = amqp(a)
    ch = conn.channel()
    ch.basic_publish("amq.topic", f"{base}.k.l", b"plain",
                     pika.BasicProperties(content_type="text/plain", delivery_mode=2))
    m = s.next()
    expect((m.topic, m.payload, m.qos, m.retain) == (f"{base}/k/l", b"plain", 1, False),
           f"AMQP publish without MQTT headers arrives at the subscription's QoS: {m.topic} {m.qos}")
    conn.close()
    s.close()


def scenario_websocket(a):
    t = uniq("ws") + "/t"
    ws_sub = Client(a.ws, transport="websockets")
    expect(ws_sub.subscribe((t, 1)) == [1], "granted over WebSocket")
    tcp_pub = Client(a.mqtt)
    ws_pub = Client(a.ws, transport="websockets")
    tcp_pub.publish(t, b"from-tcp", qos=1)
    ws_pub.publish(t, b"from-ws", qos=1)
    got = [ws_sub.next().payload for _ in range(2)]
    expect(got == [b"from-tcp", b"from-ws"], f"over WebSocket: {got}")
    for c in (ws_sub, tcp_pub, ws_pub):
        c.close()


def scenario_mosquitto(a):
    t = uniq("mosq") + "/t"
    host, port = a.mqtt
    common = ["-h", host, "-p", str(port), "-u", "guest", "-P", "guest", "-V", "mqttv311"]
    subprocess.run(["mosquitto_pub", *common, "-t", t, "-m", "hello", "-q", "1", "-r"], check=True, timeout=WAIT)
    out = subprocess.run(["mosquitto_sub", *common, "-t", t, "-C", "1", "-v", "-q", "1", "-W", str(WAIT)],
                         check=True, timeout=WAIT + 5, capture_output=True, text=True).stdout
    expect(out.strip() == f"{t} hello", f"mosquitto_sub printed {out!r}")
    subprocess.run(["mosquitto_pub", *common, "-t", t, "-n", "-r"], check=True, timeout=WAIT)
    bad = subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-u", "guest", "-P", "wrong",
                          "-t", t, "-m", "x"], timeout=WAIT, capture_output=True, text=True)
    expect(bad.returncode != 0, "a wrong password is refused")


def bad_input(addr, data):
    """Sends `data` after (or instead of) a CONNECT; returns what came back before the close."""
    sock = socket.create_connection(addr, timeout=WAIT)
    sock.sendall(data)
    got = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    sock.close()
    return got


def connect_packet(level=4, name="MQTT", client_id="bad", password="guest", clean=True,
                   will=None, keepalive=60):
    """CONNECT with user guest; `will` is (topic, payload), sent at QoS 1."""
    s = mqtt_string
    flags = 0xC0 | (0x02 if clean else 0)
    payload = s(client_id)
    if will:
        flags |= 0x04 | (1 << 3)
        payload += s(will[0]) + s(will[1])
    payload += s("guest") + s(password)
    body = s(name) + bytes([level, flags]) + struct.pack("!H", keepalive) + payload
    return bytes([0x10]) + remaining_length(len(body)) + body


def assert_still_serving(a):
    """Everyone else keeps working: a fresh subscriber gets a fresh publish."""
    t = uniq("after") + "/t"
    s, p = Client(a.mqtt), Client(a.mqtt)
    s.subscribe((t, 1))
    p.publish(t, b"still-up", qos=1)
    expect(s.next().payload == b"still-up", "the broker serves other clients")
    s.close()
    p.close()


def scenario_bad_input(a):
    ok = b"\x20\x02\x00\x00"
    pub = lambda flags, body: bytes([0x30 | flags]) + remaining_length(len(body)) + body
    cases = {
        "first packet not CONNECT": (b"\xc0\x00", b""),
        "MQTT 5 CONNECT": (connect_packet(level=5), b""),
        "wrong password": (connect_packet(client_id=uniq("b"), password="nope"), b"\x20\x02\x00\x04"),
        "empty client id without clean session": (connect_packet(client_id="", clean=False), b"\x20\x02\x00\x02"),
        "PUBLISH with QoS 3": (connect_packet(client_id=uniq("b")) + pub(6, b"\x00\x01a\x00\x01x"), ok),
        "PUBLISH shorter than its topic": (connect_packet(client_id=uniq("b")) + pub(0, b"\x00\x09ab"), ok),
        "SUBSCRIBE without its reserved flags": (connect_packet(client_id=uniq("b")) + b"\x80\x06\x00\x01\x00\x01a\x00", ok),
        "SUBSCRIBE with QoS 3": (connect_packet(client_id=uniq("b")) + b"\x82\x06\x00\x01\x00\x01a\x03", ok),
    }
    for what, (data, want) in cases.items():
        got = bad_input(a.mqtt, data)
        expect(got == want, f"{what}: got {got.hex()} then close, want {want.hex()}")
    assert_still_serving(a)


def scenario_no_connect(a):
    sock = socket.create_connection(a.mqtt, timeout=30)
    expect(sock.recv(1) == b"", "a client that never sends CONNECT is closed (login timeout)")


def scenario_oversized(a):
    """A PUBLISH larger than RabbitMQ's largest message (128 MiB) closes the connection."""
    sock = raw_connect(a.mqtt, uniq("big"))
    body = b"\x00\x01t\x00\x07" + bytes(128 * 1024 * 1024 + 1)
    try:
        sock.sendall(b"\x32" + remaining_length(len(body)) + body)
        got = sock.recv(4)
    except OSError:
        got = b""  # closed while we were still sending
    expect(got == b"", f"no PUBACK for an oversized message, closed: {got.hex()}")
    sock.close()
    assert_still_serving(a)


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario")
    ap.add_argument("--mqtt", type=addr, required=True)
    ap.add_argument("--ws", type=addr, required=True)
    ap.add_argument("--amqp", required=True)
    a = ap.parse_args()
    globals()[f"scenario_{a.scenario}"](a)
    print(f"ok {a.scenario}")


if __name__ == "__main__":
    sys.exit(main())
