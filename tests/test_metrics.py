"""Prometheus metrics of real `beatq worker` and `beatq beat` processes, scraped over HTTP
and parsed with prometheus_client's own parser."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, free_port, scaled, wait_for
from tests.proj import journal
from tests.test_beat_e2e import start_beat, tick, write_schedule  # noqa: F401
from tests.test_cli import beatq, show


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at http://127.0.0.1:PORT/metrics: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


def reachable(port: int):
    try:
        return scrape(port)
    except OSError:
        return None


@pytest.mark.backends("redis", "sqlite")
def test_a_prefork_worker_holds_what_runs_and_its_prefetch_more(app, start_worker):
    """Claims handed to a busy child to wait behind its task count as reserved, and come
    out of the prefetch (concurrency 1 x multiplier 4): the worker holds at most 1 + 4,
    whatever waits where."""
    from tests.proj.tasks import add, sleep

    port = free_port()
    start_worker("-P", "prefork", "-c", "1", "--metrics-port", str(port))
    wait_for(lambda: reachable(port), 10, "the metrics endpoint")
    blocker = sleep.delay(3, "block")
    wait_for(lambda: journal("runs"), 10, "the blocker to start")
    waiting = [add.delay(i, i) for i in range(8)]

    def counts():  # (reserved, queued), from a scrape taken while no claim was under way
        s = scrape(port)
        reserved = value(s, "beatq_worker_reserved_tasks") or 0
        depth = value(s, "beatq_queue_depth", queue="celery")
        assert value(s, "beatq_worker_active_tasks") == 1
        return (reserved, depth) if depth is not None and reserved + depth == 8 else None

    # two wait in the child (counted as reserved) and one or two in the buffer
    held = lambda: (c := counts()) is not None and c[0] >= 3 and c  # noqa: E731
    wait_for(held, 10, "the worker to claim its prefetch")
    deadline = time.monotonic() + 0.5  # and it takes no more while the blocker runs
    while time.monotonic() < deadline:
        now = counts()
        assert now is None or now[0] <= 4, f"holds {now[0]} besides the running task"
    blocker.get(timeout=scaled(10))
    assert [r.get(timeout=scaled(10)) for r in waiting] == [2 * i for i in range(8)]


@pytest.mark.backends("redis", "sqlite")
def test_worker_metrics_count_what_prefork_children_ran(app, start_worker):
    from tests.proj.tasks import add, fail, flaky, sleep

    port = free_port()
    start_worker(
        "-P", "prefork", "-c", "1", "--prefetch-multiplier", "1", "--metrics-port", str(port)
    )
    wait_for(lambda: reachable(port), 10, "the metrics endpoint")
    blocker = sleep.delay(3, "block")
    wait_for(lambda: journal("runs"), 10, "the blocker to start")
    waiting = [add.delay(i, i) for i in range(4)]

    # one add is claimed (prefetch 1) and waits for the slot; three stay in the queue. A
    # scrape reads the depth, then the worker's counts: a claim made in between (the
    # SQLite worker polls for work) shows 4 and 1 at once, so both are awaited together.
    def settled():
        s = scrape(port)
        depth = value(s, "beatq_queue_depth", queue="celery")
        return value(s, "beatq_worker_reserved_tasks") == 1 and depth == 3 and s

    samples = wait_for(settled, 10, "one reserved task and three in the queue")
    assert value(samples, "beatq_worker_active_tasks") == 1
    blocker.get(timeout=scaled(10))
    assert [r.get(timeout=scaled(10)) for r in waiting] == [0, 2, 4, 6]
    for _ in range(2):
        fail.delay("x").get(timeout=scaled(10), propagate=False)
    assert flaky.delay(1).get(timeout=scaled(10)) == 1

    def counted():
        s = scrape(port)
        return value(s, "beatq_tasks_total", name="tests.proj.tasks.flaky", state="SUCCESS") and s

    samples = wait_for(counted, 10, "the flaky task counted")
    total = "beatq_tasks_total"
    assert value(samples, total, name="tests.proj.tasks.add", state="SUCCESS") == 4
    assert value(samples, total, name="tests.proj.tasks.fail", state="FAILURE") == 2
    assert value(samples, total, name="tests.proj.tasks.flaky", state="RETRY") == 1
    assert value(samples, total, name="tests.proj.tasks.sleep", state="SUCCESS") == 1
    runtime = "beatq_task_runtime_seconds"
    assert value(samples, f"{runtime}_count", name="tests.proj.tasks.add") == 4
    assert value(samples, f"{runtime}_count", name="tests.proj.tasks.fail") == 2
    slept = value(samples, f"{runtime}_sum", name="tests.proj.tasks.sleep")
    assert 2.9 < slept < scaled(10)
    assert value(samples, f"{runtime}_bucket", name="tests.proj.tasks.sleep", le="2.5") == 0
    assert value(samples, f"{runtime}_bucket", name="tests.proj.tasks.sleep", le="5.0") == 1
    assert value(samples, "beatq_queue_depth", queue="celery") == 0
    assert value(samples, "beatq_worker_active_tasks") == 0


@pytest.mark.backends("redis", "sqlite")
def test_beat_metrics_dispatch_lateness_leader_lease_missed(app, start_beat, tmp_path: Path):  # noqa: F811
    schedule = write_schedule(tmp_path / "s.yaml", {"tick": tick()})
    port = free_port()
    first = start_beat(schedule, "--metrics-port", str(port))

    def dispatched(p: int, at_least: int):
        s = reachable(p)
        count = s and value(s, "beatq_beat_dispatched_total", entry="tick")
        return count and count >= at_least and s

    samples = wait_for(lambda: dispatched(port, 2), 15, "two dispatches")
    count = value(samples, "beatq_beat_dispatched_total", entry="tick")
    lateness = "beatq_beat_dispatch_lateness_seconds"
    assert value(samples, f"{lateness}_count", entry="tick") == count
    assert 0 <= value(samples, f"{lateness}_sum", entry="tick") < count * 0.5
    assert value(samples, f"{lateness}_bucket", entry="tick", le="1.0") == count
    assert value(samples, "beatq_beat_leader") == 1
    assert 0 < value(samples, "beatq_beat_lease_age_seconds") < 60
    assert 0 < value(samples, "beatq_beat_lease_remaining_seconds") <= 1.5

    first.signal(signal.SIGTERM)
    assert first.wait(10) == 0
    time.sleep(2.5)  # the downtime under test: runs come due while no beat runs
    port2 = free_port()
    start_beat(schedule, "--metrics-port", str(port2))
    samples = wait_for(lambda: dispatched(port2, 1), 15, "a dispatch after the restart")
    assert value(samples, "beatq_beat_missed_runs_total", entry="tick") >= 1
    assert value(samples, "beatq_beat_leader") == 1


def test_metrics_port_without_prometheus_client_is_a_clear_error(env, tmp_path: Path):
    blocked = tmp_path / "blocked" / "prometheus_client"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('not installed here')\n")
    path = f"{blocked.parent}:{ROOT}"
    for command in (["worker", "-P", "solo"], ["beat"]):
        proc = beatq({**env, "PYTHONPATH": path}, *command, "--metrics-port", "9")
        assert proc.returncode == 2, show(proc)
        assert proc.stderr.strip() == (
            "Error: --metrics-port needs the prometheus_client package: "
            "pip install 'beatq[metrics]' (or pip install prometheus_client)"
        ), show(proc)


def test_metrics_port_in_use_is_a_clear_error(env):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = beatq(env, "worker", "-P", "solo", "--metrics-port", str(port))
    assert proc.returncode == 2, show(proc)
    assert proc.stderr.startswith(f"Error: --metrics-port {port}: cannot listen on 127.0.0.1:"), (
        show(proc)
    )
