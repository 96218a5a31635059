"""Redis behind Sentinel: the master found through the sentinels, and followed after a
failover without a restart.

    sentinel://[:password@]host1:26379,host2:26379,host3:26379/mymaster[/db][?options]
    sentinel+tls://...   the same over TLS, to the sentinels and to the master

The password in the URL is the master's (and its replicas'); sentinels that ask for one
of their own get it from the transport option `sentinel_kwargs` ({"password": ...}),
which takes any of redis-py's connection arguments for the sentinels. The query takes
the connection options of a redis:// URL (`socket_timeout=2`, `ssl_ca_certs=/path`...).

redis-py's Sentinel pool asks the sentinels for the master each time a connection of the
pool connects, but a connection kept out of the pool (the per-thread connections of
redis_calls.py) reconnects to the address it last had: after a failover, to the old
master, forever. `FollowingConnection` asks the sentinels again whenever its socket is
closed, whoever reconnects it. The pool logs the switch, once per process and master.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.connection import Connection
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelConnectionPoolProxy,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from ..exceptions import ConfigurationError
from .urls import user_and_hosts

log = logging.getLogger("beatq.broker")

SCHEMES = ("sentinel", "sentinel+tls")
DEFAULT_PORT = 26379

# A forked child (a prefork worker's) follows the master as its parent does, which logs
# the switch: the child says it at INFO only.
_switch_level = logging.WARNING


def _in_child() -> None:
    global _switch_level
    _switch_level = logging.INFO


os.register_at_fork(after_in_child=_in_child)


@dataclass(frozen=True)
class SentinelUrl:
    """A sentinel:// URL read: where the sentinels are, which master, how to log in."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: dict[str, str] = field(default_factory=dict)


def is_sentinel(url: str) -> bool:
    return urlsplit(url).scheme in SCHEMES


def parse(url: str, shown: str) -> SentinelUrl:
    """Read a sentinel:// URL; one ConfigurationError naming what is wrong (`shown` is the
    URL with its password masked, for the message)."""
    parts = urlsplit(url)
    username, password, sentinels = user_and_hosts(
        parts,
        DEFAULT_PORT,
        shown,
        "a sentinel",
        "sentinel://host1:26379,host2:26379,host3:26379/MASTER_NAME",
    )
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ConfigurationError(
            f"broker URL {shown}: name the master the sentinels monitor after the hosts, "
            "and the database number after it if not 0: sentinel://HOSTS/mymaster[/0]"
        )
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ConfigurationError(
                f"broker URL {shown}: {path[1]!r} is not a database number (sentinel://HOSTS/"
                f"{path[0]}/0)"
            )
        db = int(path[1])
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    return SentinelUrl(
        sentinels, unquote(path[0]), db, username, password, parts.scheme == "sentinel+tls", options
    )


def _reads(value: str) -> Any:
    """A query option's value as redis-py takes it (numbers and booleans read)."""
    lowered = value.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class SentinelLoginRefused(AuthenticationError):
    """Every sentinel that answered turned the login away."""


