"""The command line as scripts use it: real `python -m beatq` processes, output and exit codes.

Exit codes (SPEC §10): 0 ok, 1 task failed / command failed, 2 usage or config error,
3 not ready, 4 broker unreachable.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import ROOT, scaled, wait_for

# `[2026-11-25 00:39:27.882+08:00 INFO/MainProcess] beatq.worker: ...`
LOG_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})([+-]\d\d:\d\d) "
    r"(DEBUG|INFO|WARNING|ERROR|CRITICAL)/"
)
TIME_WITH_OFFSET = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def beatq(
    env: dict[str, str], *args: str, app: bool = True, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """Run `python -m beatq [-A tests.proj] ARGS` the way a script would."""
    argv = [sys.executable, "-m", "beatq", *(["-A", "tests.proj"] if app else []), *args]
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def show(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int) -> None:
    """The exit code scripts rely on, and an error for people, not a Python traceback."""
    assert proc.returncode == code, show(proc)
    assert "Traceback" not in proc.stdout + proc.stderr, show(proc)
    assert proc.stderr.strip(), show(proc)


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("Error:")]


def call_id(env: dict[str, str], *args: str) -> str:
    proc = beatq(env, "call", *args)
    assert proc.returncode == 0, show(proc)
    return proc.stdout.strip()


def log_stamps(text: str) -> list[tuple[str, str, str]]:
    """(local time, UTC offset, level) of every log line in a worker's output."""
    return [m.groups() for m in map(LOG_LINE.match, text.splitlines()) if m]


# -- help ----------------------------------------------------------------------------------
HELP_CASES = {
    "group": ((), ["-A, --app", "-b, --broker", "-l, --loglevel", "--version", "worker", "call",
                   "result", "inspect", "dead-letter", "beat", "schedule", "dashboard",
                   "events", "status", "revoke"]),
    "worker": (("worker",), ["-Q, --queues", "-c, --concurrency", "-P, --pool", "prefork",
                             "threads", "solo", "-n, --hostname", "-l, --loglevel", "-B, --beat",
                             "-E, --events", "--metrics-port", "--metrics-host"]),
    "call": (("call",), ["TASK", "-a, --args", "-k, --kwargs", "--countdown", "--eta",
                         "--expires", "-Q, --queue", "-l, --loglevel"]),
    "result": (("result",), ["TASK_ID", "--wait", "-t, --timeout", "--traceback",
                             "-v, --verbose", "--json"]),
    "inspect": (("inspect",), ["registered", "active", "reserved", "scheduled", "stats",
                               "--json"]),
    "dead-letter": (("dead-letter",), ["list", "requeue"]),
    "dead-letter list": (("dead-letter", "list"), ["--json", "--limit"]),
    "dead-letter requeue": (("dead-letter", "requeue"), ["IDS", "--all"]),
    "beat": (("beat",), ["-s, --schedule", "--lease-ttl", "-l, --loglevel", "status",
                         "-E, --events", "--metrics-port"]),
    "schedule": (("schedule",), ["check", "list", "pause", "resume"]),
    "schedule check": (("schedule", "check"), ["FILES", "-n, --count"]),
    "schedule list": (("schedule", "list"), ["--json"]),
    "dashboard": (("dashboard",), ["--host", "--port", "--token", "--basic-auth", "-Q, --queues"]),
    "events": (("events",), ["--dump", "--json", "--follow / --no-follow", "--new",
                             "--interval"]),
    "status": (("status",), ["--json", "Exit 0 when at least one worker is alive"]),
    "revoke": (("revoke",), ["ID...", "--terminate"]),
}  # fmt: skip


@pytest.mark.parametrize("command", list(HELP_CASES))
def test_help_exits_0_and_shows_the_options(env, command):
    words, expected = HELP_CASES[command]
    proc = beatq(env, *words, "--help")
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.startswith("Usage:"), show(proc)
    assert proc.stderr == ""
    missing = [option for option in expected if option not in proc.stdout]
    assert not missing, f"{command} --help lacks {missing}:\n{proc.stdout}"


