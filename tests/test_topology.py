"""`beatq status` and the dashboard show what the backend runs on (master, replicas and their
lag, sentinels, a SQLite file) and the backend URL each process uses, never a password.

Real processes throughout: workers and beats started through the CLI on the test Redis
(logged in as an ACL user of the test's own, so the URL carries a password), a master with
replicas and sentinels (tests/sentinels.py) killed with `kill -9`, and the dashboard read
over HTTP and in a headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from beatq import Beatq
from beatq.beat.presence import INTERVAL
from beatq.brokers import Outgoing, connect
from beatq.brokers.urls import shown_url
from beatq.dashboard.api import Dashboard
from tests.conftest import WorkerProcess, scaled, wait_for
from tests.sentinels import MASTER_PASSWORD, SENTINEL_PASSWORD, SERVICE, Topology
from tests.test_beat_e2e import start_beat, tick, write_schedule
from tests.test_cli import TIME_WITH_OFFSET, beatq, show
from tests.test_dashboard import (
    browser,
    http,
    row_text,
    shots,
    start_cli,
    start_dashboard,
    text_of,
)
from tests.test_sentinel import FAILOVER_BOUND, SENTINEL_OPTIONS

# the fixtures of test_dashboard.py and test_beat_e2e.py, used here
__all__ = ["browser", "shots", "start_beat", "start_cli", "start_dashboard"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        (
            "rediss://user:p%40w@h/0?password=x&socket_timeout=1",
            "rediss://user:***@h/0?password=***&socket_timeout=1",
        ),
        ("sentinel://:pw@h1:1,h2:2/mymaster/0", "sentinel://:***@h1:1,h2:2/mymaster/0"),
        ("unix:///run/redis.sock?password=x&db=1", "unix:///run/redis.sock?password=***&db=1"),
        ("sentinel+tls://h1/m?ssl_password=k", "sentinel+tls://h1/m?ssl_password=***"),
        ("sqlite:////var/beatq.db", "sqlite:////var/beatq.db"),
    ],
)
def test_shown_url_masks_every_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert shown_url(shown) == shown  # masking again changes nothing


# -- Redis: a worker and a beat, with a password in their URL --------------------------------
@pytest.fixture
def secret_url(redis_url: str) -> Iterator[tuple[str, str]]:
    """The test Redis's URL as an ACL user of this test's own, and that user's password."""
    user, password = f"topo-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all"],
    )
    try:
        yield redis_url.replace("redis://", f"redis://{user}:{password}@"), password
    finally:
        admin.acl_deluser(user)
        admin.close()


@pytest.mark.backends("redis")
def test_status_shows_the_master_and_each_process_url_without_the_password(
    app, env, secret_url, start_worker, tmp_path: Path
) -> None:
    url, password = secret_url
    shown = url.replace(password, "***")
    secret = {**env, "BEATQ_BROKER_URL": url}
    worker = start_worker("-P", "threads", "-c", "1", extra_env={"BEATQ_BROKER_URL": url})
    schedule = write_schedule(tmp_path / "beat.yaml", {"t": tick()})
    argv = ["-A", "tests.proj", "beat", "-s", str(schedule), "--lease-ttl", "1.5", "-l", "info"]
    beat = WorkerProcess(argv, secret, tmp_path / "beat.log")
    try:
        leading = wait_for(
            lambda: [b for b in app.broker.beats().values() if json.loads(b)["leader"]],
            30,
            "the beat to lead and say so",
        )
        assert json.loads(leading[0])["pid"] == beat.pid

        proc = beatq(secret, "status")
        assert proc.returncode == 0, show(proc)
        assert password not in proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        port = url.rsplit(":", 1)[1].split("/")[0]
        assert lines[0] == f"backend {shown} (redis)"
        assert re.fullmatch(rf"  master 127\.0\.0\.1:{port}: ok, Redis \d+\.\d+\.\d+", lines[1])
        assert re.fullmatch(
            rf"-> {worker.name}: OK  pool threads×1, .*, up since {TIME_WITH_OFFSET}, "
            rf"broker {re.escape(shown)}",
            lines[2],
        ), show(proc)
        assert re.fullmatch(
            rf"-> beat \S+:{beat.pid}:\w+: leader \(token \d+\), pid {beat.pid}, "
            rf"up since {TIME_WITH_OFFSET}, broker {re.escape(shown)}",
            lines[3],
        ), show(proc)
        assert lines[-1] == "1 worker alive"

        data = json.loads(beatq(secret, "status", "--json").stdout)
        master = data["backend"]["shards"][0]["master"]
        assert (data["backend"]["kind"], master["role"], master["status"]) == (
            "redis",
            "master",
            "ok",
        )
        assert data["backend"]["url"] == shown and data["workers"][worker.name]["broker"] == shown
        (info,) = data["beats"].values()
        assert (info["pid"], info["leader"], info["broker"]) == (beat.pid, True, shown)
        assert info["result_backend"] == shown and info["started_ts"] <= time.time()

        beat.stop()  # a clean stop unregisters the beat at once
        assert app.broker.beats() == {}
        assert "-> beat" not in beatq(secret, "status").stdout
        for log in (worker.log(), beat.log_path.read_text()):
            assert password not in log
    finally:
        beat.stop()


