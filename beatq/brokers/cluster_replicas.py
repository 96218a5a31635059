"""Writes on a Redis Cluster that wait for replicas of their slot's master (WAIT).

`WAIT n ms` counts the replicas that have every write its connection made before it, on
the node it runs on. So a waited write goes with its WAIT in one round trip, on one
connection, and a write the cluster refused (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, a node
without beatq's library) is made again together with a WAIT of its own: `Routes.pipeline`
makes again only the refused commands, after the WAIT has answered for the node before.

Every command of a round trip is in one slot: a refusal is the slot's (the map moved it,
or the cluster has no master for it), so either none of the writes ran, and the round
trip is made again whole, or (a slot being migrated, some keys moved) some did, and a
BrokerError goes to the caller, whose retry makes the step again (each is idempotent:
sends by id, the beat's fenced dispatches, marks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import redis_cluster
from .redis_calls import _missing


def waited(
    routes: redis_cluster.Routes,
    key: str,
    writes: Sequence[tuple[Any, ...]],
    need: int,
    timeout_ms: int,
) -> tuple[list[Any], int]:
    """`writes` (all in `key`'s slot), then WAIT for `need` replicas at most `timeout_ms`,
    in one round trip to the slot's master; the writes' replies (errors returned) and how
    many replicas have them. Raises the refusal when the cluster refused only some."""
    way: redis_cluster.Way | None = None
    while True:
        name = routes.owner(key) if way is None else way.node()
        calls = routes.calls_of(name)
        asking = way is not None and way.ask is not None
        sent = redis_cluster._asking(writes) if asking else list(writes)
        try:
            got = calls.pipeline([*sent, ("WAIT", need, timeout_ms)], blocking=True)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            way = way or redis_cluster.Way(routes, key)
            way.lost(name, exc)
            continue
        replies, acked = got[:-1], got[-1]
        if asking:
            replies = redis_cluster._unasked(writes, replies)
        refused = [r for r in replies if _refused(r)]
        if not refused:
            if isinstance(acked, ResponseError):
                raise acked
            return replies, int(acked)
        ran = [
            r for w, r in zip(writes, replies) if str(w[0]).upper() == "FCALL" and not _refused(r)
        ]
        if ran:  # some of the writes ran: made again whole, they would run twice
            raise refused[0]
        way = way or redis_cluster.Way(routes, key)
        if _missing(refused[0]):
            way.count(refused[0])
            calls.load()
        else:
            way.refused(refused[0])


def _refused(reply: Any) -> bool:
    return isinstance(reply, redis_cluster.REFUSED) or (
        isinstance(reply, ResponseError) and _missing(reply)
    )
