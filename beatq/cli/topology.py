"""The backend's topology as `beatq status` prints it (records.Topology, read for people):

    backend sentinel://:***@10.0.0.1:26379,10.0.0.2:26379/mymaster/0 (sentinel)
      master 10.0.0.12:6379 ('mymaster'): ok, Redis 7.2.4
        replica 10.0.0.13:6379: ok, lag 0 s, 0 B behind
        replica 10.0.0.11:6379: down
      sentinels: 10.0.0.1:26379 ok, 10.0.0.2:26379 unreachable: Timeout connecting
      failovers: epoch 1, the last at 2026-12-07 09:30:01.214+00:00

A Redis Cluster prints a `shard` line per master, with its slot ranges and queues.
"""

from __future__ import annotations

from datetime import tzinfo

from ..brokers import Node, Shard, Topology
from ..timezones import format_time


def size(count: int) -> str:
    """Bytes for people: 512 B, 212.0 KiB, 3.4 MiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def node_text(node: Node) -> str:
    """`127.0.0.1:6380: ok, Redis 7.0.15, lag 0 s, 0 B behind (replica of ...)`."""
    parts = [node.status]
    if node.version:
        parts.append(f"Redis {node.version}")
    if node.lag is not None:
        parts.append(f"lag {node.lag:g} s")
    if node.behind is not None:
        parts.append(f"{size(node.behind)} behind")
    detail = f" ({node.detail})" if node.detail else ""
    return f"{node.address}: {', '.join(parts)}{detail}"


def _slots(ranges: tuple[tuple[int, int], ...]) -> str:
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


def _shard(shard: Shard, service: str | None) -> list[str]:
    named = f" ({service!r})" if service else ""
    head = f"  {shard.master.role} {node_text(shard.master)}"
    if shard.slots:
        queues = f"; queues {', '.join(shard.queues)}" if shard.queues else ""
        head = f"  shard slots {_slots(shard.slots)}: {shard.master.role} "
        head += f"{node_text(shard.master)}{queues}"
    elif named:
        address, _, rest = node_text(shard.master).partition(": ")
        head = f"  {shard.master.role} {address}{named}: {rest}"
    return [head, *(f"    {r.role} {node_text(r)}" for r in shard.replicas)]


def lines(topology: Topology, zone: tzinfo) -> list[str]:
    """What `beatq status` prints of the backend, times in `zone`."""
    out = [f"backend {topology.url} ({topology.kind})"]
    if topology.path is not None:
        shown = f"{topology.path}: journal {topology.journal_mode}"
        out.append(f"  file {shown}, {size(topology.size or 0)}")
    for shard in topology.shards:
        out += _shard(shard, topology.service)
    if topology.sentinels:
        said = ", ".join(
            f"{s.address} {s.status}" + (f" ({s.detail})" if s.detail else "")
            for s in topology.sentinels
        )
        out.append(f"  sentinels: {said}")
    if topology.epoch is not None:
        if topology.last_failover is None:
            out.append(f"  failovers: none (epoch {topology.epoch})")
        else:
            when = format_time(topology.last_failover, zone)
            out.append(f"  failovers: epoch {topology.epoch}, the last at {when}")
    return out
