"""Events: what happens to tasks, workers and the beat, kept in the broker as a capped stream.

    app.events.send("task-succeeded", task_id=..., runtime=...)   # a no-op unless enabled
    for event in app.events.read(after=cursor, timeout=1.0): ...  # tail the stream
    state = State(); [state.feed(e) for e in app.events.recent(1000)]

Who sends what, and the setting that turns it on (all off by default; see README for
why and what they cost):

- `task_send_sent_event`: the client sends `task-sent` with each message it publishes.
- `worker_send_task_events` (`worker -E`): `task-received`, `task-started`,
  `task-succeeded`, `task-failed`, `task-retried`, `task-revoked`, `task-expired`,
  `task-dead-lettered`, and `worker-online`, `worker-heartbeat`, `worker-offline`.
- `beat_send_events` (`beat -E`, `worker -B -E`): `beat-elected`, `beat-lost`,
  `beat-dispatched`, `beat-missed`.

Task events ride in the round trip that changes the task's state (the early
acknowledgement carries received and started, the finish carries the outcome), so an
event costs bytes, not a round trip. The stream keeps about the newest `events_max_len`
events (10,000 by default), so a monitor that starts late still sees the recent past.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .context import App

if TYPE_CHECKING:
    from .messages import Message

TASK_SENT = "task-sent"
TASK_RECEIVED = "task-received"
TASK_STARTED = "task-started"
TASK_SUCCEEDED = "task-succeeded"
TASK_FAILED = "task-failed"
TASK_RETRIED = "task-retried"
TASK_REVOKED = "task-revoked"
TASK_EXPIRED = "task-expired"
TASK_DEAD_LETTERED = "task-dead-lettered"
TASK_REJECTED = "task-rejected"  # Reject(requeue=False), or requeued past worker_requeue_max
WORKER_ONLINE = "worker-online"
WORKER_HEARTBEAT = "worker-heartbeat"
WORKER_OFFLINE = "worker-offline"
BEAT_ELECTED = "beat-elected"
BEAT_LOST = "beat-lost"
BEAT_DISPATCHED = "beat-dispatched"
BEAT_MISSED = "beat-missed"

TASK_TYPES = (
    TASK_SENT,
    TASK_RECEIVED,
    TASK_STARTED,
    TASK_SUCCEEDED,
    TASK_FAILED,
    TASK_RETRIED,
    TASK_REVOKED,
    TASK_EXPIRED,
    TASK_DEAD_LETTERED,
    TASK_REJECTED,
)
WORKER_TYPES = (WORKER_ONLINE, WORKER_HEARTBEAT, WORKER_OFFLINE)
BEAT_TYPES = (BEAT_ELECTED, BEAT_LOST, BEAT_DISPATCHED, BEAT_MISSED)
TYPES = TASK_TYPES + WORKER_TYPES + BEAT_TYPES

REPR_MAX = 1000  # characters kept of an argument list or a result
TRACEBACK_MAX = 20_000


def short_repr(value: Any, limit: int = REPR_MAX) -> str:
    """repr(value), cut to `limit` characters with an ellipsis."""
    try:
        text = repr(value)
    except Exception as exc:  # a user's __repr__ may fail
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Event:
    """One event of the stream. `id` is the stream's id: it grows, and is the cursor
    for `app.events.read(after=id)`."""

    id: str
    type: str
    time: float
    fields: dict[str, Any]

    @classmethod
    def decode(cls, id_: str, data: bytes) -> Event:
        body = json.loads(data)
        return cls(id_, body.pop("type", "?"), float(body.pop("time", 0.0)), body)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def encode(type_: str, fields: dict[str, Any], at: float | None = None) -> bytes:
    """The stored form of an event: one JSON object with its type and time."""
    body = {"type": type_, "time": time.time() if at is None else at, **fields}
    return json.dumps(body, default=short_repr, separators=(",", ":")).encode()


def task_fields(message: Message) -> dict[str, Any]:
    """What every task event says about its message."""
    return {
        "task_id": message.id,
        "name": message.task,
        "queue": message.queue,
        "retries": message.retries,
    }


def sent_fields(message: Message) -> dict[str, Any]:
    """task-sent (and task-received) also carry the call."""
    return {
        **task_fields(message),
        "args": short_repr(message.args),
        "kwargs": short_repr(message.kwargs),
        "eta": message.eta,
        "expires": message.expires,
        "root_id": message.root,
        "parent_id": message.parent,
    }


class Events:
    """`app.events`: send to and read from the app broker's event stream."""

    def __init__(self, app: App) -> None:
        self.app = app

    def enabled(self, type_: str) -> bool:
        """Whether events of `type_` are sent, by the settings named in this module."""
        conf = self.app.conf
        if type_ == TASK_SENT:
            return bool(conf.task_send_sent_event)
        if type_.startswith("beat-"):
            return bool(conf.beat_send_events)
        return bool(conf.worker_send_task_events)

    def send(self, type_: str, **fields: Any) -> None:
        """Append one event now, in a round trip of its own; a no-op when not enabled."""
        if self.enabled(type_):
            self.app.broker.add_events([encode(type_, fields)])

    def read(
        self, after: str | None = None, count: int = 100, timeout: float | None = None
    ) -> list[Event]:
        """Up to `count` events newer than `after` (None: from the oldest kept), oldest
        first; with none, wait up to `timeout` seconds for one."""
        rows = self.app.broker.read_events(after, count, timeout)
        return [Event.decode(id_, data) for id_, data in rows]

    def recent(self, count: int = 100) -> list[Event]:
        """The newest `count` events, newest last."""
        return [Event.decode(id_, data) for id_, data in self.app.broker.recent_events(count)]


