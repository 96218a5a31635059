"""`worker --autoscale MAX,MIN` (issue 25): the prefork pool grows while work waits and no
child is idle, and shrinks back to MIN once its children idle past the keepalive; each
decision is logged, and `inspect stats` and the metrics show the children and decisions.
Every task runs once throughout."""

from __future__ import annotations

import collections
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port, scaled, wait_for
from tests.proj import journal
from tests.test_metrics import reachable, scrape, value

KEEPALIVE = {"BEATQ_TEST_AUTOSCALE_KEEPALIVE": "1"}


def autoscaler(app) -> dict:
    stats = app.control.inspect(timeout=scaled(2)).stats() or {}
    (only,) = stats.values()
    return only["pool"]["autoscaler"]


def children(spans: list[str]) -> set[int]:
    return {int(line.split()[1]) for line in spans}


@pytest.mark.backends("redis", "sqlite")
def test_autoscale_grows_under_a_backlog_and_shrinks_back_when_idle(app, start_worker):
    from tests.proj.tasks import dl_span

    port = free_port()
    worker = start_worker(
        "-P", "prefork", "--autoscale", "4,1", "--metrics-port", str(port), extra_env=KEEPALIVE
    )
    wait_for(lambda: reachable(port), scaled(10), "the metrics endpoint")
    assert autoscaler(app)["processes"] == 1
    sent = [dl_span.delay(0.5, f"t{i}") for i in range(16)]
    assert [r.get(timeout=scaled(30)) for r in sent] == [f"t{i}" for i in range(16)]
    spans = journal("spans")
    assert collections.Counter(line.split()[0] for line in spans) == {
        f"t{i}": 1 for i in range(16)
    }, "every task ran once"
    assert len(children(spans)) == 4, "four children ran the backlog"
    grew = autoscaler(app)
    assert grew["grown"] >= 3 and grew["max"] == 4 and grew["min"] == 1
    assert "autoscale: 1 -> 2 child processes" in worker.log()
    assert "autoscale: 3 -> 4 child processes" in worker.log()

    wait_for(lambda: autoscaler(app)["processes"] == 1, scaled(20), "the pool to shrink")
    shrank = autoscaler(app)
    assert shrank["shrunk"] == 3
    assert [d["to"] for d in shrank["decisions"]][-3:] == [3, 2, 1]
    assert "autoscale: 2 -> 1 child processes (a child idle" in worker.log()
    samples = scrape(port)
    assert value(samples, "beatq_worker_pool_processes") == 1
    assert value(samples, "beatq_worker_autoscale_decisions_total", direction="grow") >= 3
    assert value(samples, "beatq_worker_autoscale_decisions_total", direction="shrink") == 3

    again = [dl_span.delay(0.2, f"u{i}") for i in range(4)]
    assert [r.get(timeout=scaled(30)) for r in again] == [f"u{i}" for i in range(4)]


@pytest.mark.parametrize(
    "args, says",
    [
        (["--autoscale", "2,3"], "MAX (2) is below MIN (3)"),
        (["--autoscale", "many"], "give MAX,MIN child processes"),
        (["-P", "threads", "--autoscale", "4,1"], "pool threads has none"),
        (["--autoscale", "4,1", "-c", "2"], "drop -c"),
    ],
)
def test_a_wrong_autoscale_is_refused_in_one_line(args, says, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "beatq", "-A", "tests.proj", "worker", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(30),
        env={"BEATQ_BROKER_URL": f"sqlite:///{tmp_path}/refused.db", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and "--autoscale" in proc.stderr, proc.stderr
