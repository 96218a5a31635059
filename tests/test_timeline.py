"""The rolling history behind the dashboard's charts (beatq/timeline.py), and the charts.

The broker keeps it bounded on every backend; real worker and beat processes write it as
they work (a sample per interval, from the heartbeat and the leader's loop); the page
draws it in headless Chromium. The tests run the timeline at 1-s samples
(BEATQ_TEST_TIMELINE), so an interval ends within a second.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from beatq.timeline import BOUNDS, MAXLEN, WorkerTimeline, chart, quantile
from tests import test_dashboard
from tests.conftest import ROOT, scaled, wait_for
from tests.test_dashboard import SERVER_ZONE, http, rows, text_of, write_schedule

browser = test_dashboard.browser
shots = test_dashboard.shots
start_cli = test_dashboard.start_cli

FAST = {"BEATQ_TEST_TIMELINE": "1,120"}  # a sample a second, two minutes kept


def totals(app, since: float = 0.0) -> dict[str, float]:
    """What the workers' samples in the broker add up to."""
    found = {"ok": 0, "fail": 0, "runs": 0}
    for _, data in app.broker.samples(since):
        sample = json.loads(data)
        for key in found:
            found[key] += sample.get(key, 0)
    return found


@pytest.mark.backends("redis", "sqlite", "memory")
def test_the_broker_keeps_the_timeline_bounded_by_age_and_count(app) -> None:
    broker = app.broker
    now = time.time()
    old = [(now - 4000 + i, json.dumps({"t": now - 4000 + i, "w": "a"}).encode()) for i in range(3)]
    fresh = [(now - 30 + i, json.dumps({"t": now - 30 + i, "w": "a"}).encode()) for i in range(3)]
    broker.add_samples(old + fresh, 3600, MAXLEN)
    assert [at for at, _ in broker.samples(0)] == [at for at, _ in fresh], "older than keep"
    broker.add_samples(fresh[:1], 3600, MAXLEN)  # written again after a lost reply: kept once
    assert len(broker.samples(0)) == 3
    assert broker.samples(now - 29) == fresh[1:], "only the intervals since"
    more = [(now - 10 + i / 10, json.dumps({"t": now - 10 + i / 10}).encode()) for i in range(5)]
    broker.add_samples(more, 3600, 4)
    assert broker.samples(0) == more[1:], "the newest maxlen"


def test_two_workers_samples_merge_into_one_chart() -> None:
    step, at, now = 10.0, 1_800_000_004.0, 1_800_000_015.0
    one = WorkerTimeline("w1", ["celery"], step, 3600)
    two = WorkerTimeline("w2", ["celery"], step, 3600)
    for _ in range(90):
        one.done("SUCCESS", 0.010, at)
    for _ in range(9):
        two.done("SUCCESS", 0.010, at)
    two.done("SUCCESS", 2.0, at)  # the slowest 1 %: one run of 100
    two.done("FAILURE", 0.5, at)
    two.done("RETRY", 0.5, at)  # neither succeeded nor failed
    two.done("SUCCESS", 0.010, now)  # the next interval: still open, not in a sample
    one._close(now, {"depth": {"celery": 7}})
    two._close(now, {"depth": {"celery": 3}})
    series = chart(one.pending + two.pending, now, step, 60)
    assert series["t"][-1] == 1_800_000_000.0 and len(series["t"]) == 6
    assert series["ok"][-1] == 10.0 and series["fail"][-1] == 0.1  # per second
    assert series["ok"][:-1] == [None] * 5, "no sample: no point, not a zero"
    assert abs(series["p50"][-1] - 0.010) / 0.010 < 0.2, series["p50"]
    assert abs(series["p99"][-1] - 0.5) / 0.5 < 0.2, "the 100th of 101 runs: the failure"
    assert series["depth"] == {"celery": [None] * 5 + [7]}, "the most any worker read"
    assert quantile({}, 0.5) is None and quantile({len(BOUNDS): 1}, 0.5) == BOUNDS[-1]
    assert list(two.open) == [1_800_000_010.0]