def test_help_works_without_an_app_and_with_short_flag(env):
    proc = beatq(env, "-h", app=False)
    assert proc.returncode == 0, show(proc)
    assert "-A, --app" in proc.stdout and "Exit codes" in proc.stdout


# -- call and result -------------------------------------------------------------------------
def test_call_prints_an_id_and_result_shows_success_and_failure(app, start_worker, env):
    """Success, --kwargs and failure share one worker (each worker costs seconds to stop)."""
    start_worker("-P", "solo")
    task_id = call_id(env, "tests.proj.tasks.add", "--args", "[2, 3]")
    assert str(uuid.UUID(task_id)) == task_id

    proc = beatq(env, "result", task_id, "--wait", "--timeout", "5", "--verbose")
    assert proc.returncode == 0, show(proc)
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["state: SUCCESS", "result: 5"], show(proc)

    proc = beatq(env, "result", task_id, "--json")
    assert proc.returncode == 0, show(proc)
    data = json.loads(proc.stdout)
    assert (data["id"], data["state"], data["result"]) == (task_id, "SUCCESS", 5)
    done = datetime.fromisoformat(data["date_done"])
    assert abs(done.timestamp() - time.time()) < 30

    # The CLI prints times in the app's zone with the offset: here Asia/Shanghai.
    proc = beatq({**env, "BEATQ_TEST_TIMEZONE": "Asia/Shanghai"}, "result", task_id, "-v")
    match = re.search(rf"^date_done: ({TIME_WITH_OFFSET})$", proc.stdout, re.M)
    assert match, show(proc)
    shown = datetime.fromisoformat(match.group(1))
    assert shown.utcoffset() == timedelta(hours=8)
    assert abs(shown.timestamp() - done.timestamp()) < 0.01

    kw_id = call_id(env, "tests.proj.tasks.add", "--args", "[1]", "--kwargs", '{"y": 41}')
    assert app.AsyncResult(kw_id).get(timeout=scaled(5)) == 42
    kw_only = call_id(env, "tests.proj.tasks.add", "-k", '{"x": 4, "y": 6}')
    assert app.AsyncResult(kw_only).get(timeout=scaled(5)) == 10

    check_value_alone(env)
    check_failure(env)


def check_value_alone(env: dict[str, str]) -> None:
    """By default `result` prints the value alone, as JSON, as `celery result ID` does:
    what a script reads (issue 22, defect 2)."""
    value = {"rows": [1, 2.5, None], "name": "zoë", "ok": True}
    task_id = call_id(env, "tests.proj.tasks.echo", "--args", json.dumps([value]))
    proc = beatq(env, "result", task_id, "--wait", "--timeout", str(scaled(5)))
    assert proc.returncode == 0, show(proc)
    assert json.loads(proc.stdout) == value, show(proc)
    assert proc.stdout.count("\n") == 1, "one line: no state, no date_done"

    task_id = call_id(env, "tests.proj.tasks.echo", "--args", '["plain text"]')
    proc = beatq(env, "result", task_id, "--wait", "--timeout", str(scaled(5)))
    assert (proc.returncode, proc.stdout) == (0, '"plain text"\n'), show(proc)


def check_failure(env: dict[str, str]) -> None:
    """A failed task: exit 1, its exception, and with --traceback where it was raised."""
    task_id = call_id(env, "tests.proj.tasks.fail", "--kwargs", '{"message": "kaput"}')

    proc = beatq(env, "result", task_id, "--wait", "--timeout", "5", "--traceback", "-v")
    assert proc.returncode == 1, show(proc)
    assert proc.stdout.startswith("state: FAILURE\nresult: CustomError('kaput')\n"), show(proc)
    assert "Traceback (most recent call last):" in proc.stdout
    assert "raise CustomError(message)" in proc.stdout
    assert "tests.proj.tasks.CustomError: kaput" in proc.stdout

    proc = beatq(env, "result", task_id, "--verbose")
    assert proc.returncode == 1, show(proc)
    assert "Traceback" not in proc.stdout

    # By default: no value on stdout, the state and exception on stderr, exit 1.
    proc = beatq(env, "result", task_id)
    assert (proc.returncode, proc.stdout) == (1, ""), show(proc)
    assert proc.stderr.strip() == "FAILURE: CustomError('kaput')", show(proc)
    proc = beatq(env, "result", task_id, "--traceback")
    assert proc.returncode == 1, show(proc)
    assert proc.stdout.rstrip().endswith("tests.proj.tasks.CustomError: kaput"), show(proc)

    proc = beatq(env, "result", task_id, "--json")
    assert proc.returncode == 1, show(proc)
    data = json.loads(proc.stdout)
    assert data["state"] == "FAILURE"
    assert "CustomError" in data["result"] and "kaput" in data["result"]
    assert data["traceback"].rstrip().endswith("tests.proj.tasks.CustomError: kaput")


