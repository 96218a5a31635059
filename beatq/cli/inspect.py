"""`beatq inspect registered|active|reserved|scheduled|stats|active_queues|query_task|ping`:
what workers and the broker hold.

Workers publish their state with every heartbeat (about once a second), so this reads
the broker and never waits for a busy worker to answer; `ping` asks them (control channel).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import messages
from ..timezones import format_time
from . import times
from .base import EXIT_FAILED, get_app, handle_errors, loglevel_option


def _workers(app: Any) -> dict[str, dict[str, Any]]:
    return {name: json.loads(info) for name, info in sorted(app.broker.workers().items())}


VIEWS = [
    "registered",
    "active",
    "reserved",
    "scheduled",
    "stats",
    "active_queues",
    "query_task",
    "ping",
]


@click.command("inspect")
@click.argument("what", type=click.Choice(VIEWS))
@click.argument("ids", nargs=-1, metavar="[ID...]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=100, show_default=True, help="scheduled: how many to list.")
@click.option("-d", "--destination", metavar="NAME,...", help="The workers asked (default: all).")
@click.option(
    "-t", "--timeout", type=float, default=1.0, show_default=True, help="ping: seconds to wait."
)
@loglevel_option
@click.pass_context
@handle_errors
def inspect_cmd(
    ctx: click.Context,
    what: str,
    ids: tuple[str, ...],
    as_json: bool,
    limit: int,
    destination: str | None,
    timeout: float,
    loglevel: str | None,
) -> None:
    """Show what live workers hold, or the scheduled (ETA) tasks in the broker.

    registered: their tasks; active: the tasks running; reserved: the tasks claimed and
    waiting for a pool slot; stats: pool, counters, resource use; scheduled: the
    messages waiting for their eta; active_queues: the queues each consumes;
    query_task ID...: where those tasks are; ping: each worker answers. Exit 1 when no
    worker is alive or answers (all but scheduled).
    """
    app = get_app(ctx, loglevel)
    zone = app.timezone
    if (what == "query_task") != bool(ids):
        raise click.UsageError("IDs go with query_task only (inspect query_task ID...)")
    if what in ("active_queues", "query_task", "ping"):
        _ask(app, what, ids, as_json, destination, timeout)
        return
    if what == "scheduled":
        if destination:
            raise click.UsageError(
                "inspect scheduled lists the broker's ETA tasks, held by no worker: drop -d"
            )
        rows = []
        for eta, claim in app.broker.scheduled(limit):
            try:
                header = messages.read_header(claim.body)
                name = header["task"]
            except messages.MessageError:
                name = "?"
            rows.append({"id": claim.id, "name": name, "queue": claim.queue, "eta": eta})
        if as_json:
            click.echo(json.dumps(times.stamped(rows)))
        else:
            for row in rows:
                when = format_time(row["eta"], zone)
                click.echo(f"{when}  {row['name']}[{row['id']}]  queue={row['queue']}")
            click.echo(f"{len(rows)} scheduled task(s)")
        return
    workers = _workers(app)
    if destination:
        names = {n.strip() for n in destination.split(",")}
        workers = {name: info for name, info in workers.items() if name in names}
    if as_json:
        click.echo(json.dumps({n: times.stamped(_view(what, w)) for n, w in workers.items()}))
    else:
        for name, info in workers.items():
            click.echo(f"-> {name}")
            view = _view(what, info)
            if what == "active":
                for task in view:
                    since = format_time(task["time_start"], zone)
                    click.echo(f"   {task['name']}[{task['id']}] {task['args']} since {since}")
                if not view:
                    click.echo("   (none)")
            elif what == "reserved":
                for task in view:
                    click.echo(f"   {task['name']}[{task['id']}] {task['args']} {task['kwargs']}")
                if not view:
                    click.echo("   (none)")
            elif what == "registered":
                for task in view:
                    click.echo(f"   {task}")
            else:  # stats: its instants in the app's zone
                for key, value in times.zoned(view, zone).items():
                    click.echo(f"   {key}: {value}")
    if not workers:
        click.echo("Error: no worker is alive", err=True)
        sys.exit(EXIT_FAILED)


def _ask(
    app: Any,
    what: str,
    ids: tuple[str, ...],
    as_json: bool,
    destination: str | None,
    timeout: float,
) -> None:
    names = [n.strip() for n in destination.split(",") if n.strip()] if destination else None
    inspect = app.control.inspect(destination=names, timeout=timeout)
    found = inspect.query_task(*ids) if what == "query_task" else getattr(inspect, what)()
    if as_json:
        click.echo(json.dumps(times.stamped(found)))
    else:
        for name, value in (found or {}).items():
            if what == "ping":
                click.echo(f"-> {name}: OK {value.get('ok', value)}")
                continue
            click.echo(f"-> {name}")
            if what == "active_queues":
                for queue in value:
                    click.echo(f"   {queue['name']}")
            else:
                for task_id, (state, task) in value.items():
                    click.echo(f"   {task_id}: {state} {task['name']} {task['args']}")
                if not value:
                    click.echo("   (none of them)")
    if not found:
        click.echo(
            "Error: no worker is alive" if what != "ping" else "Error: no worker replied", err=True
        )
        sys.exit(EXIT_FAILED)


def _view(what: str, info: dict[str, Any]) -> Any:
    if what == "registered":
        return info.get("registered", [])
    if what == "active":
        return info.get("active", [])
    if what == "reserved":
        return info.get("reserved_tasks", [])
    hidden = ("registered", "active", "reserved_tasks")
    return {k: v for k, v in info.items() if k not in hidden}
