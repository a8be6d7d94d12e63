#!/usr/bin/env python3
"""Compatibility scenarios driven by pika (a second client family besides lapin).

Usage: compat_pika.py AMQP_URL [TARGET_NAME]

Runs every scenario against the broker at AMQP_URL with pika's BlockingConnection and
asserts RabbitMQ's behaviour (each scenario was checked against RabbitMQ 3.10). Prints one
line per scenario and exits non-zero if any failed. tests/tests/pika_compat.rs runs it against
the bundled broker and, when WARREN_TEST_AMQP_URL is set, against RabbitMQ.
"""

import sys
import time
import traceback
import uuid
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions as px

URL = sys.argv[1]
TARGET = sys.argv[2] if len(sys.argv) > 2 else "broker"
SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


def unique(what):
    return f"warren-test.pika.{what}.{uuid.uuid4()}"


def connect(url=URL, **kwargs):
    params = pika.URLParameters(url)
    for k, v in kwargs.items():
        setattr(params, k, v)
    return pika.BlockingConnection(params)


def url_with(user, password, vhost="%2f"):
    parts = urlsplit(URL)
    host = parts.hostname
    port = parts.port or 5672
    return urlunsplit(("amqp", f"{user}:{password}@{host}:{port}", "/" + vhost, "", ""))


def eq(got, expected, what):
    assert got == expected, f"{what}: expected {expected!r}, got {got!r}"


def channel_error(fn, code, text, what):
    """Runs fn, which must fail with a channel close (code, text)."""
    try:
        fn()
    except px.ChannelClosedByBroker as e:
        eq((e.reply_code, e.reply_text), (code, text), what)
        return
    raise AssertionError(f"{what}: expected channel close {code} {text!r}, got success")


def drain(ch, queue):
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body.decode())


@scenario
def server_capabilities():
    conn = connect()
    caps = conn._impl.server_capabilities
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ]:
        eq(caps.get(cap), True, f"capability {cap}")
    params = conn._impl.params
    eq((params.channel_max, params.frame_max, params.heartbeat), (2047, 131072, 60), "tune")
    conn.close()


@scenario
def bad_password_is_refused():
    try:
        connect(url_with("guest", "not-the-password"))
    except px.ProbableAuthenticationError as e:
        text = str(e)
        assert "ACCESS_REFUSED" in text, f"auth error text: {text}"
        return
    except px.AuthenticationError:
        return
    raise AssertionError("connected with a wrong password")


@scenario
def unknown_vhost_is_not_allowed():
    try:
        connect(url_with("guest", "guest", "no-such-vhost"))
    except px.ProbableAccessDeniedError as e:
        assert "NOT_ALLOWED - vhost no-such-vhost not found" in str(e), str(e)
        return
    except px.ConnectionClosedByBroker as e:
        eq((e.reply_code, e.reply_text), (530, "NOT_ALLOWED - vhost no-such-vhost not found"), "vhost")
        return
    raise AssertionError("opened an unknown vhost")


@scenario
def queue_declare_counts_and_passive():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = unique("q")
    ok = ch.queue_declare(q, exclusive=True)
    eq((ok.method.queue, ok.method.message_count, ok.method.consumer_count), (q, 0, 0), "declare-ok")
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())
    ok = ch.queue_declare(q, passive=True)
    eq(ok.method.message_count, 3, "message count")
    gen = ch.queue_declare("", exclusive=True)
    assert gen.method.queue.startswith("amq.gen-"), gen.method.queue
    missing = unique("missing")
    channel_error(
        lambda: ch.queue_declare(missing, passive=True),
        404,
        f"NOT_FOUND - no queue '{missing}' in vhost '/'",
        "passive declare of a missing queue",
    )
    assert conn.is_open, "connection survives a channel error"
    ch2 = conn.channel()
    eq(ch2.queue_purge(q).method.message_count, 3, "purge count")
    conn.close()