def test_countdown_is_pending_at_first_and_runs_later(app, start_worker, env):
    start_worker("-P", "solo")
    countdown = scaled(2)  # long enough for two CLI calls before it ends
    sent = time.time()
    task_id = call_id(
        env, "tests.proj.tasks.add", "--args", "[20, 22]", "--countdown", str(countdown)
    )

    proc = beatq(env, "result", task_id, "--verbose")
    assert time.time() - sent < countdown, "too slow to check before the countdown ends"
    assert proc.returncode == 3, show(proc)
    assert proc.stdout.splitlines() == ["state: PENDING"]

    proc = beatq(env, "result", task_id, "--wait", "--timeout", str(scaled(10)), "--json")
    assert proc.returncode == 0, show(proc)
    data = json.loads(proc.stdout)
    assert (data["state"], data["result"]) == ("SUCCESS", 42)
    assert datetime.fromisoformat(data["date_done"]).timestamp() >= sent + countdown - 0.1


def test_call_with_queue_sends_to_that_queue(app, env):
    task_id = call_id(env, "tests.proj.tasks.add", "--args", "[1, 2]", "--queue", "priority.high")
    assert app.broker.queue_length("priority.high") == 1
    assert app.broker.queue_length("celery") == 0
    assert app.AsyncResult(task_id).state == "PENDING"


def test_call_eta_naive_is_read_in_the_app_time_zone_and_aware_is_exact(app, env):
    zone = ZoneInfo("Asia/Shanghai")
    naive = (datetime.now(zone) + timedelta(minutes=5)).replace(tzinfo=None, microsecond=0)
    aware = datetime.now(ZoneInfo("America/New_York")).replace(microsecond=0) + timedelta(hours=1)
    shanghai = {**env, "BEATQ_TEST_TIMEZONE": "Asia/Shanghai"}
    naive_id = call_id(shanghai, "tests.proj.tasks.add", "-a", "[1, 2]", "--eta", naive.isoformat())
    aware_id = call_id(shanghai, "tests.proj.tasks.add", "-a", "[3, 4]", "--eta", aware.isoformat())
    etas = {claim.id: eta for eta, claim in app.broker.scheduled()}
    assert etas[naive_id] == pytest.approx(naive.replace(tzinfo=zone).timestamp(), abs=0.01)
    assert etas[aware_id] == pytest.approx(aware.timestamp(), abs=0.01)


def test_result_of_an_unknown_id_is_pending_and_exits_3(app, env):
    unknown = str(uuid.uuid4())
    proc = beatq(env, "result", unknown, "--verbose")
    assert proc.returncode == 3, show(proc)
    assert proc.stdout.splitlines() == ["state: PENDING"]

    proc = beatq(env, "result", unknown)
    assert proc.returncode == 3, show(proc)
    assert proc.stdout == "", "nothing a script could take for a value"
    assert "PENDING" in proc.stderr and "Traceback" not in proc.stderr, show(proc)

    started = time.monotonic()
    proc = beatq(env, "result", unknown, "--wait", "--timeout", "0.3", "--json")
    assert proc.returncode == 3, show(proc)
    assert time.monotonic() - started >= 0.3
    assert json.loads(proc.stdout)["state"] == "PENDING"


