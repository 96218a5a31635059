"""`beatq status` (are workers alive?), `beatq revoke ID... [--terminate]`, `beatq control
ping|shutdown|rate_limit` (commands to live workers) and `beatq purge` (empty queues)."""

from __future__ import annotations

import json
import sys
import time
from datetime import tzinfo

import click

from ..brokers.urls import reported
from ..timezones import format_time
from . import times, topology
from .base import EXIT_FAILED, get_app, handle_errors, loglevel_option, require_shared_broker


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@loglevel_option
@click.pass_context
@handle_errors
def status(ctx: click.Context, as_json: bool, loglevel: str | None) -> None:
    """List the live workers (heard from within three heartbeats) and beats, the backend
    URL each uses, and what the backend runs on: the master and its replicas with their
    lag, the sentinels, a SQLite file.

    Exit 0 when at least one worker is alive, 1 when none is, 4 when the broker cannot
    be reached: usable as a health check.
    """
    app = get_app(ctx, loglevel)
    require_shared_broker(app, "status")
    broker = app.broker
    workers = {name: json.loads(info) for name, info in sorted(broker.workers().items())}
    beats = sorted((_beat(info) for info in broker.beats().values()), key=_beat_order)
    found = broker.topology()
    if as_json:
        summaries = {name: times.stamped(_summary(info)) for name, info in workers.items()}
        click.echo(
            json.dumps(
                {
                    "backend": times.stamped(found.to_dict()),
                    "workers": summaries,
                    "beats": {b.get("holder"): times.stamped(b) for b in beats},
                }
            )
        )
    else:
        zone = app.timezone
        for line in topology.lines(found, zone):
            click.echo(line)
        for name, info in workers.items():
            s = _summary(info)
            since = format_time(s["started"], zone) if s["started"] else "?"
            click.echo(
                f"-> {name}: OK  pool {s['pool']}×{s['concurrency']}, active {s['active']}, "
                f"processed {s['processed']}, queues {','.join(s['queues'])}, up since {since}"
                f"{_urls(s)}"
            )
        for info in beats:
            click.echo(_beat_line(info, zone))
        count = len(workers)
        click.echo(f"{count} worker{'s' if count != 1 else ''} alive")
    if not workers:
        sys.exit(EXIT_FAILED)


def _urls(info: dict) -> str:
    """`, broker URL` (and `, results URL` where results are kept elsewhere)."""
    broker, results = reported(info.get("broker")), reported(info.get("result_backend"))
    text = f", broker {broker}" if broker else ""
    return text + (f", results {results}" if results and results != broker else "")


def _beat(raw: bytes) -> dict:
    info = json.loads(raw)
    for name in ("broker", "result_backend"):
        info[name] = reported(info.get(name))
    return info


def _beat_order(info: dict) -> tuple[bool, str]:
    return (not info.get("leader"), str(info.get("holder")))


def _beat_line(info: dict, zone: tzinfo) -> str:
    role = f"leader (token {info.get('token')})" if info.get("leader") else "standby"
    started = info.get("started")
    since = format_time(started, zone) if started else "?"
    return (
        f"-> beat {info.get('holder')}: {role}, pid {info.get('pid')}, up since {since}"
        f"{_urls(info)}"
    )


def _summary(info: dict) -> dict:
    started = info.get("started")
    return {
        "pid": info.get("pid"),
        "pool": info.get("pool"),
        "concurrency": info.get("concurrency"),
        "queues": info.get("queues") or [],
        "active": len(info.get("active") or []),
        "processed": info.get("processed", 0),
        "started": started,
        "uptime": time.time() - started if started else None,
        "broker": reported(info.get("broker")),
        "result_backend": reported(info.get("result_backend")),
    }


@click.command("revoke")
@click.argument("task_ids", nargs=-1, required=True, metavar="ID...")
@click.option(
    "--terminate",
    is_flag=True,
    help="Also stop the task if it is running (prefork kills its child process; "
    "threads and solo raise TaskRevokedError in the task).",
)
@loglevel_option
@click.pass_context
@handle_errors
def revoke(
    ctx: click.Context, task_ids: tuple[str, ...], terminate: bool, loglevel: str | None
) -> None:
    """Revoke tasks: workers skip them (state REVOKED), within a heartbeat (1 s).

    The revoked ids are kept in the broker (worker_revoke_expires, 3 hours), so a worker
    started later skips them too.
    """
    app = get_app(ctx, loglevel)
    require_shared_broker(app, "revoke")
    app.control.revoke(list(task_ids), terminate=terminate)
    verb = "revoked and terminating" if terminate else "revoked"
    for task_id in task_ids:
        click.echo(f"{verb}: {task_id}")


