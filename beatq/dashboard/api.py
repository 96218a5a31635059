"""What the dashboard shows and does, as JSON-ready dicts: the broker read for people.

`Dashboard.snapshot()` gathers workers, queues, schedules, the beat leader and dead
letters in a handful of broker calls and keeps the result for `max_age` seconds, so any
number of open pages cost the broker the same. Every time in it is a string made here,
in the zone it belongs to (an entry's own zone, else the app's) with its UTC offset.

Every broker call goes through one thread of this object's own: a backend may keep a
connection per thread (SQLite does), and the HTTP server starts a thread per request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .. import messages
from ..app import Beatq
from ..beat.beat import LEASE_NAME
from ..beat.record import EntryRecord
from ..brokers import Backend, Node, Shard, Topology
from ..brokers.urls import process_urls, reported, shown_url
from ..timeline import chart
from . import timefmt
from .schedules import ScheduleActions, waiting_rows
from .tasks import TaskFeed

log = logging.getLogger("beatq.dashboard")

T = TypeVar("T")

TEXT_LIMIT = 300  # characters of args/kwargs/reason shown in a table cell
DEAD_LETTER_LIMIT = 200
SCHEDULED_LIMIT = 1000
TOPOLOGY_EVERY = 2.0  # seconds between reads of the topology (a few round trips each)


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class NotFound(LookupError):
    """The thing a request names does not exist (HTTP 404)."""


class Dashboard:
    """The model behind the page: snapshots and the actions its buttons take.

    >>> board = Dashboard(app)
    >>> board.snapshot()["workers"]
    """

    def __init__(self, app: Beatq, queues: Sequence[str] = (), max_age: float = 0.5) -> None:
        self.app = app
        self.zone = app.timezone
        self.extra_queues = [q for q in queues if q]
        self.max_age = max_age
        self.seen_queues: set[str] = set()
        self._broker_thread = ThreadPoolExecutor(1, thread_name_prefix="beatq-dashboard")
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._timeline: tuple[float, dict[str, Any] | None] | None = None
        self._topology: tuple[float, dict[str, Any]] | None = None
        self._changed = threading.Condition()
        self.feed = TaskFeed(app, self._notify)
        self.schedules = ScheduleActions(app, self._call, self._forget_cache)

    # -- plumbing --------------------------------------------------------------------------
    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return self._broker_thread.submit(fn, *args).result()

    @property
    def broker(self) -> Backend:
        return self.app.broker

    def start(self) -> None:
        """Start following the event stream (recent tasks)."""
        self.feed.start()

    def close(self) -> None:
        self.feed.stop()
        self._broker_thread.shutdown(wait=True)

    def wait_for_change(self, timeout: float) -> None:
        """Block until something changed (an action, an event) or `timeout` seconds."""
        with self._changed:
            self._changed.wait(timeout)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- reading ---------------------------------------------------------------------------
    def state(self, query: str = "") -> dict[str, Any]:
        """Everything the page shows; recent tasks filtered by `query` (id or name)."""
        snapshot = self.snapshot()
        counts = self.feed.workers()
        done = self.feed.finished([t["id"] for w in snapshot["workers"] for t in w["tasks"]])
        workers = []
        for worker in snapshot["workers"]:
            running = [t for t in worker["tasks"] if t["id"] not in done]
            extra = counts.get(worker["hostname"], {})
            workers.append({**worker, **extra, "tasks": running, "active": len(running)})
        return {**snapshot, "workers": workers, "tasks": self._call(self.feed.listing, query)}

    def task(self, task_id: str) -> dict[str, Any]:
        """One task with its traceback; NotFound if neither events nor results know it."""
        found = self._call(self.feed.detail, task_id)
        if found is None:
            raise NotFound(f"no task {task_id!r} in the recent events or the result store")
        return found

    def snapshot(self) -> dict[str, Any]:
        """The broker's part of the page, at most `max_age` seconds old."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.max_age:
                self._cached = (now, self._call(self._read))
            return self._cached[1]

    def _read(self) -> dict[str, Any]:
        now = time.time()
        workers = self._workers(now)
        dead = self._dead_letters()
        schedules = self._schedules(now)
        leader = self._leader(now)
        if leader is None:  # nobody sends them: a run past its time is not "in a moment"
            for row in schedules:
                due = row.get("next_ts")
                if due is not None and due < now and not row.get("paused"):
                    row["overdue"] = True
                    row["next_in"] = f"overdue by {timefmt.duration(now - due)}: no beat leader"
        return {
            "app": self.app.main or "beatq",
            "broker": shown_url(self.app.conf.broker_url),
            "topology": self._topology_card(now),
            "beats": self._beats(),
            "zone": str(self.zone),
            "now": {"ts": now, "local": timefmt.zoned(now, self.zone), "utc": timefmt.utc(now)},
            "leader": leader,
            "workers": workers,
            "queues": self._queues(workers, dead["items"], schedules),
            "schedules": schedules,
            "dead_letters": dead,
            "timeline": self._timeline_chart(now),
        }

    def _topology_card(self, now: float) -> dict[str, Any]:
        """The backend card: what the backend runs on (read again every TOPOLOGY_EVERY
        seconds), and the URLs this dashboard uses (each process's are in its row)."""
        if self._topology is None or now - self._topology[0] >= TOPOLOGY_EVERY:
            self._topology = (now, self._described(self.broker.topology()))
        return self._topology[1]

    def _described(self, found: Topology) -> dict[str, Any]:
        def node(n: Node) -> dict[str, Any]:
            return {
                "address": n.address,
                "role": n.role,
                "status": n.status,
                "version": n.version,
                "lag": None if n.lag is None else f"{n.lag:g} s",
                "behind": None if n.behind is None else f"{n.behind:,} B",
                "detail": n.detail,
            }

        def shard(s: Shard) -> dict[str, Any]:
            slots = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in s.slots)
            return {
                "master": node(s.master),
                "replicas": [node(r) for r in s.replicas],
                "slots": slots or None,
                "queues": list(s.queues),
            }

        failover = found.last_failover
        return {
            "kind": found.kind,
            "url": found.url,
            "service": found.service,
            "shards": [shard(s) for s in found.shards],
            "sentinels": [node(n) for n in found.sentinels],
            "epoch": found.epoch,
            "last_failover": timefmt.zoned(failover, self.zone) if failover else None,
            "last_failover_utc": timefmt.utc(failover) if failover else None,
            "path": found.path,
            "journal_mode": found.journal_mode,
            "size": None if found.size is None else f"{found.size:,} B",
            "dashboard": process_urls(self.app.conf.broker_url, self.app.conf.result_backend),
        }

    def _beats(self) -> list[dict[str, Any]]:
        rows = []
        for holder, raw in self.broker.beats().items():
            try:
                info = json.loads(raw)
            except ValueError:
                info = {}
            started = info.get("started")
            rows.append(
                {
                    "holder": holder,
                    "pid": info.get("pid"),
                    "leader": bool(info.get("leader")),
                    "token": info.get("token"),
                    "started": timefmt.zoned(started, self.zone) if started else None,
                    "broker": reported(info.get("broker")),
                    "result_backend": reported(info.get("result_backend")),
                }
            )
        return sorted(rows, key=lambda row: (not row["leader"], row["holder"]))

    def _timeline_chart(self, now: float) -> dict[str, Any] | None:
        """The last `timeline_keep` seconds as chart series (beatq/timeline.py), read again
        at most every few seconds (a sample comes every `timeline_interval`); None: off."""
        step = float(self.app.conf.timeline_interval or 0)
        if step <= 0:
            return None
        if self._timeline is not None and now - self._timeline[0] < min(step / 2, 5.0):
            return self._timeline[1]
        span = float(self.app.conf.timeline_keep)
        series = chart(self.broker.samples(now - span - step), now, step, span)
        starts = series["t"]
        series["title"] = "Last hour" if span == 3600 else f"Last {timefmt.duration(span)}"
        series["labels"] = [timefmt.clock(t, self.zone) for t in starts]
        series["note"] = (
            f"{timefmt.duration(step)} samples from {timefmt.zoned(starts[0], self.zone)} "
            f"to {timefmt.zoned(starts[-1] + step, self.zone)}"
        )
        self._timeline = (now, series)
        return series

    def _workers(self, now: float) -> list[dict[str, Any]]:
        rows = []
        for name, raw in sorted(self.broker.workers().items()):
            try:
                info = json.loads(raw)
            except ValueError:
                info = {}
            active = info.get("active") or []
            concurrency = int(info.get("concurrency") or 0)
            started = info.get("started")
            rows.append(
                {
                    "hostname": name,
                    "pid": info.get("pid"),
                    "pool": info.get("pool"),
                    "concurrency": concurrency,
                    "queues": info.get("queues") or [],
                    "active": len(active),
                    "reserved": int(info.get("reserved") or 0),
                    "load": round(len(active) / concurrency, 3) if concurrency else None,
                    "started": timefmt.zoned(started, self.zone) if started else None,
                    "uptime": timefmt.duration(now - started) if started else None,
                    "broker": reported(info.get("broker")),
                    "result_backend": reported(info.get("result_backend")),
                    "tasks": [
                        {
                            "id": task.get("id"),
                            "name": task.get("name"),
                            "args": clip(str(task.get("args", ""))),
                            "kwargs": clip(str(task.get("kwargs", ""))),
                            "running_for": timefmt.duration(now - task["time_start"])
                            if task.get("time_start")
                            else None,
                        }
                        for task in active
                    ],
                }
            )
        return rows

    def _known_queues(
        self,
        workers: list[dict[str, Any]],
        dead: list[dict[str, Any]],
        schedules: list[dict[str, Any]],
    ) -> list[str]:
        """Every queue a name is known for: the default, the routes of registered tasks,
        the queues workers consume, dead letters' and entries' queues, `-Q`, and those seen."""
        names = {self.app.conf.task_default_queue, *self.extra_queues, *self.seen_queues}
        for task_name, task in list(self.app.tasks.items()):
            if task_name.startswith("beatq."):
                continue
            try:
                names.add(self.app.route(task_name, (), {}, task))
            except Exception:  # a user's router may not expect empty arguments
                continue
        for worker in workers:
            names.update(worker["queues"])
        names.update(letter["queue"] for letter in dead)
        names.update(entry["queue"] for entry in schedules if entry.get("queue"))
        return sorted(n for n in names if n)

    def _queues(
        self,
        workers: list[dict[str, Any]],
        dead: list[dict[str, Any]],
        schedules: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        delayed: dict[str, int] = {}
        scheduled = self.broker.scheduled(SCHEDULED_LIMIT)
        for _eta, claim in scheduled:
            delayed[claim.queue] = delayed.get(claim.queue, 0) + 1
        self.seen_queues.update(delayed)
        names = sorted(set(self._known_queues(workers, dead, schedules)) | set(delayed))
        self.seen_queues.update(names)
        rows = []
        for name in names:
            consumers = [w["hostname"] for w in workers if name in w["queues"]]
            rows.append(
                {
                    "name": name,
                    "depth": self.broker.queue_length(name),
                    "delayed": delayed.get(name, 0),
                    "delayed_more": len(scheduled) >= SCHEDULED_LIMIT,
                    "consumers": consumers,
                }
            )
        return rows

    def _route(self, task: str | None) -> str | None:
        if not task:
            return None
        try:
            return self.app.route(task, (), {}, self.app.tasks.get(task))
        except Exception:  # a user's router may not expect empty arguments
            return None

    def _leader(self, now: float) -> dict[str, Any] | None:
        lease = self.broker.get_lease(LEASE_NAME)
        if lease is None:
            return None
        expires = now + lease.remaining
        return {
            "holder": lease.holder,
            "token": lease.token,
            "remaining": round(lease.remaining, 3),
            "expires": timefmt.zoned(expires, self.zone),
            "since": timefmt.zoned(lease.since, self.zone) if lease.since else None,
            "since_utc": timefmt.utc(lease.since) if lease.since else None,
            "age": timefmt.duration(now - lease.since) if lease.since else None,
        }

    def _schedules(self, now: float) -> list[dict[str, Any]]:
        rows = []
        for name, state in sorted(self.broker.beat_entries().items()):
            record = EntryRecord.from_json(state.info)
            zone = record.zone(self.zone)
            last = record.last_slot
            nxt = state.next_run
            lateness = record.lateness
            rows.append(
                {
                    "name": name,
                    "task": record.task,
                    "schedule": record.schedule,
                    "zone": str(zone),
                    "source": record.source,
                    "editable": record.source == "store",
                    "queue": record.queue or self._route(record.task),
                    "paused": state.paused,
                    "runs": record.runs,
                    "missed": record.missed,
                    "overlapped": record.overlapped,
                    "last_run": timefmt.zoned(last, zone) if last else None,
                    "last_run_utc": timefmt.utc(last) if last else None,
                    "last_task_id": record.last_task_id,
                    "lateness_ms": round(lateness * 1000, 1) if lateness is not None else None,
                    "next_run": timefmt.zoned(nxt, zone) if nxt else None,
                    "next_run_utc": timefmt.utc(nxt) if nxt else None,
                    "next_ts": nxt,
                    # a paused entry's next run is not coming: no countdown to it
                    "next_in": "paused"
                    if state.paused
                    else (timefmt.relative(nxt, now) if nxt else None),
                }
            )
        planned = {row["name"] for row in rows}
        rows += waiting_rows(self.broker, self.zone, planned)
        return sorted(rows, key=lambda row: row["name"])

    def _dead_letters(self) -> dict[str, Any]:
        letters = self.broker.dead_letters(DEAD_LETTER_LIMIT)
        items = []
        accept = list(self.app.conf.accept_content)
        for letter in reversed(letters):  # newest first
            row: dict[str, Any] = {
                "id": letter.id,
                "queue": letter.queue,
                "reason": clip(letter.reason, 1000),
                "time": timefmt.zoned(letter.time, self.zone),
                "task": "?",
                "args": "",
            }
            try:
                row["task"] = messages.read_header(letter.body)["task"]
                # decoded only with the app's accepted content types: never unpickle here
                message = messages.decode(letter.body, accept)
                row["args"] = clip(_call_text(message.args, message.kwargs))
            except Exception as exc:  # corrupt or not accepted: that is often why it is here
                row["args"] = f"(not shown: {clip(str(exc), 120)})"
            items.append(row)
        return {"count": len(letters), "more": len(letters) >= DEAD_LETTER_LIMIT, "items": items}

    # -- acting ----------------------------------------------------------------------------
    def _forget_cache(self) -> None:
        with self._lock:
            self._cached = None
        self._notify()

    def set_paused(self, entry: str, paused: bool) -> None:
        """Pause or resume a beat entry on every beat; NotFound if the broker lacks it."""

        def act() -> None:
            if entry not in self.broker.beat_entries():
                raise NotFound(f"no schedule entry {entry!r}")
            self.broker.beat_pause(entry, paused)

        self._call(act)
        log.info("dashboard: %s entry %r", "paused" if paused else "resumed", entry)
        self._forget_cache()

    def revoke(self, task_id: str, terminate: bool = False) -> None:
        """Revoke a task on every worker (stop it if running, with `terminate`)."""
        if not task_id.strip():
            raise ValueError("no task id to revoke")
        self._call(self.app.control.revoke, task_id, terminate)
        log.info("dashboard: revoked %s%s", task_id, " (terminate)" if terminate else "")
        self._notify()

    def requeue(self, ids: Sequence[str] | None) -> list[str]:
        """Send dead letters (all when `ids` is None) back to their queue; the ids moved."""
        moved = self._call(self.broker.requeue_dead, None if ids is None else list(ids))
        if ids is not None and not moved:
            raise NotFound(f"no dead letter {', '.join(ids)}")
        log.info("dashboard: requeued %d dead letter(s)", len(moved))
        self._forget_cache()
        return moved


def _call_text(args: Any, kwargs: Any) -> str:
    parts = [repr(a) for a in args or ()]
    parts += [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
    return ", ".join(parts)
