"""Permissions, connection limits and the connection list of MQTT and STOMP, and messages
across the two protocols, run against Warren and against RabbitMQ's plugins with the same
assertions (tests/tests/proto_access.rs runs one scenario per test, per broker).

Usage: proto_access.py SCENARIO --mgmt URL --mqtt HOST:PORT --ws HOST:PORT
                                --stomp HOST:PORT --web-stomp HOST:PORT

Users, vhosts, permissions and limits are made through the management API (as guest); their
names are unique to the run, since the reference node is shared, and each scenario deletes
what it made. MQTT and STOMP are spoken over plain sockets, so that what arrives, in which
order, and whether the broker closed the connection are seen exactly.
"""
import argparse
import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from mqtt_wire import mqtt_string, remaining_length

WAIT = 10  # seconds to wait for something that must happen
LISTED = 30  # seconds RabbitMQ may take to list a connection (its stats interval)


def uniq(what):
    return f"{what}-{uuid.uuid4().hex[:10]}"


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def enc(s):
    return urllib.parse.quote(s, safe="")


# ----- the management API -----------------------------------------------------------------

class Admin:
    """The management API as guest; remembers the users and vhosts it made."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.auth = "Basic " + base64.b64encode(b"guest:guest").decode()
        self.users, self.vhosts = [], []

    def call(self, method, path, body=None, ok=(200, 201, 204)):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": self.auth, "content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=WAIT) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        expect(status in ok, f"{method} {path}: {status} {text[:200]!r}")
        return json.loads(text) if text else None

    def vhost(self):
        v = uniq("pa-v")
        self.call("PUT", f"/api/vhosts/{enc(v)}", {})
        self.vhosts.append(v)
        self.permit(v, "guest", ".*", ".*", ".*")
        return v

    def user(self):
        u = uniq("pa-u")
        self.call("PUT", f"/api/users/{enc(u)}", {"password": "pw", "tags": ""})
        self.users.append(u)
        return u

    def permit(self, vhost, user, configure, write, read):
        self.call("PUT", f"/api/permissions/{enc(vhost)}/{enc(user)}",
                  {"configure": configure, "write": write, "read": read})

    def topic_permit(self, vhost, user, write, read, exchange="amq.topic"):
        self.call("PUT", f"/api/topic-permissions/{enc(vhost)}/{enc(user)}",
                  {"exchange": exchange, "write": write, "read": read})

    def vhost_limit(self, vhost, n):
        if n is None:
            self.call("DELETE", f"/api/vhost-limits/{enc(vhost)}/max-connections")
        else:
            self.call("PUT", f"/api/vhost-limits/{enc(vhost)}/max-connections", {"value": n})

    def user_limit(self, user, n):
        self.call("PUT", f"/api/user-limits/{enc(user)}/max-connections", {"value": n})

    def delete_user(self, user):
        self.call("DELETE", f"/api/users/{enc(user)}")
        self.users.remove(user)

    def delete_vhost(self, vhost):
        self.call("DELETE", f"/api/vhosts/{enc(vhost)}")
        self.vhosts.remove(vhost)

    def connections(self, vhost):
        return [c for c in self.call("GET", "/api/connections") if c.get("vhost") == vhost]

    def listed(self, vhost, pred, what):
        """Polls the connection list until a connection of `vhost` satisfies `pred`."""
        deadline = time.time() + LISTED
        while True:
            found = [c for c in self.connections(vhost) if pred(c)]
            if found:
                return found[0]
            expect(time.time() < deadline, f"{what} never listed: {self.connections(vhost)}")
            time.sleep(0.25)

    def cleanup(self):
        for u in list(self.users):
            self.call("DELETE", f"/api/users/{enc(u)}", ok=(204, 404))
        for v in list(self.vhosts):
            self.call("DELETE", f"/api/vhosts/{enc(v)}", ok=(204, 404))


# ----- MQTT over a plain socket -----------------------------------------------------------

class Mqtt:
    """An MQTT 3.1.1 (or 3.1) client written by hand: packets go out as asked, and every
    packet that comes back is read in order, so a missing SUBACK or PUBACK, or the broker
    closing the connection, is seen as such."""

    def __init__(self, addr, user, password, client_id=None, will=None, level=4, ws=False):
        self.client_id = client_id or uniq("c")
        self.sock = socket.create_connection(addr, timeout=WAIT)
        self.ws = WsConn(self.sock, "mqtt") if ws else None
        flags = 0x02 | 0x80 | 0x40  # clean session, username, password
        payload = mqtt_string(self.client_id)
        if will:
            topic, message, qos, retain = will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            payload += mqtt_string(topic) + mqtt_string(message)
        payload += mqtt_string(user) + mqtt_string(password)
        name = b"MQTT" if level == 4 else b"MQIsdp"
        var = mqtt_string(name) + bytes([level, flags]) + struct.pack(">H", 60)
        self.write(0x10, var + payload)
        kind, _, body = self.packet()
        expect(kind == 2, f"CONNACK expected, got packet type {kind}")
        self.rc = body[1]

    def write(self, first, body):
        data = bytes([first]) + remaining_length(len(body)) + body
        if self.ws:
            self.ws.send(data, binary=True)
        else:
            self.sock.sendall(data)

    def read(self, n):
        if self.ws:
            return self.ws.read(n)
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                return out
            out += chunk
        return out

    def packet(self):
        """The next packet: (type, flags, body); None when the broker closed the connection."""
        first = self.read(1)
        if not first:
            return None
        n, shift = 0, 0
        while True:
            b = self.read(1)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        body = self.read(n)
        return first[0] >> 4, first[0] & 0x0F, body

    def subscribe(self, pkid, *filters):
        body = struct.pack(">H", pkid) + b"".join(mqtt_string(f) + bytes([q]) for f, q in filters)
        self.write(0x82, body)

    def publish(self, topic, payload, qos=0, pkid=1, retain=False):
        body = mqtt_string(topic) + (struct.pack(">H", pkid) if qos else b"") + payload
        self.write(0x30 | (qos << 1) | (1 if retain else 0), body)

    def ping(self):
        self.write(0xC0, b"")

    def suback(self, pkid):
        p = self.packet()
        expect(p is not None, "closed instead of SUBACK")
        expect(p[0] == 9 and p[2][:2] == struct.pack(">H", pkid), f"SUBACK expected, got {p}")
        return list(p[2][2:])

    def message(self):
        """The next PUBLISH: (topic, payload, qos, retain, dup); acknowledges QoS 1."""
        p = self.packet()
        expect(p is not None, "closed instead of PUBLISH")
        kind, flags, body = p
        expect(kind == 3, f"PUBLISH expected, got {p}")
        tlen = struct.unpack(">H", body[:2])[0]
        topic, rest = body[2:2 + tlen].decode(), body[2 + tlen:]
        qos = (flags >> 1) & 3
        if qos:
            self.write(0x40, rest[:2])
            rest = rest[2:]
        return topic, rest, qos, bool(flags & 1), bool(flags & 8)

    def closed(self, what):
        """The broker closes the connection, without sending anything first."""
        p = self.packet()
        expect(p is None, f"{what}: expected the connection closed, got {p}")

    def disconnect(self):
        self.write(0xE0, b"")
        self.sock.close()

    def vanish(self):
        """An abnormal close: the socket just closes (the will goes out)."""
        self.sock.close()


def rc_accepted(c):
    expect(c.rc == 0, f"CONNACK {c.rc}, expected 0")
    return c


# ----- STOMP over a plain socket ----------------------------------------------------------

class Stomp:
    """A STOMP client written by hand; frames are read one by one, in order."""

    def __init__(self, addr, user, password, vhost, version="1.2", ws=False):
        self.sock = socket.create_connection(addr, timeout=WAIT)
        self.ws = WsConn(self.sock, "v12.stomp") if ws else None
        self.buf = b""
        self.send("CONNECT", [("accept-version", version), ("host", vhost),
                              ("login", user), ("passcode", password)])
        self.connected = self.frame()

    def send(self, command, headers=(), body=b""):
        head = "".join(f"{k}:{v}\n" for k, v in headers)
        data = f"{command}\n{head}\n".encode() + body + b"\0"
        if self.ws:
            self.ws.send(data, binary=False)
        else:
            self.sock.sendall(data)

    def more(self):
        chunk = self.ws.message() if self.ws else self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def frame(self):
        """The next frame: (command, headers, body); None when the broker closed."""
        while True:
            self.buf = self.buf.lstrip(b"\r\n")  # heart-beats
            end = self.buf.find(b"\n\n")
            if end >= 0:
                lines = self.buf[:end].decode().split("\n")
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers.setdefault(k, v)
                start = end + 2
                if "content-length" in headers:
                    stop = start + int(headers["content-length"])
                    if len(self.buf) > stop:
                        body, self.buf = self.buf[start:stop], self.buf[stop + 1:]
                        return lines[0], headers, body
                else:
                    nul = self.buf.find(b"\0", start)
                    if nul >= 0:
                        body, self.buf = self.buf[start:nul], self.buf[nul + 1:]
                        return lines[0], headers, body
            if not self.more():
                return None

    def error(self, message, body, what):
        """Expects an ERROR frame; `body` is the text, or a tuple of the texts allowed."""
        f = self.frame()
        expect(f is not None and f[0] == "ERROR", f"{what}: ERROR expected, got {f}")
        expect(f[1].get("message") == message, f"{what}: message {f[1].get('message')!r}")
        bodies = body if isinstance(body, tuple) else (body,)
        expect(f[2].decode() in bodies, f"{what}: body {f[2].decode()!r}, expected {bodies!r}")

    def receipt(self, rid, what):
        f = self.frame()
        expect(f is not None and f[0] == "RECEIPT" and f[1].get("receipt-id") == rid,
               f"{what}: RECEIPT {rid} expected, got {f}")

    def closed(self, what):
        f = self.frame()
        expect(f is None, f"{what}: expected the connection closed, got {f}")


# ----- a WebSocket client, for Web-MQTT and Web-STOMP --------------------------------------

class WsConn:
    """Just enough of RFC 6455 for a client: the upgrade, masked frames out, frames in."""

    def __init__(self, sock, protocol):
        self.sock, self.pending, self.close_payload = sock, b"", None
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            expect(chunk, "the WebSocket upgrade was refused")
            head += chunk
        expect(head.startswith(b"HTTP/1.1 101"), f"upgrade: {head!r}")

    def send(self, data, binary):
        mask = os.urandom(4)
        n = len(data)
        size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
        self.sock.sendall(bytes([0x82 if binary else 0x81]) + size + mask
                          + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                return None
            out += chunk
        return out

    def message(self):
        """The payload of the next data message; b"" once the connection is closed."""
        while True:
            head = self.exact(2)
            if head is None:
                return b""
            n = head[1] & 0x7F
            if n == 126:
                n = struct.unpack(">H", self.exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self.exact(8))[0]
            payload = self.exact(n) if n else b""
            if payload is None:
                return b""
            if head[0] & 0x0F == 8:
                self.close_payload = payload
                return b""
            if head[0] & 0x0F in (0, 1, 2):
                return payload

    def read(self, n):
        while len(self.pending) < n:
            m = self.message()
            if not m:
                break
            self.pending += m
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


# ----- MQTT scenarios ---------------------------------------------------------------------

def watcher(a, vhost):
    """A guest client of `vhost` subscribed to every topic, to see what was routed."""
    w = rc_accepted(Mqtt(a.mqtt, f"{vhost}:guest", "guest"))
    w.subscribe(1, ("#", 0))
    expect(w.suback(1) == [0], "the watcher subscribed")
    return w


def gone(adm, vhost, client):
    """Waits until the broker dropped `client`'s connection from its list (its will, if any,
    was handled by then)."""
    deadline = time.time() + LISTED
    while any(c["client_properties"].get("client_id") == client.client_id
              for c in adm.connections(vhost)):
        expect(time.time() < deadline, f"{client.client_id} still listed")
        time.sleep(0.25)


def marker(a, vhost, w, what):
    """Publishes a marker as guest; `w` must see it next: nothing refused was routed."""
    topic = uniq("marker")
    p = rc_accepted(Mqtt(a.mqtt, f"{vhost}:guest", "guest"))
    p.publish(topic, b"marker")
    p.disconnect()
    m = w.message()
    expect(m[0] == topic, f"{what}: {m} was routed before the marker")


def scenario_mqtt_permissions(a):
    """Queue and topic permissions of SUBSCRIBE, PUBLISH and the will; each refusal closes
    the connection without SUBACK or PUBACK."""
    adm = Admin(a.mgmt)
    try:
        v, u = adm.vhost(), adm.user()
        adm.permit(v, u, "^mqtt-subscription-", "^(amq\\.topic|mqtt-subscription-.*)$",
                   "^(amq\\.topic|mqtt-subscription-.*)$")
        adm.topic_permit(v, u, "^ok\\.", "^ok\\.")
        login = f"{v}:{u}"
        w = watcher(a, v)

        c = rc_accepted(Mqtt(a.mqtt, login, "pw"))
        c.subscribe(1, ("ok/#", 1))
        expect(c.suback(1) == [1], "allowed SUBSCRIBE granted QoS 1")
        c.publish("ok/a", b"allowed", qos=1, pkid=7)
        got = [c.packet() for _ in range(2)]
        kinds = sorted(p[0] for p in got)
        expect(kinds == [3, 4], f"own message and PUBACK, got {got}")
        expect(w.message()[:2] == ("ok/a", b"allowed"), "the watcher sees the allowed message")
        # A filter the topic read permission refuses: no SUBACK, the connection closes.
        c.subscribe(2, ("no/#", 0))
        c.closed("SUBSCRIBE refused by the topic permission")

        # PUBLISH refused by the topic write permission, at QoS 0 and 1: closed, not routed,
        # not retained.
        for qos in (0, 1):
            c = rc_accepted(Mqtt(a.mqtt, login, "pw"))
            c.publish(f"no/q{qos}", b"refused", qos=qos, pkid=3, retain=True)
            c.closed(f"QoS {qos} PUBLISH refused by the topic permission")
            marker(a, v, w, f"refused QoS {qos} PUBLISH")
        g = rc_accepted(Mqtt(a.mqtt, f"{v}:guest", "guest"))
        g.publish("ok/retained", b"kept", retain=True)
        # Retained messages come last filter first (RabbitMQ's order): a refused PUBLISH that
        # was retained would come before this one.
        g.subscribe(1, ("ok/retained", 0), ("no/q0", 0), ("no/q1", 0))
        g.suback(1)
        expect(g.message()[:2] == ("ok/retained", b"kept"), "the refused PUBLISHes were not retained")
        g.publish("ok/retained", b"", retain=True)
        g.disconnect()
        expect(w.message()[:2] == ("ok/retained", b"kept"), "the watcher sees the retained message")
        expect(w.message()[:2] == ("ok/retained", b""), "and the one clearing it")

        # The will: refused by the topic permission, it is not sent; allowed, it is.
        c = rc_accepted(Mqtt(a.mqtt, login, "pw", will=("no/will", b"refused", 0, True)))
        c.vanish()
        gone(adm, v, c)
        marker(a, v, w, "refused will")
        c = rc_accepted(Mqtt(a.mqtt, login, "pw", will=("ok/will", b"bye", 0, False)))
        c.vanish()
        expect(w.message()[:2] == ("ok/will", b"bye"), "the allowed will was published")

        # Without configure on its subscription queue, the client cannot subscribe at all.
        adm.permit(v, u, "^nothing$", ".*", ".*")
        c = rc_accepted(Mqtt(a.mqtt, login, "pw"))
        c.subscribe(1, ("ok/x", 0))
        c.closed("SUBSCRIBE refused by the queue's configure permission")
        # Without read on it, the queue is declared but not consumed: refused too.
        adm.permit(v, u, ".*", ".*", "^amq\\.topic$")
        c = rc_accepted(Mqtt(a.mqtt, login, "pw"))
        c.subscribe(1, ("ok/x", 0))
        c.closed("SUBSCRIBE refused by the queue's read permission")
        # Without read on amq.topic, the binding is refused.
        adm.permit(v, u, ".*", ".*", "^mqtt-subscription-")
        c = rc_accepted(Mqtt(a.mqtt, login, "pw"))
        c.subscribe(1, ("ok/x", 0))
        c.closed("SUBSCRIBE refused by read on amq.topic")
        # {client_id} in a topic permission is the MQTT client id.
        adm.permit(v, u, ".*", ".*", ".*")
        adm.topic_permit(v, u, "^{client_id}\\.", ".*")
        cid = uniq("cid")
        c = rc_accepted(Mqtt(a.mqtt, login, "pw", client_id=cid))
        c.publish(f"{cid}/x", b"mine", qos=1, pkid=5)
        expect(c.packet()[0] == 4, "PUBACK on the client's own topic")
        c.publish("other/x", b"theirs", qos=1, pkid=6)
        c.closed("another client id's topic")
        expect(w.message()[:2] == (f"{cid}/x", b"mine"), "the client's own topic was routed")
        marker(a, v, w, "another client id's topic")
        w.disconnect()
        print("ok mqtt_permissions")
    finally:
        adm.cleanup()


def scenario_mqtt_exchange_write(a):
    """Without write on amq.topic: a QoS 0 PUBLISH closes the connection, a QoS 1 one gets
    no PUBACK and the connection goes on (RabbitMQ publishes QoS 1 on a second channel, which
    dies alone); retained messages and wills are retained all the same, never routed."""
    adm = Admin(a.mgmt)
    try:
        v, u = adm.vhost(), adm.user()
        adm.permit(v, u, ".*", "^mqtt-subscription-", ".*")
        login = f"{v}:{u}"
        w = watcher(a, v)

        c = rc_accepted(Mqtt(a.mqtt, login, "pw"))
        c.publish("t/r0", b"zero", qos=0, retain=True)
        c.closed("QoS 0 PUBLISH without write on amq.topic")
        marker(a, v, w, "QoS 0 PUBLISH without write")

        c = rc_accepted(Mqtt(a.mqtt, login, "pw"))
        c.publish("t/r1", b"one", qos=1, pkid=9, retain=True)
        c.ping()
        p = c.packet()
        expect(p is not None and p[0] == 13, f"PINGRESP (no PUBACK, still open), got {p}")
        c.subscribe(2, ("t/own", 0))
        expect(c.suback(2) == [0], "the connection goes on")
        marker(a, v, w, "QoS 1 PUBLISH without write")
        c.disconnect()

        c = rc_accepted(Mqtt(a.mqtt, login, "pw", will=("t/will", b"bye", 0, True)))
        c.vanish()
        gone(adm, v, c)
        g = rc_accepted(Mqtt(a.mqtt, f"{v}:guest", "guest"))
        g.subscribe(1, ("t/r0", 0), ("t/r1", 1), ("t/will", 0))
        expect(g.suback(1) == [0, 1, 0], "SUBACK in the packet's order")
        got = [g.message() for _ in range(3)]
        # Retained messages come last filter first, as RabbitMQ sends them.
        expect([(m[0], m[1], m[3]) for m in got]
               == [("t/will", b"bye", True), ("t/r1", b"one", True), ("t/r0", b"zero", True)],
               f"retained despite the refusals: {got}")
        marker(a, v, w, "the will without write")
        for t in ("t/r0", "t/r1", "t/will"):
            g.publish(t, b"", retain=True)
        g.disconnect()
        w.disconnect()
        print("ok mqtt_exchange_write")
    finally:
        adm.cleanup()


def scenario_mqtt_limits(a):
    """Connection limits (CONNACK 5, checked before the password for the vhost), the
    connection list, and connections closed when their user or vhost is deleted."""
    adm = Admin(a.mgmt)
    try:
        v, u = adm.vhost(), adm.user()
        adm.permit(v, u, ".*", ".*", ".*")
        adm.vhost_limit(v, 1)
        first = rc_accepted(Mqtt(a.mqtt, f"{v}:guest", "guest", client_id=uniq("first")))
        c = adm.listed(v, lambda c: c["protocol"] == "MQTT 3.1.1", "the first MQTT connection")
        expect(c["type"] == "direct" and c["user"] == "guest" and c["channels"] == 1,
               f"listed as RabbitMQ lists it: {c}")
        expect(c["client_properties"] == {"client_id": first.client_id, "product": "MQTT client"},
               f"client properties {c['client_properties']}")
        expect((c["frame_max"], c["channel_max"]) == (0, 1), f"frame_max, channel_max of {c}")
        expect("auth_mechanism" not in c and "timeout" not in c, f"no mechanism, no timeout: {c}")
        expect(c["variable_map"] == {"client_id": first.client_id}, f"variable_map of {c}")
        second = Mqtt(a.mqtt, f"{v}:guest", "guest")
        expect(second.rc == 5, f"the vhost's limit: CONNACK {second.rc}")
        second.closed("refused CONNECT")
        second = Mqtt(a.mqtt, f"{v}:guest", "wrong")
        expect(second.rc == 5, f"the vhost's limit comes before the password: CONNACK {second.rc}")
        second = Mqtt(a.mqtt, f"{v}:nobody", "wrong")
        expect(second.rc == 5, f"and before the user: CONNACK {second.rc}")
        adm.vhost_limit(v, None)
        second = Mqtt(a.mqtt, f"{v}:guest", "wrong")
        expect(second.rc == 4, f"a bad password without the limit: CONNACK {second.rc}")

        adm.user_limit(u, 1)
        mine = rc_accepted(Mqtt(a.mqtt, f"{v}:{u}", "pw"))
        adm.listed(v, lambda c: c["user"] == u, "the user's connection")
        again = Mqtt(a.mqtt, f"{v}:{u}", "pw")
        expect(again.rc == 5, f"the user's limit: CONNACK {again.rc}")

        # MQTT 3.1 and Web-MQTT are listed under their names.
        old = rc_accepted(Mqtt(a.mqtt, f"{v}:guest", "guest", level=3))
        web = rc_accepted(Mqtt(a.ws, f"{v}:guest", "guest", ws=True))
        adm.listed(v, lambda c: c["protocol"] == "MQTT 3.1.0"
                   and c["client_properties"].get("client_id") == old.client_id, "MQTT 3.1")
        adm.listed(v, lambda c: c["protocol"] == "Web MQTT 3.1.1"
                   and c["client_properties"].get("client_id") == web.client_id, "Web-MQTT")

        adm.delete_user(u)
        mine.closed("the user was deleted")
        adm.delete_vhost(v)
        for c in (first, old, web):
            c.closed("the vhost was deleted")
        print("ok mqtt_limits")
    finally:
        adm.cleanup()


# ----- STOMP scenarios --------------------------------------------------------------------

def scenario_stomp_permissions(a):
    """Every destination kind, SEND, temp queues, durable subscriptions and transactions with
    refused permissions: an access_refused ERROR with RabbitMQ's text, then the connection
    closes (a SUBSCRIBE's receipt after the ERROR, a COMMIT's before it)."""
    adm = Admin(a.mgmt)
    try:
        v, u = adm.vhost(), adm.user()
        adm.permit(v, u, "^(ok\\..*|stomp-subscription-.*)$",
                   "^(ok\\..*|stomp-subscription-.*|amq\\.topic|amq\\.default)$",
                   "^(ok\\..*|stomp-subscription-.*|amq\\.topic)$")
        adm.topic_permit(v, u, "^ok\\.", "^ok\\.")
        g = Stomp(a.stomp, "guest", "guest", v)
        g.send("SEND", [("destination", "/queue/noread.q"), ("receipt", "r")], b"m")
        g.receipt("r", "guest declares noread.q")
        refused = lambda what: f"access to {what} in vhost '{v}' refused for user '{u}'"

        def session():
            s = Stomp(a.stomp, u, "pw", v)
            expect(s.connected[0] == "CONNECTED", f"CONNECT as {u}: {s.connected}")
            return s

        def case(what, frames, message, body, receipt_after=None, receipt_before=None):
            s = session()
            for command, headers in frames:
                s.send(command, headers, b"x" if command == "SEND" else b"")
            if receipt_before:
                s.receipt(receipt_before, what)
            s.error(message, body, what)
            if receipt_after:
                s.receipt(receipt_after, what)
            s.closed(what)

        topic_read = "access to topic 'no.x' in exchange 'amq.topic' in vhost '%s' refused for user '%s'" % (v, u)
        case("SUBSCRIBE /topic/ refused by the topic read permission",
             [("SUBSCRIBE", [("destination", "/topic/no.x"), ("id", "1"), ("receipt", "r1")])],
             "access_refused", topic_read, receipt_after="r1")
        case("durable SUBSCRIBE refused by the topic read permission",
             [("SUBSCRIBE", [("destination", "/topic/no.x"), ("id", "d"), ("durable", "true"),
                             ("receipt", "r1")])],
             "access_refused", topic_read, receipt_after="r1")
        case("SUBSCRIBE /queue/ refused by configure",
             [("SUBSCRIBE", [("destination", "/queue/no.q"), ("id", "1"), ("receipt", "r1")])],
             "access_refused", "ACCESS_REFUSED - " + refused("queue 'no.q'"), receipt_after="r1")
        case("SUBSCRIBE /amq/queue/ refused by read",
             [("SUBSCRIBE", [("destination", "/amq/queue/noread.q"), ("id", "1"), ("receipt", "r1")])],
             "access_refused", "ACCESS_REFUSED - " + refused("queue 'noread.q'"), receipt_after="r1")
        case("SUBSCRIBE /reply-queue/ refused by read",
             [("SUBSCRIBE", [("destination", "/reply-queue/noread.q"), ("id", "1"), ("receipt", "r1")])],
             "access_refused", "ACCESS_REFUSED - " + refused("queue 'noread.q'"), receipt_after="r1")
        case("SUBSCRIBE /exchange/ refused by read on the exchange",
             [("SUBSCRIBE", [("destination", "/exchange/amq.fanout"), ("id", "1"), ("receipt", "r1")])],
             "access_refused", "ACCESS_REFUSED - " + refused("exchange 'amq.fanout'"), receipt_after="r1")
        case("SUBSCRIBE /exchange/amq.topic/ refused by the channel's topic check",
             [("SUBSCRIBE", [("destination", "/exchange/amq.topic/no.x"), ("id", "1"), ("receipt", "r1")])],
             "access_refused", "ACCESS_REFUSED - " + topic_read, receipt_after="r1")
        case("SEND /topic/ refused by the topic write permission",
             [("SEND", [("destination", "/topic/no.x"), ("receipt", "r1")])],
             "access_refused", "ACCESS_REFUSED - " + topic_read)
        case("SEND /exchange/ refused by write",
             [("SEND", [("destination", "/exchange/amq.direct/k"), ("receipt", "r1")])],
             "access_refused", "ACCESS_REFUSED - " + refused("exchange 'amq.direct'"))
        case("SEND /queue/ refused by configure",
             [("SEND", [("destination", "/queue/no.q"), ("receipt", "r1")])],
             "access_refused", "ACCESS_REFUSED - " + refused("queue 'no.q'"))
        case("COMMIT of a refused SEND: the receipt, then the ERROR",
             [("BEGIN", [("transaction", "t")]),
              ("SEND", [("destination", "/topic/no.t"), ("transaction", "t"), ("receipt", "r1")]),
              ("COMMIT", [("transaction", "t"), ("receipt", "r2")])],
             "access_refused", "ACCESS_REFUSED - " + topic_read.replace("'no.x'", "'no.t'"),
             receipt_before="r2")

        # A temp queue is declared server-named: configure on its amq.gen- name is refused.
        s = session()
        s.send("SEND", [("destination", "/queue/ok.q"), ("reply-to", "/temp-queue/t"),
                        ("receipt", "r1")], b"x")
        f = s.frame()
        expect(f is not None and f[0] == "ERROR" and f[1]["message"] == "access_refused", f"temp queue: {f}")
        text = f[2].decode()
        expect(text.startswith("ACCESS_REFUSED - access to queue 'amq.gen-")
               and text.endswith(f"' in vhost '{v}' refused for user '{u}'"), f"temp queue: {text}")
        s.closed("temp queue refused")

        # Over a WebSocket the ERROR of a closing step never arrives: RabbitMQ's Web-STOMP
        # closes the WebSocket first.
        s = Stomp(a.web_stomp, u, "pw", v, ws=True)
        expect(s.connected[0] == "CONNECTED", f"Web-STOMP CONNECT: {s.connected}")
        s.send("SUBSCRIBE", [("destination", "/queue/no.q"), ("id", "1"), ("receipt", "r1")])
        s.closed("SUBSCRIBE refused over Web-STOMP")
        expect(s.ws.close_payload == struct.pack(">H", 1000) + b"STOMP died",
               f"WebSocket close {s.ws.close_payload!r}")

        # What is allowed goes through, on one connection.
        s = session()
        s.send("SUBSCRIBE", [("destination", "/topic/ok.x"), ("id", "1"), ("receipt", "r1")])
        s.receipt("r1", "allowed topic SUBSCRIBE")
        s.send("SUBSCRIBE", [("destination", "/topic/ok.d"), ("id", "d1"), ("durable", "true"),
                             ("receipt", "r2")])
        s.receipt("r2", "allowed durable SUBSCRIBE")
        s.send("SEND", [("destination", "/queue/ok.q"), ("receipt", "r3")], b"to queue")
        s.receipt("r3", "allowed SEND to a queue")
        s.send("SEND", [("destination", "/topic/ok.x")], b"to topic")
        f = s.frame()
        expect(f[0] == "MESSAGE" and f[2] == b"to topic", f"own topic message: {f}")
        s.send("UNSUBSCRIBE", [("id", "d1"), ("durable", "true"), ("receipt", "r4")])
        s.receipt("r4", "durable UNSUBSCRIBE")
        s.send("DISCONNECT", [("receipt", "bye")])
        s.receipt("bye", "DISCONNECT")
        print("ok stomp_permissions")
    finally:
        adm.cleanup()


def channel_died(text):
    """RabbitMQ's ERROR body when the broker closes a STOMP connection, for texts of 30 to 60
    characters (what Erlang's ~p makes of the channel's exit reason at that length)."""
    expect(31 < len(text) + 2 <= 60, f"layout of {text!r} not covered here")
    return ("Reason: {shutdown,\n            {connection_closing,\n"
            "                {server_initiated_close,320,\n"
            f"                    \"{text}\"}}}}}}")


def scenario_stomp_limits(a):
    """Connection limits (checked before the password for the vhost), the connection list,
    and connections closed when their user or vhost is deleted."""
    adm = Admin(a.mgmt)
    try:
        v, u = adm.vhost(), adm.user()
        adm.permit(v, u, ".*", ".*", ".*")
        adm.vhost_limit(v, 1)
        first = Stomp(a.stomp, "guest", "guest", v)
        expect(first.connected[0] == "CONNECTED", f"first: {first.connected}")
        c = adm.listed(v, lambda c: c["protocol"] == "STOMP 1.2", "the first STOMP connection")
        expect(c["type"] == "direct" and c["user"] == "guest" and c["channels"] == 1,
               f"listed as RabbitMQ lists it: {c}")
        expect(c["client_properties"] == {"product": "STOMP client"}, f"{c['client_properties']}")
        expect((c["frame_max"], c["channel_max"]) == (0, 1), f"frame_max, channel_max of {c}")
        expect("auth_mechanism" not in c and "variable_map" not in c, f"no mechanism: {c}")
        denied = f"Virtual host '{v}' access denied"
        for who, password in (("guest", "guest"), ("guest", "wrong"), ("nobody", "x")):
            s = Stomp(a.stomp, who, password, v)
            expect(s.connected[0] == "ERROR" and s.connected[1]["message"] == "Bad CONNECT"
                   and s.connected[2].decode() == denied,
                   f"the vhost's limit, before the password ({who}/{password}): {s.connected}")
            s.sock.close()
        adm.vhost_limit(v, None)
        s = Stomp(a.stomp, "guest", "wrong", v)
        expect(s.connected[2].decode() == "Access refused for user 'guest'\n",
               f"a bad password without the limit: {s.connected}")

        adm.user_limit(u, 1)
        mine = Stomp(a.stomp, u, "pw", v, version="1.0,1.1")
        expect(mine.connected[0] == "CONNECTED", f"{mine.connected}")
        adm.listed(v, lambda c: c["user"] == u and c["protocol"] == "STOMP 1.1", "STOMP 1.1")
        again = Stomp(a.stomp, u, "pw", v)
        expect(again.connected[0] == "ERROR" and again.connected[2].decode() == denied,
               f"the user's limit: {again.connected}")
        web = Stomp(a.web_stomp, "guest", "guest", v, ws=True)
        expect(web.connected[0] == "CONNECTED", f"Web-STOMP: {web.connected}")
        adm.listed(v, lambda c: c["protocol"] == "Web STOMP 1.2", "Web-STOMP")

        adm.delete_user(u)
        mine.error("AMQP channel died", channel_died(f"user '{u}' is deleted"), "user deleted")
        mine.closed("user deleted")
        adm.delete_vhost(v)
        # RabbitMQ 3.10 says "is down" when the vhost's supervisor stops first and "is
        # deleted" when the deletion reaches the connection first (a race inside it); Warren
        # says "is down".
        first.error("AMQP channel died",
                    (channel_died(f"vhost '{v}' is down"), channel_died(f"vhost '{v}' is deleted")),
                    "vhost deleted")
        first.closed("vhost deleted")
        # Web-STOMP closes the WebSocket before it sends the ERROR.
        web.closed("vhost deleted, over a WebSocket")
        expect(web.ws.close_payload == struct.pack(">H", 1000) + b"STOMP died",
               f"WebSocket close {web.ws.close_payload!r}")
        print("ok stomp_limits")
    finally:
        adm.cleanup()


# ----- across the protocols ---------------------------------------------------------------

def scenario_cross_protocol(a):
    """MQTT publishes reach STOMP /topic/ subscribers and STOMP SENDs to /topic/ reach MQTT
    subscribers, with their payloads and the properties each side shows."""
    k = uuid.uuid4().hex[:10]
    s = Stomp(a.stomp, "guest", "guest", "/")
    s.send("SUBSCRIBE", [("destination", f"/topic/x{k}.y"), ("id", "s1"), ("receipt", "r")])
    s.receipt("r", "STOMP SUBSCRIBE")
    m = rc_accepted(Mqtt(a.mqtt, "guest", "guest"))
    m.subscribe(1, (f"x{k}/z", 1), (f"x{k}/q0", 0))
    expect(m.suback(1) == [1, 0], "MQTT SUBSCRIBE")

    for qos, persistent in ((1, "true"), (0, "1")):
        m.publish(f"x{k}/y", f"from mqtt {qos}".encode(), qos=qos, pkid=3)
        if qos:
            expect(m.packet()[0] == 4, "PUBACK")
        f = s.frame()
        expect(f[0] == "MESSAGE" and f[2] == f"from mqtt {qos}".encode(), f"MESSAGE {f}")
        h = f[1]
        expect(h["destination"] == f"/topic/x{k}.y" and h["subscription"] == "s1"
               and h["redelivered"] == "false", f"headers {h}")
        # The x-mqtt-publish-qos (byte) and x-mqtt-dup (bool) headers are not shown to STOMP.
        expect(sorted(h) == ["content-length", "destination", "message-id", "persistent",
                             "redelivered", "subscription"], f"header names {sorted(h)}")
        expect(h["persistent"] == persistent, f"QoS {qos}: persistent:{h['persistent']}")

    s.send("SEND", [("destination", f"/topic/x{k}.z"), ("persistent", "true"),
                    ("content-type", "text/plain"), ("custom", "v")], b"from stomp")
    expect(m.message() == (f"x{k}/z", b"from stomp", 1, False, False),
           "a STOMP message reaches MQTT at QoS 1 (no x-mqtt-publish-qos header)")
    s.send("SEND", [("destination", f"/topic/x{k}.q0")], b"at qos 0")
    expect(m.message() == (f"x{k}/q0", b"at qos 0", 0, False, False), "QoS 0 subscription")
    s.send("SEND", [("destination", f"/topic/x{k}.z"), ("receipt", "sent")], b"transient")
    s.receipt("sent", "SEND receipt")
    expect(m.message() == (f"x{k}/z", b"transient", 1, False, False), "transient STOMP message")
    m.disconnect()
    s.send("DISCONNECT", [("receipt", "bye")])
    s.receipt("bye", "DISCONNECT")
    print("ok cross_protocol")


def addr(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario")
    ap.add_argument("--mgmt", required=True)
    ap.add_argument("--mqtt", type=addr, required=True)
    ap.add_argument("--ws", type=addr, required=True)
    ap.add_argument("--stomp", type=addr, required=True)
    ap.add_argument("--web-stomp", type=addr, required=True)
    a = ap.parse_args()
    globals()[f"scenario_{a.scenario}"](a)


if __name__ == "__main__":
    sys.exit(main())