# -- State: what a monitor makes of the stream ----------------------------------------------


@dataclass
class TaskInfo:
    id: str
    name: str | None = None
    state: str = "PENDING"
    args: str | None = None
    kwargs: str | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    queue: str | None = None
    worker: str | None = None
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    finished: float | None = None
    runtime: float | None = None
    retries: int = 0
    eta: float | None = None
    expires: float | None = None
    updated: float = 0.0  # time of the last event applied


@dataclass
class WorkerInfo:
    hostname: str
    online: bool = True  # False once it said worker-offline
    last_heartbeat: float = 0.0
    freq: float = 1.0  # seconds between its heartbeats
    active: int = 0
    processed: int = 0
    pool: str | None = None
    concurrency: int | None = None
    queues: list[str] = field(default_factory=list)
    pid: int | None = None

    @property
    def alive(self) -> bool:
        """Online and heard from within three heartbeats (five seconds at least)."""
        return self.online and time.time() - self.last_heartbeat < max(3 * self.freq, 5.0)


# the state each task event moves a task to
_TASK_STATE = {
    TASK_SENT: "PENDING",
    TASK_RECEIVED: "RECEIVED",
    TASK_STARTED: "STARTED",
    TASK_SUCCEEDED: "SUCCESS",
    TASK_FAILED: "FAILURE",
    TASK_RETRIED: "RETRY",
    TASK_REVOKED: "REVOKED",
    TASK_EXPIRED: "REVOKED",
    TASK_DEAD_LETTERED: "FAILURE",
    TASK_REJECTED: "FAILURE",  # as its stored result (Celery's monitors say REJECTED)
}
_FINAL = {"SUCCESS", "FAILURE", "REVOKED"}
_TIME_FIELD = {
    TASK_SENT: "sent",
    TASK_RECEIVED: "received",
    TASK_STARTED: "started",
    TASK_SUCCEEDED: "finished",
    TASK_FAILED: "finished",
    TASK_REVOKED: "finished",
    TASK_EXPIRED: "finished",
    TASK_DEAD_LETTERED: "finished",
    TASK_REJECTED: "finished",
}
_COPIED = ("name", "args", "kwargs", "result", "exception", "traceback", "queue", "runtime")


class State:
    """The tasks and workers seen in events. Feed it events in stream order.

    >>> state = State(); state.feed_all(app.events.recent(1000)); state.workers
    """

    def __init__(self, max_tasks: int = 10_000) -> None:
        self.max_tasks = max_tasks
        self.tasks: OrderedDict[str, TaskInfo] = OrderedDict()  # newest (by update) last
        self.workers: dict[str, WorkerInfo] = {}
        self.leader: str | None = None  # the beat that last said it was elected
        self.last_id: str | None = None  # the id of the last event fed

    def feed_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.feed(event)

    def feed(self, event: Event) -> None:
        self.last_id = event.id
        if event.type in _TASK_STATE:
            self._task(event)
        elif event.type in WORKER_TYPES:
            self._worker(event)
        elif event.type == BEAT_ELECTED:
            self.leader = event.get("holder")
        elif event.type == BEAT_LOST and self.leader == event.get("holder"):
            self.leader = None

    def _task(self, event: Event) -> None:
        task_id = event.get("task_id")
        if not task_id:
            return
        task = self.tasks.pop(task_id, None) or TaskInfo(task_id)
        self.tasks[task_id] = task
        while len(self.tasks) > self.max_tasks:
            self.tasks.popitem(last=False)
        new_state = _TASK_STATE[event.type]
        # a late non-final event (another worker's view, a slow clock) does not undo a
        # finish; a retry's next run does, as it comes after the finish
        if task.state not in _FINAL or event.time >= (task.finished or 0.0):
            task.state = new_state
        moment = _TIME_FIELD.get(event.type)
        if moment:
            setattr(task, moment, event.time)
        if event.type == TASK_RETRIED:
            task.retries = int(event.get("retries", task.retries)) + 1
        elif "retries" in event.fields:
            task.retries = int(event.get("retries") or 0)
        for key in _COPIED:
            if event.get(key) is not None:
                setattr(task, key, event.get(key))
        for key in ("eta", "expires"):
            if event.get(key) is not None:
                setattr(task, key, event.get(key))
        if event.get("hostname") and event.type != TASK_SENT:
            task.worker = event.get("hostname")
        if event.type == TASK_DEAD_LETTERED and event.get("reason"):
            task.exception = event.get("reason")
        task.updated = event.time

    def _worker(self, event: Event) -> None:
        name = event.get("hostname")
        if not name:
            return
        worker = self.workers.get(name) or WorkerInfo(name)
        self.workers[name] = worker
        worker.online = event.type != WORKER_OFFLINE
        worker.last_heartbeat = event.time
        for key in ("freq", "active", "processed", "pool", "concurrency", "queues", "pid"):
            if event.get(key) is not None:
                setattr(worker, key, event.get(key))

    def find(self, text: str, limit: int = 100) -> list[TaskInfo]:
        """Tasks whose id or name contains `text` (any case), newest last."""
        needle = text.lower()
        found = [
            t
            for t in reversed(self.tasks.values())
            if needle in t.id.lower() or needle in (t.name or "").lower()
        ]
        return found[:limit][::-1]

    def recent_tasks(self, limit: int = 100) -> list[TaskInfo]:
        """The last `limit` tasks updated, newest last."""
        return list(self.tasks.values())[-limit:]
