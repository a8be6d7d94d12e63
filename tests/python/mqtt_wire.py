"""MQTT 3.1.1 wire encoding shared by the hand-written MQTT clients of mqtt_compat.py and
proto_access.py: the remaining-length varint and the length-prefixed string."""

import struct


def remaining_length(n):
    """The fixed header's remaining length: 7 bits per byte, high bit = more bytes follow."""
    out = b""
    while True:
        d, n = n % 128, n // 128
        out += bytes([d | (0x80 if n else 0)])
        if not n:
            return out


def mqtt_string(s):
    """A UTF-8 string (or bytes) with its 2-byte big-endian length in front."""
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b
