"""`beatq beat` (run, status) and `beatq schedule` (check, list, pause, resume)."""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from .. import signals
from ..beat import Beat
from ..beat.beat import LEASE_NAME
from ..beat.loader import load_all, schedule_files
from ..beat.record import EntryRecord
from ..exceptions import ScheduleError
from ..timezones import format_time, get_zone
from .base import (
    EXIT_FAILED,
    EXIT_USAGE,
    check_start,
    get_app,
    handle_errors,
    loglevel_option,
    metrics_options,
    start_metrics,
)
from .process import Pidfile, expand

UTC = timezone.utc


@click.group(invoke_without_command=True)
@click.option(
    "-s",
    "--schedule",
    "files",
    multiple=True,
    metavar="FILE",
    help="A YAML schedule file or glob (repeatable; default: beat_schedule_files).",
)
@click.option("--lease-ttl", type=float, help="Seconds a dead leader holds the lease (default 4).")
@click.option("-E", "--events", "send_events", is_flag=True, help="Send beat events.")
@click.option(
    "--pidfile",
    metavar="PATH",
    help="Write the beat's process id to PATH; refuse to start if it names a running "
    "process. Removed on exit.",
)
@click.option("-f", "--logfile", metavar="PATH", help="Append the log to PATH, not stderr.")
@metrics_options
@loglevel_option
@click.pass_context
@handle_errors
def beat(
    ctx: click.Context,
    files: tuple[str, ...],
    lease_ttl: float | None,
    send_events: bool,
    pidfile: str | None,
    logfile: str | None,
    metrics_port: int | None,
    metrics_host: str,
    loglevel: str | None,
) -> None:
    """Run the beat: send periodic tasks on time while this beat leads.

    Start as many as you like: a lease in the broker makes exactly one the leader.
    """
    if ctx.invoked_subcommand is not None:
        return
    app = get_app(ctx, loglevel, default_level="INFO", logfile=logfile and expand(logfile))
    app.import_modules()  # first: the project's settings count, the command line's over them
    check_start(app)
    lock = Pidfile(expand(pidfile)) if pidfile else None
    if lock is not None:
        lock.acquire()
        try:
            _run_beat(app, files, lease_ttl, send_events, metrics_port, metrics_host)
        finally:
            lock.release()
        return
    _run_beat(app, files, lease_ttl, send_events, metrics_port, metrics_host)


