"""A rough STOMP throughput probe: one stomp.py publisher and one subscriber on a fresh
transient queue, N messages of 100 bytes, end to end. stomp.py itself is the bottleneck on a
small machine, so compare brokers side by side on the same machine, not with other numbers.

    python3 tests/python/bench_stomp.py HOST PORT N
"""
import stomp, sys, time, threading, uuid
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
q = "/queue/bench-" + uuid.uuid4().hex[:8]
done = threading.Event(); got = [0]
class L(stomp.ConnectionListener):
    def on_message(self, f):
        got[0] += 1
        if got[0] == n: done.set()
c = stomp.Connection12([(host, port)], vhost="/"); c.set_listener("l", L()); c.connect("guest", "guest", wait=True)
c.subscribe(q, id="b", headers={"durable": "false", "auto-delete": "true", "exclusive": "false"})
p = stomp.Connection12([(host, port)], vhost="/"); p.connect("guest", "guest", wait=True)
t0 = time.time()
for i in range(n):
    p.send(q, "x" * 100, headers={"durable": "false", "auto-delete": "true", "exclusive": "false"})
done.wait(60); dt = time.time() - t0
print("%s:%d %d msgs in %.2fs = %.0f msg/s (received %d)" % (host, port, n, dt, got[0]/dt, got[0]))
p.disconnect(); c.disconnect()
