"""STOMP scenarios run by tests/tests/stomp_compat.rs against Warren and against RabbitMQ's
STOMP plugin, with the same assertions: stomp.py is the client, pika the AMQP side.

    python3 compat_stomp.py GROUP STOMP_HOST:PORT AMQP_URL TARGET_NAME [EXTRA]

Each scenario of GROUP prints PASS or FAIL with the reason; the exit status is 1 if any
failed. Names of queues and topics carry a random suffix, since other tests share the brokers,
and every queue a scenario creates is deleted at its end.
"""

import base64
import hashlib
import json
import queue
import socket
import struct
import sys
import time
import uuid

import pika
import stomp

WAIT = 5.0
QUIET = 0.25


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


class Collect(stomp.ConnectionListener):
    """Everything a connection receives, in queues the scenarios wait on."""

    def __init__(self):
        self.messages = queue.Queue()
        self.errors = queue.Queue()
        self.receipts = queue.Queue()

    def on_message(self, frame):
        self.messages.put(frame)

    def on_error(self, frame):
        self.errors.put(frame)

    def on_receipt(self, frame):
        self.receipts.put(frame.headers["receipt-id"])

    def message(self, what):
        try:
            return self.messages.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("no MESSAGE: %s" % what)

    def no_message(self, what):
        try:
            m = self.messages.get(timeout=QUIET)
        except queue.Empty:
            return
        raise AssertionError("unexpected MESSAGE (%s): %r" % (what, m.body))

    def receipt(self, rid):
        got = self.receipts.get(timeout=WAIT)
        assert got == rid, "receipt %r, expected %r" % (got, rid)


class Env:
    def __init__(self, stomp_addr, amqp_url, name):
        host, port = stomp_addr.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.amqp_url = amqp_url
        self.name = name
        self.cleanup = []

    def connect(self, version="1.2"):
        cls = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}[version]
        kwargs = {} if version == "1.0" else {"vhost": "/"}
        conn = cls([(self.host, self.port)], **kwargs)
        listener = Collect()
        conn.set_listener("collect", listener)
        conn.connect("guest", "guest", wait=True)
        return conn, listener

    def amqp(self):
        return pika.BlockingConnection(pika.URLParameters(self.amqp_url))

    def delete_later(self, q):
        self.cleanup.append(q)

    def clean(self):
        if not self.cleanup:
            return
        c = self.amqp()
        for q in self.cleanup:
            ch = c.channel()
            try:
                ch.queue_delete(q)
            except Exception:
                pass
        c.close()


def subscription_queue(name, sub_id):
    """RabbitMQ's name for the queue of a durable topic subscription."""

    def s(b):
        return b"\x6a" if not b else b"\x6b" + struct.pack(">H", len(b)) + b

    term = b"\x83\x68\x02" + s(name.encode()) + s(sub_id.encode())
    digest = base64.urlsafe_b64encode(hashlib.md5(term).digest()).decode().rstrip("=")
    return "stomp-subscription-" + digest


