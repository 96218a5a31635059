"""Floors on this machine: a bare round trip, and each layer of a delay() call on top of it.

    .venv/bin/python bench/profile/floor.py redis://127.0.0.1:6391/5    (a database it may flush)

Lines, each calls per second, median of 5 runs of 10,000 [min-max]:
  raw PING, raw FCALL send   a socket of its own and hiredis: no client library at all
                             (the FCALL is the very command delay() sends, with a new id)
  redis-py PING, LPUSH       redis-py's client
  Calls.command              beatq's per-thread connection (redis-py's Connection)
  broker.send                the backend's send(): arguments, errors, the call
  build_message, delay()     the message alone; the whole call
"""

import socket
import statistics
import sys
import time
import uuid
from urllib.parse import urlparse

import hiredis
import redis

from beatq import Beatq
from beatq.brokers import Outgoing


def rate(fn, n=10_000, reps=5):
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append(n / (time.perf_counter() - t0))
    return f"{statistics.median(out):>9,.0f}/s [{min(out):,.0f}-{max(out):,.0f}]"


url = sys.argv[1]
where = urlparse(url)
r = redis.Redis.from_url(url)
r.flushdb()
app = Beatq("floor", broker=url)


@app.task(ignore_result=True)
def noop():
    return None


sock = socket.create_connection((where.hostname, where.port or 6379))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
reader = hiredis.Reader()


def raw(*args):
    sock.sendall(hiredis.pack_command(args))
    while (reply := reader.gets()) is False:
        reader.feed(sock.recv(65536))
    return reply


raw("SELECT", (where.path or "/0").strip("/") or "0")
calls = app.broker.calls
sent = []
command = calls.command
calls.command = lambda *args: sent.append(args) or command(*args)
noop.delay()  # loads the function library; the command it sends is kept
calls.command = command
fcall = list(sent[0])  # FCALL name 2 msgs delayed prefix, then queue, id, body, eta
body = fcall[-2]


def with_new_id():
    fcall[-3] = str(uuid.uuid4())
    return fcall


print("raw PING        ", rate(lambda: raw("PING")))
print("raw FCALL send  ", rate(lambda: raw(*with_new_id())))
print("redis-py PING   ", rate(r.ping))
print("redis-py LPUSH  ", rate(lambda: r.lpush("x", b"y")))
r.delete("x")
print("Calls.command   ", rate(lambda: calls.command(*with_new_id())))
print(
    "broker.send     ",
    rate(lambda: app.broker.send([Outgoing("celery", str(uuid.uuid4()), body, None)])),
)
print("build_message   ", rate(lambda: app.build_message(noop.name, (), {}, noop)))
print("delay()         ", rate(noop.delay))
