"""`beatq call` and `beatq result`."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from .. import states
from ..exceptions import TimeoutError
from ..result import AsyncResult
from ..timezones import format_time
from .base import EXIT_FAILED, EXIT_NOT_READY, get_app, handle_errors, loglevel_option


def _json(value: str | None, what: str, kind: type) -> Any:
    if value is None:
        return kind()
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=what) from None
    if not isinstance(parsed, kind):
        raise click.BadParameter(f"must be a JSON {kind.__name__}", param_hint=what)
    return parsed


@click.command()
@click.argument("task")
@click.option("-a", "--args", "args", metavar="JSON", help='Positional arguments: "[2, 2]".')
@click.option("-k", "--kwargs", "kwargs", metavar="JSON", help="Keyword arguments: '{\"x\": 1}'.")
@click.option("--countdown", type=float, help="Seconds to wait before running.")
@click.option("--eta", help="When to run: ISO 8601 (naive means the app's time zone).")
@click.option("--expires", type=float, help="Seconds after which it is not run.")
@click.option("-Q", "--queue", help="Queue to send to.")
@loglevel_option
@click.pass_context
@handle_errors
def call(
    ctx: click.Context,
    task: str,
    args: str | None,
    kwargs: str | None,
    countdown: float | None,
    eta: str | None,
    expires: float | None,
    queue: str | None,
    loglevel: str | None,
) -> None:
    """Send TASK with arguments; print its id."""
    app = get_app(ctx, loglevel)
    options: dict[str, Any] = {"countdown": countdown, "expires": expires, "queue": queue}
    if eta:
        try:
            options["eta"] = datetime.fromisoformat(eta)
        except ValueError:
            raise click.BadParameter(f"not an ISO 8601 time: {eta!r}", param_hint="--eta") from None
    options = {k: v for k, v in options.items() if v is not None}
    sent = app.send_task(
        task, _json(args, "--args", list), _json(kwargs, "--kwargs", dict), **options
    )
    click.echo(sent.id)


@click.command()
@click.argument("task_id")
@click.option("--wait", "wait", is_flag=True, help="Wait for the task to finish.")
@click.option("-t", "--timeout", type=float, help="With --wait: give up after this many seconds.")
@click.option("--traceback", "show_tb", is_flag=True, help="Print the traceback of a failure.")
@click.option("-v", "--verbose", is_flag=True, help="Print the state and times besides the result.")
@click.option("--json", "as_json", is_flag=True, help="Print state, result and times as JSON.")
@loglevel_option
@click.pass_context
@handle_errors
def result(
    ctx: click.Context,
    task_id: str,
    wait: bool,
    timeout: float | None,
    show_tb: bool,
    verbose: bool,
    as_json: bool,
    loglevel: str | None,
) -> None:
    """Print the result of a task: its return value alone, as JSON, as `celery result` does.

    A task not finished or failed prints nothing on stdout and one line on stderr (with
    --traceback, a failure's traceback on stdout). --verbose prints the state and times;
    --json all of it as one JSON object.

    Exit 0 on SUCCESS, 1 on FAILURE or REVOKED, 3 when not finished (or unknown).
    """
    app = get_app(ctx, loglevel)
    res = AsyncResult(task_id, app=app)
    if wait:
        try:
            res.get(timeout=timeout, propagate=False)
        except TimeoutError:
            pass
    state = res.state
    value = res.result
    done = res.date_done
    if as_json:
        shown = value if state == states.SUCCESS else (repr(value) if value is not None else None)
        click.echo(
            json.dumps(
                {
                    "id": task_id,
                    "state": state,
                    "result": shown,
                    "date_done": done.isoformat() if done else None,
                    "traceback": res.traceback,
                },
                default=repr,
            )
        )
    elif verbose:
        click.echo(f"state: {state}")
        if state == states.SUCCESS:
            click.echo(f"result: {json.dumps(value, default=repr)}")
        elif value is not None:
            click.echo(f"result: {value!r}")
        if done is not None:
            click.echo(f"date_done: {format_time(done.timestamp(), app.timezone)}")
        if show_tb and res.traceback:
            click.echo(res.traceback.rstrip())
    elif state == states.SUCCESS:
        click.echo(json.dumps(value, default=repr))
    else:
        # Scripts read stdout as the value: anything else goes to stderr, and the exit code
        # says which case it is.
        if state in states.READY_STATES:
            click.echo(f"{state}: {value!r}" if value is not None else state, err=True)
        else:
            click.echo(f"{state}: not finished (or an unknown id)", err=True)
        if show_tb and res.traceback:
            click.echo(res.traceback.rstrip())
    if state == states.SUCCESS:
        sys.exit(0)
    sys.exit(EXIT_FAILED if state in states.READY_STATES else EXIT_NOT_READY)
