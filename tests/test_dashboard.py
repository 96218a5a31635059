"""The web dashboard, driven in a real headless Chromium against real worker and beat processes.

Everything is started through the CLI (`beatq worker`, `beatq beat`, `beatq dashboard
--port 0`). The browser runs in America/Los_Angeles and the dashboard process in
Europe/London, so a time shown in the app's or an entry's zone cannot be right by
accident. Each test saves screenshots (BEATQ_TEST_SCREENSHOTS=DIR keeps them there, else
in the test's tmp dir) to be looked at by a person.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from beatq.brokers import Outgoing
from beatq.dashboard import timefmt
from tests.conftest import ROOT, WorkerProcess, scaled, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_ZONE = "America/Los_Angeles"
SERVER_ZONE = "Europe/London"


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module, through Debian's chromedriver (no downloads)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1440,900",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    service = Service(CHROMEDRIVER, env={**os.environ, "TZ": BROWSER_ZONE})
    driver = webdriver.Chrome(service=service, options=options)
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """`shots(browser, "name")` saves a full-page screenshot and returns its path."""
    folder = Path(os.environ.get("BEATQ_TEST_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def take(driver: Any, name: str) -> Path:
        # the whole page, not just the window: Chromium's own capture beyond the viewport
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        path = folder / f"{request.node.name}-{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    return take


@pytest.fixture
def start_cli(app, env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `beatq -A tests.proj ARGS...`, wait for `marker` in its output."""
    started: list[WorkerProcess] = []

    def start(*args: str, marker: str, extra_env: dict[str, str] | None = None) -> WorkerProcess:
        name = f"{args[0]}{len(started)}-{uuid.uuid4().hex[:6]}"
        proc = WorkerProcess(
            ["-A", "tests.proj", *args], {**env, **(extra_env or {})}, tmp_path / f"{name}.log"
        )
        started.append(proc)
        wait_for(
            lambda: marker in proc.log() or proc.process.poll() is not None,
            15,
            f"{' '.join(args)} to start",
        )
        assert proc.process.poll() is None, proc.log()
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def start_dashboard(start_cli) -> Callable[..., str]:
    """Start `beatq dashboard --port 0 ARGS` in SERVER_ZONE; its URL."""

    def start(*args: str) -> str:
        proc = start_cli(
            "dashboard", "--port", "0", *args, marker="dashboard on", extra_env={"TZ": SERVER_ZONE}
        )
        return re.search(r"dashboard on (http://\S+/)", proc.log())[1]

    return start


def write_schedule(path: Path, zone: str, entries: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"timezone": zone, "schedules": entries}, sort_keys=False))
    return path