@pytest.mark.backends("redis", "sqlite")
def test_a_worker_and_the_beat_write_what_they_did(app, tmp_path, start_worker, start_cli):
    from tests.proj.tasks import add, fail

    schedule = write_schedule(
        tmp_path / "tick.yaml", "UTC", {"tick": {"task": "tests.proj.tasks.add", "every": "1s",
                                                 "args": [1, 1]}}
    )  # fmt: skip
    start_cli(
        "beat", "-s", str(schedule), "--lease-ttl", "2", marker="is the leader now", extra_env=FAST
    )
    start_worker("-P", "threads", "-c", "2", extra_env=FAST)
    begun = time.time() - 1
    results = [add.delay(i, i) for i in range(20)] + [fail.delay("x") for _ in range(3)]
    for result in results:
        result.get(timeout=scaled(10), propagate=False)
    # every task counted once (the beat's ticks run too), in samples written a second later
    wait_for(lambda: totals(app, begun)["fail"] == 3, 5, "the 3 failures in the samples")
    wait_for(lambda: totals(app, begun)["ok"] >= 20, 5, "the 20 successes in the samples")
    wait_for(lambda: totals(app, begun)["runs"] >= 2, 5, "the beat's dispatches in the samples")
    kinds = [json.loads(data) for _, data in app.broker.samples(begun)]
    beat = [s for s in kinds if "b" in s]
    assert all(s["late_max"] < scaled(1.0) for s in beat), beat
    worker = [s for s in kinds if "w" in s]
    assert all(set(s["depth"]) == {"celery"} for s in worker), worker


def test_charts_draw_the_last_minutes_in_the_browser(
    app, tmp_path, start_worker, start_cli, browser, shots
):
    from selenium.webdriver.common.by import By

    from tests.proj.tasks import add, fail, sleep

    schedule = write_schedule(
        tmp_path / "tick.yaml", "UTC", {"tick": {"task": "tests.proj.tasks.add", "every": "1s",
                                                 "args": [1, 1]}}
    )  # fmt: skip
    start_cli(
        "beat", "-s", str(schedule), "--lease-ttl", "2", marker="is the leader now", extra_env=FAST
    )
    start_worker("-P", "threads", "-c", "4", extra_env=FAST)
    dashboard = start_cli(
        "dashboard", "--port", "0", marker="dashboard on",
        extra_env={"TZ": SERVER_ZONE, **FAST},
    )  # fmt: skip
    url = dashboard.log().split("dashboard on ")[1].split()[0]
    browser.get(url)
    for round_ in range(4):  # a few seconds of work: successes, failures, a backlog
        for result in [sleep.delay(0.05, "chart") for _ in range(40)]:
            result.get(timeout=scaled(10))
        fail.delay(f"round {round_}").get(timeout=scaled(10), propagate=False)
        add.delay(1, round_).get(timeout=scaled(10))

    def drawn(box: str, count: int) -> bool:
        return len(rows(browser, f"#{box} path.series")) >= count

    for box, count in [("chart-throughput", 1), ("chart-failures", 1), ("chart-latency", 2),
                       ("chart-lateness", 1)]:  # fmt: skip
        wait_for(lambda b=box, c=count: drawn(b, c), 10, f"{box} drawn")
    assert "celery" in text_of(browser, "#chart-depth")
    assert "Succeeded" in text_of(browser, "#chart-throughput")
    legend = text_of(browser, "#chart-latency")
    assert "p50" in legend and "p99" in legend
    # the p50 of 0.05-s sleeps, read from the merged buckets, within one bucket
    state = json.loads(http(url + "api/state")[2])
    p50 = [v for v in state["timeline"]["p50"] if v is not None]
    assert any(0.035 < v < 0.075 for v in p50), p50
    assert "Europe/London" not in state["timeline"]["note"]  # the app's zone (UTC), not the host's
    assert state["timeline"]["note"].endswith("+00:00")
    section = browser.find_element(By.ID, "timeline-section")
    path = shots(browser, "charts")
    element = path.with_name(path.stem + "-section.png")
    element.write_bytes(section.screenshot_as_png)
    if os.environ.get("BEATQ_README_SHOTS"):  # to refresh the README's picture
        shutil.copy(element, ROOT / "docs" / "dashboard-charts.png")
    assert Path(element).stat().st_size > 5_000
