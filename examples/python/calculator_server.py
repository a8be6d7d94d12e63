#!/usr/bin/env python3
"""Serve Warren's calculator service from Python, using only pika, msgpack and the wire protocol.

Rust clients (`CalculatorClient`) call it exactly as they call the Rust server: the service is
the queue, the method is the message `type`, the arguments are a map, the reply is a map with
one key, "ok", "err" or "fault".

    pip install pika msgpack
    python3 examples/python/calculator_server.py --url amqp://guest:guest@127.0.0.1:5672/%2f

Prints "ready" once it consumes; stops on SIGTERM or Ctrl-C.
"""

import argparse
import json
import signal
import sys
import time

import msgpack
import pika

MSGPACK = "application/msgpack"
JSON = "application/json"
I64_MIN = -(2**63)


def wrap(value):
    """Wraps an int to a signed 64-bit value, as the Rust calculator does."""
    return (value + 2**63) % 2**64 - 2**63


class AppError(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value


class Calculator:
    def __init__(self):
        self.memory = 0

    def add(self, a, b):
        return wrap(a + b)

    def sub(self, a, b):
        return wrap(a - b)

    def mul(self, a, b):
        return wrap(a * b)

    def div(self, a, b):
        if b == 0:
            raise AppError("DivisionByZero")
        if a == I64_MIN and b == -1:
            raise AppError("Overflow")
        quotient = abs(a) // abs(b)
        return quotient if (a >= 0) == (b > 0) else -quotient

    def memory_add(self, x):
        self.memory = wrap(self.memory + x)
        return self.memory

    def memory_recall(self):
        return self.memory


METHODS = {
    "add": ("a", "b"),
    "sub": ("a", "b"),
    "mul": ("a", "b"),
    "div": ("a", "b"),
    "memory_add": ("x",),
    "memory_recall": (),
}


def encode(content_type, value):
    if content_type == JSON:
        return json.dumps(value).encode()
    return msgpack.packb(value)


def decode(content_type, body):
    if content_type == JSON:
        return json.loads(body)
    return msgpack.unpackb(body, raw=False)


def fault(code, message):
    return {"fault": {"code": code, "message": message}}


def header_int(headers, name):
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class Server:
    def __init__(self, channel, calculator):
        self.channel = channel
        self.calculator = calculator
        self.replies = {}  # call id -> reply body, so a resent call runs once

    def on_request(self, channel, method, properties, body):
        received = time.monotonic()
        budget_ms = header_int(properties.headers, "x-warren-timeout-ms")
        if budget_ms is not None and budget_ms <= 0:
            channel.basic_ack(method.delivery_tag)  # nobody waits for it any more
            return
        content_type = properties.content_type or MSGPACK
        if content_type not in (MSGPACK, JSON):
            content_type, reply = MSGPACK, fault("bad_request", "unsupported content_type")
        else:
            call_id = properties.message_id or properties.correlation_id
            reply = self.replies.get(call_id) if call_id else None
            if reply is None:
                reply = self.execute(properties.type, content_type, body)
                if call_id:
                    self.replies[call_id] = reply
        if budget_ms is not None and (time.monotonic() - received) * 1000 > budget_ms:
            reply = None  # the caller gave up
        if properties.reply_to and reply is not None:
            channel.basic_publish(
                exchange="",
                routing_key=properties.reply_to,
                body=encode(content_type, reply),
                properties=pika.BasicProperties(
                    content_type=content_type,
                    correlation_id=properties.correlation_id,
                ),
            )
        channel.basic_ack(method.delivery_tag)

    def execute(self, name, content_type, body):
        if name not in METHODS:
            return fault("unknown_method", f"no method {name!r}")
        try:
            args = decode(content_type, body)
            values = [args[p] for p in METHODS[name]]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise TypeError("arguments must be integers")
        except Exception as e:  # malformed body, missing or mistyped argument
            return fault("bad_request", f"bad arguments for {name}: {e}")
        try:
            return {"ok": getattr(self.calculator, name)(*values)}
        except AppError as e:
            return {"err": e.value}
        except Exception as e:
            return fault("internal", str(e))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    parser.add_argument("--service", default="calculator", help="the service (queue) name")
    parser.add_argument("--concurrency", type=int, default=16, help="the prefetch count")
    options = parser.parse_args()

    connection = pika.BlockingConnection(pika.URLParameters(options.url))
    channel = connection.channel()
    # The server declares the service queue: non-exclusive, not auto-delete.
    channel.queue_declare(options.service, durable=False, exclusive=False, auto_delete=False)
    channel.basic_qos(prefetch_count=options.concurrency)
    server = Server(channel, Calculator())
    channel.basic_consume(options.service, server.on_request, auto_ack=False)

    def stop(*_):
        channel.stop_consuming()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    channel.start_consuming()
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
