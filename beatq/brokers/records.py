"""The records that cross the backend interface (roles.py): plain data, bytes inside.

A message's body is opaque here; what a backend needs to know of a message beside its
body (its queue, its eta, whether it may be acknowledged as it is claimed) the sender
says in `Outgoing`, and the backend stores it beside the body.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, TypeVar

__all__ = [
    "BeatDispatch",
    "ChordJoin",
    "Claim",
    "Claimed",
    "DeadLetter",
    "EntryState",
    "Lease",
    "Node",
    "Outgoing",
    "ResultWrite",
    "RunRequest",
    "Shard",
    "Topology",
]

_R = TypeVar("_R")


def _stored_at_once(cls: type[_R]) -> type[_R]:
    """A frozen dataclass made as quickly as a plain one: its `__init__` puts the fields
    in the instance's dict directly, where the dataclass's own calls object.__setattr__
    once per field (a Claim: 11.0k instructions, 4.8k this way; a claim, a send and a
    result each make one a task). Fields, defaults, order, equality, hash, repr and the
    refusal of assignment stay the dataclass's."""
    own = fields(cls)  # type: ignore[arg-type]
    if hasattr(cls, "__post_init__") or any(f.default_factory is not MISSING for f in own):
        raise TypeError(f"{cls.__name__}: a default_factory or __post_init__ needs its own init")
    defaults = {f"_{f.name}": f.default for f in own if f.default is not MISSING}
    params = ", ".join(f.name if f.default is MISSING else f"{f.name}=_{f.name}" for f in own)
    stores = "".join(f"\n    d[{f.name!r}] = {f.name}" for f in own)
    namespace: dict[str, object] = {}
    exec(f"def __init__(self, {params}):\n    d = self.__dict__{stores}", defaults, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    cls.__init__ = init  # type: ignore[misc]
    return cls


@_stored_at_once
@dataclass(frozen=True)
class Claim:
    """A message as a worker holds it: its broker id, its queue, its body and the token of
    this delivery. Each `claim` hands out a new token, so a message delivered again (its
    claim expired) has a new one: acks, renewals, dead-lettering and releases that carry
    an old token come from a worker that lost the message, and change nothing."""

    id: str
    queue: str
    body: bytes
    token: str = ""  # empty for a message that is not claimed (see `scheduled`)
    # Delivered before and not finished: its claim expired (its worker died, or stopped
    # renewing it) and it was put back. The request's delivery_info["redelivered"].
    redelivered: bool = False
    priority: int = 0  # the sender's (Outgoing.priority): a release keeps it


@_stored_at_once
@dataclass(frozen=True)
class Outgoing:
    """A message to send: queue, id, body, optional eta (POSIX seconds), and its delivery
    property, which the backend stores beside the body.

    `ack_at_claim`: the sender knows this message is acknowledged as its task starts
    (not acks_late, whether by the call or by the task), so a claim that starts it at
    once may acknowledge it as it takes it (`Delivery.claim(ack_first=True)`). False
    (the default, for anything the sender cannot vouch for) leaves the acknowledgement
    to the worker: a message of an unknown task or a bad body can still be dead-lettered.

    `priority` (0 to 255): within its queue, ready messages of a higher priority are
    claimed before those of a lower one, first come first served within a priority. 0,
    the default, costs nothing: a store keeps such messages as it always has.
    """

    queue: str
    id: str
    body: bytes
    eta: float | None = None
    ack_at_claim: bool = False
    priority: int = 0


@_stored_at_once
@dataclass(frozen=True)
class ResultWrite:
    """A task state to store. `final` states (SUCCESS, FAILURE, REVOKED) wake waiters."""

    task_id: str
    meta: bytes
    ttl: float
    final: bool = True


@dataclass(frozen=True)
class ChordJoin:
    """A chord member finishing: count `member` in `group`; the member that makes the
    count reach `size` (and only that one) sends `unlock`."""

    group: str
    member: str
    size: int
    unlock: Outgoing
    ttl: float


@dataclass(frozen=True)
class Claimed:
    """What `claim` returns: the claims, and the eta of the earliest delayed message."""

    claims: list[Claim]
    next_eta: float | None
    acked: bool = False  # the first claim was acknowledged in the claim (see `Delivery.claim`)


@dataclass(frozen=True)
class DeadLetter:
    id: str
    queue: str
    reason: str
    time: float
    body: bytes


@dataclass(frozen=True)
class EntryState:
    """What the broker keeps of a beat entry."""

    name: str
    settled: float | None  # runs at or before this instant are done (dispatched or given up)
    next_run: float | None
    paused: bool
    info: bytes | None  # the beat's own record: task, schedule, counters (JSON)


@dataclass(frozen=True)
class BeatDispatch:
    """One run of a beat entry to settle and send (see `BeatState.beat_dispatch`)."""

    entry: str
    slot: float
    next_run: float | None
    info: bytes
    send: Sequence[Outgoing] = ()
    busy_id: str | None = None


@dataclass(frozen=True)
class Lease:
    holder: str
    token: int
    remaining: float  # seconds left before it expires
    since: float | None = None  # when this holder acquired it (POSIX seconds)


@dataclass(frozen=True)
class RunRequest:
    """A request to run a beat entry out of turn (`Schedules.schedule_request`): its id,
    the caller's bytes (which entry, which slots), the last slot run for it so far, and
    when it was done (None: still pending)."""

    id: str
    body: bytes
    cursor: float | None = None
    done: float | None = None


@dataclass(frozen=True)
class Node:
    """One server of a backend as it was seen just now (see `Topology`)."""

    address: str  # host:port, or a Unix socket's path
    role: str  # "master", "replica" or "sentinel"
    status: str = "ok"  # "ok", or what is wrong: "down", "link down", "unreachable: ..."
    version: str | None = None  # the server's (Redis 7.2.4: "7.2.4"), where it was asked
    # A replica, as its master sees it: seconds since it last confirmed what it has (Redis
    # INFO's `lag`), and how many bytes of the master's stream it has not confirmed yet.
    lag: float | None = None
    behind: int | None = None
    detail: str | None = None  # a sentinel: the master it names, when others name another


@dataclass(frozen=True)
class Shard:
    """A master and its replicas. One Redis, with or without Sentinel, is one shard
    holding every key (`slots` empty); a Redis Cluster has one per master, each with its
    ranges of hash slots (inclusive) and the queues whose keys live there."""

    master: Node
    replicas: tuple[Node, ...] = ()
    slots: tuple[tuple[int, int], ...] = ()
    queues: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topology:
    """What a backend runs on, read when asked (`Store.topology`).

    `kind`: "memory", "sqlite", "redis", "sentinel" or "cluster"; `url`: the URL with its
    passwords masked. A SQLite file gives `path`, `journal_mode` and `size` (bytes, the
    file with its write-ahead log); a Redis server one shard, and a Cluster a shard per
    master. Behind Sentinel: `service`, the master's name; `sentinels`, each asked (its
    status says whether it answered); `epoch`, the sentinels' configuration epoch (it
    grows with every failover: 0, none yet); `last_failover`, when the sentinels took up
    the current master (POSIX seconds, None without a failover; to within a second or
    two, as the earliest sentinel to have switched saw it).
    """

    kind: str
    url: str
    shards: tuple[Shard, ...] = ()
    sentinels: tuple[Node, ...] = ()
    service: str | None = None
    epoch: int | None = None
    last_failover: float | None = None
    path: str | None = None
    journal_mode: str | None = None
    size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # what a backend adds of its own

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: tuples as lists, every key present (None where unknown)."""
        return asdict(self)
