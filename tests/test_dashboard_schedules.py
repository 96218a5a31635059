"""The dashboard manages run-time schedule entries (issue 23): the form that adds and changes
a store entry, Run now, Backfill, and each entry's recent runs as a chart and a table.

Driven in a real headless Chromium against real `beatq worker`, `beatq beat` and `beatq
dashboard` processes (fixtures of test_dashboard.py); what the page did is read back from
the broker. Then the new endpoints' refusals, over plain HTTP.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests import test_dashboard
from tests.conftest import scaled, wait_for
from tests.test_beat_e2e import OUT, sent
from tests.test_dashboard import live, row_text, rows, text_of, write_schedule
from tests.test_dashboard_http import exchange, request, statuses
from tests.test_schedule_store import runs_of

browser = test_dashboard.browser
shots = test_dashboard.shots
start_cli = test_dashboard.start_cli
start_dashboard = test_dashboard.start_dashboard
http = test_dashboard.http

BOTH = pytest.mark.backends("redis", "sqlite")
JSON_POST = {"X-Beatq": "1", "Content-Type": "application/json"}


# -- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def beat_file(tmp_path: Path) -> Path:
    """A schedule file with one entry: the page shows it read-only, with its file and line."""
    return write_schedule(
        tmp_path / "jobs.yaml",
        "UTC",
        {"from-file": {"task": "tests.proj.tasks.add", "every": "1h", "args": [1, 1]}},
    )


def start_beat(start_cli, schedule: Path) -> Any:
    return start_cli(
        "beat", "-s", str(schedule), "--lease-ttl", "2", "-l", "info", marker="is the leader now"
    )


def element(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def fill(driver: Any, values: dict[str, str]) -> None:
    """Type `values` into the entry form's boxes (each emptied first)."""
    for name, value in values.items():
        box = element(driver, f"#entry-form input[name={name}]")
        box.clear()
        box.send_keys(value)


def field_error(driver: Any, field: str) -> str:
    return text_of(driver, f'#entry-form .field-error[data-field="{field}"]')


def marks(driver: Any) -> list[tuple[str, str]]:
    """The chart's outcome marks, oldest first: (class, title), read in one step (the
    chart is drawn again as runs come)."""
    return [
        tuple(pair)
        for pair in driver.execute_script(
            "return [...document.querySelectorAll('#chart rect.mark')]"
            ".map((r) => [r.getAttribute('class'), r.textContent]);"
        )
    ]


def section_shot(driver: Any, shots: Any, css: str, name: str) -> Path:
    """A screenshot of one part of the page (README's images), beside the full-page ones."""
    path = shots(driver, name)
    box = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return {x: r.left + window.scrollX, y: r.top + window.scrollY,"
        " width: r.width, height: r.height};",
        element(driver, css),
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": {**box, "scale": 1}},
    )
    part = path.with_name(path.stem + "-part.png")
    part.write_bytes(base64.b64decode(shot["data"]))
    return part


def store_names(app) -> list[str]:
    return [e.name for e in app.schedules.list() if e.source == "store"]


def open_panel(driver: Any, name: str) -> None:
    test_dashboard.click(driver, "#schedules tr.entry", name, "button.open")
    wait_for(lambda: text_of(driver, "#panel-title").startswith(f"{name}:"), 10, f"{name}'s panel")


def message(driver: Any, starts: str) -> str:
    return wait_for(
        lambda: (t := text_of(driver, "#panel-message")).startswith(starts) and t,
        10,
        f"the panel to say {starts!r}",
    )