# -- errors ------------------------------------------------------------------------------------
USAGE_ERRORS = {
    "args not json": (["call", "tests.proj.tasks.add", "--args", "not json"], "--args"),
    "args not a list": (["call", "tests.proj.tasks.add", "--args", '{"a": 1}'], "--args"),
    "kwargs not a dict": (["call", "tests.proj.tasks.add", "--kwargs", "[1]"], "--kwargs"),
    "eta not a time": (["call", "tests.proj.tasks.add", "--eta", "tomorrow"], "--eta"),
    "requeue without ids": (["dead-letter", "requeue"], "--all"),
    "unknown pool": (["worker", "-P", "gevent"], "--pool"),
    "worker bad loglevel": (["worker", "-l", "loud"], "--loglevel"),
    "group bad loglevel": (["-l", "loud", "inspect", "scheduled"], "--loglevel"),
    "inspect unknown": (["inspect", "everything"], "everything"),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors_exit_2_and_name_the_culprit(app, env, case):
    args, culprit = USAGE_ERRORS[case]
    proc = beatq(env, *args)
    assert_clean_error(proc, 2)
    errors = error_lines(proc)
    assert len(errors) == 1 and culprit in errors[0], show(proc)
    assert proc.stdout == ""
    assert app.broker.queue_length("celery") == 0


@pytest.mark.parametrize(
    "app_path",
    ["tests.no_such_proj", "tests.proj:no_such_app", "json"],
    ids=["no such module", "no such attribute", "module without an app"],
)
def test_a_bad_app_exits_2_with_one_line_naming_it(env, app_path):
    proc = beatq(env, "-A", app_path, "call", "tests.proj.tasks.add", app=False)
    assert_clean_error(proc, 2)
    (line,) = proc.stderr.splitlines()
    assert line.startswith("Error: ") and repr(app_path) in line, show(proc)
    assert proc.stdout == ""


def test_a_bad_setting_exits_2_with_one_line_naming_it(env):
    proc = beatq({**env, "BEATQ_TEST_TIMEZONE": "Mars/Olympus"}, "inspect", "scheduled")
    assert_clean_error(proc, 2)
    (line,) = proc.stderr.splitlines()
    assert line.startswith("Error: ") and "'Mars/Olympus'" in line, show(proc)


def test_no_app_exits_2(env):
    no_app = {k: v for k, v in env.items() if k != "BEATQ_APP"}
    proc = beatq(no_app, "call", "tests.proj.tasks.add", "--args", "[1, 2]", app=False)
    assert_clean_error(proc, 2)
    errors = error_lines(proc)
    assert len(errors) == 1 and "-A" in errors[0], show(proc)


@pytest.mark.parametrize(
    "args",
    [
        ["call", "tests.proj.tasks.add", "--args", "[1, 2]"],
        ["result", "0b8c5f0e-2d7e-4c39-9f1e-000000000000"],
        ["inspect", "registered"],
        ["dead-letter", "list"],
    ],
    ids=["call", "result", "inspect", "dead-letter"],
)
def test_an_unreachable_broker_exits_4_with_one_line_naming_it(env, args):
    with socket.socket() as held:  # bound, never listening: connections are refused
        held.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{held.getsockname()[1]}/0"
        started = time.monotonic()
        proc = beatq({**env, "BEATQ_BROKER_URL": url}, *args)
    assert_clean_error(proc, 4)
    assert proc.stderr.strip().splitlines() == error_lines(proc), show(proc)
    assert len(error_lines(proc)) == 1 and url in proc.stderr, show(proc)
    assert time.monotonic() - started < scaled(10), "a script waited too long to hear of it"


def test_broker_flag_wins_over_the_environment(app, env):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        closed = f"redis://127.0.0.1:{held.getsockname()[1]}/0"
        proc = beatq(env, "-b", closed, "-A", "tests.proj", "inspect", "scheduled", app=False)
        assert_clean_error(proc, 4)
        assert closed in proc.stderr

        unreachable_env = {**env, "BEATQ_BROKER_URL": closed}
        good = env["BEATQ_BROKER_URL"]
        proc = beatq(unreachable_env, "-b", good, "-A", "tests.proj", "call", "t", app=False)
    assert proc.returncode == 0, show(proc)
    assert app.broker.queue_length("celery") == 1


def test_requeue_of_an_unknown_id_exits_1(app, env):
    proc = beatq(env, "dead-letter", "requeue", "no-such-letter")
    assert_clean_error(proc, 1)
    assert error_lines(proc) == ["Error: no dead letter no-such-letter"]
    assert "requeued" not in proc.stdout


# -- inspect -----------------------------------------------------------------------------------
def test_inspect_registered_lists_the_tasks_under_the_worker(app, start_worker, env):
    worker = start_worker("-P", "solo")
    expected = {f"tests.proj.tasks.{name}" for name in ("add", "fail", "sleep", "urgent")}

    proc = beatq(env, "inspect", "registered")
    assert proc.returncode == 0, show(proc)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"-> {worker.name}"
    assert expected <= {line.strip() for line in lines[1:]}, show(proc)

    proc = beatq(env, "inspect", "registered", "--json")
    assert proc.returncode == 0, show(proc)
    data = json.loads(proc.stdout)
    assert list(data) == [worker.name]
    assert expected <= set(data[worker.name])

    worker.stop()  # a clean stop unregisters: nobody is left to answer
    proc = beatq(env, "inspect", "registered")
    assert proc.returncode == 1, show(proc)


@pytest.mark.parametrize("what", ["registered", "active"])
def test_inspect_with_no_worker_alive_exits_1(app, env, what):
    proc = beatq(env, "inspect", what)
    assert_clean_error(proc, 1)
    assert error_lines(proc) == ["Error: no worker is alive"]
    proc = beatq(env, "inspect", what, "--json")
    assert proc.returncode == 1, show(proc)
    assert json.loads(proc.stdout) == {}


def test_inspect_active_shows_the_running_task(app, start_worker, env):
    worker = start_worker("-P", "threads", "-c", "2")
    task_id = call_id(env, "tests.proj.tasks.sleep", "--args", "[20]", "--kwargs", '{"tag": "i"}')

    def active_ids() -> list[str]:
        info = app.broker.workers().get(worker.name)
        return [task["id"] for task in json.loads(info)["active"]] if info else []

    wait_for(lambda: task_id in active_ids(), 10, "the sleep task in the worker's heartbeat")
    proc = beatq(env, "inspect", "active")
    assert proc.returncode == 0, show(proc)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"-> {worker.name}"
    match = re.match(
        rf"^   tests\.proj\.tasks\.sleep\[{task_id}\] \[20\] since ({TIME_WITH_OFFSET})$", lines[1]
    )
    assert match, show(proc)
    since = datetime.fromisoformat(match.group(1))
    assert since.utcoffset() == timedelta(0)
    assert abs(since.timestamp() - time.time()) < 15

    proc = beatq(env, "inspect", "active", "--json")
    assert proc.returncode == 0, show(proc)
    (task,) = json.loads(proc.stdout)[worker.name]
    assert (task["id"], task["name"], task["queue"]) == (
        task_id,
        "tests.proj.tasks.sleep",
        "celery",
    )

    worker.signal(signal.SIGKILL)  # no need to wait 20 s for the sleep to end
    worker.wait()


def test_inspect_scheduled_lists_an_eta_task_with_its_utc_offset(app, env):
    sent = time.time()
    task_id = call_id(env, "tests.proj.tasks.add", "--args", "[1, 1]", "--countdown", "30")

    shanghai = {**env, "BEATQ_TEST_TIMEZONE": "Asia/Shanghai"}
    proc = beatq(shanghai, "inspect", "scheduled")
    assert proc.returncode == 0, show(proc)
    lines = proc.stdout.splitlines()
    assert lines[-1] == "1 scheduled task(s)", show(proc)
    match = re.match(
        rf"^({TIME_WITH_OFFSET})  tests\.proj\.tasks\.add\[{task_id}\]  queue=celery$", lines[0]
    )
    assert match, show(proc)
    eta = datetime.fromisoformat(match.group(1))
    assert eta.utcoffset() == timedelta(hours=8)
    assert sent + 29 < eta.timestamp() < time.time() + 31

    proc = beatq(env, "inspect", "scheduled", "--json")
    assert proc.returncode == 0, show(proc)
    (row,) = json.loads(proc.stdout)
    assert (row["id"], row["name"], row["queue"]) == (task_id, "tests.proj.tasks.add", "celery")
    assert abs(row["eta_ts"] - eta.timestamp()) < 0.01, "--json: numbers, named *_ts"


# -- dead letters ------------------------------------------------------------------------------
UNKNOWN_TASK = "tests.proj.tasks.cli_no_such_task"  # no worker knows it: dead-lettered


def test_dead_letter_list_shows_the_reason_and_requeue_puts_it_back(app, start_worker, env):
    worker = start_worker("-P", "solo")
    task_id = call_id(env, UNKNOWN_TASK, "--args", "[1]")
    wait_for(app.broker.dead_letters, 10, "the unknown task's message to be dead-lettered")
    worker.stop()  # else it would take the requeued message again at once

    proc = beatq(env, "dead-letter", "list")
    assert proc.returncode == 0, show(proc)
    lines = proc.stdout.splitlines()
    assert re.match(
        rf"^{task_id}  tests\.proj\.tasks\.cli_no_such_task  queue=celery  {TIME_WITH_OFFSET}$",
        lines[0],
    ), show(proc)
    assert "unknown task 'tests.proj.tasks.cli_no_such_task'" in lines[1]
    assert lines[-1] == "1 dead letter(s)"

    proc = beatq(env, "dead-letter", "list", "--json")
    assert proc.returncode == 0, show(proc)
    (row,) = json.loads(proc.stdout)
    assert (row["id"], row["task"], row["queue"]) == (task_id, UNKNOWN_TASK, "celery")
    assert "unknown task" in row["reason"]
    assert abs(row["time_ts"] - time.time()) < 60, "--json: the instant as a number, *_ts"

    assert app.broker.queue_length("celery") == 0
    proc = beatq(env, "dead-letter", "requeue", task_id)
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.splitlines() == [f"requeued {task_id}"]
    assert app.broker.queue_length("celery") == 1
    assert app.broker.dead_letters() == []
    proc = beatq(env, "dead-letter", "list")
    assert proc.stdout.splitlines() == ["0 dead letter(s)"]


# -- logs and log levels -------------------------------------------------------------------------
def assert_log_times(log: str, zone: str, offset: str) -> set[str]:
    """Every log line is stamped in `zone` with `offset`, at about now; the levels seen."""
    now = datetime.now(ZoneInfo(zone)).replace(tzinfo=None)
    stamps = log_stamps(log)
    assert stamps, log
    for local, line_offset, _ in stamps:
        assert line_offset == offset, log
        wall = datetime.strptime(local, "%Y-%m-%d %H:%M:%S.%f")
        assert abs((wall - now).total_seconds()) < 60, (wall, now, log)
    return {level for _, _, level in stamps}


def test_worker_logs_in_the_app_time_zone_with_its_offset(start_worker):
    worker = start_worker(
        "-P", "solo", "-l", "info", extra_env={"BEATQ_TEST_TIMEZONE": "Asia/Shanghai"}
    )
    wait_for(lambda: f"worker {worker.name} ready" in worker.log(), 10, "the ready line")
    assert "INFO" in assert_log_times(worker.log(), "Asia/Shanghai", "+08:00")


def test_worker_at_level_error_logs_only_errors_stamped_in_utc(start_worker, env):
    worker = start_worker("-P", "solo", "-l", "ERROR", extra_env={"BEATQ_TEST_TIMEZONE": "UTC"})
    task_id = call_id(env, "tests.proj.tasks.fail")
    # The INFO "received" line would come before this ERROR line: waiting for it suffices.
    wait_for(lambda: f"[{task_id}] raised" in worker.log(), 10, "the failure's log line")
    assert assert_log_times(worker.log(), "UTC", "+00:00") == {"ERROR"}