# -- browser helpers -------------------------------------------------------------------------
def rows(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def row_with(driver: Any, css: str, text: str) -> Any:
    """The first row matching `css` whose text contains `text` (None if there is none)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for row in rows(driver, css):
        try:
            if text in row.text:
                return row
        except StaleElementReferenceException:  # replaced by a live update meanwhile
            continue
    return None


def row_text(driver: Any, css: str, text: str) -> str:
    """The text of the first row matching `css` that contains `text`, or ""."""
    from selenium.common.exceptions import StaleElementReferenceException

    for row in rows(driver, css):
        try:
            found = row.text
        except StaleElementReferenceException:  # replaced by a live update meanwhile
            continue
        if text in found:
            return found
    return ""


def cell_text(driver: Any, css: str, text: str, cell: str) -> str:
    """The text of cell `cell` (CSS) in the first row matching `css` containing `text`."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for row in rows(driver, css):
        try:
            if text in row.text:
                return row.find_element(By.CSS_SELECTOR, cell).text
        except StaleElementReferenceException:
            continue
    return ""


def text_of(driver: Any, css: str) -> str:
    found = rows(driver, css)
    return found[0].text if found else ""


def click(driver: Any, css: str, key: str, button: str, timeout: float = 10) -> None:
    """Click `button` (CSS) in the row matching `css` that contains `key`."""
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.by import By

    def attempt() -> bool:
        row = row_with(driver, css, key)
        if row is None:
            return False
        try:
            row.find_element(By.CSS_SELECTOR, button).click()
            return True
        except (StaleElementReferenceException, ElementClickInterceptedException):
            return False

    wait_for(attempt, timeout, f"to click {button} in the row with {key!r}")


def live(driver: Any) -> bool:
    return text_of(driver, "#live") == "live"


# -- HTTP helpers ----------------------------------------------------------------------------
def http(
    url: str, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


# -- tests -----------------------------------------------------------------------------------
def test_the_page_lists_a_live_worker_and_its_queues(
    app, start_worker, start_dashboard, browser, shots
):
    worker = start_worker("-P", "threads", "-c", "3", "-Q", "celery,priority.high")
    url = start_dashboard()
    browser.get(url)
    text = wait_for(lambda: row_text(browser, "#workers tr.worker", worker.name), 10, "the worker")
    assert "0/3 busy" in text and "threads ×3" in text
    assert "celery, priority.high" in text
    started = re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ([+-]\d\d:\d\d)", text)
    assert started and started[1] == "+00:00", "tests.proj runs in UTC: started at ... +00:00"
    assert text_of(browser, "#sum-workers") == "1"
    assert worker.name in row_text(browser, "#queues tr.queue", "priority.high")
    path = shots(browser, "worker")
    assert path.stat().st_size > 10_000


def test_schedule_shows_next_run_in_the_entrys_zone_and_pause_resume(
    app, tmp_path, start_cli, start_dashboard, browser, shots
):
    schedule = write_schedule(
        tmp_path / "shanghai.yaml",
        "Asia/Shanghai",
        {
            "morning-report": {
                "task": "tests.proj.tasks.add",
                "cron": "30 7 * * *",
                "args": [1, 2],
                "options": {"queue": "beat-out"},
            },
            "tick": {"task": "tests.proj.tasks.add", "every": "1s", "args": [1, 1],
                     "options": {"queue": "beat-out"}},
        },
    )  # fmt: skip
    beat = start_cli(
        "beat", "-s", str(schedule), "--lease-ttl", "2", "-l", "info", marker="is the leader now"
    )
    holder = wait_for(lambda: app.broker.get_lease("beat"), 10, "the lease").holder
    url = start_dashboard()
    browser.get(url)

    text = wait_for(
        lambda: row_text(browser, "#schedules tr.entry", "morning-report"), 10, "the entry"
    )
    next_run = cell_text(browser, "#schedules tr.entry", "morning-report", ".next-run")
    next_run = next_run.splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d 07:30:00 \+08:00", next_run[0]), next_run
    assert re.fullmatch(r"\d{4}-\d\d-\d\d 23:30:00 UTC", next_run[1]), next_run
    assert next_run[2].startswith("in "), next_run
    assert "30 7 * * *" in text and "Asia/Shanghai" in text

    # the leader and its lease
    assert wait_for(lambda: text_of(browser, "#leader-holder") == holder, 5, "the holder")
    leader_text = text_of(browser, "#leader")
    assert re.search(r"Leading since\n\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+00:00", leader_text)
    assert "unless renewed" in leader_text

    # the tick entry runs: last run and lateness appear, in Shanghai time
    wait_for(
        lambda: "+08:00" in (t := row_text(browser, "#schedules tr.entry", "tick"))
        and " ms" in t,
        10,
        "tick's last run and lateness",
    )  # fmt: skip
    # the entries' queue is listed, with the messages no worker has taken yet
    wait_for(
        lambda: int(cell_text(browser, "#queues tr.queue", "beat-out", ".depth") or 0) >= 1,
        5,
        "the entries' queue and its depth",
    )
    shots(browser, "schedules")

    click(browser, "#schedules tr.entry", "tick", "button.pause")
    wait_for(lambda: app.broker.beat_entries()["tick"].paused, 5, "tick paused in the broker")
    wait_for(
        lambda: (
            "paused" in (t := row_text(browser, "#schedules tr.entry", "tick")) and "Resume" in t
        ),
        5,
        "the page to show tick paused",
    )
    wait_for(lambda: "is paused; run of" in beat.log(), 5, "the beat to skip a paused run")
    shots(browser, "paused")

    click(browser, "#schedules tr.entry", "tick", "button.pause")  # now labelled Resume
    wait_for(lambda: not app.broker.beat_entries()["tick"].paused, 5, "tick resumed")
    wait_for(
        lambda: "active" in row_text(browser, "#schedules tr.entry", "tick"),
        5,
        "the page to show tick active",
    )
    assert not app.broker.beat_entries()["morning-report"].paused


def test_a_click_on_requeue_puts_a_dead_letter_back_in_its_queue(
    app, start_dashboard, browser, shots
):
    message, body = app.build_message("tests.proj.tasks.add", (2, 3), queue="dash-dead")
    app.broker.send([Outgoing("dash-dead", message.id, body)])
    (claim,) = app.broker.claim(["dash-dead"], 1, 60).claims
    app.broker.dead_letter(claim, "rejected: the test put it here")
    url = start_dashboard()
    browser.get(url)

    text = wait_for(
        lambda: row_text(browser, "#dead tr.dead-letter", message.id[:8]), 10, "the letter"
    )
    assert "tests.proj.tasks.add" in text and "dash-dead" in text
    assert "rejected: the test put it here" in text and "2, 3" in text
    assert text_of(browser, "#sum-dead") == "1"
    shots(browser, "dead-letter")

    click(browser, "#dead tr.dead-letter", message.id[:8], "button.requeue")
    wait_for(lambda: not app.broker.dead_letters(), 5, "the dead letter to leave")
    assert app.broker.queue_length("dash-dead") == 1
    wait_for(lambda: not rows(browser, "#dead tr.dead-letter"), 5, "the row to go")
    wait_for(
        lambda: cell_text(browser, "#queues tr.queue", "dash-dead", ".depth") == "1",
        5,
        "the queue to show the message back",
    )
    assert text_of(browser, "#sum-dead") == "0"
    shots(browser, "requeued")


def test_refuses_to_listen_beyond_loopback_without_auth(env):
    argv = [sys.executable, "-m", "beatq", "-A", "tests.proj", "dashboard", "--host", "0.0.0.0"]
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "Error: refusing to serve the dashboard on 0.0.0.0 without authentication: "
        "add --token TOKEN or --basic-auth USER:PASSWORD, or bind to 127.0.0.1"
    )


def test_token_and_basic_auth_guard_every_request(app, start_dashboard, browser):
    token = uuid.uuid4().hex
    url = start_dashboard("--host", "0.0.0.0", "--token", token)
    api = url.replace("0.0.0.0", "127.0.0.1") + "api/state"
    status, headers, body = http(api)
    assert status == 401 and "authentication required" in json.loads(body)["error"]
    assert http(api, {"Authorization": "Bearer wrong"})[0] == 401
    status, _, body = http(api, {"Authorization": f"Bearer {token}"})
    assert status == 200 and json.loads(body)["zone"] == "UTC"
    # an action needs the header no other origin can send without a preflight
    requeue = url.replace("0.0.0.0", "127.0.0.1") + "api/dead-letters/requeue"
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert http(requeue, auth, b'{"all": true}')[0] == 403
    assert http(requeue, {**auth, "X-Beatq": "1"}, b'{"all": true}')[0] == 200

    # a browser opens /?token=…, which keeps it in a cookie and drops it from the address
    browser.delete_all_cookies()
    browser.get(url.replace("0.0.0.0", "127.0.0.1") + f"?token={token}")
    wait_for(lambda: live(browser), 10, "the page to go live with the token cookie")
    assert "token" not in browser.current_url
    browser.delete_all_cookies()

    url = start_dashboard("--host", "0.0.0.0", "--basic-auth", "admin:s3cret")
    api = url.replace("0.0.0.0", "127.0.0.1") + "api/state"
    status, headers, _ = http(api, basic("admin:wrong"))
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
    assert http(api, basic("admin:s3cret"))[0] == 200


def test_serves_the_embedded_sqlite_broker(app, start_cli, tmp_path):
    """The default broker: the dashboard reads the file other processes write."""
    database = f"sqlite:///{tmp_path / 'beatq.sqlite3'}"
    start_cli(
        "worker",
        "-P",
        "solo",
        "-n",
        "lite",
        "-Q",
        "lite",
        marker="ready",
        extra_env={"BEATQ_BROKER_URL": database},
    )
    proc = start_cli(
        "dashboard", "--port", "0", marker="dashboard on", extra_env={"BEATQ_BROKER_URL": database}
    )
    url = re.search(r"dashboard on (http://\S+/)", proc.log())[1]

    def state() -> dict[str, Any]:
        status, _, body = http(url + "api/state")
        assert status == 200, body
        return json.loads(body)

    data = wait_for(lambda: (d := state())["workers"] and d, 10, "the worker in the file")
    assert data["broker"] == database and data["workers"][0]["hostname"] == "lite"
    assert [q["name"] for q in data["queues"] if q["consumers"] == ["lite"]] == ["lite"]


def test_without_events_a_task_is_found_by_its_id_in_the_result_store(
    app, start_worker, start_dashboard
):
    from tests.proj.tasks import add, fail

    start_worker("-P", "solo")  # no -E: no task events
    done, failed = add.delay(20, 22), fail.delay("no events")
    assert done.get(timeout=scaled(10)) == 42
    failed.get(timeout=scaled(10), propagate=False)
    url = start_dashboard()

    status, _, body = http(url + "api/state")
    tasks = json.loads(body)["tasks"]
    assert status == 200 and tasks["items"] == [] and "-E" in tasks["note"]
    (row,) = json.loads(http(url + f"api/state?q={done.id}")[2])["tasks"]["items"]
    assert (row["id"], row["state"], row["result"]) == (done.id, "SUCCESS", "42")
    status, _, body = http(url + f"api/tasks/{failed.id}")
    detail = json.loads(body)
    assert status == 200 and detail["state"] == "FAILURE"
    assert detail["exception"] == "CustomError: no events"
    assert "raise CustomError(message)" in detail["traceback"]
    status, _, body = http(url + "api/tasks/no-such-task-id")
    assert status == 404 and "no task 'no-such-task-id'" in json.loads(body)["error"]


def test_loopback_dashboard_refuses_foreign_host_names(start_dashboard):
    """A page on another site cannot read a local dashboard through DNS rebinding."""
    url = start_dashboard()
    assert http(url + "api/state")[0] == 200
    assert http(url + "api/state", {"Host": "attacker.example:5555"})[0] == 403


NOV_25_2330_UTC = 1795649400.0  # 2026-11-25 23:30:00 UTC
JUL_02_1410_UTC = 1783001400.0  # 2026-07-02 14:10:00 UTC (daylight saving in New York)


@pytest.mark.parametrize(
    "ts, zone, expected",
    [
        (NOV_25_2330_UTC, "Asia/Shanghai", "2026-11-26 07:30:00 +08:00"),
        (NOV_25_2330_UTC, "UTC", "2026-11-25 23:30:00 +00:00"),
        (NOV_25_2330_UTC, "America/New_York", "2026-11-25 18:30:00 -05:00"),
        (JUL_02_1410_UTC, "America/New_York", "2026-07-02 10:10:00 -04:00"),
        (NOV_25_2330_UTC, "Asia/Kathmandu", "2026-11-26 05:15:00 +05:45"),
    ],
)
def test_times_carry_their_zones_offset(ts, zone, expected):
    from zoneinfo import ZoneInfo

    assert timefmt.zoned(ts, ZoneInfo(zone)) == expected


def test_utc_times_say_utc():
    assert timefmt.utc(NOV_25_2330_UTC) == "2026-11-25 23:30:00 UTC"
    assert timefmt.relative(NOV_25_2330_UTC + 185, NOV_25_2330_UTC) == "in 3m 05s"
    assert timefmt.relative(NOV_25_2330_UTC - 42, NOV_25_2330_UTC) == "42s ago"


def test_tasks_move_to_success_and_failure_with_traceback_search_and_revoke(
    app, start_worker, start_dashboard, browser, shots, request
):
    from tests.proj.tasks import fail, sleep

    sent_events = app.conf.task_send_sent_event
    app.conf.update(task_send_sent_event=True)  # rows appear from the moment a task is sent
    request.addfinalizer(lambda: app.conf.update(task_send_sent_event=sent_events))
    start_worker("-P", "threads", "-c", "2", "-E")
    url = start_dashboard()
    browser.get(url)
    wait_for(lambda: live(browser), 10, "the page to go live")

    slow = sleep.delay(1.5, "dash")
    failed = fail.delay("kaboom")
    # seen before it finishes (sent, received or started: how far it got by the next push)
    unfinished = wait_for(
        lambda: row_text(browser, "#tasks tr.task", slow.id[:8]), 10, "the slow task's row"
    )
    assert unfinished.split()[0] in ("PENDING", "RECEIVED", "STARTED"), unfinished
    shots(browser, "running")
    text = wait_for(
        lambda: "SUCCESS" in (t := row_text(browser, "#tasks tr.task", slow.id[:8])) and t,
        10,
        "the slow task to succeed",
    )
    assert "tests.proj.tasks.sleep" in text and "[1.5, 'dash']" in text and "'dash'" in text
    text = wait_for(
        lambda: "FAILURE" in (t := row_text(browser, "#tasks tr.task", failed.id[:8])) and t,
        10,
        "the failing task to fail",
    )
    assert "CustomError" in text and "kaboom" in text

    # a click on the failed row shows its traceback
    click(browser, "#tasks tr.task", failed.id[:8], "td")
    traceback = wait_for(lambda: text_of(browser, "#tasks tr.detail pre.traceback"), 10, "a tb")
    assert traceback.startswith("Traceback (most recent call last)")
    assert "raise CustomError(message)" in traceback and "CustomError: kaboom" in traceback
    assert failed.id in text_of(browser, "#tasks tr.detail")
    shots(browser, "traceback")

    # search by id, then by name
    search = rows(browser, "#search")[0]
    search.send_keys(failed.id[:13])
    wait_for(lambda: len(rows(browser, "#tasks tr.task")) == 1, 5, "only the failed task")
    assert row_text(browser, "#tasks tr.task", failed.id[:8])
    search.clear()
    search.send_keys("tasks.sleep")
    wait_for(
        lambda: (
            (found := rows(browser, "#tasks tr.task"))
            and len(found) == 1
            and row_text(browser, "#tasks tr.task", slow.id[:8])
        ),
        5,
        "only the sleep task",
    )
    search.clear()
    search.send_keys(" ")  # back to every task
    search.send_keys("\b")

    # revoke a task waiting for its eta: the worker skips it when it comes due
    waiting = sleep.apply_async((0.1, "revoked"), countdown=4)
    click(browser, "#tasks tr.task", waiting.id[:8], "button.revoke")
    wait_for(lambda: waiting.id in app.control.revoked(), 5, "the revocation in the broker")
    wait_for(
        lambda: "REVOKED" in row_text(browser, "#tasks tr.task", waiting.id[:8]),
        10,
        "the page to show the task revoked",
    )
    assert waiting.state == "REVOKED"
    shots(browser, "revoked")