# -- the browser -----------------------------------------------------------------------------
@BOTH
def test_add_in_the_form_see_runs_in_the_chart_edit_pause_run_now_and_remove(
    app, beat_file, start_worker, start_cli, start_dashboard, browser, shots
):
    start_worker("-P", "threads", "-c", "2")
    start_beat(start_cli, beat_file)
    url = start_dashboard()
    browser.get(url)
    wait_for(lambda: live(browser), 10, "the page to go live")

    # a file entry: shown with its source, no edit or remove; run now and backfill stay
    wait_for(lambda: row_text(browser, "#schedules tr.entry", "from-file"), 10, "the file entry")
    open_panel(browser, "from-file")
    assert text_of(browser, "#panel-source") == (
        f"defined in {beat_file}:3: read-only here, change it there"
    )
    assert not element(browser, "#edit-entry").is_displayed()
    assert not element(browser, "#remove-entry").is_displayed()
    assert element(browser, "#run-now").is_displayed()

    # add an entry through the form: it runs, and its first run shows in the chart and table
    element(browser, "#new-entry").click()
    fill(
        browser,
        {
            "name": "nap",
            "task": "tests.proj.tasks.sleep",
            "schedule": "2s",
            "args": '[0.3, "dash"]',
            "timezone": "Asia/Shanghai",
        },
    )
    shots(browser, "form")
    element(browser, "#form-save").click()
    message(browser, "Added nap")
    assert not element(browser, "#entry-form").is_displayed()
    stored = app.schedules.get("nap")
    assert (stored.source, stored.spec["every"]) == ("store", 2.0)
    assert stored.spec["args"] == [0.3, "dash"]
    assert stored.spec["timezone"] == "Asia/Shanghai"
    wait_for(
        lambda: len(rows(browser, "#chart rect.col.took.ok")) >= 3, 20, "three runs in the chart"
    )
    first = app.schedules.history("nap", 10)[-1]
    assert first.state == "SUCCESS" and first.took is not None and first.took >= 0.3
    run = row_text(browser, "#runs tr.run", "SUCCESS")
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+08:00", run), run  # the entry's zone
    assert "schedule" in run and " ms" in run
    assert text_of(browser, "#backfill-zone") == "times in Asia/Shanghai"

    # edit: another task and schedule; the form starts from the stored values
    element(browser, "#edit-entry").click()
    form = element(browser, "#entry-form")
    assert form.is_displayed()
    assert element(browser, "#entry-form input[name=schedule]").get_attribute("value") == "2s"
    assert element(browser, "#entry-form input[name=name]").get_attribute("readonly") is not None
    fill(browser, {"task": "tests.proj.tasks.fail", "schedule": "1s", "args": '["on purpose"]'})
    element(browser, "#form-save").click()
    message(browser, "Changed nap")
    changed = app.schedules.get("nap")
    assert changed.spec["task"] == "tests.proj.tasks.fail" and changed.spec["every"] == 1.0
    assert changed.spec["timezone"] == "Asia/Shanghai", "a field left as it was stays"
    wait_for(lambda: rows(browser, "#chart rect.mark.failed"), 20, "a failed run marked")
    failed = wait_for(lambda: row_text(browser, "#runs tr.run", "FAILURE"), 10, "a failed row")
    assert "schedule" in failed

    # paused: its slots are skipped, marked so, with the reason on hover
    test_dashboard.click(browser, "#schedules tr.entry", "nap", "button.pause")
    skip = wait_for(lambda: [t for c, t in marks(browser) if "skipped" in c], 10, "a skipped slot")
    assert "not run: paused" in skip[0], skip
    assert "paused" in row_text(browser, "#runs tr.run.skipped", "paused")
    test_dashboard.click(browser, "#schedules tr.entry", "nap", "button.pause")  # resume
    wait_for(lambda: not app.broker.beat_entries()["nap"].paused, 5, "nap resumed")
    wait_for(
        lambda: (found := marks(browser)) and "failed" in found[-1][0], 10, "a run after the pause"
    )
    section_shot(browser, shots, "#schedules-section", "chart")

    # run now: one run, its task id reported
    element(browser, "#run-now").click()
    said = message(browser, "Run now: task ")
    task_id = re.search(r"task (\S+) queued", said)[1]
    wait_for(
        lambda: [r for r in app.schedules.history("nap", 100) if r.kind == "trigger"],
        10,
        "the triggered run in the history",
    )
    time.sleep(scaled(1.0))  # a second run would be sent within the leader's next ticks
    triggered = [r for r in app.schedules.history("nap", 1000) if r.kind == "trigger"]
    assert [r.task_id for r in triggered] == [task_id]
    wait_for(lambda: row_text(browser, "#runs tr.run", "trigger"), 10, "the trigger's row")

    # remove: gone from the store and the table; what ran stays in the history
    browser.execute_script("window.confirm = () => true;")
    element(browser, "#remove-entry").click()
    message(browser, "Removed nap")
    assert "nap" not in app.broker.schedule_specs()[1]
    wait_for(lambda: "nap" not in store_names(app), 10, "the leader to take the removal up")
    wait_for(lambda: not row_text(browser, "#schedules tr.entry", "nap"), 10, "the row to go")
    assert app.schedules.history("nap", 10)


