"""`beatq worker`."""

from __future__ import annotations

import sys

import click

from ..beat import Beat
from ..exceptions import ScheduleError
from ..worker import Worker
from ..worker.worker import default_hostname
from .base import (
    EXIT_USAGE,
    check_start,
    get_app,
    handle_errors,
    loglevel_option,
    metrics_options,
    start_metrics,
)
from .process import Pidfile, expand


def _optimization(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value not in (None, "fair"):
        raise click.BadParameter(
            f"{value!r} is not offered: beatq always hands a task to a free pool process "
            "(Celery's -O fair); drop -O or use -O fair"
        )
    return value


@click.command()
@click.option("-Q", "--queues", help="Queues to consume, comma separated, most urgent first.")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    help="Pool size (default: CPUs; -P asyncio: 100).",
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "threads", "solo", "asyncio"]),
    help="Pool (default prefork); asyncio: one event loop, -c tasks at once (default 100).",
)
@click.option(
    "-n",
    "--hostname",
    help="Worker name (default beatq@HOST.PID); %h, %n, %d expand to the host name, its "
    "first label and its domain, as in Celery (-n worker1@%h).",
)
@click.option(
    "-f",
    "--logfile",
    metavar="PATH",
    help="Append the log to PATH instead of stderr (%p: the worker's name; %h, %n, %d).",
)
@click.option(
    "--pidfile",
    metavar="PATH",
    help="Write the worker's process id to PATH; refuse to start if it names a running "
    "process (%p, %h, %n, %d expand). Removed on exit.",
)
@click.option(
    "-O",
    "optimization",
    metavar="fair",
    callback=_optimization,
    help="Accepted for Celery's -O fair: beatq is always fair.",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    help="Prefork: replace a child once it has run N tasks (worker_max_tasks_per_child).",
)
@click.option(
    "--max-memory-per-child",
    type=click.IntRange(min=1),
    metavar="KIB",
    help="Prefork: replace a child after the task that took its resident memory past KIB "
    "kibibytes (worker_max_memory_per_child).",
)
@click.option(
    "--autoscale",
    metavar="MAX,MIN",
    help="Prefork: between MIN and MAX children, more while work waits, fewer once idle "
    "(worker_autoscale_keepalive seconds, default 30); instead of -c.",
)
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
    logfile: str | None,
    pidfile: str | None,
    optimization: str | None,
    max_tasks_per_child: int | None,
    max_memory_per_child: int | None,
    autoscale: str | None,
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
    node = expand(hostname) if hostname else default_hostname()
    logfile = expand(logfile, node) if logfile else None
    app = get_app(ctx, loglevel, default_level="INFO", logfile=logfile)
    app.import_modules()  # first: the project's settings count, the command line's over them
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
        hostname=node,
        prefetch_multiplier=prefetch_multiplier,
        beat=beat,
        metrics=metrics,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=max_memory_per_child,
        autoscale=autoscale,
    )
    lock = Pidfile(expand(pidfile, node)) if pidfile else None
    if lock is not None:
        lock.acquire()
    try:
        code = w.run()
    finally:
        if lock is not None:
            lock.release()
    sys.exit(code)