def _run_beat(
    app: Any,
    files: tuple[str, ...],
    lease_ttl: float | None,
    send_events: bool,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    if send_events:
        app.conf.beat_send_events = True
    metrics = start_metrics(metrics_port, metrics_host)
    runner = Beat(app, files=list(files) or None, lease_ttl=lease_ttl, metrics=metrics)

    def on_signal(signum: int, frame: Any) -> None:
        runner.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        signals.beat_init.send(sender=runner)
        runner.run()
    except ScheduleError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def _lease_line(app: Any) -> tuple[str, bool]:
    lease = app.broker.get_lease(LEASE_NAME)
    if lease is None:
        return "leader: none (no beat holds the lease)", False
    since = f", since {format_time(lease.since, app.timezone)}" if lease.since else ""
    left = f"lease {lease.remaining:.1f}s left"
    return f"leader: {lease.holder} (token {lease.token}{since}, {left})", True


@beat.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@loglevel_option
@click.pass_context
@handle_errors
def status(ctx: click.Context, as_json: bool, loglevel: str | None) -> None:
    """Who leads, since when, and each entry's lateness and missed runs.

    Exit 0 only when a leader holds a live lease (usable as a health check), else 1.
    """
    app = get_app(ctx, loglevel)
    lease = app.broker.get_lease(LEASE_NAME)
    entries = app.broker.beat_entries()
    rows = []
    for name, state in entries.items():
        record = EntryRecord.from_json(state.info)
        lateness = record.lateness
        rows.append(
            {
                "name": name,
                "paused": state.paused,
                "runs": record.runs,
                "missed": record.missed,
                "lateness_ms": None if lateness is None else round(lateness * 1000, 3),
                "last_sent": record.last_sent,
                "next_run": state.next_run,
            }
        )
    if as_json:
        holder = (
            None
            if lease is None
            else {"holder": lease.holder, "token": lease.token, "remaining": lease.remaining}
        )
        click.echo(json.dumps({"leader": holder, "entries": rows}))
    else:
        click.echo(_lease_line(app)[0])
        for row in rows:
            late = "-" if row["lateness_ms"] is None else f"{row['lateness_ms']:.1f} ms"
            flag = " (paused)" if row["paused"] else ""
            counts = f"runs {row['runs']}, missed {row['missed']}"
            click.echo(f"  {row['name']}{flag}: {counts}, last lateness {late}")
    sys.exit(0 if lease is not None else EXIT_FAILED)


@click.group()
def schedule() -> None:
    """Check, list, pause and resume schedule entries; add, change, remove, run now and
    backfill those kept in the broker, and read any entry's run history."""


@schedule.command("check")
@click.argument("files", nargs=-1)
@click.option("-n", "--count", default=3, show_default=True, help="How many next runs to show.")
@loglevel_option
@click.pass_context
@handle_errors
def check(ctx: click.Context, files: tuple[str, ...], count: int, loglevel: str | None) -> None:
    """Validate schedule files (default: beat_schedule_files) and the app's beat_schedule,
    and print each entry's next runs in its zone and in UTC. Exit 2 if anything is wrong."""
    app = get_app(ctx, loglevel)
    app.import_modules()
    paths = schedule_files(files or app.conf.beat_schedule_files)
    for path in paths:
        if not Path(path).exists():
            click.echo(f"Error: {path}: no such file", err=True)
            sys.exit(EXIT_USAGE)
    try:
        entries = load_all(app, paths)
    except ScheduleError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    now = datetime.now(UTC)
    for name, entry in entries.items():
        state = "" if entry.enabled else " (disabled)"
        click.echo(
            f"{name}{state}: {entry.task} {entry.schedule} [{entry.zone}] from {entry.source}"
        )
        at = now.timestamp()
        for _ in range(count):
            nxt = entry.next_after(at)
            if nxt is None:
                click.echo("    no more runs")
                break
            click.echo(f"    {format_time(nxt, entry.zone)}   {format_time(nxt, get_zone('UTC'))}")
            at = nxt
    click.echo(f"{len(entries)} entries OK in {len(paths)} file(s) and the app's beat_schedule")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@loglevel_option
@click.pass_context
@handle_errors
def list_cmd(ctx: click.Context, as_json: bool, loglevel: str | None) -> None:
    """The live entries as the leader planned them: last run, next run, paused, and the leader."""
    app = get_app(ctx, loglevel)
    entries = app.broker.beat_entries()
    rows = []
    for name, state in entries.items():
        record = EntryRecord.from_json(state.info)
        zone = record.zone(app.timezone)
        last = record.last_slot
        rows.append(
            {
                "name": name,
                "task": record.task,
                "schedule": record.schedule,
                "timezone": str(zone),
                "paused": state.paused,
                "last_run": None if last is None else format_time(last, zone),
                "next_run": format_time(state.next_run, zone) if state.next_run else None,
                "next_run_utc": format_time(state.next_run, get_zone("UTC"))
                if state.next_run
                else None,
                "runs": record.runs,
                "missed": record.missed,
            }
        )
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(_lease_line(app)[0])
    for row in rows:
        flag = " (paused)" if row["paused"] else ""
        click.echo(f"{row['name']}{flag}: {row['task']} {row['schedule']} [{row['timezone']}]")
        click.echo(f"    last run: {row['last_run'] or '-'}   next run: {row['next_run'] or '-'}")


def _set_paused(ctx: click.Context, name: str, paused: bool, loglevel: str | None) -> None:
    app = get_app(ctx, loglevel)
    known = app.broker.beat_entries()
    if name not in known:
        click.echo(f"Error: no entry {name!r}; entries: {', '.join(known) or '(none)'}", err=True)
        sys.exit(EXIT_FAILED)
    app.broker.beat_pause(name, paused)
    click.echo(f"{'paused' if paused else 'resumed'} {name}")


@schedule.command("pause")
@click.argument("name")
@loglevel_option
@click.pass_context
@handle_errors
def pause(ctx: click.Context, name: str, loglevel: str | None) -> None:
    """Pause entry NAME on every beat: its runs are skipped until resumed."""
    _set_paused(ctx, name, True, loglevel)


@schedule.command("resume")
@click.argument("name")
@loglevel_option
@click.pass_context
@handle_errors
def resume(ctx: click.Context, name: str, loglevel: str | None) -> None:
    """Resume entry NAME (its skipped runs are not caught up)."""
    _set_paused(ctx, name, False, loglevel)