@scenario
def exclusive_queue_locked():
    owner = connect()
    q = unique("excl")
    owner.channel().queue_declare(q, exclusive=True)
    other = connect()
    try:
        other.channel().queue_declare(q, passive=True)
    except px.ChannelClosedByBroker as e:
        eq(e.reply_code, 405, "exclusive from another connection")
        assert e.reply_text.startswith("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue"), e.reply_text
    else:
        raise AssertionError("another connection used an exclusive queue")
    owner.close()
    deadline = time.time() + 5
    while True:
        try:
            other.channel().queue_declare(q, passive=True)
        except px.ChannelClosedByBroker as e:
            eq((e.reply_code, e.reply_text), (404, f"NOT_FOUND - no queue '{q}' in vhost '/'"), "exclusive queue gone")
            break
        assert time.time() < deadline, "exclusive queue still there after its owner closed"
        time.sleep(0.01)
    other.close()


@scenario
def delete_if_empty_and_if_unused():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = unique("del")
    ch.queue_declare(q, auto_delete=False)
    ch.basic_publish("", q, b"x")
    channel_error(
        lambda: ch.queue_delete(q, if_empty=True),
        406,
        f"PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty",
        "delete if-empty",
    )
    ch = conn.channel()
    eq(ch.queue_delete(q).method.message_count, 1, "delete-ok count")
    conn.close()


@scenario
def routing_by_exchange_type():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    cases = [
        ("direct", [("k", {})], [("k", None), ("other", None)], ["k"]),
        ("fanout", [("ignored", {})], [("a", None), ("b", None)], ["a", "b"]),
        ("topic", [("a.*.c", {}), ("x.#", {})], [("a.b.c", None), ("a.b", None), ("x", None), ("x.y.z", None)], ["a.b.c", "x", "x.y.z"]),
        (
            "headers",
            [("", {"x-match": "any", "h": "1", "g": "2"})],
            [("m1", {"h": "1"}), ("m2", {"h": "2"}), ("m3", {"g": "2", "z": "0"})],
            ["m1", "m3"],
        ),
    ]
    for kind, bindings, messages, expected in cases:
        x = unique(kind)
        ch.exchange_declare(x, kind, auto_delete=True)
        q = ch.queue_declare("", exclusive=True).method.queue
        for key, args in bindings:
            ch.queue_bind(q, x, key, arguments=args or None)
        for key, headers in messages:
            body = key if headers is None else key
            rk = key if headers is None else ""
            ch.basic_publish(x, rk, body.encode(), pika.BasicProperties(headers=headers))
        eq(drain(ch, q), expected, f"{kind} routing")
    conn.close()


@scenario
def exchange_errors():
    conn = connect()
    ch = conn.channel()
    x = unique("x")
    ch.exchange_declare(x, "direct", auto_delete=True)
    channel_error(
        lambda: ch.exchange_declare(x, "fanout", auto_delete=True),
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': "
        "received 'fanout' but current is 'direct'",
        "redeclare with another type",
    )
    missing = unique("missing")
    channel_error(
        lambda: conn.channel().exchange_declare(missing, passive=True),
        404,
        f"NOT_FOUND - no exchange '{missing}' in vhost '/'",
        "passive declare of a missing exchange",
    )
    internal = unique("internal")
    ch = conn.channel()
    ch.exchange_declare(internal, "fanout", internal=True, auto_delete=True)
    ch.basic_publish(internal, "", b"x")
    channel_error(
        lambda: ch.queue_declare("", exclusive=True),
        403,
        f"ACCESS_REFUSED - cannot publish to internal exchange '{internal}' in vhost '/'",
        "publish to an internal exchange",
    )
    ch = conn.channel()
    ch.exchange_delete(x)
    ch.exchange_delete(internal)
    conn.close()


@scenario
def exchange_to_exchange_and_alternate():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ae = unique("ae")
    src = unique("src")
    dst = unique("dst")
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(src, "direct", arguments={"alternate-exchange": ae})
    ch.exchange_declare(dst, "fanout")
    ch.exchange_bind(dst, src, "k")
    q_dst = ch.queue_declare("", exclusive=True).method.queue
    q_ae = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_dst, dst)
    ch.queue_bind(q_ae, ae)
    ch.basic_publish(src, "k", b"routed")
    ch.basic_publish(src, "zzz", b"unroutable", mandatory=True)
    eq(drain(ch, q_dst), ["routed"], "exchange-to-exchange")
    eq(drain(ch, q_ae), ["unroutable"], "alternate exchange")
    for x in (src, dst, ae):
        ch.exchange_delete(x)
    conn.close()