@pytest.mark.backends("redis", "sqlite")
def test_a_beat_killed_9_leaves_status_within_three_heartbeats(app, start_beat, tmp_path) -> None:
    beat = start_beat(write_schedule(tmp_path / "beat.yaml", {"t": tick()}))
    wait_for(lambda: app.broker.beats(), 10, "the beat's first heartbeat")
    beat.signal(signal.SIGKILL)
    beat.wait()
    gone = time.monotonic()
    wait_for(lambda: not app.broker.beats(), 3 * INTERVAL + 2, "the dead beat to expire")
    assert time.monotonic() - gone <= scaled(3 * INTERVAL + 2)


@pytest.mark.backends("sqlite")
def test_status_names_the_sqlite_file_its_journal_and_size(app, env) -> None:
    proc = beatq(env, "status")
    assert proc.returncode == 1, show(proc)  # no worker: exit 1, the backend is shown still
    path = env["BEATQ_BROKER_URL"].removeprefix("sqlite:///")
    lines = proc.stdout.splitlines()
    assert lines[0] == f"backend {env['BEATQ_BROKER_URL']} (sqlite)"
    assert re.fullmatch(rf"  file {re.escape(path)}: journal wal, \d+\.\d KiB", lines[1])
    backend = json.loads(beatq(env, "status", "--json").stdout)["backend"]
    assert (backend["path"], backend["journal_mode"]) == (path, "wal") and backend["size"] > 0


@pytest.mark.backends("cluster")
def test_status_shows_each_shard_with_its_slots_replicas_and_queues(app, env) -> None:
    queues = ["alpha", "beta", "gamma", "delta"]
    app.broker.send([Outgoing(q, f"m-{q}", b"x") for q in queues])
    proc = beatq(env, "status")
    lines = proc.stdout.splitlines()
    assert lines[0] == f"backend {env['BEATQ_BROKER_URL']} (cluster)", show(proc)
    shards = [line for line in lines if line.startswith("  shard ")]
    assert len(shards) == 3, show(proc)
    held: list[str] = []
    for line in shards:
        found = re.fullmatch(
            r"  shard slots (\d+)-(\d+): master 127\.0\.0\.1:\d+: ok, Redis \S+(?:; queues (.+))?",
            line,
        )
        assert found, show(proc)
        held += found[3].split(", ") if found[3] else []
    assert sorted(held) == sorted(queues)  # each queue on one shard (contract: its slot)
    assert sum(line.startswith("    replica ") for line in lines) == 3
    board = Dashboard(app)  # the dashboard's card: a row per node, with its shard's slots
    try:
        card = board.snapshot()["topology"]
    finally:
        board.close()
    assert card["kind"] == "cluster" and len(card["shards"]) == 3
    assert sorted(q for shard in card["shards"] for q in shard["queues"]) == sorted(queues)
    assert all(re.fullmatch(r"\d+-\d+", shard["slots"]) for shard in card["shards"])


