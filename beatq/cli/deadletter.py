"""`beatq dead-letter list|requeue`: messages no worker could run, kept until replayed."""

from __future__ import annotations

import json
import sys

import click

from .. import messages
from ..timezones import format_time
from . import times
from .base import EXIT_FAILED, get_app, handle_errors, loglevel_option


@click.group("dead-letter")
def dead_letter() -> None:
    """Show and replay messages that could not be run (bad content, unknown task, rejected)."""


@dead_letter.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=100, show_default=True)
@loglevel_option
@click.pass_context
@handle_errors
def list_cmd(ctx: click.Context, as_json: bool, limit: int, loglevel: str | None) -> None:
    """List dead letters, oldest first."""
    app = get_app(ctx, loglevel)
    rows = []
    for letter in app.broker.dead_letters(limit):
        try:
            name = messages.read_header(letter.body)["task"]
        except messages.MessageError:
            name = "?"
        rows.append(
            {
                "id": letter.id,
                "task": name,
                "queue": letter.queue,
                "reason": letter.reason,
                "time": letter.time,
            }
        )
    if as_json:
        click.echo(json.dumps(times.stamped(rows)))
        return
    for row in rows:
        when = format_time(row["time"], app.timezone)
        click.echo(f"{row['id']}  {row['task']}  queue={row['queue']}  {when}\n    {row['reason']}")
    click.echo(f"{len(rows)} dead letter(s)")


@dead_letter.command("requeue")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Requeue every dead letter.")
@loglevel_option
@click.pass_context
@handle_errors
def requeue_cmd(ctx: click.Context, ids: tuple[str, ...], all_: bool, loglevel: str | None) -> None:
    """Send dead letters back to their queue. Exit 1 if an id was not found."""
    if not ids and not all_:
        raise click.UsageError("name the ids to requeue, or use --all")
    app = get_app(ctx, loglevel)
    moved = app.broker.requeue_dead(None if all_ else list(ids))
    for id_ in moved:
        click.echo(f"requeued {id_}")
    missing = set(ids) - set(moved)
    for id_ in sorted(missing):
        click.echo(f"Error: no dead letter {id_}", err=True)
    if missing:
        sys.exit(EXIT_FAILED)