@scenario
def mandatory_unroutable_returns():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    returned = []
    ch.add_on_return_callback(lambda _ch, method, _props, body: returned.append((method.reply_code, method.reply_text, body)))
    try:
        ch.basic_publish("amq.direct", unique("nowhere"), b"lost", mandatory=True)
    except px.UnroutableError:
        pass
    else:
        raise AssertionError("mandatory unroutable publish was not returned")
    conn.process_data_events(0)
    eq(returned, [(312, "NO_ROUTE", b"lost")], "basic.return")
    conn.close()


@scenario
def ack_nack_requeue_order():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(4):
        ch.basic_publish("", q, f"m{i}".encode())
    got = [ch.basic_get(q) for _ in range(4)]
    eq([b.decode() for _m, _p, b in got], ["m0", "m1", "m2", "m3"], "get order")
    eq(got[0][0].message_count, 3, "get-ok message count")
    ch.basic_ack(got[0][0].delivery_tag)
    ch.basic_nack(got[2][0].delivery_tag, multiple=True, requeue=True)  # m1, m2
    ch.basic_reject(got[3][0].delivery_tag, requeue=False)  # m3 dropped
    again = []
    while True:
        m, _p, b = ch.basic_get(q, auto_ack=True)
        if m is None:
            break
        again.append((b.decode(), m.redelivered))
    eq(again, [("m1", True), ("m2", True)], "requeued in order, redelivered")
    ch.basic_ack(999)
    channel_error(
        lambda: ch.queue_declare("", exclusive=True),
        406,
        "PRECONDITION_FAILED - unknown delivery tag 999",
        "ack of an unknown delivery tag",
    )
    conn.close()


@scenario
def consumers_round_robin_and_prefetch():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    cch = conn.channel()
    cch.basic_qos(prefetch_count=1)
    got = {"c1": [], "c2": []}
    for tag in ("c1", "c2"):
        cch.basic_consume(q, lambda _c, _m, _p, body, tag=tag: got[tag].append(body.decode()), consumer_tag=tag)
    for i in range(6):
        ch.basic_publish("", q, f"m{i}".encode())
    deadline = time.time() + 5
    while len(got["c1"]) + len(got["c2"]) < 2 and time.time() < deadline:
        conn.process_data_events(0.05)
    conn.process_data_events(0.2)
    eq(got, {"c1": ["m0"], "c2": ["m1"]}, "prefetch 1 per consumer, round robin")
    conn.close()


@scenario
def unacked_requeued_on_channel_close():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())
    cch = conn.channel()
    for _ in range(3):
        cch.basic_get(q)
    cch.close()
    got = []
    deadline = time.time() + 5
    while True:
        m, _p, b = ch.basic_get(q, auto_ack=True)
        if m is None:
            # RabbitMQ requeues shortly after channel.close-ok.
            if len(got) < 3 and time.time() < deadline:
                time.sleep(0.01)
                continue
            break
        got.append((b.decode(), m.redelivered))
    eq(got, [("m0", True), ("m1", True), ("m2", True)], "requeued on channel close")
    conn.close()


@scenario
def consumer_cancel_notification():
    conn = connect()
    ch = conn.channel()
    q = unique("cancel")
    ch.queue_declare(q)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    ch.basic_consume(q, lambda *a: None, consumer_tag="ctag")
    other = connect()
    other.channel().queue_delete(q)
    other.close()
    deadline = time.time() + 5
    while not cancelled and time.time() < deadline:
        conn.process_data_events(0.05)
    eq(cancelled, ["ctag"], "basic.cancel from the broker")
    conn.close()


@scenario
def exclusive_consumer_refused():
    conn = connect()
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    channel_error(
        lambda: conn.channel().basic_consume(q, lambda *a: None),
        403,
        f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use",
        "second consumer next to an exclusive one",
    )
    conn.close()


@scenario
def transactions():
    conn = connect()
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", q, b"one")
    tx.basic_qos(prefetch_count=0)  # round trip: the broker has the publish
    eq(drain(ch, q), [], "uncommitted publish invisible")
    tx.tx_commit()
    eq(drain(ch, q), ["one"], "committed publish visible")
    tx.basic_publish("", q, b"two")
    tx.tx_rollback()
    tx.tx_commit()
    eq(drain(ch, q), [], "rolled back publish discarded")
    channel_error(
        lambda: tx.confirm_delivery(),
        406,
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
        "confirm on a tx channel",
    )
    conn.close()


