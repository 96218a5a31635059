"""Backends by URL scheme: `connect(url)` returns the one for a broker URL."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from ..exceptions import ConfigurationError
from .base import (
    Backend,
    BeatDispatch,
    ChordJoin,
    Claim,
    Claimed,
    DeadLetter,
    EntryState,
    Lease,
    Outgoing,
    ResultWrite,
)


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
    "sqlite": _sqlite,
    "memory": _memory,
}


def connect(url: str, options: Mapping[str, Any] | None = None) -> Backend:
    """The backend for `url`; `options` are the broker transport options."""
    scheme = urlsplit(url).scheme
    factory = SCHEMES.get(scheme)
    if factory is None:
        valid = ", ".join(f"{name}://" for name in sorted(SCHEMES))
        raise ConfigurationError(f"broker URL {url!r} has unknown scheme {scheme!r}; use {valid}")
    return factory(url, options or {})


__all__ = [
    "Backend",
    "BeatDispatch",
    "ChordJoin",
    "Claim",
    "Claimed",
    "DeadLetter",
    "EntryState",
    "Lease",
    "Outgoing",
    "ResultWrite",
    "connect",
]
