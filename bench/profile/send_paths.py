"""One message sent per round trip, five ways, on the same server: which is cheapest?

    .venv/bin/python bench/profile/send_paths.py redis://127.0.0.1:6391/5

Prints calls/s (median [min-max] of 3 runs of 20,000) and the server's microseconds per
call from INFO commandstats. Flushes the db given.
"""

import statistics
import sys
import time
import uuid

import redis
from redis.connection import _RESP2Parser
from redis.utils import HIREDIS_AVAILABLE

from beatq.brokers import Outgoing
from beatq.brokers.redis import RedisBackend

LEAN = """#!lua name=hp_probe
local function send(keys, args)
  local msgs, q, w = keys[1], keys[2], keys[3]
  for i = 1, #args, 2 do
    if redis.call('HSETNX', msgs, args[i], args[i + 1]) == 0 then
      return redis.error_reply('exists')
    end
    redis.call('LPUSH', q, args[i])
  end
  if redis.call('LLEN', w) == 0 then redis.call('LPUSH', w, '1') end
  return 1
end
redis.register_function('hp_probe_send', send)
"""

REPS = 5
BODY = b'{"v":1,"id":"x","task":"bench.noop"}\n[[],{},{}]' + b" " * 200


def once(fn, n=10_000):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def cell(out):
    return f"{statistics.median(out):>8,.0f}/s [{min(out):,.0f}-{max(out):,.0f}]"


def server_us(r, cmd):
    stats = r.info("commandstats").get(f"cmdstat_{cmd}")
    return f"{stats['usec_per_call']:.1f} us/call in Redis" if stats else ""


def main(url: str) -> None:
    print("hiredis:", HIREDIS_AVAILABLE)
    r = redis.Redis.from_url(url)
    r.flushdb()
    r.function_load(LEAN, replace=True)
    single = redis.Redis.from_url(url, single_connection_client=True)
    backend = RedisBackend(url)

    def evalsha():
        backend.send([Outgoing("celery", uuid.uuid4().hex, BODY)])

    def fcall(client=r):
        client.fcall("hp_probe_send", 3, "m", "q", "w", uuid.uuid4().hex, BODY)

    raw = redis.Redis.from_url(url).connection_pool.get_connection()
    pyraw = redis.Redis.from_url(url, parser_class=_RESP2Parser).connection_pool.get_connection()

    def fcall_raw(conn=raw):
        conn.send_command("FCALL", "hp_probe_send", 3, "m", "q", "w", uuid.uuid4().hex, BODY)
        conn.read_response()

    def multi():
        pipe = r.pipeline(transaction=True)
        i = uuid.uuid4().hex
        pipe.hset("m", i, BODY)
        pipe.lpush("q", i)
        pipe.lpush("w", 1)
        pipe.ltrim("w", 0, 0)
        pipe.execute()

    paths = [
        ("EVALSHA send.lua (now)", evalsha, "evalsha"),
        ("FCALL lean", fcall, "fcall"),
        ("FCALL lean, one connection", lambda: fcall(single), "fcall"),
        ("FCALL lean, raw connection", fcall_raw, "fcall"),
        ("FCALL lean, raw, python parser", lambda: fcall_raw(pyraw), "fcall"),
        ("MULTI HSET LPUSH LPUSH LTRIM", multi, "exec"),
        ("PING", r.ping, "ping"),
    ]
    rates = {name: [] for name, _, _ in paths}
    r.config_resetstat()
    for _ in range(REPS):  # interleaved: a noisy machine slows every path alike
        for name, fn, _ in paths:
            rates[name].append(once(fn))
            r.flushdb()
    for name, _, cmd in paths:
        print(f"{name:32} {cell(rates[name])}  {server_us(r, cmd)}")
    r.function_delete("hp_probe")


if __name__ == "__main__":
    main(sys.argv[1])
