"""Backends by URL scheme: `connect(url)` returns the store of a broker URL in every role.

The roles (one interface per concern, each with its contract) are in roles.py, the
records that cross them in records.py; memory.py, sqlite.py and redis.py each play every
role on their own URL.
"""

from __future__ import annotations

import difflib
import logging
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


def _cluster(url: str, options: Mapping[str, Any]) -> Backend:
    from .cluster import ClusterBackend

    return ClusterBackend(url, options)


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
    "redis+cluster": _cluster,
    "rediss+cluster": _cluster,
    "sqlite": _sqlite,
    "memory": _memory,
}


# Redis Cluster, under the names other clients give it: refused, naming beatq's own.
CLUSTER_SCHEMES = frozenset({"cluster", "rediscluster", "redis-cluster", "rediss-cluster"})


def _open(url: str, options: Mapping[str, Any], check: bool = True) -> Backend:
    scheme = urlsplit(url).scheme
    factory = SCHEMES.get(scheme)
    if scheme in CLUSTER_SCHEMES:
        raise ConfigurationError(
            f"broker URL scheme {scheme}:// asks for Redis Cluster, which beatq names "
            "redis+cluster:// (rediss+cluster:// for TLS): write "
            "redis+cluster://host1:7000,host2:7001,host3:7002/"
        )
    if factory is None:
        valid = ", ".join(f"{name}://" for name in sorted(SCHEMES))
        raise ConfigurationError(f"broker URL {url!r} has unknown scheme {scheme!r}; use {valid}")
    if check:
        check_options(scheme, options)
    return factory(url, options)


# The broker_transport_options each kind of store reads (visibility_timeout: the worker).
_REDIS_OPTIONS = frozenset(
    {
        "global_keyprefix",
        "visibility_timeout",
        "socket_timeout",
        "socket_connect_timeout",
        "health_check_interval",
        "reply_spin",
        "min_replicas",
        "beat_min_replicas",
        "min_replicas_timeout",
    }
)
OPTIONS: dict[Callable[..., Backend], frozenset[str]] = {
    _redis: _REDIS_OPTIONS,
    _cluster: _REDIS_OPTIONS,
    _sqlite: frozenset({"visibility_timeout", "busy_timeout"}),
    _memory: frozenset({"visibility_timeout"}),
}
# Taken and said once, as having no effect: options of Celery's (kombu's) transports, and
# the key prefix of a store that keeps one app's keys apart by its file or name already.
NO_EFFECT = {
    "max_connections": "each thread keeps one connection of its own",
    "priority_steps": "priorities 0-255 need no steps (see apply_async(priority=))",
    "queue_order_strategy": "-Q order is the queues' urgency",
    "sep": "beatq names its priority bands itself",
    "fanout_prefix": "control commands go through the broker's own channel",
    "fanout_patterns": "control commands go through the broker's own channel",
    "polling_interval": "workers are woken by the broker, not by polling",
    "master_name": "give the master's name in a sentinel:// URL",
    "socket_keepalive": "connections always keep alive",
    "retry_on_timeout": "a lost connection is retried by task_publish_retry_policy",
    "max_retries": "set task_publish_retry_policy instead",
}
_said: set[str] = set()
log = logging.getLogger("beatq.broker")


def check_options(scheme: str, options: Mapping[str, Any]) -> None:
    """Refuse a transport option the store of `scheme` does not read (a typo such as
    `min_replica` would leave sends unprotected, silently), naming the options it reads;
    one of Celery's that means nothing here is logged once as having no effect."""
    factory = SCHEMES[scheme]
    known = OPTIONS[factory] | ({"sentinel_kwargs"} if scheme.startswith("sentinel") else set())
    for name in options:
        if name in known:
            continue
        reason = NO_EFFECT.get(name)
        if reason is None and name == "global_keyprefix":
            reason = f"a {scheme}:// store keeps one app's keys apart by its own {scheme} URL"
        if reason is not None:
            if name not in _said:
                _said.add(name)
                log.warning("broker_transport_options %r has no effect in beatq: %s", name, reason)
            continue
        if name == "sentinel_kwargs" and factory is _redis:
            hint = " (it is for sentinel:// URLs)"
        else:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigurationError(
            f"broker_transport_options: {name!r} is not an option of a {scheme}:// store{hint}; "
            f"its options are {', '.join(sorted(known))}"
        )


def connect(
    url: str, options: Mapping[str, Any] | None = None, results: str | None = None
) -> Backend:
    """The store of `url` in every role; `options` are the broker transport options.

    `results`: the URL of the store that keeps task results, when not this one (a
    `result_backend` of its own). The backend's `finish` then stores results there and
    `backend.results` reads them there; nothing else needs to know.
    """
    backend = _open(url, options or {})
    if results and results != url:  # the broker's options, checked against the broker's URL
        backend.keep_results_in(_open(results, options or {}, check=False))
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
