"""`beatq worker`."""

from __future__ import annotations

import sys

import click

from ..beat import Beat
from ..exceptions import ScheduleError
from ..worker import Worker
from .base import (
    EXIT_USAGE,
    check_start,
    get_app,
    handle_errors,
    loglevel_option,
    metrics_options,
    start_metrics,
)


@click.command()
@click.option("-Q", "--queues", help="Queues to consume, comma separated, most urgent first.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Pool size (default: CPUs).")
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    help="Pool (default prefork).",
)
@click.option("-n", "--hostname", help="Worker name (default beatq@HOST.PID).")
@click.option("--prefetch-multiplier", type=click.IntRange(min=1), help="Claims per pool slot.")
@click.option("-B", "--beat", "with_beat", is_flag=True, help="Also run a beat in this worker.")
@click.option(
    "-s",
    "--schedule",
    "files",
    multiple=True,
    metavar="FILE",
    help="With -B: schedule file or glob.",
)
@click.option("--lease-ttl", type=float, help="With -B: seconds a dead leader holds the lease.")
@click.option(
    "-E",
    "--events",
    "send_events",
    is_flag=True,
    help="Send task and worker events (and beat events with -B) to the event stream.",
)
@metrics_options
@loglevel_option
@click.pass_context
@handle_errors
def worker(
    ctx: click.Context,
    queues: str | None,
    concurrency: int | None,
    pool: str | None,
    hostname: str | None,
    prefetch_multiplier: int | None,
    with_beat: bool,
    files: tuple[str, ...],
    lease_ttl: float | None,
    send_events: bool,
    metrics_port: int | None,
    metrics_host: str,
    loglevel: str | None,
) -> None:
    """Run a worker: take tasks from the queues and run them."""
    app = get_app(ctx, loglevel, default_level="INFO")
    check_start(app)
    if send_events:
        app.conf.worker_send_task_events = True
        app.conf.beat_send_events = True
    names = [q.strip() for q in (queues or "").split(",") if q.strip()] or None
    metrics = start_metrics(metrics_port, metrics_host)
    beat = None
    if with_beat:
        beat = Beat(app, files=list(files) or None, lease_ttl=lease_ttl, metrics=metrics)
        try:
            beat.entries = beat.load()
        except ScheduleError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
    w = Worker(
        app,
        queues=names,
        pool=pool,
        concurrency=concurrency,
        hostname=hostname,
        prefetch_multiplier=prefetch_multiplier,
        beat=beat,
        metrics=metrics,
    )
    sys.exit(w.run())
