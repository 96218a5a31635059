"""Redis Cluster: the URL, the clients, and each call routed to the master of its slot.

    redis+cluster://[user:password@]host:port[,host:port...][/][?options]
    rediss+cluster://...   the same over TLS (to every node)

The hosts are where to start: any node of the cluster tells the client about the rest.
The query takes the connection options of a redis:// URL (`socket_timeout=2`,
`ssl_ca_certs=/path`...). A cluster has database 0 only.

The hot paths call the beatq function library (redis_calls.py) on the master that serves
the slot of the call's first key, each thread over a connection of its own to each node
(`Routes`): redis-py's `RedisCluster` takes a pool lock per command, and cannot hold a
BLPOP and a FCALL in one round trip. Which master serves a slot is redis-py's map
(`RedisCluster.nodes_manager`), copied here slot by slot as calls need it. A command the
cluster refused is made again: after MOVED on the master the answer names (the map is
read again too, at most every REFRESH_EVERY s); after CLUSTERDOWN, or a node out of
reach, on the slot's master as the map read again says; after ASK (its slot is being
migrated and its keys are not on the source) on the node the ASK names, after an
ASKING, for that command only; after TRYAGAIN (a slot being migrated, its keys on both
sides) after a pause, for MIGRATING_FOR s, or for less inside `Routes.hurried` (a caller
with other work to do, which then leaves that slot for later: `Migrating`). Of several
commands in one round trip, only those refused are made again: a refused command did
not run (see `Routes._many`). A call whose node went away mid-way is not made again
unless its slot has a new master: whether it ran is unknown.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..exceptions import ConfigurationError
from .redis_calls import Calls, _missing, library
from .urls import user_and_hosts

SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379
ATTEMPTS = 4  # calls refused by the cluster (MOVED, CLUSTERDOWN) or lost, made again
RETIRE_AFTER = 2.0  # seconds a node no longer in the map keeps its connections (replies due)
MIGRATING_FOR = 30.0  # seconds a call refused by a slot in migration (ASK, TRYAGAIN) retries
REFRESH_EVERY = 0.25  # seconds: the slot map is read again at most this often on errors


class Migrating(RedisConnectionError):
    """A call's slot answered TRYAGAIN (being migrated, its keys on both sides) for
    longer than the call may wait (MIGRATING_FOR, or less: `Routes.hurried`). The call
    did not run."""


@dataclass(frozen=True)
class ClusterUrl:
    """A redis+cluster:// URL read: where to start, how to log in, the query's options."""

    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    tls: bool = False
    query: str = ""
    options: dict[str, str] = field(default_factory=dict)

    def node_url(self, host: str, port: int) -> str:
        """The redis:// (rediss://) URL of one node, with this URL's login and options."""
        login = ""
        if self.username or self.password is not None:
            login = quote(self.username or "", safe="")
            if self.password is not None:
                login += ":" + quote(self.password, safe="")
            login += "@"
        where = f"[{host}]" if ":" in host else host
        query = f"?{self.query}" if self.query else ""
        return f"{'rediss' if self.tls else 'redis'}://{login}{where}:{port}/0{query}"


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in SCHEMES


def parse(url: str, shown: str) -> ClusterUrl:
    """Read a redis+cluster:// URL; one ConfigurationError naming what is wrong (`shown`
    is the URL with its password masked, for the message)."""
    parts = urlsplit(url)
    username, password, nodes = user_and_hosts(
        parts, DEFAULT_PORT, shown, "a node", f"{parts.scheme}://host1:7000,host2:7001,host3:7002/"
    )
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigurationError(
            f"broker URL {shown}: a Redis Cluster has database 0 only; end the URL with "
            "the hosts (or /0), not /" + parts.path.strip("/")
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    tls = parts.scheme == "rediss+cluster"
    return ClusterUrl(nodes, username, password, tls, parts.query, options)


def cluster_client(url: ClusterUrl, **kwargs: Any) -> RedisCluster:
    """redis-py's cluster client of `url` (the map of slots, plain commands); `kwargs`
    are the connection arguments, which the query's options override."""
    host, port = url.nodes[0]
    parsed = redis.connection.parse_url(url.node_url(host, port))
    for name in ("host", "port", "db", "connection_class"):
        parsed.pop(name, None)
    if url.tls:
        parsed["ssl"] = True
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in url.nodes],
        require_full_coverage=False,  # a shard without a master leaves the others be
        **{**kwargs, **parsed},
    )


