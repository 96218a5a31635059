"""Control commands as a worker runs them (`app.control.ping/shutdown/rate_limit`).

The worker's heartbeat thread reads the broker's control channel every CONTROL_EVERY
seconds (one cheap read, never per task), from the cursor it took when it started, so a
command reaches the workers alive when it was sent, each once. A command names its
destination (None: every worker); a worker answers when the sender waits for replies.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ..rates import parse_rate

Worker = Any  # worker.Worker (which imports this module)

log = logging.getLogger("beatq.worker")

CONTROL_EVERY = 0.25  # seconds between two reads of the control channel
REPLY_TTL = 60.0  # seconds a reply is kept for its sender


def run_commands(worker: Worker) -> None:
    """Read the commands sent since the last read and run those addressed to `worker`."""
    broker = worker.app.broker
    cursor, found = broker.commands(worker.control_cursor)
    worker.control_cursor = cursor
    for raw in found:
        try:
            command = json.loads(raw)
            name = command["command"]
            arguments = command.get("arguments") or {}
            destination = command.get("destination")
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("worker %s: ignored a malformed control command (%s)", worker.hostname, exc)
            continue
        if destination and worker.hostname not in destination:
            continue
        handler = HANDLERS.get(name)
        if handler is None:
            answer: dict[str, Any] = {"error": f"unknown command {name!r}"}
        else:
            try:
                answer = handler(worker, **arguments)
            except Exception as exc:
                log.exception("worker %s: control command %s failed", worker.hostname, name)
                answer = {"error": f"{type(exc).__name__}: {exc}"}
        if command.get("reply") and command.get("id"):
            data = json.dumps(answer, default=str).encode()
            broker.reply(command["id"], worker.hostname, data, REPLY_TTL)
        if name == "shutdown" and "ok" in answer:  # once answered: the process may end soon
            worker.stop_warmly("remote")


def ping(worker: Worker, **_: Any) -> dict[str, Any]:
    return {"ok": "pong"}


def shutdown(worker: Worker, **_: Any) -> dict[str, Any]:
    log.warning("worker %s: shutdown asked remotely, finishing running tasks", worker.hostname)
    return {"ok": "shutting down"}  # run_commands stops the worker once it has answered


def rate_limit(
    worker: Worker, task_name: str = "", rate_limit: object = None, **_: Any
) -> dict[str, Any]:
    if task_name not in worker.app.tasks:
        return {"error": f"unknown task {task_name!r}"}
    if worker.throttle.disabled:
        return {"error": "rate limits disabled (worker_disable_rate_limits)"}
    try:
        rate = parse_rate(rate_limit)
    except ValueError as exc:
        return {"error": str(exc)}
    worker.throttle.set(task_name, rate)
    log.info("worker %s: rate limit of %s set to %s", worker.hostname, task_name, rate_limit)
    return {"ok": "new rate limit set successfully"}


HANDLERS: dict[str, Callable[..., dict[str, Any]]] = {
    "ping": ping,
    "shutdown": shutdown,
    "rate_limit": rate_limit,
}
