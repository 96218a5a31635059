"""The beat end to end: real `beatq beat` and `beatq worker -B` processes through the CLI.

SPEC §8: however many beats run, one leads and each run is sent exactly once; a dead
leader is replaced within the lease time, a clean stop hands over at once, a paused old
leader is fenced; catch-up, overlap, jitter, pause/resume and hot reload act on live beats.

Each message a beat sends carries `options["beat"] = {"entry", "slot"}`. With no worker on
its queue a message stays stored, so the tests read back from the store which runs (slots,
whole POSIX seconds for `every: 1s`) were dispatched, and how many times. What rests on
the backend (the lease, fencing, the settled runs, overlap) runs on Redis and SQLite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from beatq.messages import Message, decode
from tests.conftest import ROOT, WorkerProcess, scaled, stored_messages, wait_for
from tests.proj import journal

OUT = "beat-out"  # a queue no worker consumes: the messages sent to it stay stored
BOTH = pytest.mark.backends("redis", "sqlite")  # several beat processes share the store
# and on a Redis Cluster: one leader and each slot once, fencing, overlap across slots
THREE = pytest.mark.backends("redis", "sqlite", "cluster")
TIME_WITH_OFFSET = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


# -- helpers -------------------------------------------------------------------------------
@pytest.fixture
def start_beat(app, env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `beatq -A tests.proj beat -s FILE --lease-ttl T -l info` and wait until it runs."""
    started: list[WorkerProcess] = []

    def start(schedule: Path, *args: str, ttl: float = 1.5, ready: bool = True) -> WorkerProcess:
        argv = ["-A", "tests.proj", "beat", "-s", str(schedule), "--lease-ttl", str(ttl)]
        name = f"beat{len(started)}-{uuid.uuid4().hex[:6]}"
        beat = WorkerProcess([*argv, "-l", "info", *args], env, tmp_path / f"{name}.log")
        started.append(beat)
        if ready:
            wait_for(
                lambda: " starting: " in beat.log() or beat.process.poll() is not None,
                60,  # a deadline: generous for a loaded machine
                f"beat {name} to start",
            )
            assert beat.process.poll() is None, beat.log()
        return beat

    yield start
    for beat in started:
        if beat.process.poll() is None:
            beat.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        beat.stop()


def write_schedule(path: Path, entries: dict[str, dict[str, Any]], zone: str = "UTC") -> Path:
    """Write a schedule file in one step (a beat may read it at any moment)."""
    text = yaml.safe_dump({"timezone": zone, "schedules": entries}, sort_keys=False)
    replace_text(path, text)
    return path


def replace_text(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


def tick(task: str = "tests.proj.tasks.add", args: list[Any] | None = None, **spec: Any):
    """An entry that runs every second, sent to OUT unless `options` says otherwise."""
    return {
        "task": task,
        "every": "1s",
        "args": [1, 2] if args is None else args,
        "options": {"queue": OUT},
        **spec,
    }


def sent(app) -> list[tuple[str, float, Message]]:
    """(entry, slot, message) for every beat message still stored, in slot order."""
    found = []
    for stored in stored_messages(app):
        message = decode(stored.body, None)
        run = message.options.get("beat")
        if run:
            found.append((run["entry"], float(run["slot"]), message))
    return sorted(found, key=lambda item: (item[1], item[0]))


def slots(app, entry: str) -> list[float]:
    """The slots dispatched for `entry`, sorted, repeats kept (a repeat is a defect)."""
    return [slot for name, slot, _ in sent(app) if name == entry]


def assert_each_slot_once(found: list[float], least: int) -> None:
    """`found` is every whole second from the first to the last, each once."""
    repeats = [s for s, n in Counter(found).items() if n > 1]
    assert not repeats, f"slots dispatched twice: {repeats}"
    assert len(found) >= least, found
    assert all(s == int(s) for s in found), found
    first, last = int(found[0]), int(found[-1])
    assert found == [float(s) for s in range(first, last + 1)], f"gap in {found}"


def leader(app) -> str | None:
    lease = app.broker.get_lease("beat")
    return None if lease is None else lease.holder


def pid_of(holder: str) -> int:
    """The process id in a holder name `host:pid:rand`."""
    return int(holder.rsplit(":", 2)[1])


def leader_pid(app) -> int | None:
    holder = leader(app)
    return None if holder is None else pid_of(holder)


def led_by(app, beats: list[WorkerProcess]) -> WorkerProcess:
    """The beat process that holds the lease now."""
    holder = wait_for(lambda: leader(app), 10, "a leader")
    return next(b for b in beats if b.pid == pid_of(holder))


def entry_info(app, name: str) -> dict[str, Any]:
    state = app.broker.beat_entries()[name]
    return json.loads(state.info) if state.info else {}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "beatq", "-A", "tests.proj", *args]
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=20)