@scenario
def direct_reply_to():
    server = connect()
    sch = server.channel()
    service = sch.queue_declare("", exclusive=True).method.queue
    caller = connect()
    cch = caller.channel()
    replies = []
    cch.basic_consume("amq.rabbitmq.reply-to", lambda _c, _m, props, body: replies.append((props.correlation_id, body)), auto_ack=True)
    cch.basic_publish("", service, b"ping", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c1"))
    deadline = time.time() + 5
    method = None
    while method is None and time.time() < deadline:
        caller.process_data_events(0.02)
        method, props, body = sch.basic_get(service, auto_ack=True)
    assert method is not None, "request not delivered"
    assert props.reply_to.startswith("amq.rabbitmq.reply-to."), props.reply_to
    sch.basic_publish("", props.reply_to, b"pong", pika.BasicProperties(correlation_id=props.correlation_id))
    while not replies and time.time() < deadline:
        caller.process_data_events(0.02)
    eq(replies, [("c1", b"pong")], "reply via direct reply-to")

    channel_error(
        lambda: caller.channel().basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=False),
        406,
        "PRECONDITION_FAILED - reply consumer cannot acknowledge",
        "reply-to consumer in ack mode",
    )
    lonely = caller.channel()
    lonely.basic_publish("", service, b"x", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    channel_error(
        lambda: lonely.queue_declare("", exclusive=True),
        406,
        "PRECONDITION_FAILED - fast reply consumer does not exist",
        "reply_to without consuming it",
    )
    caller.close()
    server.close()


@scenario
def message_properties_and_large_body():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    props = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={"s": "v", "i": 7, "b": True, "l": [1, "two"], "t": {"nested": 1}},
        delivery_mode=2,
        priority=4,
        correlation_id="corr",
        reply_to="somewhere",
        expiration="60000",
        message_id="mid",
        timestamp=1700000000,
        type="kind",
        user_id="guest",
        app_id="app",
    )
    body = bytes(range(256)) * 2000  # 512 000 bytes, several frames
    ch.basic_publish("", q, body, props)
    m, got, b = ch.basic_get(q, auto_ack=True)
    eq(b, body, "large body")
    for field in ["content_type", "content_encoding", "headers", "delivery_mode", "priority", "correlation_id",
                  "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id"]:
        eq(getattr(got, field), getattr(props, field), f"property {field}")
    channel_error(
        lambda: ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="mallory")),
        406,
        "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'",
        "user_id mismatch",
    )
    conn.close()


@scenario
def bad_expiration():
    conn = connect()
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration="abc"))
    channel_error(
        lambda: ch.queue_declare("", exclusive=True),
        406,
        "PRECONDITION_FAILED - invalid expiration 'abc': no_integer",
        "bad expiration",
    )
    conn.close()


@scenario
def header_types_round_trip():
    import datetime
    import decimal

    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    headers = {
        "str": "text",
        "int": 42,
        "neg": -7,
        "big": 2**40,
        "bool": True,
        "decimal": decimal.Decimal("3.14"),
        "time": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "table": {"nested": {"deep": 1}},
        "list": [1, "two", False, None],
        "bytes": b"\x00\xff",
        "none": None,
    }
    ch.basic_publish("", q, b"typed", pika.BasicProperties(headers=headers))
    _m, props, _b = ch.basic_get(q, auto_ack=True)
    got = dict(props.headers)
    if isinstance(got.get("time"), datetime.datetime):
        got["time"] = got["time"].replace(tzinfo=None)
    eq(got, headers, "headers round trip")
    conn.close()


