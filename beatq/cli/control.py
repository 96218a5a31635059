"""`beatq status` (are workers alive?) and `beatq revoke ID... [--terminate]`."""

from __future__ import annotations

import json
import sys
import time

import click

from ..timezones import format_time
from .base import EXIT_FAILED, get_app, handle_errors, loglevel_option, require_shared_broker


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@loglevel_option
@click.pass_context
@handle_errors
def status(ctx: click.Context, as_json: bool, loglevel: str | None) -> None:
    """List the live workers (heard from within three heartbeats).

    Exit 0 when at least one worker is alive, 1 when none is, 4 when the broker cannot
    be reached: usable as a health check.
    """
    app = get_app(ctx, loglevel)
    require_shared_broker(app, "status")
    workers = {name: json.loads(info) for name, info in sorted(app.broker.workers().items())}
    if as_json:
        click.echo(json.dumps({name: _summary(info) for name, info in workers.items()}))
    else:
        zone = app.timezone
        for name, info in workers.items():
            s = _summary(info)
            since = format_time(s["started"], zone) if s["started"] else "?"
            click.echo(
                f"-> {name}: OK  pool {s['pool']}×{s['concurrency']}, active {s['active']}, "
                f"processed {s['processed']}, queues {','.join(s['queues'])}, up since {since}"
            )
        count = len(workers)
        click.echo(f"{count} worker{'s' if count != 1 else ''} alive")
    if not workers:
        sys.exit(EXIT_FAILED)


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