class Watchers(Sentinel):
    """The sentinels, asked in turn for the master; what each said, in one line, when
    none names one that is up."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        said, refused = [], 0
        for i, watcher in enumerate(self.sentinels):
            conn = watcher.connection_pool.connection_kwargs
            where = f"sentinel {conn.get('host')}:{conn.get('port')}"
            try:
                masters = watcher.sentinel_masters()
            except AuthenticationError:
                refused += 1
                asked = "refused the password" if conn.get("password") else "asks for a password"
                said.append(f"{where} {asked}")
                continue
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                said.append(f"{where}: {exc}")
                continue
            state = masters.get(service_name)
            if not state:
                said.append(f"{where} watches no master named {service_name!r}")
            elif not self.check_master_state(state, service_name):
                said.append(f"{where}: master {state['ip']}:{state['port']} is down")
            else:
                self.sentinels[0], self.sentinels[i] = watcher, self.sentinels[0]
                return state["ip"], state["port"]
        if refused and refused == len(said):
            raise SentinelLoginRefused(
                f"{'; '.join(said)}: give the sentinels' password as broker_transport_options="
                "{'sentinel_kwargs': {'password': ...}} (the URL's is the master's)"
            )
        raise MasterNotFoundError(
            f"no sentinel names a master {service_name!r} that is up: " + "; ".join(said)
        )


class FollowingConnection(SentinelManagedConnection):
    """A connection to the master that asks the sentinels where it is whenever it connects
    (redis-py's own reconnects, from send_packed_command, go straight to the last address)."""

    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self._sock:
            return
        pool = self.connection_pool
        if pool.is_master:
            self.host, self.port = pool.get_master_address()
            super().connect_check_health(check_health, retry_socket_connect)
        else:
            super()._connect_retry()

    def _connect_retry(self) -> None:
        if self.connection_pool.is_master:
            self.connect_check_health(self.connection_pool.check_connection, False)
        else:
            super()._connect_retry()

    def connect_to(self, address: tuple[str, int]) -> None:
        self.host, self.port = address
        Connection.connect_check_health(self, self.connection_pool.check_connection, False)


class FollowingSSLConnection(FollowingConnection, SentinelManagedSSLConnection):
    pass


class _LoggingProxy(SentinelConnectionPoolProxy):
    """Logs a change of master once, as the pool learns of it."""

    def get_master_address(self) -> tuple[str, int]:
        before = self.master_address
        found = super().get_master_address()
        if before is not None and found != before:
            log.log(
                _switch_level,
                "Redis master %r moved: now %s:%s (was %s:%s); following it",
                self.service_name,
                *found,
                *before,
            )
        return found


class FollowingPool(SentinelConnectionPool):
    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        tls = kwargs.pop("ssl", False)
        kwargs["connection_class"] = FollowingSSLConnection if tls else FollowingConnection
        super().__init__(service_name, sentinel_manager, **kwargs)
        self.proxy = _LoggingProxy(
            connection_pool=self,
            is_master=self.is_master,
            check_connection=self.check_connection,
            service_name=service_name,
            sentinel_manager=sentinel_manager,
        )
        self.connection_kwargs["connection_pool"] = self.proxy


def client(
    url: SentinelUrl, sentinel_kwargs: Mapping[str, Any] | None, **kwargs: Any
) -> redis.Redis:
    """A client of `url`'s master that follows it across failovers; `kwargs` are the
    connection arguments (timeouts, retry), which the query's options override."""
    options = {name: _reads(value) for name, value in url.options.items()}
    login = {"username": url.username, "password": url.password, "db": url.db}
    tls = {"ssl": True} if url.tls else {}
    ssl_options = {k: v for k, v in options.items() if k.startswith("ssl_")}
    watchers = {
        "socket_timeout": kwargs.get("socket_connect_timeout", 5.0),
        "socket_connect_timeout": kwargs.get("socket_connect_timeout", 5.0),
        **tls,
        **ssl_options,
        **(sentinel_kwargs or {}),
    }
    manager = Watchers(url.sentinels, sentinel_kwargs=watchers)
    return manager.master_for(
        url.service, connection_pool_class=FollowingPool, **{**kwargs, **login, **tls, **options}
    )


def close_watchers(backend_client: redis.Redis) -> None:
    """Close the connections to the sentinels of a client made by `client`."""
    for watcher in watchers(backend_client):
        watcher.close()
        watcher.connection_pool.disconnect()


def master_address(backend_client: redis.Redis) -> tuple[str, int] | None:
    """The master a client of `client` last connected to (None: not yet known)."""
    pool = backend_client.connection_pool
    return getattr(pool, "master_address", None)


def watchers(backend_client: redis.Redis) -> list[redis.Redis]:
    """The clients of the sentinels of a client made by `client` (none for another)."""
    manager = getattr(backend_client.connection_pool, "sentinel_manager", None)
    return list(getattr(manager, "sentinels", ()))