# -- Sentinel: the master the sentinels name, its replicas, and a failover -------------------
@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[Topology]:
    folder = tmp_path / "redis"
    folder.mkdir()
    found = Topology(folder)
    try:
        found.start()
        yield found
    finally:
        found.stop()


def test_status_follows_the_sentinels_master_and_replicas_through_a_kill_9(
    sentinels: Topology, tmp_path: Path
) -> None:
    url = sentinels.url()
    env = {
        **os.environ,
        "BEATQ_BROKER_URL": url,
        "BEATQ_TEST_TRANSPORT": json.dumps(SENTINEL_OPTIONS),
        "BEATQ_TEST_PREFIX": f"bqtopo-{uuid.uuid4().hex[:6]}",
    }
    proc = beatq(env, "status")
    assert MASTER_PASSWORD not in proc.stdout + proc.stderr, show(proc)
    assert SENTINEL_PASSWORD not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    first = sentinels.first_master
    assert lines[0] == f"backend {shown_url(url)} (sentinel)", show(proc)
    assert re.fullmatch(rf"  master 127\.0\.0\.1:{first} \('{SERVICE}'\): ok, Redis \S+", lines[1])
    replicas = {f"127.0.0.1:{p}" for p in sentinels.replica_ports}
    for line in lines[2:4]:
        found = re.fullmatch(r"    replica (\S+): ok, lag (\d+) s, (\S+ \w+) behind", line)
        assert found and found[1] in replicas, show(proc)
    assert lines[4] == "  sentinels: " + ", ".join(
        f"127.0.0.1:{p} ok" for p in sentinels.sentinel_ports
    )
    assert lines[5] == "  failovers: none (epoch 0)"

    store = connect(url, {"global_keyprefix": env["BEATQ_TEST_PREFIX"], **SENTINEL_OPTIONS})
    try:
        killed = time.time()
        sentinels.kill(first)

        def switched() -> dict | None:
            try:
                seen = store.topology()
            except Exception:  # noqa: BLE001 (no master while the sentinels decide)
                return None
            master = seen.shards[0].master
            down = [r for r in seen.shards[0].replicas if r.address == f"127.0.0.1:{first}"]
            done = master.address != f"127.0.0.1:{first}" and down and seen.epoch
            return seen.to_dict() if done else None

        seen = wait_for(switched, FAILOVER_BOUND, "status to name the new master")
    finally:
        store.close()
    master = seen["shards"][0]["master"]["address"]
    assert master in replicas
    assert killed - 1 <= seen["last_failover"] <= time.time()

    def status(*args: str) -> str:
        """status's output once it reaches a master (the sentinels may fail over twice in
        a row, unreachable a moment again: exit 4)."""
        done = wait_for(
            lambda: (p := beatq(env, "status", *args)).returncode in (0, 1) and p,
            FAILOVER_BOUND,
            "status to reach the master",
        )
        return done.stdout

    data = json.loads(status("--json"))["backend"]
    shard = data["shards"][0]
    assert data["epoch"] >= 1 and shard["master"]["status"] == "ok"
    assert shard["master"]["address"] in replicas
    statuses = {r["address"]: r["status"] for r in shard["replicas"]}
    assert statuses[f"127.0.0.1:{first}"] == "down"  # the killed master, as the sentinels say
    assert killed - 1 <= data["last_failover_ts"] <= time.time()
    text = status()
    assert re.search(rf"  failovers: epoch \d+, the last at {TIME_WITH_OFFSET}", text), text
    assert MASTER_PASSWORD not in text

    # the dashboard's card says the same, times in the app's zone with their offset
    app = Beatq("topo", broker=url)
    app.conf.broker_transport_options = {
        "global_keyprefix": env["BEATQ_TEST_PREFIX"],
        **SENTINEL_OPTIONS,
    }
    board = Dashboard(app)
    try:
        card = board.snapshot()["topology"]
    finally:
        board.close()
        app.close()
    assert (card["kind"], card["service"]) == ("sentinel", SERVICE)
    assert card["shards"][0]["master"]["address"] in replicas
    assert [n["status"] for n in card["sentinels"]] == ["ok"] * 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+00:00", card["last_failover"])
    assert MASTER_PASSWORD not in json.dumps(card) and SENTINEL_PASSWORD not in json.dumps(card)

    # a sentinel that does not answer is named, and the others still name the master
    gone = sentinels.sentinel_ports[0]
    sentinels.watchers[gone].kill()
    sentinels.watchers[gone].wait()
    lines = status().splitlines()
    said = [line for line in lines if line.startswith("  sentinels: ")]
    assert said and said[0].startswith(f"  sentinels: 127.0.0.1:{gone} unreachable: "), lines
    assert said[0].endswith(", ".join(f"127.0.0.1:{p} ok" for p in sentinels.sentinel_ports[1:]))
    named = re.fullmatch(rf"  master (\S+) \('{SERVICE}'\): ok, Redis \S+", lines[1])
    assert named and named[1] in replicas, lines


