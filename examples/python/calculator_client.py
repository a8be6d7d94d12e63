#!/usr/bin/env python3
"""Call Warren's calculator service from Python, using only pika, msgpack and the wire protocol.

Nothing here comes from Warren: it follows the RPC wire protocol, version 1 (docs/protocol.md),
which is all another language needs to call (or serve) a Warren service.

    pip install pika msgpack
    python3 examples/python/calculator_client.py --url amqp://guest:guest@127.0.0.1:5672/%2f

Exits 0 when every answer is right, 1 otherwise.
"""

import argparse
import sys
import time
import uuid

import msgpack
import pika

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


class WarrenError(Exception):
    """A framework failure: the call did not produce the method's value or error."""


class ServiceUnavailable(WarrenError):
    """No queue exists for the service: the broker returned the request."""


class DeadlineExceeded(WarrenError):
    """No reply came before the call's deadline."""


class Fault(WarrenError):
    """The server failed the call: {"fault": {"code": ..., "message": ...}}."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code


class AppError(Exception):
    """The method's own error: {"err": value}."""

    def __init__(self, value):
        super().__init__(repr(value))
        self.value = value


class Client:
    """One connection and channel; replies come through direct reply-to."""

    def __init__(self, url, service, timeout=5.0):
        self.service = service
        self.timeout = timeout
        self.replies = {}
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        # Publisher confirms, so a mandatory request with no queue raises UnroutableError.
        self.channel.confirm_delivery()
        # Direct reply-to: consume (no-ack) before publishing, on the same channel.
        self.channel.basic_consume(DIRECT_REPLY_TO, self._on_reply, auto_ack=True)

    def _on_reply(self, _channel, _method, properties, body):
        self.replies[properties.correlation_id] = body

    def call(self, method, **args):
        call_id = str(uuid.uuid4())
        budget_ms = int(self.timeout * 1000)
        deadline = time.time() + self.timeout
        properties = pika.BasicProperties(
            type=method,
            content_type="application/msgpack",
            correlation_id=call_id,
            message_id=call_id,
            reply_to=DIRECT_REPLY_TO,
            expiration=str(budget_ms),
            headers={
                "x-warren-protocol": 1,
                "x-warren-timeout-ms": budget_ms,
                "x-warren-deadline": int(deadline * 1000),
                "x-warren-attempt": 1,
            },
        )
        try:
            self.channel.basic_publish(
                exchange="",
                routing_key=self.service,
                body=msgpack.packb(args),
                properties=properties,
                mandatory=True,
            )
        except pika.exceptions.UnroutableError as e:
            raise ServiceUnavailable(self.service) from e
        while call_id not in self.replies:
            remaining = deadline - time.time()
            if remaining <= 0:
                raise DeadlineExceeded(f"{method}: no reply within {budget_ms}ms")
            self.connection.process_data_events(time_limit=min(remaining, 0.05))
        reply = msgpack.unpackb(self.replies.pop(call_id), raw=False)
        if "ok" in reply:
            return reply["ok"]
        if "err" in reply:
            raise AppError(reply["err"])
        fault = reply["fault"]
        raise Fault(fault["code"], fault.get("message", ""))

    def close(self):
        self.connection.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    parser.add_argument("--service", default="calculator", help="the service (queue) name")
    options = parser.parse_args()

    client = Client(options.url, options.service)
    failures = 0

    def check(label, got, expected):
        nonlocal failures
        ok = got == expected
        failures += 0 if ok else 1
        print(f"{label:<22} = {got!r}" + ("" if ok else f"   WRONG, expected {expected!r}"))

    def expect_raise(label, call, kind, check_error=lambda e: True):
        nonlocal failures
        try:
            value = call()
        except kind as e:
            ok = check_error(e)
            failures += 0 if ok else 1
            print(f"{label:<22} -> {type(e).__name__}: {e}" + ("" if ok else "   WRONG"))
            return
        failures += 1
        print(f"{label:<22} = {value!r}   WRONG, expected {kind.__name__}")

    check("add(2, 3)", client.call("add", a=2, b=3), 5)
    check("sub(2, 3)", client.call("sub", a=2, b=3), -1)
    check("mul(-4, 3)", client.call("mul", a=-4, b=3), -12)
    check("div(7, 2)", client.call("div", a=7, b=2), 3)
    expect_raise(
        "div(1, 0)",
        lambda: client.call("div", a=1, b=0),
        AppError,
        lambda e: e.value == "DivisionByZero",
    )
    total = client.call("memory_recall")
    check("memory_add(5)", client.call("memory_add", x=5), total + 5)
    check("memory_recall()", client.call("memory_recall"), total + 5)
    expect_raise(
        "sqrt(4)",
        lambda: client.call("sqrt", x=4),
        Fault,
        lambda e: e.code == "unknown_method",
    )
    expect_raise(
        "add(a='x')",
        lambda: client.call("add", a="x"),
        Fault,
        lambda e: e.code == "bad_request",
    )
    client.close()

    missing = Client(options.url, options.service + ".missing")
    expect_raise("missing.add(1, 1)", lambda: missing.call("add", a=1, b=1), ServiceUnavailable)
    missing.close()

    print("ok" if failures == 0 else f"{failures} wrong answer(s)")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
