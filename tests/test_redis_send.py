"""The Redis send (lua/send.lua): a batch of fresh ids, stored in bulk, leaves the server as
the one-message-at-a-time store leaves it: the same messages, queues in the same order,
delayed set, priority bands and wake-up tokens."""

from __future__ import annotations

import time

import pytest
import redis

from beatq.brokers import Outgoing
from beatq.brokers.redis import RedisBackend

pytestmark = pytest.mark.backends("redis")


def _state(client: redis.Redis, prefix: str) -> dict[str, object]:
    """Every key under `prefix`, by its name after it, with what it holds."""
    out: dict[str, object] = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        name = key.decode()[len(prefix) + 1 :]
        kind = client.type(key).decode()
        if kind == "hash":
            out[name] = client.hgetall(key)
        elif kind == "list":
            out[name] = client.lrange(key, 0, -1)
        elif kind == "zset":
            out[name] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            out[name] = sorted(client.smembers(key))
        else:
            out[name] = (kind, client.dump(key))
    return out


def _batches(now: float) -> list[list[Outgoing]]:
    def m(i: int, queue: str = "q", eta: float | None = None, priority: int = 0) -> Outgoing:
        return Outgoing(queue, f"id-{i}", f"body-{i}".encode(), eta, i % 2 == 0, priority)

    return [
        [m(1), m(2, "other"), m(3)],  # ready, two queues
        [m(4, eta=now + 500), m(5, eta=now + 400), m(6, "other", eta=now + 450)],  # earlier
        [m(7, eta=now + 1000), m(8, eta=now + 300), m(9, "q2", eta=now + 200)],  # later first
        [m(10, eta=now - 100), m(11, eta=now + 600), m(12)],  # past due: ready at once
        [m(13, priority=5), m(14, "q", eta=now + 700, priority=5), m(15, "other", priority=9)],
        [m(16, eta=now + 100), m(17, eta=now + 100), m(18, "q3", eta=now + 50)],
        [m(19)],
    ]


def test_a_batch_of_fresh_ids_leaves_what_one_message_at_a_time_leaves(
    redis_url: str, prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    bulk = RedisBackend(redis_url, {"global_keyprefix": f"{prefix}:bulk"})
    alone = RedisBackend(redis_url, {"global_keyprefix": f"{prefix}:alone"})
    try:
        now = time.time()
        for batch in _batches(now):
            bulk.send(batch)
            # the last message sent twice in the batch (the copy replaces itself): the send
            # takes the store a message at a time, as for an id sent again
            alone.send([*batch, batch[-1]])
            assert _state(client, f"{prefix}:bulk") == _state(client, f"{prefix}:alone")
        # drained wake-up tokens come back as before: the next earliest wakes its queue
        for backend in (bulk, alone):
            for queue in ("q", "other", "q2", "q3"):
                client.delete(backend.keys.wake(queue))
            backend.send([Outgoing("q", "id-20", b"body-20", now + 10)])
            backend.send([Outgoing("other", "id-21", b"body-21", now + 20)])
        assert _state(client, f"{prefix}:bulk") == _state(client, f"{prefix}:alone")
        assert client.exists(bulk.keys.wake("q")) and not client.exists(bulk.keys.wake("other"))
    finally:
        bulk.close()
        alone.close()
        client.close()