def queue_exists(env, q):
    c = env.amqp()
    try:
        c.channel().queue_declare(q, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    finally:
        if c.is_open:
            c.close()


# ----- destinations ----------------------------------------------------------------------


def send_and_receive(env, dest, expect_dest, **sub_headers):
    conn, l = env.connect()
    conn.subscribe(dest, id="s1", headers=sub_headers, receipt="sub")
    l.receipt("sub")
    conn.send(dest, "hello " + dest, receipt="sent")
    l.receipt("sent")
    m = l.message(dest)
    assert m.body == "hello " + dest, m.body
    assert m.headers["destination"] == expect_dest, m.headers
    assert m.headers["subscription"] == "s1", m.headers
    assert m.headers["redelivered"] == "false", m.headers
    assert m.headers["message-id"].startswith("T_s1@@session-"), m.headers
    conn.disconnect()


def dest_queue(env):
    q = unique("stomp-q")
    env.delete_later(q)
    send_and_receive(env, "/queue/" + q, "/queue/" + q)
    # /queue/ declares a durable queue, as RabbitMQ does.
    c = env.amqp()
    ch = c.channel()
    ch.queue_declare(q, passive=True, durable=True)
    c.close()


def dest_topic(env):
    key = unique("stomp.topic")
    send_and_receive(env, "/topic/" + key, "/topic/" + key)


def dest_exchange(env):
    key = unique("k")
    send_and_receive(env, "/exchange/amq.direct/" + key, "/exchange/amq.direct/" + key)


def dest_amq_queue(env):
    q = unique("stomp-amq")
    c = env.amqp()
    c.channel().queue_declare(q)
    c.close()
    env.delete_later(q)
    send_and_receive(env, "/amq/queue/" + q, "/queue/" + q)


def dest_bare_name(env):
    q = unique("stomp-bare")
    env.delete_later(q)
    send_and_receive(env, q, "/queue/" + q)


def dest_temp_queue(env):
    """A requester's /temp-queue/ reply-to reaches a responder as /reply-queue/..., and the
    answer comes back on the private queue with the temp queue as its subscription."""
    svc = unique("stomp-svc")
    env.delete_later(svc)
    server, sl = env.connect()
    server.subscribe("/queue/" + svc, id="svc", receipt="r")
    sl.receipt("r")
    client, cl = env.connect()
    client.send("/queue/" + svc, "ping", headers={"reply-to": "/temp-queue/answers"})
    req = sl.message("request")
    reply_to = req.headers["reply-to"]
    assert reply_to.startswith("/reply-queue/amq.gen-"), req.headers
    server.send(reply_to, "pong")
    rep = cl.message("reply")
    assert rep.body == "pong", rep.body
    assert rep.headers["subscription"] == "/temp-queue/answers", rep.headers
    assert rep.headers["destination"] == "/queue/" + reply_to[len("/reply-queue/"):], rep.headers
    assert "ack" not in rep.headers, rep.headers
    client.disconnect()
    server.disconnect()


def binary_body(env):
    """A body with NULs travels whole: content-length on SEND and on MESSAGE."""
    q = unique("stomp-bin")
    env.delete_later(q)
    body = bytes(range(256)) * 4
    got = raw_roundtrip(env, q, body)
    assert got == body, (len(got), got[:16])


def raw_connect(env):
    s = socket.create_connection((env.host, env.port), timeout=WAIT)
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
    return s


def read_frames(s, until, timeout=WAIT):
    """Reads frames until `until(frames)` holds, or the socket closes; returns (frames, closed)."""
    buf = b""
    frames = []
    deadline = time.time() + timeout
    closed = False
    while not until(frames) and time.time() < deadline:
        s.settimeout(max(0.01, deadline - time.time()))
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            closed = True
            break
        buf += d
        while True:
            buf = buf.lstrip(b"\n\r\x00")
            head_end = buf.find(b"\n\n")
            if head_end < 0:
                break
            head = buf[:head_end].decode("utf-8", "replace").split("\n")
            headers = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                headers.setdefault(k, v)
            start = head_end + 2
            if "content-length" in headers:
                end = start + int(headers["content-length"])
                if len(buf) <= end:
                    break
            else:
                end = buf.find(b"\x00", start)
                if end < 0:
                    break
            frames.append((head[0], headers, buf[start:end]))
            buf = buf[end + 1:]
    return frames, closed


def raw_roundtrip(env, q, body):
    s = raw_connect(env)
    s.sendall(("SEND\ndestination:/queue/%s\ncontent-length:%d\n\n" % (q, len(body))).encode() + body + b"\x00")
    s.sendall(("SUBSCRIBE\ndestination:/queue/%s\nid:raw\n\n\x00" % q).encode())
    frames, _ = read_frames(s, lambda fs: any(f[0] == "MESSAGE" for f in fs))
    s.close()
    msgs = [f for f in frames if f[0] == "MESSAGE"]
    assert msgs, frames
    return msgs[0][2]


# ----- acknowledgements ------------------------------------------------------------------


def fill(env, q, n):
    c = env.amqp()
    ch = c.channel()
    ch.queue_declare(q, durable=True)
    for i in range(n):
        ch.basic_publish("", q, ("m%d" % i).encode())
    c.close()
    env.delete_later(q)


def count(env, q):
    c = env.amqp()
    n = c.channel().queue_declare(q, passive=True).method.message_count
    c.close()
    return n


def ack_client_individual(env):
    q = unique("stomp-ack")
    fill(env, q, 2)
    conn, l = env.connect()
    conn.subscribe("/queue/" + q, id="a", ack="client-individual")
    m0, m1 = l.message("first"), l.message("second")
    assert m0.headers["ack"] == m0.headers["message-id"], m0.headers
    conn.ack(m1.headers["ack"], receipt="acked")
    l.receipt("acked")
    conn.disconnect()
    assert count(env, q) == 1, "only the unacknowledged message is back"
    conn, l = env.connect()
    conn.subscribe("/queue/" + q, id="a", ack="client-individual")
    m = l.message("redelivery")
    assert m.body == "m0" and m.headers["redelivered"] == "true", (m.body, m.headers)
    conn.ack(m.headers["ack"], receipt="done")
    l.receipt("done")
    conn.disconnect()
    assert count(env, q) == 0


def ack_client_cumulative(env):
    q = unique("stomp-cum")
    fill(env, q, 3)
    conn, l = env.connect()
    conn.subscribe("/queue/" + q, id="c", ack="client")
    ms = [l.message("m%d" % i) for i in range(3)]
    conn.ack(ms[1].headers["ack"], receipt="r")
    l.receipt("r")
    conn.disconnect()
    assert count(env, q) == 1, "client mode acks everything up to the message named"


def nack(env):
    q = unique("stomp-nack")
    fill(env, q, 2)
    conn, l = env.connect()
    conn.subscribe("/queue/" + q, id="n", ack="client-individual")
    m0, m1 = l.message("m0"), l.message("m1")
    conn.nack(m0.headers["ack"], requeue="false", receipt="dropped")
    l.receipt("dropped")
    conn.nack(m1.headers["ack"], receipt="requeued")
    l.receipt("requeued")
    again = l.message("requeued m1")
    assert again.body == "m1" and again.headers["redelivered"] == "true", again.headers
    conn.ack(again.headers["ack"], receipt="a")
    l.receipt("a")
    conn.disconnect()
    assert count(env, q) == 0


def prefetch(env):
    q = unique("stomp-pf")
    fill(env, q, 3)
    conn, l = env.connect()
    conn.subscribe("/queue/" + q, id="p", ack="client-individual", headers={"prefetch-count": "1"})
    m = l.message("first")
    l.no_message("prefetch-count 1 holds the second back")
    conn.ack(m.headers["ack"])
    assert l.message("second").body == "m1"
    conn.disconnect()


def ack_on_stomp10_and_11(env):
    for version in ("1.0", "1.1"):
        q = unique("stomp-v" + version)
        fill(env, q, 1)
        conn, l = env.connect(version)
        conn.subscribe("/queue/" + q, id="v", ack="client")
        m = l.message(version)
        assert "ack" not in m.headers, (version, m.headers)
        if version == "1.0":
            conn.ack(m.headers["message-id"], receipt="r")
        else:
            conn.ack(m.headers["message-id"], "v", receipt="r")
        l.receipt("r")
        conn.disconnect()
        assert count(env, q) == 0, version


# ----- transactions and receipts ---------------------------------------------------------


def transactions(env):
    q = unique("stomp-tx")
    env.delete_later(q)
    conn, l = env.connect()
    conn.subscribe("/queue/" + q, id="t", receipt="s")
    l.receipt("s")
    tx = conn.begin()
    conn.send("/queue/" + q, "in tx 1", transaction=tx)
    conn.send("/queue/" + q, "in tx 2", transaction=tx)
    l.no_message("nothing before COMMIT")
    conn.commit(tx, receipt="c")
    l.receipt("c")
    assert [l.message("1").body, l.message("2").body] == ["in tx 1", "in tx 2"]
    tx = conn.begin()
    conn.send("/queue/" + q, "aborted", transaction=tx)
    conn.abort(tx, receipt="a")
    l.receipt("a")
    l.no_message("nothing after ABORT")
    conn.disconnect()


def ack_in_transaction(env):
    q = unique("stomp-txack")
    fill(env, q, 1)
    conn, l = env.connect()
    conn.subscribe("/queue/" + q, id="t", ack="client-individual")
    m = l.message("m0")
    tx = conn.begin()
    conn.ack(m.headers["ack"], transaction=tx)
    conn.commit(tx, receipt="c")
    l.receipt("c")
    conn.disconnect()
    assert count(env, q) == 0, "the committed ACK settled the message"


def receipts(env):
    key = unique("stomp.r")
    conn, l = env.connect()
    conn.subscribe("/topic/" + key, id="r1", receipt="sub")
    l.receipt("sub")
    conn.send("/topic/" + key, "x", receipt="send")
    l.receipt("send")
    conn.unsubscribe("r1", receipt="unsub")
    l.receipt("unsub")
    conn.disconnect(receipt="bye")
    assert l.receipts.get(timeout=WAIT) == "bye"


# ----- durable subscriptions -------------------------------------------------------------


def durable_subscription(env):
    key = unique("stomp.dur")
    sub = unique("dur-id")
    qname = subscription_queue(key, sub)
    env.delete_later(qname)
    headers = {"durable": "true", "auto-delete": "false"}
    conn, l = env.connect()
    conn.subscribe("/topic/" + key, id=sub, headers=headers, receipt="s")
    l.receipt("s")
    conn.disconnect()
    assert queue_exists(env, qname), "the subscription's queue is named as RabbitMQ names it"
    sender, sl = env.connect()
    sender.send("/topic/" + key, "while away", headers={"persistent": "true"}, receipt="r")
    sl.receipt("r")
    sender.disconnect()
    conn, l = env.connect()
    conn.subscribe("/topic/" + key, id=sub, headers=headers)
    m = l.message("kept while away")
    assert m.body == "while away" and m.headers["persistent"] == "true", m.headers
    conn.unsubscribe(sub, headers={"durable": "true"}, receipt="u")
    l.receipt("u")
    conn.disconnect()
    assert not queue_exists(env, qname), "UNSUBSCRIBE with durable:true deletes the queue"


# ----- headers across protocols ----------------------------------------------------------


def stomp_to_amqp(env):
    q = unique("stomp-s2a")
    c = env.amqp()
    ch = c.channel()
    ch.queue_declare(q)
    env.delete_later(q)
    conn, l = env.connect()
    headers = {
        "content-type": "application/json", "content-encoding": "identity",
        "persistent": "true", "priority": "3", "correlation-id": "c-1",
        "reply-to": "/queue/answers", "expiration": "60000", "amqp-message-id": "m-1",
        "timestamp": "1700000000", "type": "greeting", "user-id": "guest", "app-id": "stomp-test",
        "custom": "a:b\\c", "x-other": "42",
    }
    body = json.dumps({"hello": "amqp"})
    conn.send("/amq/queue/" + q, body, headers=headers, receipt="r")
    l.receipt("r")
    conn.disconnect()
    method, p, got = ch.basic_get(q, auto_ack=True)
    assert got == body.encode(), got
    assert (p.content_type, p.content_encoding, p.delivery_mode, p.priority) == (
        "application/json", "identity", 2, 3), p
    assert (p.correlation_id, p.reply_to, p.expiration, p.message_id) == (
        "c-1", "/queue/answers", "60000", "m-1"), p
    assert (p.timestamp, p.type, p.user_id, p.app_id) == (1700000000, "greeting", "guest", "stomp-test"), p
    assert p.headers["custom"] == "a:b\\c" and p.headers["x-other"] == "42", p.headers
    assert "priority" not in p.headers and "destination" not in p.headers, p.headers
    c.close()


def amqp_to_stomp(env):
    q = unique("stomp-a2s")
    env.delete_later(q)
    conn, l = env.connect()
    conn.subscribe("/queue/" + q, id="h", receipt="s")
    l.receipt("s")
    c = env.amqp()
    props = pika.BasicProperties(
        content_type="text/plain", content_encoding="utf-8", delivery_mode=2, priority=5,
        correlation_id="corr", reply_to="plain-queue", expiration="60000", message_id="mid",
        timestamp=1700000000, type="t", app_id="app",
        headers={"str": "v", "int": 42, "big": 2 ** 40, "flag": True, "odd:name\nx": "v:al"})
    c.channel().basic_publish("", q, b"from amqp", props)
    c.close()
    m = l.message("from amqp")
    h = m.headers
    assert m.body == "from amqp"
    expect = {
        "content-type": "text/plain", "content-encoding": "utf-8", "persistent": "true",
        "priority": "5", "correlation-id": "corr", "reply-to": "/reply-queue/plain-queue",
        "expiration": "60000", "amqp-message-id": "mid", "timestamp": "1700000000", "type": "t",
        "app-id": "app", "str": "v", "int": "42", "big": "1099511627776", "odd:name\nx": "v:al",
    }
    for k, v in expect.items():
        assert h.get(k) == v, (k, h.get(k), h)
    assert "flag" not in h, "boolean AMQP headers are dropped, as RabbitMQ drops them"
    conn.disconnect()


# ----- bad input -------------------------------------------------------------------------


def expect_error(frames, message):
    errors = [f for f in frames if f[0] == "ERROR"]
    assert errors, "no ERROR frame: %r" % (frames,)
    assert errors[0][1].get("message") == message, errors[0][1]
    return errors[0]


def still_serving(env):
    key = unique("alive")
    conn, l = env.connect()
    conn.subscribe("/topic/" + key, id="x", receipt="s")
    l.receipt("s")
    conn.send("/topic/" + key, "alive")
    assert l.message("alive").body == "alive"
    conn.disconnect()


def answered_with_error(s, data, message, detail):
    """Sends `data` and expects an ERROR frame with this message and detail first."""
    s.sendall(data)
    frames, _ = read_frames(s, lambda fs: fs)
    e = expect_error(frames, message)
    assert e[2] == detail, e


def bad_before_connect(env):
    s = socket.create_connection((env.host, env.port), timeout=WAIT)
    answered_with_error(s, b"SEND\ndestination:/queue/x\n\nhi\x00", "Illegal command",
                        b"You must log in using CONNECT first")
    s.close()


def bad_commands(env):
    s = raw_connect(env)
    s.sendall(b"FOO\n\n\x00")
    s.sendall(b"SEND\n\nno destination\x00")
    s.sendall(b"SEND\ndestination:/nowhere/x\n\nhi\x00")
    s.sendall(b"ACK\nid:garbage\n\n\x00")
    s.sendall(b"SUBSCRIBE\ndestination:/topic/x\ndurable:true\n\n\x00")
    s.sendall(b"COMMIT\ntransaction:never-begun\n\n\x00")
    s.sendall(b"SUBSCRIBE\ndestination:/topic/x\nid:1\nreceipt:still-open\n\n\x00")
    frames, closed = read_frames(s, lambda fs: any(f[0] == "RECEIPT" for f in fs))
    errors = [(f[1]["message"], f[2]) for f in frames if f[0] == "ERROR"]
    assert errors == [
        ("Bad command", b'Could not interpret command "FOO"\n'),
        ("Missing destination", b"\"SEND\" must include a 'destination' header\n"),
        ("Unknown destination", b"'/nowhere/x' is not a valid destination.\nValid destination "
         b"types are: /temp-queue, /exchange, /topic, /queue, /amq/queue, /reply-queue/.\n"),
        ("Invalid header", b'"ACK" must include a valid "id" header\n'),
        ("Missing Header", b"Header 'id' is required for durable subscriptions"),
        ("Bad transaction", b'Invalid transaction identifier: "never-begun"\n'),
    ], errors
    assert not closed and frames[-1][0] == "RECEIPT", "STOMP errors leave the session open"
    s.close()


def bad_login(env):
    s = socket.create_connection((env.host, env.port), timeout=WAIT)
    answered_with_error(s, b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:wrong\n\n\x00",
                        "Bad CONNECT", b"Access refused for user 'guest'\n")
    answered_with_error(s, b"CONNECT\naccept-version:2.0\n\n\x00", "Version mismatch",
                        b"Supported versions are 1.0,1.1,1.2\n")
    s.close()


def amqp_errors_close(env):
    s = raw_connect(env)
    missing = unique("missing")
    s.sendall(("SUBSCRIBE\ndestination:/amq/queue/%s\nid:1\n\n\x00" % missing).encode())
    frames, closed = read_frames(s, lambda fs: False)
    e = expect_error(frames, "not_found")
    assert e[2] == ("NOT_FOUND - no queue '%s' in vhost '/'" % missing).encode(), e
    assert closed, "a channel error closes the STOMP connection"
    s.close()
    s = raw_connect(env)
    s.sendall(b"SEND\ndestination:/topic/x\nuser-id:somebody-else\n\nhi\x00")
    frames, closed = read_frames(s, lambda fs: False)
    e = expect_error(frames, "precondition_failed")
    assert e[2] == b"PRECONDITION_FAILED - user_id property set to 'somebody-else' but authenticated user was 'guest'", e
    assert closed
    s.close()
    still_serving(env)


def malformed_frames(env):
    for bad in (b"SEND\ndestination\n\nhi\x00", b"SEND\ndestination:/queue/a\\tb\n\nhi\x00",
                b"SEND\rx\n\n\x00", b"SEND\ndestination:/topic/x\ncontent-length:abc\n\nhi\x00"):
        s = raw_connect(env)
        s.sendall(bad)
        frames, closed = read_frames(s, lambda fs: False)
        assert closed, "malformed frame %r: connection closed" % bad
        assert not [f for f in frames if f[0] == "ERROR"], "closed without an ERROR frame"
        s.close()
    still_serving(env)


def login_timeout(env):
    s = socket.create_connection((env.host, env.port), timeout=WAIT)
    frames, closed = read_frames(s, lambda fs: False, timeout=15)
    assert closed and not frames, "a client that never logs in is closed after the login timeout"
    s.close()


def oversized_frame(env):
    """Warren only: RabbitMQ 3.13+ closes a connection sending a frame over 4 MiB
    (stomp.max_frame_size); the 3.10 reference node has no limit."""
    s = raw_connect(env)
    read_frames(s, lambda fs: fs)
    body = b"x" * (4 * 1024 * 1024 + 1)
    try:
        s.sendall(("SEND\ndestination:/topic/x\ncontent-length:%d\n\n" % len(body)).encode() + body + b"\x00")
    except OSError:
        pass
    frames, closed = read_frames(s, lambda fs: False)
    assert closed and not frames, frames
    s.close()
    still_serving(env)


# ----- cross protocol: a STOMP client calls a Warren RPC service -------------------------


def rpc_call(env, destination):
    """SEND to the service queue (`/amq/queue/NAME` for a transient service queue; `/queue/NAME`
    declares the queue durable, so only for a server declaring it durable too)."""
    conn, l = env.connect()
    call_id = str(uuid.uuid4())
    conn.send(
        destination,
        json.dumps({"a": 2, "b": 3}),
        content_type="application/json",
        headers={
            "reply-to": "/temp-queue/calc", "correlation-id": call_id,
            "amqp-message-id": call_id, "type": "add", "x-warren-protocol": "1",
            "x-warren-timeout-ms": "10000",
        },
    )
    m = l.message("the service's reply")
    assert m.headers["correlation-id"] == call_id, m.headers
    assert m.headers["content-type"] == "application/json", m.headers
    assert m.headers["subscription"] == "/temp-queue/calc", m.headers
    assert json.loads(m.body) == {"ok": 5}, m.body
    conn.disconnect()


GROUPS = {
    "destinations": [dest_queue, dest_topic, dest_exchange, dest_amq_queue, dest_bare_name,
                     dest_temp_queue, binary_body],
    "acks": [ack_client_individual, ack_client_cumulative, nack, prefetch, ack_on_stomp10_and_11],
    "transactions": [transactions, ack_in_transaction, receipts],
    "durable": [durable_subscription],
    "headers": [stomp_to_amqp, amqp_to_stomp],
    "bad_input": [bad_before_connect, bad_commands, bad_login, amqp_errors_close, malformed_frames],
    "login_timeout": [login_timeout],
    "oversized": [oversized_frame],
    "rpc": [rpc_call],
}


def main():
    group, stomp_addr, amqp_url, name = sys.argv[1:5]
    extra = sys.argv[5:]
    env = Env(stomp_addr, amqp_url, name)
    failed = 0
    for case in GROUPS[group]:
        try:
            case(env, *extra)
            print("PASS %s %s" % (name, case.__name__))
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print("FAIL %s %s: %r" % (name, case.__name__, e))
    try:
        env.clean()
    except Exception as e:  # noqa: BLE001
        print("cleanup failed: %r" % e)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
