"""What a Redis backend runs on (`Store.topology`): the server and its replicas, from the
server's own INFO; behind Sentinel, also what each sentinel says; on a Cluster, each
shard (CLUSTER SHARDS) with its slots, its queues, and its master's INFO.

A replica's lag is its master's view (INFO replication: `lag`, the seconds since the
replica last confirmed what it has, and its offset, from which the bytes it has not
confirmed). The sentinels are asked each in a thread of its own, so one that does not
answer costs its timeout once, not once per sentinel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import AuthenticationError, RedisError

from .records import Node, Shard


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(reply: Any) -> dict[str, str]:
    """A reply of field/value pairs (a flat list or a map, bytes or text) as text."""
    if isinstance(reply, Mapping):
        pairs = list(reply.items())
    else:
        pairs = list(zip(reply[::2], reply[1::2]))
    return {_text(k): _text(v) for k, v in pairs}


def address(client: redis.Redis) -> str:
    """host:port of the server a plain client talks to (a Unix socket: its path)."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def server_shard(client: redis.Redis, where: str) -> Shard:
    """The server `client` talks to (at `where`) and the replicas it has, one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.info("server")
    pipe.info("replication")
    server, replication = pipe.execute()
    version = server.get("redis_version")
    if replication.get("role") != "master":
        up = replication.get("master_link_status") == "up"
        return Shard(
            Node(
                where,
                "replica",
                "ok" if up else "link down",
                _text(version) if version else None,
                lag=replication.get("master_last_io_seconds_ago"),
                detail=f"replica of {replication.get('master_host')}:"
                f"{replication.get('master_port')}",
            )
        )
    offset = int(replication.get("master_repl_offset") or 0)
    replicas = []
    for i in range(int(replication.get("connected_slaves") or 0)):
        seen = replication.get(f"slave{i}")
        if not isinstance(seen, Mapping):
            continue
        state = _text(seen.get("state", "?"))
        replicas.append(
            Node(
                f"{seen.get('ip')}:{seen.get('port')}",
                "replica",
                "ok" if state == "online" else state,
                lag=float(seen["lag"]) if "lag" in seen else None,
                behind=max(0, offset - int(seen.get("offset", 0))),
            )
        )
    return Shard(Node(where, "master", "ok", _text(version) if version else None), tuple(replicas))


@dataclass(frozen=True)
class SentinelView:
    """What the sentinels said: each one's node, the master the newest of them names,
    the replicas they list, the configuration epoch and when it was taken up."""

    sentinels: tuple[Node, ...]
    master: str | None
    replicas: tuple[Node, ...]
    epoch: int | None
    last_failover: float | None


Answer = tuple[dict[str, str], list[dict[str, str]]]  # SENTINEL MASTER, SENTINEL REPLICAS


def _ask(watcher: redis.Redis, service: str) -> Answer:
    master = _fields(watcher.execute_command("SENTINEL", "MASTER", service))
    replicas = watcher.execute_command("SENTINEL", "REPLICAS", service)
    return master, [_fields(r) for r in replicas]


def _replica_status(fields: dict[str, str]) -> str:
    flags = set(fields.get("flags", "").split(","))
    if flags & {"s_down", "o_down", "disconnected"}:
        return "down"
    if fields.get("master-link-status", "ok") != "ok":
        return "link down"
    return "ok"


def _named(master: dict[str, str]) -> str:
    return f"{master.get('ip')}:{master.get('port')}"


def _agreed(heard: list[Answer]) -> tuple[str | None, list[Answer]]:
    """The master most sentinels name (of equals, the newest epoch's), and the answers of
    those that name it. A sentinel leading a failover names the old master until it is
    done: its word counts once the others follow it."""
    settled = [a for a in heard if "failover_in_progress" not in a[0].get("flags", "")]
    votes: dict[str, tuple[int, int]] = {}
    for m, _ in settled or heard:
        count, epoch = votes.get(_named(m), (0, 0))
        votes[_named(m)] = (count + 1, max(epoch, int(m.get("config-epoch", 0))))
    if not votes:
        return None, []
    master = max(votes, key=lambda address: votes[address])
    return master, [a for a in settled or heard if _named(a[0]) == master]


def sentinel_view(watchers: list[redis.Redis], service: str) -> SentinelView:
    """Ask every sentinel in `watchers` about `service`, at once."""

    def ask(watcher: redis.Redis) -> Answer | str:
        try:
            return _ask(watcher, service)
        except AuthenticationError:
            return "refused the login (sentinel_kwargs password)"
        except (RedisError, OSError) as exc:
            return f"unreachable: {exc}"

    with ThreadPoolExecutor(max(1, len(watchers)), thread_name_prefix="beatq-sentinel") as pool:
        answers = list(pool.map(ask, watchers))
    # after the answers: a role's age is counted when its sentinel answers, and taken from
    # an instant before that (one slow sentinel, a timeout) it put the failover seconds early
    now = time.time()
    heard = [a for a in answers if not isinstance(a, str)]
    master, newest = _agreed(heard)
    epoch = max((int(m.get("config-epoch", 0)) for m, _ in heard), default=None)
    last_failover = None
    if epoch and newest:  # the earliest sentinel to take up this master saw the failover nearest
        ages = [float(m.get("role-reported-time", 0)) / 1000 for m, _ in newest]
        last_failover = now - max(ages)
    nodes = []
    for watcher, answer in zip(watchers, answers):
        conn = watcher.connection_pool.connection_kwargs
        where = f"{conn.get('host')}:{conn.get('port')}"
        if isinstance(answer, str):
            nodes.append(Node(where, "sentinel", answer))
            continue
        named, detail = _named(answer[0]), None
        if "failover_in_progress" in answer[0].get("flags", ""):
            detail = f"failing over from {named}"
        elif named != master:
            detail = f"names master {named}"
        nodes.append(Node(where, "sentinel", detail=detail))
    listed = newest[0][1] if newest else []
    replicas = tuple(
        Node(f"{r.get('ip')}:{r.get('port')}", "replica", _replica_status(r)) for r in listed
    )
    return SentinelView(tuple(nodes), master, replicas, epoch, last_failover)


def merged(shard: Shard, view: SentinelView) -> Shard:
    """The master's own view of its replicas, with those only the sentinels list (a
    replica that is down, or not replicating from this master) added as they say."""
    known = {r.address for r in shard.replicas}
    extra = tuple(
        r if r.status != "ok" else Node(r.address, r.role, "not replicating from the master")
        for r in view.replicas
        if r.address not in known and r.address != shard.master.address
    )
    return Shard(shard.master, shard.replicas + extra, shard.slots, shard.queues)


def _ranges(slots: Any) -> tuple[tuple[int, int], ...]:
    """CLUSTER SHARDS' slots, as pairs or as a flat list, as (start, end) pairs."""
    if slots and not isinstance(slots[0], (list, tuple)):
        slots = list(zip(slots[::2], slots[1::2]))
    return tuple((int(a), int(b)) for a, b in slots)