@scenario
def dead_lettering():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    dlq = ch.queue_declare("", exclusive=True).method.queue
    work = unique("work")
    ch.queue_declare(work, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", work, b"doomed")
    m, _p, _b = ch.basic_get(work)
    ch.basic_reject(m.delivery_tag, requeue=False)
    deadline = time.time() + 5
    while True:
        m, props, body = ch.basic_get(dlq, auto_ack=True)
        if m is not None or time.time() > deadline:
            break
        time.sleep(0.01)
    assert m is not None, "nothing dead-lettered"
    eq(body, b"doomed", "dead-lettered body")
    death = props.headers["x-death"][0]
    eq((death["reason"], death["queue"], death["count"]), ("rejected", work, 1), "x-death")
    conn.close()


@scenario
def basic_recover_and_global_qos():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())
    cch = conn.channel()
    cch.basic_qos(prefetch_count=2, global_qos=True)
    got = []
    acking = [False]

    def on_message(c, m, _p, body):
        got.append((body.decode(), m.redelivered))
        if acking[0]:
            c.basic_ack(m.delivery_tag)

    cch.basic_consume(q, on_message)
    cch.basic_consume(q, on_message)
    deadline = time.time() + 5
    while len(got) < 2 and time.time() < deadline:
        conn.process_data_events(0.02)
    conn.process_data_events(0.2)
    eq(sorted(got), [("m0", False), ("m1", False)], "global prefetch 2 over two consumers")
    got.clear()
    # From now on every delivery is acked, so the limit frees up whichever order RabbitMQ
    # redelivers in (its requeue is asynchronous: m2 may come before m0 and m1).
    acking[0] = True
    cch.basic_recover(requeue=True)
    deadline = time.time() + 5
    while len(got) < 3 and time.time() < deadline:
        conn.process_data_events(0.02)
    eq(sorted(got), [("m0", True), ("m1", True), ("m2", False)], "recovered and redelivered")
    conn.close()


@scenario
def queue_limits_and_ttl():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True, arguments={"x-max-length": 2}).method.queue
    for i in range(4):
        ch.basic_publish("", q, f"m{i}".encode())
    eq(drain(ch, q), ["m2", "m3"], "x-max-length drops the head")
    q = ch.queue_declare("", exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}).method.queue
    ch.basic_publish("", q, b"fits")
    try:
        ch.basic_publish("", q, b"refused")
    except px.NackError:
        pass
    else:
        raise AssertionError("publish to a full reject-publish queue was not nacked")
    eq(drain(ch, q), ["fits"], "reject-publish keeps the first")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"gone", pika.BasicProperties(expiration="0"))
    ch.basic_publish("", q, b"kept", pika.BasicProperties(expiration="60000"))
    eq(drain(ch, q), ["kept"], "expiration 0 with no consumer")
    conn.close()


@scenario
def consumer_nack_multiple_requeue():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())
    cch = conn.channel()
    got = []
    cch.basic_consume(q, lambda _c, m, _p, body: got.append((body.decode(), m.redelivered, m.delivery_tag)))
    deadline = time.time() + 5
    while len(got) < 3 and time.time() < deadline:
        conn.process_data_events(0.02)
    eq([(b, r) for b, r, _ in got], [("m0", False), ("m1", False), ("m2", False)], "first deliveries")
    cch.basic_nack(got[-1][2], multiple=True, requeue=True)
    while len(got) < 6 and time.time() < deadline:
        conn.process_data_events(0.02)
    eq([(b, r) for b, r, _ in got[3:]], [("m0", True), ("m1", True), ("m2", True)], "redelivered in order")
    eq([t for _, _, t in got], [1, 2, 3, 4, 5, 6], "delivery tags keep counting")
    conn.close()


@scenario
def delete_if_unused():
    conn = connect()
    ch = conn.channel()
    x = unique("x")
    ch.exchange_declare(x, "direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, "k")
    channel_error(
        lambda: ch.exchange_delete(x, if_unused=True),
        406,
        f"PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use",
        "exchange delete if-unused",
    )
    ch = conn.channel()
    ch.basic_consume(q, lambda *a: None)
    channel_error(
        lambda: conn.channel().queue_delete(q, if_unused=True),
        406,
        f"PRECONDITION_FAILED - queue '{q}' in vhost '/' in use",
        "queue delete if-unused",
    )
    conn.channel().exchange_delete(x)
    conn.close()


def main():
    failed = 0
    for fn in SCENARIOS:
        start = time.time()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report every failure
            failed += 1
            print(f"FAIL {TARGET}: {fn.__name__}: {type(e).__name__}: {e}")
            traceback.print_exc(limit=3, file=sys.stdout)
        else:
            print(f"ok   {TARGET}: {fn.__name__} ({time.time() - start:.2f}s)")
    print(f"{TARGET}: {len(SCENARIOS) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