class Routes:
    """The beatq library's calls and plain commands, each made on the master that serves
    the slot of a key (see the module's docstring); one `Calls` per node."""

    def __init__(
        self,
        cluster: RedisCluster,
        node_client: Callable[[str, int], redis.Redis],
        spin: float,
    ) -> None:
        self.cluster = cluster
        self.node_client = node_client
        self.spin = spin
        self.owners: dict[int, str] = {}  # slot -> "host:port" of its master, as last read
        self.nodes: dict[str, Calls] = {}
        self.lock = threading.Lock()
        self.refreshed = 0.0
        self.quiet_all = False
        self.retiring: list[threading.Timer] = []  # closing the calls of nodes gone
        self.local = threading.local()  # .patience: this thread's, inside `hurried`
        self.lib = library(guarded=True)[0]  # beatq's function library, as each node has it

    # -- the map ---------------------------------------------------------------------------
    def owner(self, key: str) -> str:
        """The "host:port" of the master that serves `key`, as last read."""
        slot = key_slot(key.encode())
        name = self.owners.get(slot)
        if name is None:
            name = self.cluster.nodes_manager.get_node_from_slot(slot).name
            self.owners[slot] = name
        return name

    def at(self, key: str) -> Calls:
        """The calls of the master that serves `key`."""
        return self.calls_of(self.owner(key))

    def calls_of(self, name: str) -> Calls:
        """The calls of the node at `name` ("host:port")."""
        calls = self.nodes.get(name)
        if calls is None:
            with self.lock:
                calls = self.nodes.get(name)
                if calls is None:
                    host, _, port = name.rpartition(":")
                    calls = Calls(self.node_client(host, int(port)), self.spin, guarded=True)
                    self.nodes[name] = calls
        if self.quiet_all and not getattr(calls.local, "quiet", False):
            calls.quiet()
        return calls

    def refresh(self, force: bool = False) -> None:
        """Read the map of slots from the cluster again (at most every REFRESH_EVERY s
        unless `force`)."""
        now = time.monotonic()
        if not force and now - self.refreshed < REFRESH_EVERY:
            return
        with self.lock:
            self.refreshed = now
            self.owners = {}
            manager = self.cluster.nodes_manager
            manager.initialize()
            named = {nodes[0].name for nodes in manager.slots_cache.values() if nodes}
            for name in [n for n in self.nodes if n not in named]:
                self._retire(self.nodes.pop(name))

    def moved(self, slot: int, name: str) -> None:
        """A node answered MOVED: `slot` is served by the master at `name` ("host:port")
        now. The map is read again too (at most every REFRESH_EVERY s: a reshard moves
        thousands of slots, and each would cost a read of the whole map), but the node's
        word stands for this slot: the node the map is read from may not know yet."""
        self.refresh()
        self.owners[slot] = name

    def _retire(self, calls: Calls) -> None:
        """Close the connections of a node the map no longer names as a master (it
        left the cluster, its address changed, a replica took its place), RETIRE_AFTER
        seconds from now: a reply on its way from it meanwhile is still read (cut off,
        its call would be made again on the slot's new master, and run twice). No call
        is sent there from now on."""
        timer = threading.Timer(RETIRE_AFTER, _close, (calls,))
        timer.daemon = True
        self.retiring = [t for t in self.retiring if t.is_alive()] + [timer]
        timer.start()

    @contextlib.contextmanager
    def hurried(self, patience: float) -> Iterator[None]:
        """Within the block, this thread's calls refused with TRYAGAIN (their slot mid-
        migration) try again for `patience` seconds at most, then raise `Migrating`: for
        a caller with other slots to call meanwhile (a claim over several queues, the
        beat's outbox), which comes back to this one later."""
        before = getattr(self.local, "patience", MIGRATING_FOR)
        self.local.patience = min(before, patience)
        try:
            yield
        finally:
            self.local.patience = before

    # -- routing ---------------------------------------------------------------------------
    def _one(self, key: str, command: tuple[Any, ...], blocking: bool = False) -> Any:
        """`command` on the master of `key`'s slot, made again where the cluster refused
        it; its reply."""
        way: Way | None = None
        while True:
            name = self.owner(key) if way is None else way.node()
            calls = self.calls_of(name)
            try:
                if way is None or way.ask is None:
                    return calls.command(*command, blocking=blocking)
                reply = calls.pipeline([("ASKING",), command], blocking)[1]
                if isinstance(reply, ResponseError):
                    raise reply
                return reply
            except REFUSED as exc:
                way = way or Way(self, key)
                way.refused(exc, name)
            except ResponseError as exc:
                if not _missing(exc):
                    raise
                way = way or Way(self, key)
                way.count(exc)
                calls.load()  # the node lacks the library (a new or restarted master)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                way = way or Way(self, key)
                way.lost(name, exc)

    def _many(
        self, key: str, commands: Sequence[tuple[Any, ...]], blocking: bool = False
    ) -> list[Any]:
        """`commands` in one round trip to the master of `key`'s slot; their replies
        (errors returned). Those the cluster refused are made again, in their order,
        and only those: a command refused (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) did not
        run (Redis checks a command's slot before it runs it, a transaction's at each
        command it queues, and beatq's functions answer TRYAGAIN before they touch
        anything: redis_calls.library), so what ran is never made twice."""
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        way: Way | None = None
        while todo:
            name = self.owner(key) if way is None else way.node()
            calls = self.calls_of(name)
            sent = [commands[i] for i in todo]
            asking = way is not None and way.ask is not None
            try:
                got = calls.pipeline(_asking(sent) if asking else sent, blocking)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                way = way or Way(self, key)
                way.lost(name, exc)
                continue
            if asking:
                got = _unasked(sent, got)
            refused: list[int] = []
            worst: ResponseError | None = None
            for at, reply in zip(_units(sent), _by_unit(sent, got)):
                why = _refusal(reply)
                if why is None:
                    for i, r in zip(at, reply):
                        replies[todo[i]] = r
                    continue
                refused += at
                worst = why if worst is None else _graver(worst, why)
            if worst is None:
                break
            way = way or Way(self, key)
            if _missing(worst):
                way.count(worst)
                calls.load()
            else:
                way.refused(worst, name)
            todo = [todo[i] for i in refused]
        return replies

    # -- calls -----------------------------------------------------------------------------
    def fcall(
        self,
        name: str,
        keys: list[str],
        args: list[Any],
        then: Sequence[tuple[Any, ...]] = (),
        before: Sequence[tuple[Any, ...]] = (),
    ) -> Any:
        """`Calls.fcall` on the master of `keys[0]` (every key of the call, and of the
        commands `before` and `then`, must be in its slot)."""
        call = ("FCALL", f"{self.lib}_{name}", len(keys), *keys, *args)
        if not then and not before:
            return self._one(keys[0], call)
        replies = self._many(keys[0], [*before, call, *then], blocking=bool(before))
        _raise_first(replies)
        return replies[len(before)]

    def fcall_many(
        self,
        name: str,
        calls: list[tuple[list[str], list[Any]]],
        spin: bool = True,
        before: Sequence[tuple[Any, ...]] = (),
    ) -> list[Any]:
        """`Calls.fcall_many` on the master of the first call's first key (all of them
        in its slot), after the commands `before` in the same round trip; the calls'
        replies."""
        made = [("FCALL", f"{self.lib}_{name}", len(k), *k, *a) for k, a in calls]
        replies = self._many(calls[0][0][0], [*before, *made], blocking=not spin)
        _raise_first(replies)
        return replies[len(before) :]

    def command(self, key: str, *args: Any, blocking: bool = False) -> Any:
        """One command on the master of `key`."""
        return self._one(key, args, blocking)

    def pipeline(
        self, key: str, commands: list[tuple[Any, ...]], blocking: bool = False
    ) -> list[Any]:
        """Commands in one round trip to the master of `key` (errors returned; those the
        cluster refused made again, see `_many`)."""
        return self._many(key, commands, blocking)

    def fresh_client(self, key: str, timeout: float) -> redis.Redis:
        """A client of its own to the master of `key`, as the map was last read (no lock
        taken: a signal handler calls it while the main thread may hold any)."""
        host, _, port = self.owner(key).rpartition(":")
        client = self.node_client(host, int(port))
        kwargs = client.connection_pool.connection_kwargs
        kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout)
        return client

    def quiet(self) -> None:
        self.quiet_all = True

    def disconnect(self) -> None:
        for timer in self.retiring:  # closed now (closing twice does no harm)
            timer.cancel()
            _close(*timer.args)
        self.retiring = []
        for calls in list(self.nodes.values()):
            _close(calls)
        self.cluster.close()