def _master_shard(
    cluster: redis.RedisCluster,
    node_client: Callable[[str, int], redis.Redis],
    host: str,
    port: int,
) -> Shard:
    """`server_shard` of the master at host:port, over the cluster client's own
    connections to it (kept between reads, closed with the cluster client); a master
    the cluster client does not know yet, over a client of its own, closed after."""
    where = f"{host}:{port}"
    node = cluster.get_node(host=host, port=port)
    if node is not None and node.redis_connection is not None:
        return server_shard(node.redis_connection, where)
    with node_client(host, port) as client:
        return server_shard(client, where)


def cluster_shards(
    cluster: redis.RedisCluster,
    node_client: Callable[[str, int], redis.Redis],
    queues: Mapping[str, int],
) -> tuple[Shard, ...]:
    """Every shard of `cluster`: its slot ranges, the `queues` (name -> slot) it holds, its
    master's INFO (version, replicas and their lag), and the replicas only the cluster
    lists (failed, loading) as it says. A master that does not answer is said so. The
    masters are asked over the connections `cluster` keeps (the dashboard reads this
    every 2 s)."""
    found = []
    for shard in cluster.execute_command("CLUSTER SHARDS"):
        shard = {_text(k): v for k, v in shard.items()}
        ranges = _ranges(shard.get("slots") or [])
        nodes = [_fields(n) for n in shard.get("nodes") or []]
        held = tuple(
            sorted(q for q, slot in queues.items() if any(a <= slot <= b for a, b in ranges))
        )
        masters = [n for n in nodes if n.get("role") == "master" and n.get("health") == "online"]
        if not masters:
            masters = [n for n in nodes if n.get("role") == "master"]
        if not masters:
            continue
        head = masters[0]
        where = f"{head.get('ip')}:{head.get('port')}"
        try:
            seen = _master_shard(cluster, node_client, head.get("ip", ""), int(head.get("port", 0)))
        except (RedisError, OSError) as exc:
            seen = Shard(Node(where, "master", f"unreachable: {exc}"))
        known = {r.address for r in seen.replicas} | {where}
        extra = tuple(
            Node(address, "replica", "ok" if n.get("health") == "online" else n.get("health", "?"))
            for n in nodes
            if (address := f"{n.get('ip')}:{n.get('port')}") not in known
        )
        found.append(Shard(seen.master, seen.replicas + extra, ranges, held))
    return tuple(sorted(found, key=lambda s: s.slots[:1]))
