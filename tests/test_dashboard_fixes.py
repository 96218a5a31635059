"""What a new user saw wrong on the dashboard (issue 27), driven in headless Chromium
against real worker, beat and dashboard processes (fixtures of test_dashboard.py):

- the first screenshot after a load is the page filled in, never an empty "connecting…";
- the failures card counts every recent failure, whatever the search shows;
- a next run that is past, with no beat leader to send it, stands out as overdue;
- a paused entry says "paused" where a countdown to its next run was.
"""

from __future__ import annotations

import json
import re

from selenium.common.exceptions import StaleElementReferenceException

from tests import test_dashboard
from tests.conftest import scaled, wait_for
from tests.test_dashboard import cell_text, http, row_text, rows, text_of, write_schedule

browser = test_dashboard.browser
shots = test_dashboard.shots
start_cli = test_dashboard.start_cli
start_dashboard = test_dashboard.start_dashboard

SNEAKY = "</script><script>document.title='owned'</script>"


def texts(driver, css: str) -> list[str]:
    """The text of every element matching `css`, read at one instant (rows are replaced
    while the page updates: no stale element between finding and reading)."""
    script = "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText)"
    return driver.execute_script(script, css)


def classes(driver, css: str) -> list[str]:
    script = "return [...document.querySelectorAll(arguments[0])].map((e) => e.className)"
    return driver.execute_script(script, css)


def first_state(url: str) -> dict:
    """The snapshot the page's HTML carries (server.py), parsed as the page parses it."""
    status, _, body = http(url)
    assert status == 200
    html = body.decode()
    found = re.search(r'<script type="application/json" id="first-state">(.*?)</script>', html)
    assert found, "the page carries its first snapshot"
    return json.loads(found[1])


def test_the_first_load_shows_the_snapshot_not_an_empty_page(
    app, start_worker, start_dashboard, browser, shots
):
    from tests.proj.tasks import echo

    worker = start_worker("-P", "threads", "-c", "2", "-E")
    sneaky = echo.delay(SNEAKY)  # text that would end a script block if it were not escaped
    assert sneaky.get(timeout=scaled(10)) == SNEAKY
    url = start_dashboard()
    state = wait_for(
        lambda: (s := first_state(url))["tasks"]["items"] and s, 10, "the task in the snapshot"
    )
    assert [w["hostname"] for w in state["workers"]] == [worker.name]
    assert SNEAKY in json.dumps(state["tasks"]["items"][0]["args"]), "kept whole, as text"

    browser.get(url)  # no wait: what a screenshot taken now shows
    assert text_of(browser, "#sum-workers") == "1"
    assert worker.name in row_text(browser, "#workers tr.worker", worker.name)
    assert row_text(browser, "#tasks tr.task", sneaky.id[:8])
    assert browser.title == "beatq dashboard", "the task's text ran as script"
    shots(browser, "first-load")
    wait_for(lambda: text_of(browser, "#live") == "live", 10, "the stream to take over")


def test_the_failures_card_counts_every_failure_not_the_search(
    app, start_worker, start_dashboard, browser, shots
):
    from tests.proj.tasks import add, fail

    start_worker("-P", "threads", "-c", "2", "-E")
    failed = [fail.delay(f"no {i}") for i in range(3)]
    added = [add.delay(i, i) for i in range(2)]
    for result in failed + added:
        result.get(timeout=scaled(10), propagate=False)
    url = start_dashboard()
    browser.get(url)
    wait_for(lambda: text_of(browser, "#sum-failed") == "3", 10, "3 recent failures")
    search = rows(browser, "#search")[0]
    search.send_keys("tests.proj.tasks.add")

    def only_adds_listed() -> bool:
        try:
            found = rows(browser, "#tasks tr.task")
            return bool(found) and all("tests.proj.tasks.add" in r.text for r in found)
        except StaleElementReferenceException:  # the list was drawn again as it was read
            return False

    wait_for(only_adds_listed, 5, "only the add tasks listed")
    assert text_of(browser, "#sum-failed") == "3", "the search filters the list, not the count"
    assert classes(browser, "#sum-failed") == ["bad"]
    shots(browser, "failures-searched")


def test_an_overdue_run_without_a_leader_stands_out_and_a_paused_entry_says_paused(
    app, tmp_path, start_cli, start_dashboard, browser, shots
):
    schedule = write_schedule(
        tmp_path / "two.yaml",
        "UTC",
        {
            "tick": {"task": "tests.proj.tasks.add", "every": "2s", "args": [1, 1]},
            "held": {"task": "tests.proj.tasks.add", "every": "2s", "args": [2, 2]},
        },
    )
    beat = start_cli(
        "beat", "-s", str(schedule), "--lease-ttl", "2", "-l", "info", marker="is the leader now"
    )
    wait_for(lambda: len(app.broker.beat_entries()) == 2, 10, "the entries in the broker")
    app.broker.beat_pause("held", True)
    url = start_dashboard()
    browser.get(url)

    def next_run(name: str) -> str:
        return cell_text(browser, "#schedules tr.entry", name, ".next-run")

    wait_for(lambda: next_run("held").endswith("paused"), 5, "held to say paused")
    assert " in " not in next_run("held") and not next_run("held").startswith("in ")
    assert next_run("tick").splitlines()[-1].startswith("in "), "a leader sends it: a countdown"

    beat.stop()  # the only beat: nobody sends tick's next run
    wait_for(lambda: app.broker.get_lease("beat") is None, 5, "the lease released")
    text = wait_for(
        lambda: "overdue" in (t := next_run("tick")) and t, scaled(5), "tick shown overdue"
    )
    assert re.search(r"overdue by \S+.*: no beat leader", text), text
    names = [text.split()[0] for text in texts(browser, "#schedules tr.entry")]
    marked = classes(browser, "#schedules tr.entry .next-run")
    assert "overdue" in marked[names.index("tick")] and "overdue" not in marked[names.index("held")]
    assert "overdue" not in next_run("held"), "a paused entry is not overdue"
    assert text_of(browser, "#sum-leader") == "none"
    shots(browser, "overdue")
