"""`beatq schedule add|update|remove|show|trigger|backfill|history` (issue 23), through the
CLI against a real `beatq beat`: what they print, their JSON, and their exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, wait_for
from tests.test_beat_e2e import OUT, cli, leader, sent, show, write_schedule
from tests.test_beat_e2e import start_beat as start_beat_fixture

start_beat = start_beat_fixture  # the fixture that starts `beatq beat` processes
BOTH = pytest.mark.backends("redis", "sqlite")
ADD = "tests.proj.tasks.add"


@BOTH
def test_the_schedule_commands_against_a_running_beat(app, env, tmp_path, start_beat):
    start_beat(write_schedule(tmp_path / "s.yaml", {"filed": {"task": ADD, "every": "1h"}}))
    wait_for(lambda: leader(app), 30, "a beat to lead")
    options = json.dumps({"queue": OUT})
    added = cli(env, "schedule", "add", "tick", ADD, "1s", "--args", "[4, 5]", "--options", options)
    assert added.returncode == 0, show(added)
    assert "tick: tests.proj.tasks.add every 1s from store" in added.stdout, show(added)
    wait_for(lambda: len([1 for n, _, _ in sent(app) if n == "tick"]) >= 2, 10, "2 runs")

    shown = cli(env, "schedule", "show", "tick", "--json")
    assert shown.returncode == 0, show(shown)
    entry = json.loads(shown.stdout)
    assert (entry["source"], entry["schedule"], entry["spec"]["args"]) == (
        "store",
        "every 1s",
        [4, 5],
    )
    assert entry["runs"] >= 2 and entry["next_run"] > time.time() - 1

    # two hosts ask for one run at once: it runs once, with the run id as its task id
    argv = [sys.executable, "-m", "beatq", "-A", "tests.proj", "schedule", "trigger", "tick"]
    both = [
        subprocess.Popen(
            [*argv, "--run-id", "manual-1", "--json"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    replies = [json.loads(p.communicate(timeout=30)[0]) for p in both]
    assert replies == [{"entry": "tick", "task_id": "manual-1"}] * 2
    assert all(p.returncode == 0 for p in both)

    def triggered() -> list[str]:
        return [m.id for n, _, m in sent(app) if n == "tick" and m.options["beat"].get("kind")]

    assert wait_for(triggered, 5, "the triggered run") == ["manual-1"]
    history = cli(env, "schedule", "history", "tick", "--json", "-n", "50")
    assert history.returncode == 0, show(history)
    records = json.loads(history.stdout)
    kinds = [r["kind"] for r in records]
    assert kinds.count("trigger") == 1 and kinds.count("schedule") >= 2, kinds
    assert all(r["state"] == "PENDING" for r in records), "no worker: none has run yet"
    text = cli(env, "schedule", "history", "tick")
    assert "trigger" in text.stdout and "manual-1" in text.stdout, show(text)

    updated = cli(env, "schedule", "update", "tick", "--schedule", "2s", "--json")
    assert updated.returncode == 0, show(updated)
    assert json.loads(updated.stdout)["schedule"] == "every 2s"
    assert triggered() == ["manual-1"]

    removed = cli(env, "schedule", "remove", "tick")
    assert (removed.returncode, removed.stdout.strip()) == (0, "removed tick"), show(removed)
    # `show` reads the leader's plan too, which takes the removal up within a second
    gone = wait_for(
        lambda: (p := cli(env, "schedule", "show", "tick")).returncode == 1 and p,
        5,
        "the removal to reach the leader",
    )
    assert "no schedule entry 'tick'" in gone.stderr, show(gone)


@pytest.mark.backends("sqlite")
def test_refusals_are_one_line_with_their_exit_code(app, env, tmp_path):
    never = cli(env, "schedule", "add", "bad", ADD, "30 2 31 2 *")
    assert never.returncode == 2, show(never)
    assert never.stderr.startswith("Error: schedule entry 'bad', field 'schedule': "), show(never)
    assert "never runs" in never.stderr and never.stderr.count("\n") == 1, show(never)
    bad_json = cli(env, "schedule", "add", "bad", ADD, "1s", "--args", "[1,")
    assert bad_json.returncode == 2 and "--args" in bad_json.stderr, show(bad_json)
    missing = cli(env, "schedule", "trigger", "nope")
    assert missing.returncode == 1 and "no schedule entry 'nope'" in missing.stderr, show(missing)
    assert cli(env, "schedule", "add", "ok", ADD, "1s").returncode == 0
    twice = cli(env, "schedule", "add", "ok", ADD, "1s")
    assert twice.returncode == 2 and "exists already" in twice.stderr, show(twice)
    future = cli(env, "schedule", "backfill", "ok", "--start", "2000-01-01", "--end", "2999-01-01")
    assert future.returncode == 2 and "field 'end': is in the future" in future.stderr, show(future)
    for command in ("add", "update", "remove", "show", "trigger", "backfill", "history"):
        helped = cli(env, "schedule", command, "--help")
        assert helped.returncode == 0 and "Usage:" in helped.stdout, show(helped)


@pytest.mark.backends("sqlite")
def test_add_from_a_file_adds_all_or_none(app, env, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "schedules": {
                    "a": {"task": ADD, "every": "1h"},
                    "b": {"task": ADD, "cron": "30 2 31 2 *"},
                    "c": {"task": ADD, "every": "2h"},
                }
            }
        )
    )
    refused = cli(env, "schedule", "add", "--from", str(bad))
    assert refused.returncode == 2, show(refused)
    assert refused.stderr.startswith("Error: schedule entry 'b', field 'schedule': "), show(refused)
    assert "(entry 2 of 3; nothing was added)" in refused.stderr, show(refused)
    assert [e for e in app.schedules.list() if e.source == "store"] == [], "none of the batch"

    good = write_schedule(
        tmp_path / "good.yaml",
        {f"report-{n}": {"task": ADD, "cron": f"{n} 7 * * mon", "args": [n]} for n in range(3)},
        zone="Asia/Shanghai",
    )
    added = cli(env, "schedule", "add", "--from", str(good), "--json")
    assert added.returncode == 0, show(added)
    assert [e["name"] for e in json.loads(added.stdout)] == ["report-0", "report-1", "report-2"]
    spec = app.schedules.get("report-2").spec
    assert (spec["cron"], spec["args"], spec["timezone"]) == ("2 7 * * mon", [2], "Asia/Shanghai")
    again = cli(env, "schedule", "add", "--from", str(good))
    assert again.returncode == 2 and "exist already (3 of 3)" in again.stderr, show(again)
    both = cli(env, "schedule", "add", "x", ADD, "1s", "--from", str(good))
    assert both.returncode == 2 and "takes no NAME" in both.stderr, show(both)
