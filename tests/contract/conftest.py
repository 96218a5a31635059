"""The backend contract (beatq/brokers/roles.py): one suite per role, each run on every backend.

Each test runs on memory://, on sqlite:// (a file in tmp_path), on Redis and on a Redis
Cluster (tests/clusters.py; a key prefix of the test's own on each): the fixtures `store`
(a backend's storage, opened as often as a test needs clients of it) and `b` (one client
of it). test_stores.py holds what is
particular to one backend (SQLite files shared by several processes, killed mid-way).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from beatq.brokers import Backend, Claim, Outgoing, connect


class Store:
    """One backend's storage, opened as often as a test needs clients of it."""

    def __init__(self, kind: str, url: str, options: dict[str, str]) -> None:
        self.kind, self.url, self.options = kind, url, options
        self.opened: list[Backend] = []

    def open(self) -> Backend:
        backend = connect(self.url, self.options)
        self.opened.append(backend)
        return backend


@pytest.fixture(params=["memory", "sqlite", "redis", "cluster"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    kind = request.param
    if kind == "memory":
        found = Store(kind, f"memory://contract-{uuid.uuid4().hex}", {})
    elif kind == "sqlite":
        found = Store(kind, f"sqlite:///{tmp_path / 'broker.db'}", {})
    else:
        prefix = request.getfixturevalue("prefix")
        url = request.getfixturevalue("redis_url" if kind == "redis" else "cluster_url")
        found = Store(kind, url, {"global_keyprefix": prefix})
    yield found
    for backend in found.opened:
        backend.close()


@pytest.fixture
def b(store: Store) -> Backend:
    return store.open()


def out(id_: str, queue: str = "q", body: bytes | None = None, eta: float | None = None):
    return Outgoing(queue, id_, body if body is not None else f"body-{id_}".encode(), eta)


def ids(claims: list[Claim]) -> list[str]:
    return [c.id for c in claims]


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    """Run `fn` in a thread; its value and the monotonic time it returned land in the dict."""
    done: dict[str, object] = {}

    def run() -> None:
        done["value"] = fn()
        done["at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done