# -- the dashboard: the backend card, over HTTP and in Chromium -------------------------------
@pytest.mark.backends("redis")
def test_the_dashboard_shows_the_backend_and_each_process_url(
    app, env, secret_url, start_worker, start_cli, browser, shots, tmp_path: Path
) -> None:
    url, password = secret_url
    shown = url.replace(password, "***")
    secret = {"BEATQ_BROKER_URL": url}
    worker = start_worker("-P", "threads", "-c", "1", extra_env=secret)
    schedule = write_schedule(tmp_path / "beat.yaml", {"t": tick()})
    beat = start_cli(
        "beat",
        "-s",
        str(schedule),
        "--lease-ttl",
        "1.5",
        "-l",
        "info",
        marker=" starting: ",
        extra_env=secret,
    )
    board = start_cli("dashboard", "--port", "0", marker="dashboard on", extra_env=secret)
    page = re.search(r"dashboard on (http://\S+/)", board.log())[1]

    def state() -> dict:
        status, _, body = http(page + "api/state")
        assert status == 200, body
        assert password.encode() not in body
        return json.loads(body)

    def led() -> dict | None:
        now = state()
        return now if any(b["leader"] for b in now["beats"]) else None

    found = wait_for(led, 30, "the beat leading, in the snapshot")
    topo = found["topology"]
    assert (topo["kind"], topo["url"]) == ("redis", shown)
    assert topo["shards"][0]["master"]["role"] == "master"
    assert topo["dashboard"] == {"broker": shown, "result_backend": shown}
    (row,) = [w for w in found["workers"] if w["hostname"] == worker.name]
    assert row["broker"] == shown and found["beats"][0]["broker"] == shown

    status, _, html = http(page)  # the first snapshot comes with the page
    assert status == 200 and b'"topology"' in html and password.encode() not in html

    browser.get(page)
    port = url.rsplit(":", 1)[1].split("/")[0]
    server = wait_for(lambda: row_text(browser, "#topology tr.node", f":{port}"), 10, "the master")
    assert "master" in server and "ok" in server
    assert text_of(browser, "#backend-url") == shown
    beat_row = wait_for(
        lambda: row_text(browser, "#processes tr.process", f":{beat.pid}:"), 10, "the beat's row"
    )
    assert "beat (leader)" in beat_row and shown in beat_row
    assert shown in row_text(browser, "#processes tr.process", worker.name)
    assert shown in row_text(browser, "#processes tr.process", "this dashboard")
    assert password not in browser.page_source
    assert shots(browser, "backend").stat().st_size > 10_000

    beat.stop()  # the live update drops it
    wait_for(
        lambda: not row_text(browser, "#processes tr.process", f":{beat.pid}:"),
        scaled(5),
        "the stopped beat to leave the page",
    )
    for log in (worker.log(), beat.log_path.read_text(), board.log()):
        assert password not in log
