"""Recent tasks for the dashboard: the app's event stream, followed by one thread into a State.

The thread reads the stream from the oldest event kept, so a dashboard started late
still shows the recent past, then blocks on it for new events and calls `on_change` after
each batch (the page's stream pushes at once). A task no event mentions (events off, or
older than the stream) can still be found by its full id: the result store has it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..app import Beatq
from ..events import State, TaskInfo
from ..exceptions import BrokerError
from . import timefmt

log = logging.getLogger("beatq.dashboard")

LIST_LIMIT = 100  # tasks in the table
TEXT_LIMIT = 300
FINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")
FAILED_STATES = ("FAILURE", "RETRY", "REVOKED")
NO_EVENTS = (
    "No task events yet: workers send them when started with -E "
    "(worker_send_task_events = True); task_send_sent_event = True adds tasks as they are sent."
)


def _clip(text: str | None, limit: int = TEXT_LIMIT) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TaskFeed:
    """A `State` kept current from `app.events` by a thread of its own."""

    def __init__(self, app: Beatq, on_change: Callable[[], None], max_tasks: int = 10_000) -> None:
        self.app = app
        self.zone = app.timezone
        self.on_change = on_change
        self.state = State(max_tasks)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._follow, name="beatq-dashboard-events")
        self.thread.daemon = True

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _follow(self) -> None:
        cursor: str | None = None
        failures = 0
        while not self.stopping.is_set():
            try:
                events = self.app.events.read(after=cursor, count=1000, timeout=1.0)
            except BrokerError as exc:
                failures += 1
                self.error = f"event stream unreachable: {exc}"
                self.stopping.wait(min(0.2 * 2**failures, 5.0))
                continue
            except Exception:  # keep following: one bad event must not blind the page
                log.exception("dashboard: reading the event stream failed")
                self.stopping.wait(1.0)
                continue
            failures, self.error = 0, None
            if events:
                with self.lock:
                    self.state.feed_all(events)
                cursor = events[-1].id
                self.on_change()

    # -- views -------------------------------------------------------------------------------
    def _time(self, ts: float | None) -> str | None:
        return timefmt.zoned(ts, self.zone) if ts else None

    def _row(self, task: TaskInfo) -> dict[str, Any]:
        runtime = task.runtime
        if runtime is None and task.started and task.finished:  # a failure reports none
            runtime = max(task.finished - task.started, 0.0)
        return {
            "id": task.id,
            "name": task.name,
            "state": task.state,
            "args": _clip(task.args),
            "kwargs": _clip(task.kwargs) if task.kwargs not in (None, "{}") else None,
            # a retried task that then succeeded keeps its retry's exception in the State
            "result": _clip(task.result) if task.state == "SUCCESS" else None,
            "exception": _clip(task.exception) if task.state in FAILED_STATES else None,
            "worker": task.worker,
            "queue": task.queue,
            "retries": task.retries,
            "received": self._time(task.received or task.sent),
            "runtime": timefmt.duration(runtime) if runtime is not None else None,
        }

    def listing(self, query: str = "") -> dict[str, Any]:
        """The newest tasks (or those whose id or name contains `query`), newest first."""
        with self.lock:
            found = (
                self.state.find(query, LIST_LIMIT) if query else self.state.recent_tasks(LIST_LIMIT)
            )
            rows = [self._row(task) for task in reversed(found)]
            kept = len(self.state.tasks)
            # the summary card's count: every kept task, whatever the search shows
            failed = sum(1 for task in self.state.tasks.values() if task.state == "FAILURE")
        if query and not rows:
            stored = self._from_results(query)
            if stored is not None:
                rows = [stored]
        note = self.error or ("" if kept else NO_EVENTS)
        return {"enabled": True, "items": rows, "kept": kept, "failed": failed, "note": note}

    def finished(self, task_ids: list[str]) -> set[str]:
        """Which of `task_ids` the events say have finished (heartbeats lag a second)."""
        with self.lock:
            tasks = self.state.tasks
            return {i for i in task_ids if i in tasks and tasks[i].state in FINAL_STATES}

    def workers(self) -> dict[str, dict[str, Any]]:
        """What events add to the heartbeat registry's view of each worker."""
        with self.lock:
            return {
                name: {"processed": info.processed} for name, info in self.state.workers.items()
            }

    def detail(self, task_id: str) -> dict[str, Any] | None:
        """Everything known of one task, traceback included; None if nothing is."""
        with self.lock:
            task = self.state.tasks.get(task_id)
            if task is not None:
                row = self._row(task)
                failed = task.state in FAILED_STATES
                row.update(
                    args=task.args,
                    kwargs=task.kwargs,
                    result=task.result if task.state == "SUCCESS" else None,
                    exception=task.exception if failed else None,
                    traceback=task.traceback if failed else None,
                    sent=self._time(task.sent),
                    received=self._time(task.received),
                    started=self._time(task.started),
                    finished=self._time(task.finished),
                    eta=self._time(task.eta),
                    expires=self._time(task.expires),
                )
                return row
        return self._from_results(task_id, full=True)

    def _from_results(self, task_id: str, full: bool = False) -> dict[str, Any] | None:
        """A task's stored result, for an id the events did not mention."""
        task_id = task_id.strip()
        if len(task_id) < 8 or " " in task_id:
            return None
        try:
            result = self.app.AsyncResult(task_id)
            state = result.state
        except BrokerError:
            return None
        if state == "PENDING":  # unknown ids are PENDING too: say nothing rather than guess
            return None
        value = result.result
        failed = state == "FAILURE" or isinstance(value, BaseException)
        done = result.date_done
        row: dict[str, Any] = {
            "id": task_id,
            "name": None,
            "state": state,
            "args": None,
            "kwargs": None,
            "result": None if failed else (repr(value) if full else _clip(repr(value))),
            "exception": f"{type(value).__name__}: {value}" if failed else None,
            "worker": None,
            "queue": None,
            "retries": 0,
            "received": None,
            "runtime": None,
            "finished": timefmt.zoned(done.timestamp(), self.zone) if done else None,
            "source": "result store",
        }
        if full:
            row["traceback"] = result.traceback
        return row
