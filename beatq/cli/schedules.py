"""`beatq schedule add|update|remove|show|trigger|backfill|history NAME`: the store's entries
(app.schedules, beat/store.py) from the shell.

Exit codes as the rest: 0 done; 1 no such entry; 2 bad input (the entry, the field and
the fix on one line) or an entry owned by a file or code; 4 the broker is unreachable.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from ..beat.store import EntryNotFound, ScheduleEntry
from ..exceptions import ScheduleError
from ..timezones import format_time
from .base import EXIT_FAILED, get_app, handle_errors, loglevel_option
from .beat import schedule

F = TypeVar("F", bound=Callable[..., Any])


def refusals(f: F) -> F:
    """An unknown entry as one line and exit 1 (bad input, a ScheduleError, is a
    ConfigurationError: handle_errors makes it exit 2)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except EntryNotFound as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


def _json_value(what: str) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            found = json.loads(value)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON ({exc}); e.g. {what}") from None
        return found

    return parse


def entry_options(f: F) -> F:
    """The fields of an entry, as `add` and `update` take them."""
    options = [
        click.option("--args", callback=_json_value("'[1, 2]'"), help="Arguments, a JSON list."),
        click.option(
            "--kwargs", callback=_json_value("'{\"x\": 1}'"), help="Keyword arguments, JSON."
        ),
        click.option(
            "--options",
            callback=_json_value('\'{"queue": "reports"}\''),
            help="Sending options (queue, expires, priority...), a JSON object.",
        ),
        click.option("--timezone", help="IANA zone the schedule is read in (default: the app's)."),
        click.option("--catchup", help="After downtime: skip, latest (default) or all."),
        click.option("--catchup-window", help="How far back catchup all goes (default 1h)."),
        click.option("--overlap", help="allow (default), or skip while the last run runs."),
        click.option("--jitter", help="Delay each run by up to this much (e.g. 30s)."),
        click.option("--start-at", help="No run before this ISO time (naive: the entry's zone)."),
        click.option("--end-at", help="No run at or after this ISO time."),
        click.option("--description", help="A note shown with the entry."),
        click.option("--enabled/--disabled", default=None, help="Run it, or keep it idle."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _fields(**given: Any) -> dict[str, Any]:
    return {k: v for k, v in given.items() if v is not None}


def _when(value: float | None, zone: Any) -> str | None:
    return None if value is None else format_time(value, zone)


def _print_entry(app: Any, entry: ScheduleEntry, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(entry.to_dict()))
        return
    zone = app.timezone
    flag = " (paused)" if entry.paused else ""
    click.echo(f"{entry.name}{flag}: {entry.task} {entry.schedule} from {entry.source}")
    click.echo(f"    runs {entry.runs}, missed {entry.missed}")
    click.echo(
        f"    last run: {_when(entry.last_run, zone) or '-'}   "
        f"next run: {_when(entry.next_run, zone) or '-'}"
    )
    shown = {k: v for k, v in entry.spec.items() if k not in ("task", "created", "updated")}
    if shown:
        click.echo(f"    spec: {json.dumps(shown, sort_keys=True)}")


@schedule.command("add")
@click.argument("name", required=False)
@click.argument("task", required=False)
@click.argument("when", metavar="SCHEDULE", required=False)
@entry_options
@click.option(
    "--from",
    "source",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Add every entry of this file instead (a schedule file's format, YAML or JSON: "
    "'schedules:' and an optional 'timezone:'), all or none.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
@loglevel_option
@click.pass_context
@handle_errors
@refusals
def add(
    ctx: click.Context,
    name: str | None,
    task: str | None,
    when: str | None,
    source: Path | None,
    as_json: bool,
    loglevel: str | None,
    **fields: Any,
) -> None:
    """Add entry NAME to the broker's store: TASK on SCHEDULE ("*/5 * * * *", "30s", or an
    ISO time for one run). The leader runs it within a second; exit 2 if refused.

    With --from FILE: add every entry of FILE at once, in one round trip; if any is bad
    or its name is taken, none is added and the first bad one is named."""
    if source is not None:
        if name or task or when or _fields(**fields):
            raise click.UsageError("--from FILE takes no NAME, TASK, SCHEDULE or field option")
        app = get_app(ctx, loglevel)
        added = app.schedules.add_many(_entries_of(source))
        if as_json:
            click.echo(json.dumps([e.to_dict() for e in added]))
        else:
            click.echo(f"added {len(added)} entries from {source}")
        return
    if not (name and task and when):
        raise click.UsageError("give NAME TASK SCHEDULE, or --from FILE")
    app = get_app(ctx, loglevel)
    entry = app.schedules.add(name, task, when, **_fields(**fields))
    _print_entry(app, entry, as_json)


def _entries_of(path: Path) -> dict[str, dict[str, Any]]:
    """The entries of a file in the schedule files' format (JSON is YAML too), each with
    the file's `timezone` unless it has its own."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScheduleError(f"{path}: cannot be read as YAML or JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("schedules"), dict):
        raise ScheduleError(
            f"{path}: expected a mapping with 'schedules:' (name: entry, as in a schedule "
            "file) and an optional 'timezone:'"
        )
    unknown = [k for k in data if k not in ("schedules", "timezone")]
    if unknown:
        raise ScheduleError(
            f"{path}: unknown top-level key {unknown[0]!r}; valid: schedules, timezone"
        )
    zone = data.get("timezone")
    entries = {}
    for name, fields in data["schedules"].items():
        if isinstance(fields, dict) and zone and "timezone" not in fields:
            fields = {**fields, "timezone": zone}
        entries[str(name)] = fields
    return entries


@schedule.command("update")
@click.argument("name")
@click.option("--task", help="The task to run.")
@click.option("--schedule", "when", metavar="SCHEDULE", help="A new schedule (any kind).")
@entry_options
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
@loglevel_option
@click.pass_context
@handle_errors
@refusals
def update(
    ctx: click.Context,
    name: str,
    task: str | None,
    when: str | None,
    as_json: bool,
    loglevel: str | None,
    **fields: Any,
) -> None:
    """Change fields of store entry NAME; it runs on the new definition from its next slot."""
    app = get_app(ctx, loglevel)
    entry = app.schedules.update(name, **_fields(task=task, schedule=when, **fields))
    _print_entry(app, entry, as_json)


@schedule.command("remove")
@click.argument("name")
@loglevel_option
@click.pass_context
@handle_errors
@refusals
def remove(ctx: click.Context, name: str, loglevel: str | None) -> None:
    """Remove store entry NAME: a run in flight finishes, no more are sent."""
    app = get_app(ctx, loglevel)
    app.schedules.remove(name)
    click.echo(f"removed {name}")


@schedule.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@loglevel_option
@click.pass_context
@handle_errors
@refusals
def show(ctx: click.Context, name: str, as_json: bool, loglevel: str | None) -> None:
    """Entry NAME, whatever its source: definition, runs, last and next run."""
    app = get_app(ctx, loglevel)
    _print_entry(app, app.schedules.get(name), as_json)


@schedule.command("trigger")
@click.argument("name")
@click.option("--run-id", help="Ask with one id from many hosts: it runs once (the task id).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@loglevel_option
@click.pass_context
@handle_errors
@refusals
def trigger(
    ctx: click.Context, name: str, run_id: str | None, as_json: bool, loglevel: str | None
) -> None:
    """Run entry NAME once now, outside its schedule; prints the run's task id."""
    app = get_app(ctx, loglevel)
    result = app.schedules.trigger(name, run_id=run_id)
    click.echo(json.dumps({"entry": name, "task_id": result.id}) if as_json else result.id)


@schedule.command("backfill")
@click.argument("name")
@click.option("--start", required=True, help="ISO time: the first slot considered.")
@click.option("--end", required=True, help="ISO time: slots before it (up to now).")
@click.option("--spacing", type=float, default=0.0, help="Seconds between two runs.")
@click.option("--run-id", help="Ask with one id from many hosts: it backfills once.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@loglevel_option
@click.pass_context
@handle_errors
@refusals
def backfill(
    ctx: click.Context,
    name: str,
    start: str,
    end: str,
    spacing: float,
    run_id: str | None,
    as_json: bool,
    loglevel: str | None,
) -> None:
    """Run every slot of NAME in [START, END) that never ran, oldest first, each once."""
    app = get_app(ctx, loglevel)
    request = app.schedules.backfill(name, start, end, spacing=spacing, run_id=run_id)
    click.echo(json.dumps({"entry": name, "request": request}) if as_json else request)


@schedule.command("history")
@click.argument("name")
@click.option("-n", "--limit", type=click.IntRange(1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (newest first).")
@loglevel_option
@click.pass_context
@handle_errors
@refusals
def history(ctx: click.Context, name: str, limit: int, as_json: bool, loglevel: str | None) -> None:
    """Entry NAME's newest runs: slot, sent at, lateness, task id and state, or why a slot
    did not run."""
    app = get_app(ctx, loglevel)
    records = app.schedules.history(name, limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in records]))
        return
    if not records:
        click.echo(f"no runs recorded for {name!r}")
        return
    zone = app.timezone
    for r in records:
        slot = format_time(r.slot, zone)
        if r.sent_at is None:
            click.echo(f"{slot}  {r.kind:<8}  not run: {r.reason}")
            continue
        late = f"{(r.lateness or 0.0) * 1000:.1f} ms late"
        took = "" if r.took is None else f", done {r.took:.3f}s after sent"
        if r.runtime is not None:
            took = f", ran {r.runtime:.3f}s{took}"
        click.echo(f"{slot}  {r.kind:<8}  {late}  {r.task_id}  {r.state or '-'}{took}")