def test_a_refused_entry_shows_the_error_beside_its_field_and_stores_nothing(
    app, start_dashboard, browser, shots
):
    url = start_dashboard()
    browser.get(url)
    wait_for(lambda: live(browser), 10, "the page to go live")
    element(browser, "#new-entry").click()
    good = {"name": "bad", "task": "tests.proj.tasks.add", "schedule": "5s", "args": "[1, 2]"}
    good.update(dict.fromkeys(("kwargs", "timezone", "catchup", "overlap", "end_at"), ""))
    cases = [
        ("schedule", {"schedule": "61 * * * *"}, "schedule entry 'bad', field 'schedule': cron:"),
        ("schedule", {"schedule": "30 2 31 2 *"}, "crontab day_of_month '31'"),
        ("task", {"task": "tests.proj.tasks.ad"}, "did you mean 'tests.proj.tasks.add'?"),
        ("args", {"args": "[1, 2"}, "field 'args': is not JSON"),
        ("catchup", {"catchup": "never"}, "catchup 'never' is not one of: skip, latest, all"),
        ("timezone", {"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ("end_at", {"end_at": "2001-01-01T00:00:00"}, "field 'end_at': is in the past"),
    ]
    for field, change, expected in cases:
        fill(browser, {**good, **change})
        element(browser, "#form-save").click()
        shown = wait_for(lambda f=field: field_error(browser, f), 10, f"the error beside {field}")
        assert expected in shown, (field, shown)
        others = rows(browser, "#entry-form .field-error")
        assert [e.text for e in others if e.text] == [shown], "beside that field alone"
        box = element(browser, f"#entry-form input[name={field}]")
        assert box.get_attribute("aria-invalid") == "true"
        if field == "schedule":
            section_shot(browser, shots, "#schedules-section", "bad-cron")
        fill(browser, good)  # the next case starts clean
    assert store_names(app) == [], "nothing refused is stored"

    # a name a file already has: beside the name
    app.schedules.add("taken", "tests.proj.tasks.add", "1h")
    fill(browser, {**good, "name": "taken"})
    element(browser, "#form-save").click()
    shown = wait_for(lambda: field_error(browser, "name"), 10, "the error beside the name")
    assert "'taken' exists already" in shown
    assert store_names(app) == ["taken"]


@BOTH
def test_backfill_a_range_sends_each_missed_slot_once_and_run_now_once(
    app, beat_file, start_cli, start_dashboard, browser, shots
):
    start_beat(start_cli, beat_file)
    zone = ZoneInfo("Asia/Shanghai")
    app.schedules.add(
        "fast", "tests.proj.tasks.add", "1s", args=[1, 2], options={"queue": OUT},
        timezone="Asia/Shanghai", catchup="skip",
    )  # fmt: skip
    wait_for(lambda: runs_of(app, "fast"), 10, "a first run")
    app.schedules.pause("fast")
    url = start_dashboard()
    browser.get(url)
    wait_for(lambda: live(browser), 10, "the page to go live")

    def paused() -> list[float]:
        return sorted(r.slot for r in app.schedules.history("fast", 1000) if r.reason == "paused")

    skipped = wait_for(lambda: len(p := paused()) >= 6 and p, 15, "six paused slots")
    app.schedules.resume("fast")
    start, end = skipped[1], skipped[5]  # [start, end): four slots
    assert not set(skipped[1:5]) & set(runs_of(app, "fast"))

    open_panel(browser, "fast")
    wait_for(lambda: [c for c, _ in marks(browser) if "skipped" in c], 10, "the skipped slots")
    assert text_of(browser, "#backfill-zone") == "times in Asia/Shanghai"

    def wall(ts: float) -> str:  # the entry's wall clock, as a datetime-local box holds it
        return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%dT%H:%M:%S")

    # a range the wrong way round is refused beside the box it names
    set_range(browser, wall(end), wall(start))
    element(browser, "#backfill").click()
    refused = wait_for(
        lambda: text_of(browser, '#entry-panel .field-error[data-field="end"]'), 10, "refusal"
    )
    assert "field 'end': must be after start" in refused
    set_range(browser, wall(start), wall(end))
    element(browser, "#backfill").click()
    said = message(browser, "Backfill ")
    assert "4 slots in the range did not run" in said, said
    done = wait_for(
        lambda: len(b := runs_of(app, "fast", "backfill")) >= 4 and b, 15, "four backfilled"
    )
    time.sleep(scaled(1.0))  # a repeat would come within the leader's next ticks
    assert runs_of(app, "fast", "backfill") == skipped[1:5] == done, "each slot once, in order"
    wait_for(lambda: row_text(browser, "#runs tr.run", "backfill"), 10, "a backfilled row")

    element(browser, "#run-now").click()
    task_id = re.search(r"task (\S+) queued", message(browser, "Run now: task "))[1]
    wait_for(lambda: runs_of(app, "fast", "trigger"), 10, "the triggered run")
    time.sleep(scaled(1.0))
    triggered = [m for name, _, m in sent(app) if name == "fast"]
    assert [m.id for m in triggered if m.options["beat"].get("kind") == "trigger"] == [task_id]
    shots(browser, "backfill")


def set_range(driver: Any, start: str, end: str) -> None:
    """Set the backfill boxes (datetime-local: typed keys depend on the browser's locale)."""
    driver.execute_script(
        "document.getElementById('backfill-start').value = arguments[0];"
        "document.getElementById('backfill-end').value = arguments[1];",
        start,
        end,
    )


# -- HTTP ------------------------------------------------------------------------------------
def test_the_schedule_endpoints_refuse_what_they_must(app, beat_file, start_cli, start_dashboard):
    token = uuid.uuid4().hex
    start_beat(start_cli, beat_file)
    wait_for(lambda: "from-file" in app.broker.beat_entries(), 10, "the file entry planned")
    base = start_dashboard("--token", token)
    auth = {"Authorization": f"Bearer {token}"}
    entry = {"name": "api", "task": "tests.proj.tasks.add", "schedule": "1h", "args": "[1, 2]"}
    body = json.dumps(entry).encode()

    def post(path: str, data: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        status, _, answer = http(base + path, headers, data)
        return status, json.loads(answer)

    # the guards every action has
    assert post("api/schedules", body, JSON_POST)[0] == 401
    assert post("api/schedules", body, {**auth, "Content-Type": "application/json"})[0] == 403
    plain = {**auth, "X-Beatq": "1", "Content-Type": "text/plain"}
    assert post("api/schedules", body, plain)[0] == 415
    assert post("api/schedules", body, {**JSON_POST, **auth, "Host": "evil.example"})[0] == 403
    status, answer = post("api/schedules", b"{not json", {**JSON_POST, **auth})
    assert (status, answer["error"]) == (400, "request body is not JSON")
    status, answer = post("api/schedules", b"[1]", {**JSON_POST, **auth})
    assert (status, answer["error"]) == (400, "request body must be a JSON object")
    assert store_names(app) == []

    # a refusal names its field
    bad = json.dumps({**entry, "retries": 3}).encode()
    status, answer = post("api/schedules", bad, {**JSON_POST, **auth})
    assert status == 400 and answer["field"] == "retries"
    assert answer["error"].startswith("schedule entry 'api', field 'retries': unknown field")
    status, answer = post("api/schedules", body, {**JSON_POST, **auth})
    assert (status, answer) == (200, {"entry": "api", "added": True})
    assert store_names(app) == ["api"]

    # an unknown entry: 404, for every action and for reading
    actions = {
        "update": b'{"schedule": "2h"}',
        "remove": b"{}",
        "trigger": b"{}",
        "backfill": b'{"start": "2026-01-01", "end": "2026-01-02"}',
    }
    for action, data in actions.items():
        status, answer = post(f"api/schedules/nope/{action}", data, {**JSON_POST, **auth})
        assert status == 404 and answer["error"].startswith("no schedule entry 'nope'"), action
    status, _, answer = http(base + "api/schedules/nope", auth)
    assert status == 404 and "no schedule entry 'nope'" in json.loads(answer)["error"]
    assert http(base + "api/schedules/api?limit=0", auth)[0] == 400
    assert http(base + "api/schedules/api", {})[0] == 401
    declared = {**JSON_POST, **auth, "Content-Length": "2000000"}  # the body limit holds
    head = request("POST", "/api/schedules", declared, close=False)
    answer = exchange(base, head.replace(b"Content-Length: 0\r\n", b"") + body)
    assert statuses(answer) == [413], answer

    # a file entry: readable, never changed or removed from here
    status, _, answer = http(base + "api/schedules/from-file", auth)
    detail = json.loads(answer)
    assert status == 200 and detail["editable"] is False and detail["form"] is None
    assert detail["source"] == f"{beat_file}:3"
    for action in ("update", "remove"):
        data = b'{"schedule": "2h"}' if action == "update" else b"{}"
        status, answer = post(f"api/schedules/from-file/{action}", data, {**JSON_POST, **auth})
        assert status == 400, action
        assert answer["error"] == (
            f"schedule entry 'from-file' is defined in {beat_file}:3, not in the store; "
            "change it there"
        )
    assert app.schedules.get("from-file").schedule == "every 1h"
    # renaming through update is refused, naming the field
    status, answer = post("api/schedules/api/update", b'{"name": "other"}', {**JSON_POST, **auth})
    assert status == 400 and answer["field"] == "name" and "cannot be renamed" in answer["error"]
    status, answer = post("api/schedules/api/backfill", b'{"from": 1}', {**JSON_POST, **auth})
    assert status == 400 and answer["field"] == "from"


# -- the form's values -----------------------------------------------------------------------
@pytest.mark.backends("memory")
def test_saving_an_entrys_form_unchanged_changes_nothing(app, backend):
    """Whatever way an entry was added (Python values, cron fields), the form shows it so
    that saving it as shown stores the same definition."""
    from datetime import timedelta

    from beatq.beat.schedules import crontab
    from beatq.dashboard import Dashboard

    add = "tests.proj.tasks.add"
    app.schedules.add("every", add, timedelta(milliseconds=250), args=[1, 2], jitter="1s")
    app.schedules.add(
        "fields", add, crontab(minute="0", hour="7", day_of_week="mon", day_of_month="1-7"),
        kwargs={"y": 2}, options={"queue": "reports", "priority": 3},
        jitter=timedelta(seconds=30), start_at=1795649400.0, timezone="Asia/Shanghai",
    )  # fmt: skip
    app.schedules.add("cron", add, "*/5 * * * *", catchup="all", overlap="skip")
    app.schedules.add("once", add, "2030-01-01T09:00:00", end_at="2030-01-02")
    board = Dashboard(app)
    try:
        for name in ("every", "fields", "cron", "once"):
            before = app.schedules.get(name)
            form = board.schedules.detail(name)["form"]
            assert board.schedules.update(name, form) == {"entry": name, "updated": True}
            after = app.schedules.get(name)
            assert after.schedule == before.schedule, name
            kept = ("created", "updated", "start_at", "jitter")
            assert {k: v for k, v in after.spec.items() if k not in kept} == {
                k: v for k, v in before.spec.items() if k not in kept
            }, name
        shown = board.schedules.detail("fields")["form"]
        assert json.loads(shown["schedule"])["day_of_month"] == "1-7"
        assert shown["queue"] == "reports" and shown["kwargs"] == '{"y": 2}'
        spec = app.schedules.get("fields").spec
        assert spec["options"] == {"queue": "reports", "priority": 3}, "options kept, queue set"
        assert datetime.fromisoformat(spec["start_at"]).timestamp() == 1795649400.0
        assert board.schedules.detail("every")["form"]["schedule"] == "0.25s"
    finally:
        board.close()
