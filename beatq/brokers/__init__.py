"""Backends by URL scheme: `connect(url)` returns the store of a broker URL in every role.

The roles (one interface per concern, each with its contract) are in roles.py, the
records that cross them in records.py; memory.py, sqlite.py and redis.py each play every
role on their own URL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from ..exceptions import ConfigurationError
from .records import *  # noqa: F403 (the records that cross the roles: records.__all__)
from .records import __all__ as _records
from .roles import Backend, BeatState, Delivery, Events, Leases, Results, Schedules, Workers


def _redis(url: str, options: Mapping[str, Any]) -> Backend:
    from .redis import RedisBackend

    return RedisBackend(url, options)


def _sqlite(url: str, options: Mapping[str, Any]) -> Backend:
    from .sqlite import SqliteBackend

    return SqliteBackend(url, options)


def _memory(url: str, options: Mapping[str, Any]) -> Backend:
    from .memory import MemoryBackend

    return MemoryBackend(url, options)


SCHEMES: dict[str, Callable[[str, Mapping[str, Any]], Backend]] = {
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
    "sentinel": _redis,
    "sentinel+tls": _redis,
    "sqlite": _sqlite,
    "memory": _memory,
}


# Redis Cluster, under the names other clients give it: not served yet (issue 24).
CLUSTER_SCHEMES = frozenset(
    {"cluster", "redis+cluster", "rediss+cluster", "rediscluster", "redis-cluster"}
)


def _open(url: str, options: Mapping[str, Any]) -> Backend:
    scheme = urlsplit(url).scheme
    factory = SCHEMES.get(scheme)
    if scheme in CLUSTER_SCHEMES:
        raise ConfigurationError(
            f"broker URL scheme {scheme}:// asks for Redis Cluster, which beatq does not run "
            "on yet; use one Redis (redis://), or Redis behind Sentinel for failover "
            "(sentinel://host1:26379,host2:26379,host3:26379/MASTER_NAME)"
        )
    if factory is None:
        valid = ", ".join(f"{name}://" for name in sorted(SCHEMES))
        raise ConfigurationError(f"broker URL {url!r} has unknown scheme {scheme!r}; use {valid}")
    return factory(url, options)


def connect(
    url: str, options: Mapping[str, Any] | None = None, results: str | None = None
) -> Backend:
    """The store of `url` in every role; `options` are the broker transport options.

    `results`: the URL of the store that keeps task results, when not this one (a
    `result_backend` of its own). The backend's `finish` then stores results there and
    `backend.results` reads them there; nothing else needs to know.
    """
    backend = _open(url, options or {})
    if results and results != url:
        backend.keep_results_in(_open(results, options or {}))
    return backend


__all__ = [
    *_records,
    "Backend",
    "BeatState",
    "Delivery",
    "Events",
    "Leases",
    "Results",
    "Schedules",
    "Workers",
    "connect",
]
