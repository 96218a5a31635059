"""Losing the broker connection: a worker and a client behind a TCP proxy we can cut.

SPEC §6: a lost broker connection is retried with backoff and logged; nothing crashes
or is lost.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from beatq import AsyncResult
from tests.conftest import scaled, wait_for
from tests.proj import journal


class Proxy:
    """Forwards a port of 127.0.0.1 to the test Redis at `target` (its URL); `cut()` drops
    every connection and accepts-and-closes new ones until `restore()`."""

    def __init__(self, target: str) -> None:
        where = urlsplit(target)
        self.target = (where.hostname or "127.0.0.1", where.port or 6379)
        self.db = where.path or "/0"  # the test's own database, never another
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.05)
        self.port = self.server.getsockname()[1]
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.is_cut = False
        self.closed = False
        self.refused = 0  # connections accepted and closed while cut
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self.db}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                if self.is_cut or self.closed:
                    self.refused += 1
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            self.is_cut = True
            doomed, self.sockets = self.sockets, []
        for s in doomed:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        with self.lock:
            self.is_cut = False

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.thread.join(2)
        self.server.close()


@pytest.fixture
def proxy(redis_url: str):
    p = Proxy(redis_url)
    yield p
    p.close()


def behind(proxy: Proxy, redis_url: str, visibility: float | None = None) -> dict[str, str]:
    """A worker's env: its broker through the proxy (the journal is a file). `visibility`:
    its claims' timeout, for a test that waits for a claim whose reply the cut lost (the
    call ran on the server, its answer never came back): that claim's messages come back
    when it expires, which at the default 60 s outlasts the test's waits."""
    env = {"BEATQ_BROKER_URL": proxy.url}
    if visibility is not None:
        env["BEATQ_TEST_VISIBILITY"] = str(visibility)
    return env


def errors(worker) -> int:
    return worker.log().count("unreachable")


def test_idle_worker_survives_a_cut_and_serves_after_restore(app, start_worker, proxy, redis_url):
    from tests.proj.tasks import add

    worker = start_worker("-P", "solo", extra_env=behind(proxy, redis_url))
    assert proxy.sockets, "the worker talks to the broker through the proxy"
    proxy.cut()
    cut_at = time.monotonic()
    # Retried with backoff (0.1 s, 0.2 s, 0.4 s...), each failure logged.
    wait_for(lambda: errors(worker) >= 3, 5, "the worker to log its failed attempts")
    time.sleep(max(0.0, cut_at + 1.2 - time.monotonic()))
    attempts = proxy.refused
    assert 3 <= attempts < 30, f"{attempts} reconnection attempts in 1.2 s: no backoff?"
    proxy.restore()

    wait_for(lambda: "broker connection restored" in worker.log(), 10, "the 'restored' line")
    assert worker.process.poll() is None, worker.log()
    assert add.delay(20, 22).get(timeout=scaled(5)) == 42


def test_tasks_queued_across_a_cut_are_not_lost(app, start_worker, proxy, redis_url):
    from tests.proj.tasks import add, dl_nap

    worker = start_worker("-P", "solo", extra_env=behind(proxy, redis_url, visibility=5))
    running = dl_nap.delay(0.5, "across")
    queued = [add.delay(i, i) for i in range(5)]
    wait_for(lambda: "across:start" in journal("naps"), 5, "the task to start")
    proxy.cut()
    # The task ends during the cut: its result waits for the broker, not lost.
    wait_for(lambda: "across:end" in journal("naps"), 5, "the task to end")
    # The store's own failure, not another thread's (the control channel's read fails
    # too): restored sooner, the store's reconnection (redis-py retries once, 20 ms on)
    # could bridge the cut unseen, and no "restored" line would follow.
    wait_for(lambda: "broker unreachable (" in worker.log(), 5, "the failed store to be logged")
    proxy.restore()

    assert running.get(timeout=scaled(20)) == "across"
    assert [r.get(timeout=scaled(20)) for r in queued] == [0, 2, 4, 6, 8]
    assert journal("naps") == ["across:start", "across:end"]
    # logged as the store that waited goes through: maybe just after the results are read
    wait_for(lambda: "broker connection restored" in worker.log(), scaled(10), "the restore logged")
    assert app.broker.queue_length("celery") == 0
    assert worker.process.poll() is None


def test_result_get_through_a_cut_returns_within_its_timeout(app, start_worker, proxy, monkeypatch):
    from tests.proj.tasks import dl_nap

    start_worker("-P", "solo")  # straight to Redis
    monkeypatch.setenv("BEATQ_BROKER_URL", proxy.url)  # the client goes through the proxy
    app.close()
    result = dl_nap.delay(0.3, "via-proxy")
    assert AsyncResult(result.id, app=app).state == "PENDING"  # connected
    proxy.cut()
    restore = threading.Timer(1.0, proxy.restore)
    restore.start()
    began = time.monotonic()
    try:
        assert result.get(timeout=scaled(8)) == "via-proxy"
    finally:
        restore.cancel()
    assert time.monotonic() - began >= 0.9, "get waited out the cut"
    assert proxy.refused >= 1, "get tried to reconnect during the cut"
    assert result.state == "SUCCESS"