def _destination(value: str | None) -> list[str] | None:
    return [n.strip() for n in value.split(",") if n.strip()] if value else None


@click.command("control")
@click.argument("command", type=click.Choice(["ping", "shutdown", "rate_limit"]))
@click.argument("arguments", nargs=-1)
@click.option(
    "-d", "--destination", metavar="NAME,...", help="The workers addressed (default: all)."
)
@click.option(
    "-t", "--timeout", type=float, default=1.0, show_default=True, help="Seconds to wait."
)
@click.option("-j", "--json", "as_json", is_flag=True, help="Print JSON.")
@loglevel_option
@click.pass_context
@handle_errors
def control_cmd(
    ctx: click.Context,
    command: str,
    arguments: tuple[str, ...],
    destination: str | None,
    timeout: float,
    as_json: bool,
    loglevel: str | None,
) -> None:
    """Send a command to live workers and print their replies, as `celery control`:

    \b
    ping                      each worker answers pong
    shutdown                  stop warmly: running tasks finish, held ones go back
    rate_limit TASK RATE      set TASK's rate limit ("10/s", "100/m", "1000/h"; 0: none)

    Exit 1 when no worker answers within the timeout.
    """
    app = get_app(ctx, loglevel)
    require_shared_broker(app, "control")
    wanted = {"rate_limit": 2}.get(command, 0)
    if len(arguments) != wanted:
        usage = "rate_limit TASK RATE" if command == "rate_limit" else command
        raise click.UsageError(f"control {command} takes {wanted} argument(s): {usage}")
    names = _destination(destination)
    control = app.control
    if command == "rate_limit":
        task, rate = arguments
        try:
            replies = control.rate_limit(task, rate, destination=names, reply=True, timeout=timeout)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="RATE") from None
    else:
        replies = control.broadcast(command, destination=names, reply=True, timeout=timeout)
    _print_replies(replies or [], as_json)


def _print_replies(replies: list[dict], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({k: v for one in replies for k, v in one.items()}))
    else:
        for one in replies:
            for name, answer in one.items():
                if "ok" in answer:
                    click.echo(f"-> {name}: OK {answer['ok']}")
                else:
                    click.echo(f"-> {name}: ERROR {answer.get('error', answer)}")
        count = len(replies)
        if count:
            click.echo(f"{count} node{'s' if count != 1 else ''} online.")
    if not replies:
        click.echo("Error: no worker replied within the timeout", err=True)
        sys.exit(EXIT_FAILED)


@click.command("purge")
@click.option("-Q", "--queues", metavar="A,B", help="Queues to purge (default: the app's queues).")
@click.option("-X", "--exclude-queues", metavar="A,B", help="Queues to leave out.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@loglevel_option
@click.pass_context
@handle_errors
def purge(
    ctx: click.Context,
    queues: str | None,
    exclude_queues: str | None,
    force: bool,
    loglevel: str | None,
) -> None:
    """Delete every waiting message of the queues, for good, as `celery purge`.

    The app's queues: the default one, the tasks' own, those in task_routes and those
    live workers consume. Messages waiting for their eta and those workers hold are kept.
    """
    app = get_app(ctx, loglevel)
    require_shared_broker(app, "purge")
    names = _destination(queues) or app.control.queues()
    names = [q for q in names if q not in set(_destination(exclude_queues) or ())]
    if not names:
        click.echo("No queue to purge.")
        return
    shown = ", ".join(names)
    if not force:
        click.confirm(
            f"Delete every waiting message of {len(names)} queue(s) ({shown})? "
            "This cannot be undone",
            abort=True,
        )
    count = app.control.purge(queues=names)
    click.echo(f"Purged {count} message{'s' if count != 1 else ''} from {shown}.")
