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
(`RedisCluster.nodes_manager`), copied here slot by slot as calls need it and dropped
when a node answers MOVED, says the cluster is down, or cannot be reached: then the map
is read again from the cluster, and a call the server refused (MOVED, TRYAGAIN,
CLUSTERDOWN) is made again on the slot's new master. A call whose node went away
mid-way is not made again unless its slot has a new master: whether it ran is unknown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..exceptions import ConfigurationError
from .redis_calls import Calls, _missing
from .urls import user_and_hosts

SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379
ATTEMPTS = 4  # calls refused by the cluster (MOVED, TRYAGAIN, CLUSTERDOWN), made again
REFRESH_EVERY = 0.25  # seconds: the slot map is read again at most this often on errors


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
        name = self.owner(key)
        calls = self.nodes.get(name)
        if calls is None:
            with self.lock:
                calls = self.nodes.get(name)
                if calls is None:
                    host, _, port = name.rpartition(":")
                    calls = Calls(self.node_client(host, int(port)), self.spin)
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
            self.cluster.nodes_manager.initialize()

    def _routed(self, key: str, call: Callable[[Calls], Any]) -> Any:
        """`call(calls of key's master)`, made again where the cluster refused it."""
        for attempt in range(ATTEMPTS):
            node = self.owner(key)
            try:
                return call(self.at(key))
            except (AskError, TryAgainError, ClusterDownError) as exc:  # MOVED is an AskError
                if attempt == ATTEMPTS - 1:
                    raise RedisConnectionError(f"Redis Cluster refused the call: {exc}") from exc
                if not isinstance(exc, AskError):
                    time.sleep(0.05 * (attempt + 1))
                self.refresh(force=True)
            except (RedisConnectionError, RedisTimeoutError):
                self.refresh()
                if self.owner(key) == node:
                    # a map read within REFRESH_EVERY may predate the replica's promotion
                    self.refresh(force=True)
                if attempt == ATTEMPTS - 1 or self.owner(key) == node:
                    raise
        raise AssertionError("unreachable")

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
        return self._routed(keys[0], lambda calls: calls.fcall(name, keys, args, then, before))

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
        if not before:
            return self._routed(calls[0][0][0], lambda node: node.fcall_many(name, calls, spin))

        def call(node: Calls) -> list[Any]:
            made = [("FCALL", f"{node.lib}_{name}", len(k), *k, *a) for k, a in calls]
            commands = [*before, *made]
            replies = node.pipeline(commands, blocking=not spin)
            if _missing(replies[len(before)]):  # then none of the calls ran
                node.load()
                replies = node.pipeline(commands, blocking=not spin)
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
            return replies[len(before) :]

        return self._routed(calls[0][0][0], call)

    def command(self, key: str, *args: Any, blocking: bool = False) -> Any:
        """One command on the master of `key`."""
        return self._routed(key, lambda calls: calls.command(*args, blocking=blocking))

    def pipeline(
        self, key: str, commands: list[tuple[Any, ...]], blocking: bool = False
    ) -> list[Any]:
        """Commands in one round trip to the master of `key` (errors returned)."""
        return self._routed(key, lambda calls: calls.pipeline(commands, blocking))

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
        for calls in list(self.nodes.values()):
            calls.client.close()
            calls.client.connection_pool.disconnect()
        self.cluster.close()
