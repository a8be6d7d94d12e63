"""pika over TLS: connects to an AMQPS listener and checks a round trip (declare a server-named
exclusive queue, publish, get).

    python3 tls_pika.py HOST PORT CA_PEM MODE [CERT_PEM KEY_PEM [USER]]

MODE: `plain` (guest/guest, no client certificate), `plain-cert` (guest/guest and the client
certificate), `external` (the client certificate, EXTERNAL mechanism), `refused-external`
(EXTERNAL must be refused), `refused-tls` (the TLS handshake or the connection must fail).
Prints `OK mode` or `FAIL mode: why` and exits non-zero on failure.
"""
import ssl
import sys

import pika


def connect(host, port, ca, mode, cert=None, key=None):
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    credentials = (
        pika.credentials.ExternalCredentials()
        if "external" in mode
        else pika.PlainCredentials("guest", "guest")
    )
    params = pika.ConnectionParameters(
        host=host,
        port=port,
        credentials=credentials,
        ssl_options=pika.SSLOptions(context, "localhost"),
        connection_attempts=1,
        socket_timeout=5,
        blocked_connection_timeout=5,
    )
    return pika.BlockingConnection(params)


def round_trip(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"over tls")
    _, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"over tls", body


def main():
    host, port, ca, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    cert = sys.argv[5] if len(sys.argv) > 5 else None
    key = sys.argv[6] if len(sys.argv) > 6 else None
    try:
        conn = connect(host, port, ca, mode, cert, key)
    except Exception as e:  # pika raises several types for a refused connection
        auth = isinstance(
            e, (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)
        ) or "403" in str(e)
        if mode == "refused-tls" or (mode == "refused-external" and auth):
            print(f"OK {mode}: {type(e).__name__}")
            return 0
        print(f"FAIL {mode}: cannot connect: {type(e).__name__}: {e}")
        return 1
    if mode.startswith("refused"):
        print(f"FAIL {mode}: connected")
        conn.close()
        return 1
    try:
        round_trip(conn)
    except Exception as e:
        print(f"FAIL {mode}: round trip: {type(e).__name__}: {e}")
        return 1
    conn.close()
    print(f"OK {mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
