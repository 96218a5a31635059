"""`app.control`: tell workers what to do through the broker, and ask what they hold.

Commands (`ping`, `shutdown`, `rate_limit`, and `broadcast` for any of them) go on the
broker's control channel. Every worker reads it every quarter second from its heartbeat
thread (never per task), runs the commands addressed to it (`destination=None`: every
worker) and, when the sender waits for replies (`reply=True`), answers; the sender
collects the replies until `timeout` (1 s, as Celery's), or until every live worker
addressed has answered. Replies come in Celery's shape: `[{hostname: reply}, ...]`.

`inspect()` reads what each worker publishes with its heartbeat (about once a second):
what it runs, holds, knows, and its counters, so a busy worker is never waited for.

Revocations are kept in the broker instead, and read by workers with each heartbeat
(`worker_heartbeat_interval`, 1 s by default), so a revocation reaches every worker within
about a second, including those that start later:

- a revoked task not yet started is not run: its state becomes REVOKED, its errbacks
  run and a chord it belongs to still completes (and fails), as when it expires;
- with `terminate=True` a running one is stopped where the pool allows: prefork kills
  the child process running it and starts another; threads and solo raise
  `TaskRevokedError` inside the task at its next Python instruction (a task blocked in
  a C call, such as a socket read without a timeout, stops only when that call returns).

Revocations are kept `worker_revoke_expires` seconds (3 hours by default), as Celery
keeps them; a task delayed by an eta further away than that runs when it comes due.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from .calling import check_keywords
from .context import App
from .rates import parse_rate

POLL = 0.02  # seconds between two looks for replies

# Celery's control commands and inspect views that beatq does not offer: refused by name.
NOT_OFFERED = {
    "add_consumer": "consume another queue: restart the worker with it in -Q",
    "cancel_consumer": "stop consuming a queue: restart the worker without it in -Q",
    "autoscale": "beatq pools have a fixed size (-c)",
    "pool_grow": "beatq pools have a fixed size (-c)",
    "pool_shrink": "beatq pools have a fixed size (-c)",
    "pool_restart": "restart the worker",
    "time_limit": "set time_limit/soft_time_limit on the task and restart the worker",
    "enable_events": "start the worker with -E",
    "disable_events": "start the worker without -E",
    "heartbeat": "workers heartbeat by themselves (see `beatq status`)",
    "election": "the beat's leader is chosen by a lease in the broker",
    "revoke_by_stamped_headers": "revoke tasks by id",
    "memdump": "no memory dumps",
    "memsample": "no memory samples",
    "objgraph": "no object graphs",
    "report": "use inspect().stats()",
    "conf": "read the app's conf in the worker's project",
    "clock": "beatq keeps no logical clock",
    "hello": "workers find no peers: they share the broker",
}


# Keywords of Celery's control calls that beatq does not honour, with why.
_BY_BROKER = "commands go through the app's broker; leave it out"
_BY_NAME = "name the workers in destination="
REFUSED_KEYWORDS = {
    "connection": _BY_BROKER,
    "channel": _BY_BROKER,
    "pattern": _BY_NAME,
    "matcher": _BY_NAME,
}


_REVOKE_REFUSED = {
    **REFUSED_KEYWORDS,
    "reply": "revocations are kept in the broker, not answered: read app.control.revoked()",
    "timeout": "revocations are kept in the broker, not answered: read app.control.revoked()",
    "callback": "revocations are kept in the broker, not answered: read app.control.revoked()",
}
_INSPECT_REFUSED = {
    **REFUSED_KEYWORDS,
    "callback": "inspect() reads what the workers publish: use the view's return value",
    "limit": "inspect() reads what every addressed worker publishes at once",
}


def _refuse(where: str, name: str) -> AttributeError:
    return AttributeError(f"{where}.{name} is not offered by beatq: {NOT_OFFERED[name]}")


class Control:
    """`app.control`.

    >>> app.control.ping(timeout=0.5)
    [{'beatq@host.1234': {'ok': 'pong'}}]
    >>> app.control.rate_limit("proj.tasks.add", "10/m")
    >>> app.control.revoke(result.id, terminate=True)
    """

    def __init__(self, app: App) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        if name in NOT_OFFERED:
            raise _refuse("app.control", name)
        raise AttributeError(name)

    # -- commands --------------------------------------------------------------------------
    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Sequence[str] | str | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        **extra: Any,
    ) -> list[dict[str, Any]] | None:
        """Send `command` to every worker, or to those named in `destination`.

        With `reply`, wait up to `timeout` seconds for the answers (fewer when every live
        worker addressed has answered, or `limit` have) and return them, one
        `{hostname: reply}` per worker, each also passed to `callback` as it comes;
        without, return None at once."""
        check_keywords("app.control.broadcast()", extra, REFUSED_KEYWORDS)
        names = [destination] if isinstance(destination, str) else destination
        command_id = uuid.uuid4().hex
        sent = {
            "id": command_id,
            "command": command,
            "arguments": arguments or {},
            "destination": list(names) if names else None,
            "reply": bool(reply),
            "sent": time.time(),
        }
        broker = self.app.broker
        broker.send_command(json.dumps(sent).encode())
        if not reply:
            return None
        deadline = time.monotonic() + timeout
        found: dict[str, bytes] = {}
        while True:
            seen = found
            found = broker.replies(command_id)
            if callback is not None:
                for name in sorted(found.keys() - seen.keys()):
                    callback({name: json.loads(found[name])})
            if limit is not None and len(found) >= limit:
                break
            if found:
                alive = set(broker.workers())
                expected = alive & set(names) if names else alive
                if expected and expected <= set(found):
                    break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(POLL, left))
        return [{name: json.loads(data)} for name, data in sorted(found.items())]

    def ping(
        self, destination: Sequence[str] | str | None = None, timeout: float = 1.0, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Ask the live workers to answer: `[{hostname: {"ok": "pong"}}, ...]` (`limit`
        and `callback` as `broadcast`'s)."""
        found = self.broadcast(
            "ping", destination=destination, reply=True, timeout=timeout, **kwargs
        )
        return found or []

    def shutdown(
        self,
        destination: Sequence[str] | str | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        """Stop workers warmly, as SIGTERM does: they take no more work, finish what runs
        and put what they hold and have not started back in its queue."""
        return self.broadcast(
            "shutdown", destination=destination, reply=reply, timeout=timeout, **kwargs
        )

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | float | None,
        destination: Sequence[str] | str | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        """Set the rate limit of `task_name` on live workers ("10/s", "100/m", "1000/h",
        a number per second; None or 0 removes it), each worker for itself. Workers
        started later use the task's own `rate_limit`. An invalid rate raises ValueError
        here, before anything is sent."""
        parse_rate(rate_limit)
        arguments = {"task_name": task_name, "rate_limit": rate_limit}
        return self.broadcast(
            "rate_limit", arguments, destination=destination, reply=reply, timeout=timeout, **kwargs
        )

    # -- the broker ------------------------------------------------------------------------
    def purge(self, queues: Iterable[str] | None = None, **kwargs: Any) -> int:
        """Delete the waiting messages of the app's queues (or of `queues`), for good;
        how many. The app's queues: the default one, the tasks' own, those named in
        `task_routes` and `task_queues`, and those live workers consume. Messages
        delayed by an eta and those workers hold are kept, as in Celery."""
        check_keywords("app.control.purge()", kwargs, REFUSED_KEYWORDS)
        names = list(queues) if queues is not None else self.queues()
        return self.app.broker.purge(names)

    def queues(self) -> list[str]:
        """The queues `purge` empties by default (see there)."""
        conf = self.app.conf
        found = [conf.task_default_queue]
        found += [t.option("queue") for t in self.app.tasks.values() if t.option("queue")]
        routes = conf.task_routes
        for router in routes if isinstance(routes, (list, tuple)) else [routes]:
            if isinstance(router, dict):
                for route in router.values():
                    found.append(route.get("queue") if isinstance(route, dict) else route)
        for queue in conf.get("task_queues") or ():
            found.append(queue if isinstance(queue, str) else getattr(queue, "name", None))
        for info in self.app.broker.workers().values():
            found += json.loads(info).get("queues") or []
        return [q for q in dict.fromkeys(found) if isinstance(q, str) and q]

    # -- revocations -----------------------------------------------------------------------
    def revoke(
        self,
        task_id: str | Sequence[str],
        destination: Sequence[str] | str | None = None,
        terminate: bool = False,
        signal: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Revoke one task id or several: workers skip them, or stop them with `terminate`.

        `signal` is accepted for Celery's signature and not used: prefork always kills with
        SIGKILL, as its children ignore SIGTERM and SIGINT so that their tasks can finish
        when the worker stops warmly. `destination` is not needed: every worker, and
        every worker started while the revocation is kept, skips the task.
        """
        check_keywords("app.control.revoke()", kwargs, _REVOKE_REFUSED)
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self.app.broker.revoke(ids, terminate, float(self.app.conf.worker_revoke_expires))

    def terminate(
        self,
        task_id: str | Sequence[str],
        destination: Sequence[str] | str | None = None,
        signal: str | None = None,
        **kwargs: Any,
    ) -> None:
        """`revoke(task_id, terminate=True)`, as Celery's."""
        self.revoke(task_id, destination, terminate=True, signal=signal, **kwargs)

    def revoked(self) -> dict[str, bool]:
        """The revoked task ids still kept, and whether each is to be terminated."""
        return {id_: terminate for id_, _, terminate in self.app.broker.revoked()}

    # -- inspect ---------------------------------------------------------------------------
    def inspect(
        self, destination: Sequence[str] | str | None = None, timeout: float = 1.0, **kwargs: Any
    ) -> Inspect:
        """What live workers hold and know (see `Inspect`)."""
        check_keywords("app.control.inspect()", kwargs, _INSPECT_REFUSED)
        return Inspect(self, destination, timeout)


class Inspect:
    """`app.control.inspect()`: each view is `{hostname: ...}` for the live workers
    addressed, or None when none is alive (as Celery's when no worker answers).

    Read from what each worker publishes with its heartbeat (about once a second), so a
    task started a moment ago may show only a second later; `ping` asks the workers.
    """

    def __init__(
        self, control: Control, destination: Sequence[str] | str | None, timeout: float
    ) -> None:
        self.control = control
        self.destination = [destination] if isinstance(destination, str) else destination
        self.timeout = timeout

    def __getattr__(self, name: str) -> Any:
        if name in NOT_OFFERED:
            raise _refuse("inspect()", name)
        raise AttributeError(name)

    def _infos(self) -> dict[str, dict[str, Any]]:
        found = self.control.app.broker.workers()
        names = set(self.destination) if self.destination else None
        return {
            name: json.loads(info)
            for name, info in sorted(found.items())
            if names is None or name in names
        }

    def _each(self, view: Any) -> dict[str, Any] | None:
        infos = self._infos()
        return {name: view(name, info) for name, info in infos.items()} or None

    def ping(self) -> dict[str, Any] | None:
        """`{hostname: {"ok": "pong"}}` for each worker that answers within `timeout`."""
        replies = self.control.broadcast(
            "ping", destination=self.destination, reply=True, timeout=self.timeout
        )
        merged = {name: answer for one in replies or [] for name, answer in one.items()}
        return merged or None

    def active(self) -> dict[str, list[dict[str, Any]]] | None:
        """The tasks each worker runs now."""
        return self._each(lambda name, info: [_task(name, t) for t in info.get("active", [])])

    def reserved(self) -> dict[str, list[dict[str, Any]]] | None:
        """The tasks each worker holds and has not started (the first 100 of each): in
        its buffer, behind a prefork child's task, or waiting for a rate limit."""
        return self._each(
            lambda name, info: [_task(name, t) for t in info.get("reserved_tasks", [])]
        )

    def scheduled(self) -> dict[str, list[dict[str, Any]]] | None:
        """The tasks with an eta each worker holds, in Celery's shape. beatq keeps ETA
        tasks in the broker until they are due (a worker takes one a moment before its
        eta), so this is mostly empty: `beatq inspect scheduled` lists the broker's."""

        def view(name: str, info: dict[str, Any]) -> list[dict[str, Any]]:
            held = info.get("active", []) + info.get("reserved_tasks", [])
            return [
                {"eta": _iso(t["eta"]), "priority": None, "request": _task(name, t)}
                for t in held
                if t.get("eta") and t["eta"] > time.time()
            ]

        return self._each(view)

    def registered(self, *taskinfoitems: str) -> dict[str, list[str]] | None:
        """The task names each worker knows."""
        return self._each(lambda name, info: list(info.get("registered", [])))

    registered_tasks = registered

    def stats(self) -> dict[str, dict[str, Any]] | None:
        """Each worker's pool, counters and resource use (Celery's keys where they apply)."""

        def view(name: str, info: dict[str, Any]) -> dict[str, Any]:
            started = info.get("started") or time.time()
            return {
                "hostname": name,
                "pid": info.get("pid"),
                "broker": {"url": info.get("broker")},
                "pool": {
                    "implementation": info.get("pool"),
                    "max-concurrency": info.get("concurrency"),
                    **({"autoscaler": info["autoscale"]} if info.get("autoscale") else {}),
                },
                "prefetch_count": info.get("prefetch_count"),
                "total": info.get("total", {}),
                "processed": info.get("processed", 0),
                "uptime": max(0, int(time.time() - started)),
                "rusage": info.get("rusage", {}),
                "rate_limits": info.get("rate_limits", {}),
                "timezone": info.get("timezone"),
            }

        return self._each(view)

    def active_queues(self) -> dict[str, list[dict[str, Any]]] | None:
        """The queues each worker consumes, most urgent first, in Celery's shape."""
        return self._each(lambda name, info: [_queue(q) for q in info.get("queues", [])])

    def query_task(self, *ids: str | Sequence[str]) -> dict[str, dict[str, Any]] | None:
        """For each worker, the given tasks it runs or holds:
        `{hostname: {task_id: ["active" | "reserved", {task}]}}`."""
        wanted = {i for one in ids for i in ([one] if isinstance(one, str) else one)}

        def view(name: str, info: dict[str, Any]) -> dict[str, Any]:
            found: dict[str, Any] = {}
            for state, key in (("active", "active"), ("reserved", "reserved_tasks")):
                for task in info.get(key, []):
                    if task["id"] in wanted:
                        found[task["id"]] = [state, _task(name, task)]
            return found

        return self._each(view)

    def revoked(self) -> dict[str, list[str]] | None:
        """The revoked task ids each worker skips (all share the broker's)."""
        ids = sorted(self.control.revoked())
        return self._each(lambda name, info: list(ids))


def _task(hostname: str, task: dict[str, Any]) -> dict[str, Any]:
    """A task as a worker publishes it, in the shape of Celery's inspect views."""
    queue = task.get("queue")
    return {
        "id": task.get("id"),
        "name": task.get("name"),
        "type": task.get("name"),
        "args": task.get("args"),
        "kwargs": task.get("kwargs"),
        "hostname": hostname,
        "time_start": task.get("time_start"),
        "acknowledged": task.get("time_start") is not None,
        "delivery_info": {"exchange": "", "routing_key": queue, "queue": queue},
        "eta": _iso(task["eta"]) if task.get("eta") else None,
    }


def _queue(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "exchange": {"name": name, "type": "direct"},
        "routing_key": name,
        "durable": True,
        "auto_delete": False,
        "exclusive": False,
        "no_ack": False,
    }


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat()