def _close(calls: Calls) -> None:
    calls.client.close()
    calls.client.connection_pool.disconnect()


# Answers of a node that did not run the command (MovedError is an AskError).
REFUSED = (AskError, TryAgainError, ClusterDownError)


class Way:
    """Where one call goes next after the cluster refused it, and how long it may keep
    trying: MOVED or CLUSTERDOWN (the map read again; ATTEMPTS times at most), ASK (the
    node named, with ASKING, for this call only; the map is left be) and TRYAGAIN (a
    pause, growing from 5 ms to 200 ms), for up to MIGRATING_FOR seconds in all, or the
    thread's patience (`Routes.hurried`) for TRYAGAIN."""

    def __init__(self, routes: Routes, key: str) -> None:
        self.routes = routes
        self.key = key
        self.attempts = 0
        self.pause = 0.005
        self.since = time.monotonic()
        self.ask: str | None = None  # "host:port" the next try goes to with ASKING
        self.patience: float = getattr(routes.local, "patience", MIGRATING_FOR)

    def node(self) -> str:
        return self.ask if self.ask is not None else self.routes.owner(self.key)

    def count(self, exc: BaseException) -> None:
        self.attempts += 1
        if self.attempts >= ATTEMPTS:
            raise RedisConnectionError(f"Redis Cluster refused the call: {exc}") from exc

    def refused(self, exc: ResponseError, name: str = "") -> None:
        """`exc` is the answer of the node at `name` (by default, where this call went
        last: `node()`)."""
        name = name or self.node()
        self.ask = None
        if isinstance(exc, MovedError):  # the slot's owner, as the node that gave it up says
            self.count(exc)
            self.routes.moved(exc.slot_id, f"{exc.host or name.rpartition(':')[0]}:{exc.port}")
            return
        if isinstance(exc, ClusterDownError):
            self.count(exc)
            time.sleep(0.05 * self.attempts)
            self.routes.refresh(force=True)
            return
        # a slot being migrated: ASK, TRYAGAIN
        waited = time.monotonic() - self.since
        where = f"the slot of {self.key!r} ({key_slot(self.key.encode())})"
        if waited > MIGRATING_FOR:
            raise Migrating(
                f"Redis Cluster: {where} has been in a migration for over {MIGRATING_FOR:g} s "
                f"({exc}); finish the migration, or undo a stalled one (redis-cli --cluster fix)"
            ) from exc
        if isinstance(exc, AskError):
            self.ask = f"{exc.host or name.rpartition(':')[0]}:{exc.port}"
            return
        if self.patience < MIGRATING_FOR and waited + self.pause > self.patience:
            # a caller with other slots to call leaves this one for later
            raise Migrating(f"Redis Cluster: {where} is being migrated ({exc})") from exc
        time.sleep(self.pause)
        self.pause = min(self.pause * 2, 0.2)

    def lost(self, name: str, exc: Exception) -> None:
        """The connection to `name` failed mid-call: made again only on a new master of
        the slot (whether it ran there is unknown), else raised."""
        asked, self.ask = self.ask, None
        routes = self.routes
        routes.refresh()
        if routes.owner(self.key) == name:
            # a map read within REFRESH_EVERY may predate the replica's promotion
            routes.refresh(force=True)
        self.attempts += 1
        if asked is not None or self.attempts >= ATTEMPTS or routes.owner(self.key) == name:
            raise exc


