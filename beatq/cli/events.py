"""`beatq events`: a live terminal view of workers, queues and recent tasks, or a dump.

The view is built from the event stream (turn events on with `worker -E`, `beat -E`
and `task_send_sent_event`) and from what the broker holds (live workers, queue
depths, the beat's lease), so it shows workers and queues even with events off.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import tzinfo
from typing import Any

import click

from ..beat.beat import LEASE_NAME
from ..events import Event, State
from ..timezones import format_time
from . import times
from .base import get_app, handle_errors, loglevel_option, require_shared_broker

CLEAR = "\x1b[H\x1b[2J"


def describe(event: Event, zone: tzinfo) -> str:
    """One line: time in the app's zone with its offset, type, then key=value fields."""
    parts = [format_time(event.time, zone), event.type]
    for key, value in times.zoned(event.fields, zone).items():
        if value is None or key == "traceback":
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


@click.command("events")
@click.option("--dump", is_flag=True, help="Print one event per line instead of the live view.")
@click.option("--json", "as_json", is_flag=True, help="With --dump: one JSON object per line.")
@click.option(
    "--follow/--no-follow",
    default=True,
    show_default=True,
    help="With --dump: keep printing new events (else stop after the kept ones).",
)
@click.option("--new", is_flag=True, help="With --dump: only events from now on.")
@click.option("--interval", default=1.0, show_default=True, help="Live view: seconds per refresh.")
@click.option("--tasks", "max_tasks", default=20, show_default=True, help="Live view: tasks shown.")
@loglevel_option
@click.pass_context
@handle_errors
def events_cmd(
    ctx: click.Context,
    dump: bool,
    as_json: bool,
    follow: bool,
    new: bool,
    interval: float,
    max_tasks: int,
    loglevel: str | None,
) -> None:
    """Watch the cluster: workers, queues with their depth and recent tasks, live.

    With --dump, print the events kept in the broker (the recent past), one per line,
    and then the new ones as they come; Ctrl-C stops.
    """
    app = get_app(ctx, loglevel)
    require_shared_broker(app, "events")
    try:
        if dump:
            _dump(app, as_json, follow, new)
        else:
            _live(app, interval, max_tasks)
    except KeyboardInterrupt:
        pass


def _dump(app: Any, as_json: bool, follow: bool, new: bool) -> None:
    zone = app.timezone
    cursor = None
    if new:
        newest = app.events.recent(1)
        cursor = newest[-1].id if newest else "0"
    while True:
        batch = app.events.read(after=cursor, count=500, timeout=1.0 if follow else None)
        for event in batch:
            if as_json:
                fields = times.stamped(event.fields)
                record = {"id": event.id, "type": event.type, "time_ts": event.time, **fields}
                click.echo(json.dumps(record))
            else:
                click.echo(describe(event, zone))
        if batch:
            cursor = batch[-1].id
            sys.stdout.flush()
        elif not follow:
            return


def _live(app: Any, interval: float, max_tasks: int) -> None:
    state = State(max_tasks=1000)
    state.feed_all(app.events.recent(2000))
    # on a terminal each screen replaces the last; piped, screens follow one another
    clear = CLEAR if sys.stdout.isatty() else ""
    while True:
        sys.stdout.write(clear + render(app, state, max_tasks) + ("" if clear else "\n"))
        sys.stdout.flush()
        deadline = time.monotonic() + interval
        while (left := deadline - time.monotonic()) > 0:
            batch = app.events.read(after=state.last_id, count=1000, timeout=left)
            state.feed_all(batch)


def render(app: Any, state: State, max_tasks: int) -> str:
    """The live view as text: workers, queues, beat leader, recent tasks."""
    zone = app.timezone
    width = shutil.get_terminal_size((120, 40)).columns
    lines = [f"beatq {app.main or ''} — {format_time(time.time(), zone)}", ""]
    workers = {name: json.loads(info) for name, info in app.broker.workers().items()}
    lines.append(f"Workers ({len(workers)} alive)")
    queues: set[str] = {app.conf.task_default_queue}
    for name, info in sorted(workers.items()):
        queues.update(info.get("queues") or [])
        seen = state.workers.get(name)
        processed = info.get("processed", seen.processed if seen else "?")
        lines.append(
            f"  {name:<32} {info.get('pool', '?')}×{info.get('concurrency', '?'):<3} "
            f"active {len(info.get('active') or []):<3} processed {processed}"
        )
    if not workers:
        lines.append("  (none)")
    queues.update(t.queue for t in state.tasks.values() if t.queue)
    lines += ["", "Queues (ready messages)"]
    for queue in sorted(queues):
        lines.append(f"  {queue:<32} {app.broker.queue_length(queue)}")
    lease = app.broker.get_lease(LEASE_NAME)
    lines += ["", f"Beat leader: {lease.holder if lease else 'none'}"]
    lines += ["", f"Recent tasks (newest first, of {len(state.tasks)} seen in events)"]
    for task in reversed(state.recent_tasks(max_tasks)):
        when = format_time(task.updated, zone)[11:23]
        runtime = f"{task.runtime:.3f}s" if task.runtime is not None else ""
        detail = task.exception or task.result or task.args or ""
        line = f"  {when} {task.state:<8} {task.name or '?'}[{task.id}] {runtime} {detail}"
        lines.append(line[: width - 1])
    if not state.tasks:
        lines.append("  (no task events yet: start workers with -E)")
    return "\n".join(lines) + "\n"
