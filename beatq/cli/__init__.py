"""The `beatq` command: `beatq -A proj COMMAND`."""

from __future__ import annotations

import click

from . import schedules as _schedules  # noqa: F401 (schedule add, update, ...)
from .base import loglevel_option
from .beat import beat, schedule
from .control import control_cmd, purge, revoke, status
from .dashboard import dashboard
from .deadletter import dead_letter
from .events import events_cmd
from .inspect import inspect_cmd
from .tasks import call, result
from .worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app", metavar="MODULE", help="The app: proj, proj:app, proj.beatq.")
@click.option("-b", "--broker", metavar="URL", help="Broker URL (overrides the app's).")
@loglevel_option
@click.version_option(package_name="beatq")
@click.pass_context
def main(ctx: click.Context, app: str | None, broker: str | None, loglevel: str | None) -> None:
    """beatq: a distributed task queue with the periodic scheduler at its centre.

    Exit codes: 0 ok, 1 task failed or command failed, 2 usage or configuration error,
    3 result not ready, 4 broker unreachable.
    """
    ctx.obj = {"app": app, "broker": broker, "loglevel": loglevel}


main.add_command(worker)
main.add_command(call)
main.add_command(result)
main.add_command(inspect_cmd)
main.add_command(dead_letter)
main.add_command(beat)
main.add_command(schedule)
main.add_command(dashboard)
main.add_command(events_cmd)
main.add_command(status)
main.add_command(revoke)
main.add_command(control_cmd)
main.add_command(purge)