def _raise_first(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply


def _refusal(replies: list[Any]) -> ResponseError | None:
    """The refusal among one unit's replies (a command, or a MULTI ... EXEC, refused as a
    whole when any of its commands was), or a missing library's error, or None."""
    found = None
    for reply in replies:
        if isinstance(reply, REFUSED):
            found = reply if found is None else _graver(found, reply)
        elif found is None and isinstance(reply, ResponseError) and _missing(reply):
            found = reply
    return found


GRAVITY = (MovedError, ClusterDownError, AskError, TryAgainError, ResponseError)


def _graver(a: ResponseError, b: ResponseError) -> ResponseError:
    """Of two refusals, the one to act on first (MOVED before ASK before TRYAGAIN)."""
    rank = [next(i for i, kind in enumerate(GRAVITY) if isinstance(e, kind)) for e in (a, b)]
    return a if rank[0] <= rank[1] else b


def _units(commands: Sequence[tuple[Any, ...]]) -> list[list[int]]:
    """The indexes of `commands`, one list per unit: a command, or MULTI to its EXEC."""
    units: list[list[int]] = []
    block: list[int] | None = None
    for i, command in enumerate(commands):
        word = str(command[0]).upper() if command else ""
        if block is not None:
            block.append(i)
            if word in ("EXEC", "DISCARD"):
                units.append(block)
                block = None
        elif word == "MULTI":
            block = [i]
        else:
            units.append([i])
    if block is not None:
        units.append(block)
    return units


def _by_unit(commands: Sequence[tuple[Any, ...]], replies: list[Any]) -> list[list[Any]]:
    return [[replies[i] for i in unit] for unit in _units(commands)]


def _asking(commands: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`commands` each after an ASKING (a transaction: once, before its MULTI; the flag
    holds until its EXEC)."""
    out: list[tuple[Any, ...]] = []
    for unit in _units(commands):
        out.append(("ASKING",))
        out += [commands[i] for i in unit]
    return out


def _unasked(commands: Sequence[tuple[Any, ...]], replies: list[Any]) -> list[Any]:
    """The replies of `_asking(commands)` less those of the ASKINGs."""
    out: list[Any] = []
    at = 0
    for unit in _units(commands):
        at += 1  # the ASKING's
        out += replies[at : at + len(unit)]
        at += len(unit)
    return out
