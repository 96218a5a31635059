"""`beatq worker`."""

from __future__ import annotations

import sys

import click

from ..worker import Worker
from .base import get_app, handle_errors, loglevel_option


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
    loglevel: str | None,
) -> None:
    """Run a worker: take tasks from the queues and run them."""
    app = get_app(ctx, loglevel, default_level="INFO")
    names = [q.strip() for q in (queues or "").split(",") if q.strip()] or None
    w = Worker(
        app,
        queues=names,
        pool=pool,
        concurrency=concurrency,
        hostname=hostname,
        prefetch_multiplier=prefetch_multiplier,
    )
    sys.exit(w.run())