def show(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def wait_until(instant: float) -> None:
    """Sleep to a wall-clock instant (used only to place an action on the slot grid)."""
    time.sleep(max(instant - time.time(), 0.0))


# -- tests ---------------------------------------------------------------------------------
@THREE
def test_two_beats_and_two_worker_beats_send_each_slot_once(
    app, env, tmp_path, start_beat, start_worker
):
    path = write_schedule(tmp_path / "s.yaml", {"tick": tick()}, zone="Asia/Shanghai")
    beats = [start_beat(path), start_beat(path)]
    for _ in range(2):
        beats.append(start_worker("-B", "-s", str(path), "-P", "threads", "-c", "1"))
    found = wait_for(lambda: len(s := slots(app, "tick")) >= 5 and s, 10, "5 runs")
    assert_each_slot_once(found, 5)

    status = cli(env, "beat", "status")
    assert status.returncode == 0, show(status)
    holder = leader(app)
    assert holder and f"leader: {holder} " in status.stdout, show(status)
    assert "tick: runs " in status.stdout, show(status)
    listing = cli(env, "schedule", "list")
    assert listing.returncode == 0, show(listing)
    assert "tick: tests.proj.tasks.add every 1s [Asia/Shanghai]" in listing.stdout, show(listing)
    times = re.search(
        rf"last run: ({TIME_WITH_OFFSET})\s+next run: ({TIME_WITH_OFFSET})", listing.stdout
    )
    assert times and times[1].endswith("+08:00") and times[2].endswith("+08:00"), show(listing)
    assert times[1] < times[2]

    found = slots(app, "tick")
    assert_each_slot_once(found, 5)
    leaders = [b for b in beats if "is the leader now" in b.log()]
    assert len(leaders) == 1, "one leader for the whole run, the other three stood by"
    assert leaders[0].pid == pid_of(holder)
    standby = [b for b in beats if b is not leaders[0]]
    assert not any("beat: sent" in b.log() for b in standby)


@BOTH
def test_a_beat_setting_made_in_an_included_module_counts(app, env, tmp_path) -> None:
    # beat_lease_ttl set in a module the app includes (tests/proj/included_settings.py: 9 s,
    # the default 4 s): the beat reads its settings after importing it
    path = write_schedule(
        tmp_path / "s.yaml",
        {"tick": {"task": "tests.proj.tasks.add", "every": "1h", "args": [1, 1]}},
    )
    env = {**env, "BEATQ_TEST_INCLUDE": "tests.proj.included_settings"}
    beat = WorkerProcess(
        ["-A", "tests.proj", "beat", "-s", str(path), "-l", "info"], env, tmp_path / "b.log"
    )
    try:
        lease = wait_for(lambda: app.broker.get_lease("beat"), 60, "the beat to lead")
        assert 4.0 < lease.remaining <= 9.0, lease
    finally:
        beat.stop()


def test_kill9_of_the_leader_a_standby_takes_over_within_the_lease(app, tmp_path, start_beat):
    path = write_schedule(tmp_path / "s.yaml", {"latest": tick(), "all": tick(catchup="all")})
    first = start_beat(path, ttl=1.5)
    wait_for(lambda: leader(app), 5, "the first beat to lead")
    second = start_beat(path, ttl=1.5)
    wait_for(lambda: len(slots(app, "all")) >= 2, 5, "two runs")
    old = led_by(app, [first, second])
    new = second if old is first else first

    killed_at = time.time()
    os.kill(old.pid, signal.SIGKILL)
    old.wait(5)
    wait_for(lambda: leader_pid(app) == new.pid, 5, "the standby to lead")
    since = app.broker.get_lease("beat").since

    def by_new_leader() -> list[Message]:
        return [m for name, _, m in sent(app) if name == "all" and m.sent >= since]

    first_new = wait_for(by_new_leader, 5, "a run sent by the new leader")
    assert min(m.sent for m in first_new) - killed_at <= 1.5 + scaled(1.0)
    last = max(slots(app, "all"))
    wait_for(lambda: max(slots(app, "all")) >= last + 1, 3, "a further run")
    assert "is the leader now" in new.log()
    new.stop()

    assert_each_slot_once(slots(app, "all"), 4)  # catchup all: no gap at all
    latest = slots(app, "latest")
    assert len(set(latest)) == len(latest), f"slots dispatched twice: {latest}"
    missed = entry_info(app, "latest")["missed"]
    window = int(latest[-1] - latest[0]) + 1
    assert len(latest) + missed == window, (latest, missed)


@THREE
def test_a_stopped_leader_that_wakes_up_sends_nothing(app, tmp_path, start_beat):
    path = write_schedule(tmp_path / "s.yaml", {"all": tick(catchup="all")})
    first = start_beat(path, ttl=1.5)
    wait_for(lambda: leader(app), 5, "the first beat to lead")
    second = start_beat(path, ttl=1.5)
    wait_for(lambda: len(slots(app, "all")) >= 1, 5, "a run")
    old = led_by(app, [first, second])
    new = second if old is first else first

    old.signal(signal.SIGSTOP)
    stopped_at = time.time()
    wait_for(lambda: leader_pid(app) == new.pid, 5, "the standby to lead")
    wait_for(lambda: [m for *_, m in sent(app) if m.sent > stopped_at + 1.5], 5, "a run")
    assert time.time() - stopped_at > 1.5, "stopped for longer than its lease"
    old.signal(signal.SIGCONT)
    wait_for(lambda: "lost the leadership" in old.log(), 5, "the old leader to notice")
    woke = max(slots(app, "all"))
    wait_for(lambda: max(slots(app, "all")) >= woke + 2, 4, "two more runs")

    assert_each_slot_once(slots(app, "all"), 4)
    after_wake = old.log().rsplit("lost the leadership", 1)[1]
    assert "beat: sent" not in after_wake
    assert pid_of(leader(app)) == new.pid


@BOTH
def test_a_clean_stop_hands_the_lease_over_at_once(app, tmp_path, start_beat):
    path = write_schedule(tmp_path / "s.yaml", {"tick": tick()})
    # A long lease for the first leader: only the hand-over can explain a fast change.
    first = start_beat(path, ttl=10)
    holder = wait_for(lambda: leader(app), 5, "the first beat to lead")
    second = start_beat(path, ttl=1.5)
    wait_for(lambda: len(slots(app, "tick")) >= 2, 5, "two runs")

    stopped_at = time.monotonic()
    first.signal(signal.SIGTERM)
    wait_for(lambda: leader(app) not in (None, holder) or None, 2, "the lease to change hands")
    assert time.monotonic() - stopped_at < min(scaled(1.0), 8.0)  # its lease: 10 s
    assert first.wait(5) == 0
    assert pid_of(leader(app)) == second.pid
    assert "stopped and released the leadership" in first.log()
    last = max(slots(app, "tick"))
    wait_for(lambda: max(slots(app, "tick")) >= last + 2, 4, "two more runs")
    assert_each_slot_once(slots(app, "tick"), 4)


@BOTH
def test_catchup_after_downtime(app, tmp_path, start_beat):
    """All beats down for a few seconds, then one leads again at a known point of the grid.

    The 2 s entries show skip and latest apart: the new leader starts 1.1 s after slot E,
    past the 0.8 s (twice its 0.4 s lease) within which a late run still counts as on time.
    """
    path = write_schedule(
        tmp_path / "s.yaml",
        {
            "skip": tick(every="2s", catchup="skip"),
            "latest": tick(every="2s", catchup="latest"),
            "all": tick(catchup="all"),
            "window": tick(catchup="all", catchup_window="2s"),
        },
    )
    first = start_beat(path)
    wait_for(lambda: len(slots(app, "latest")) >= 1, 5, "a run every 2s")
    first.signal(signal.SIGTERM)
    assert first.wait(5) == 0
    # Nobody leads while the test holds the lease: the beats are "down".
    token = wait_for(lambda: app.broker.acquire_lease("beat", "test:0:down", 30), 2, "lease")
    before = {name: max(slots(app, name)) for name in ("skip", "latest", "all", "window")}
    second = start_beat(path, ttl=0.4)
    edge = before["latest"] + 4  # the second missed 2 s slot, E
    wait_until(edge + 1.1)
    app.broker.release_lease("beat", "test:0:down", token)
    wait_for(lambda: max(slots(app, "all")) >= edge + 1, 2, "the catch-up")
    wait_for(lambda: max(slots(app, "skip")) >= edge + 2, 2, "the next skip run")

    def caught_up(name: str) -> list[float]:
        return [s for s in slots(app, name) if before[name] < s <= edge + 1]

    assert caught_up("latest") == [edge], "one run for the missed edge-2 and edge"
    assert entry_info(app, "latest")["missed"] >= 1
    assert caught_up("skip") == [], "skip: none of the runs missed while down"
    assert caught_up("all") == [float(s) for s in range(int(before["all"]) + 1, int(edge) + 2)]
    assert caught_up("window") == [edge, edge + 1], "all, but only within catchup_window"
    for name in ("skip", "latest", "all", "window"):
        found = slots(app, name)
        assert len(set(found)) == len(found), f"{name}: slots dispatched twice: {found}"
    assert "missed" in second.log()


@THREE
def test_overlap_skip_sends_no_run_while_the_previous_is_unfinished(
    app, tmp_path, start_beat, start_worker
):
    path = write_schedule(
        tmp_path / "s.yaml",
        {
            "skip": tick("tests.proj.tasks.sleep", [1.5, "skip"], overlap="skip", options={}),
            "allow": tick("tests.proj.tasks.sleep", [1.5, "allow"], options={}),
        },
    )
    start_worker("-P", "threads", "-c", "6")
    beat = start_beat(path)

    def starts(tag: str) -> list[str]:
        return [r for r in journal("runs") if r.startswith(f"{tag}:start:")]

    wait_for(lambda: len(starts("skip")) >= 2, 8, "two runs of the skip entry")
    skip_runs = [r.split(":")[1] for r in journal("runs") if r.startswith("skip:")]
    assert skip_runs[:4] == ["start", "end", "start", "end"][: len(skip_runs[:4])], skip_runs
    assert all(a != b for a, b in zip(skip_runs, skip_runs[1:])), "never two at once"
    allow_runs = [r.split(":")[1] for r in journal("runs") if r.startswith("allow:")]
    assert allow_runs[:2] == ["start", "start"], "without overlap: skip they do overlap"
    assert "skipped its run" in beat.log()


@BOTH
def test_a_run_starts_at_its_instant_never_before(app, tmp_path, start_beat, start_worker):
    """A run is sent ahead of its instant (Beat.early) with the instant as its eta, and
    the worker that claims it holds it until then."""
    entry = tick("tests.proj.tasks.beat_stamp", args=[])
    path = write_schedule(tmp_path / "s.yaml", {"stamped": entry})
    start_worker("-P", "solo", "-Q", OUT)
    start_beat(path)
    rows = wait_for(lambda: len(j := journal("beat_starts")) >= 3 and j, scaled(15), "3 runs")
    runs = [tuple(float(x) for x in row.split()) for row in rows]
    assert all(eta == slot for slot, _, eta in runs), runs
    early = [slot - started for slot, started, _ in runs if started < slot]
    assert early == [], "seconds before their instant that runs started"


def test_jitter_delays_each_run_within_its_window(app, tmp_path, start_beat):
    path = write_schedule(tmp_path / "s.yaml", {"jittery": tick(jitter="1s")})
    start_beat(path)
    found = wait_for(lambda: len(s := sent(app)) >= 4 and s, 8, "four runs")
    offsets = [message.eta - slot for _, slot, message in found if message.eta is not None]
    assert len(offsets) == len(found), "every run has an eta"
    assert all(0 <= off <= 1.0 for off in offsets), offsets
    assert max(offsets) - min(offsets) > 0.01, f"random, not one fixed delay: {offsets}"


def test_pause_and_resume_a_running_beat_from_another_process(app, env, tmp_path, start_beat):
    path = write_schedule(tmp_path / "s.yaml", {"tick": tick(), "other": tick()})
    beat = start_beat(path)
    wait_for(lambda: slots(app, "tick"), 5, "a run")

    paused = cli(env, "schedule", "pause", "tick")
    paused_at = time.time()
    assert paused.returncode == 0 and "paused tick" in paused.stdout, show(paused)
    wait_for(lambda: max(slots(app, "other")) >= paused_at + 1, 3, "a paused second")
    listing = cli(env, "schedule", "list")
    assert "tick (paused):" in listing.stdout, show(listing)
    resuming_at = time.time()
    resumed = cli(env, "schedule", "resume", "tick")
    resumed_at = time.time()
    assert resumed.returncode == 0 and "resumed tick" in resumed.stdout, show(resumed)
    wait_for(lambda: max(slots(app, "tick")) > resumed_at, 3, "a run after resume")

    found = slots(app, "tick")
    assert not [s for s in found if paused_at < s <= resuming_at], found
    assert len(set(found)) == len(found)
    assert "is paused; run of" in beat.log()

    unknown = cli(env, "schedule", "pause", "no-such-entry")
    assert unknown.returncode == 1, show(unknown)
    assert "no entry 'no-such-entry'" in unknown.stderr and "tick" in unknown.stderr


def test_editing_the_schedule_file_takes_effect_without_a_restart(app, tmp_path, start_beat):
    path = write_schedule(tmp_path / "s.yaml", {"a": tick(args=[1, 1]), "b": tick()})
    beat = start_beat(path)
    wait_for(lambda: slots(app, "a") and slots(app, "b"), 5, "a and b to run")

    edited_at = time.time()
    write_schedule(path, {"a": tick(args=[2, 2]), "c": tick()})

    def runs_of(name: str, args: list[int] | None = None) -> list[float]:
        return [s for n, s, m in sent(app) if n == name and (args is None or m.args == args)]

    wait_for(lambda: runs_of("a", [2, 2]) and runs_of("c"), 4, "the edit to take effect")
    assert time.time() - edited_at < scaled(2.5)
    first_c = min(runs_of("c"))
    wait_for(lambda: max(runs_of("a")) >= first_c + 1, 3, "a further run")
    assert max(runs_of("b")) < first_c, "b removed: no run after the reload"
    assert max(runs_of("a", [1, 1])) < min(runs_of("a", [2, 2]))
    a_slots = runs_of("a")
    assert len(set(a_slots)) == len(a_slots)

    # A broken edit is refused with its file and line; the running schedule goes on.
    text = path.read_text().replace("every: 1s", "evry: 1s", 1)
    bad_line = text.splitlines().index("    evry: 1s") + 1
    replace_text(path, text)
    refused = wait_for(
        lambda: [ln for ln in beat.log().splitlines() if "schedule change refused" in ln],
        4,
        "the broken edit to be refused",
    )
    assert f"{path}:{bad_line}:" in refused[0] and "evry" in refused[0]
    refused_at = time.time()
    wait_for(lambda: max(runs_of("a")) > refused_at + 1, 3, "a to keep running")
    assert max(runs_of("c")) > refused_at
    assert max(runs_of("a")) in runs_of("a", [2, 2])


def test_a_standby_takes_over_with_the_schedule_as_edited_while_it_stood_by(
    app, env, tmp_path, start_beat
):
    path = write_schedule(tmp_path / "s.yaml", {"a": tick()})
    first = start_beat(path, ttl=1.5)
    wait_for(lambda: leader(app), 5, "the first beat to lead")
    second = start_beat(path, ttl=1.5)
    wait_for(lambda: slots(app, "a"), 5, "a run")
    old = led_by(app, [first, second])
    new = second if old is first else first

    write_schedule(path, {"a": tick(), "c": tick()})
    wait_for(lambda: "c" in app.broker.beat_entries(), 4, "the leader to add c")
    paused = cli(env, "schedule", "pause", "c")
    paused_at = time.time()
    assert paused.returncode == 0, show(paused)
    old.signal(signal.SIGTERM)
    wait_for(lambda: leader_pid(app) == new.pid, 2, "the standby to lead")
    last = max(slots(app, "a"))
    wait_for(lambda: max(slots(app, "a")) >= last + 2, 4, "two more runs")

    assert app.broker.beat_entries()["c"].paused, "the pause outlives the change of leader"
    assert [s for s in slots(app, "c") if s > paused_at] == []
    assert_each_slot_once(slots(app, "a"), 3)


def test_status_without_a_beat_and_a_bad_schedule_file(app, env, tmp_path):
    status = cli(env, "beat", "status")
    assert status.returncode == 1, show(status)
    assert "leader: none" in status.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "timezone: UTC\nschedules:\n  ok: {task: tests.proj.tasks.add, every: 1s}\n"
        "  broken:\n    task: tests.proj.tasks.add\n    every: 1 fortnight\n"
    )
    proc = cli(env, "beat", "-s", str(bad), "--lease-ttl", "1")
    assert proc.returncode == 2, show(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {bad}:6: entry 'broken'"), show(proc)
    assert "Traceback" not in proc.stderr


@BOTH
def test_two_workers_with_beats_share_the_tasks_and_the_survivor_takes_over(
    app, tmp_path, start_worker
):
    from beatq import AsyncResult
    from tests.proj.tasks import sq_host

    path = write_schedule(
        tmp_path / "s.yaml", {"tick": tick("tests.proj.tasks.sq_host", [], options={})}
    )
    args = ["-B", "-s", str(path), "--lease-ttl", "1.5", "-P", "threads", "-c", "2"]
    workers = [start_worker(*args, "--prefetch-multiplier", "1") for _ in range(2)]
    by_pid = {w.pid: w for w in workers}
    first = by_pid[wait_for(lambda: leader_pid(app), 10, "a leader")]
    wait_for(lambda: entry_info(app, "tick").get("runs", 0) >= 2, 10, "two ticks")
    assert [w for w in workers if "is the leader now" in w.log()] == [first]

    results = [sq_host.delay(0.2) for _ in range(12)]
    ran_on = {r.get(timeout=scaled(15)) for r in results}
    assert ran_on == {w.name for w in workers}, "both workers took tasks"
    tick_result = AsyncResult(entry_info(app, "tick")["last_task_id"], app=app)
    assert tick_result.get(timeout=scaled(10)) in ran_on

    # the leader dies: the other beat takes over within the lease, and ticks go on
    runs = entry_info(app, "tick")["runs"]
    os.kill(first.pid, signal.SIGKILL)
    first.wait(5)
    survivor = next(w for w in workers if w is not first)
    wait_for(lambda: leader_pid(app) == survivor.pid, 10, "the standby beat to take over")
    wait_for(lambda: entry_info(app, "tick")["runs"] >= runs + 2, 10, "ticks after takeover")
    tick_result = AsyncResult(entry_info(app, "tick")["last_task_id"], app=app)
    assert tick_result.get(timeout=scaled(10)) == survivor.name
