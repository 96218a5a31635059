"""`beatq dashboard`: serve the web dashboard."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import click

from ..exceptions import ConfigurationError
from .base import EXIT_USAGE, get_app, handle_errors, loglevel_option


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but loopback needs --token or --basic-auth.",
)
@click.option(
    "--port", default=5555, show_default=True, type=click.IntRange(0, 65535), help="0: any free."
)
@click.option(
    "--token",
    envvar="BEATQ_DASHBOARD_TOKEN",
    metavar="TOKEN",
    help="Require this token: open /?token=TOKEN once, or send 'Authorization: Bearer TOKEN'. "
    "[env BEATQ_DASHBOARD_TOKEN]",
)
@click.option(
    "--basic-auth",
    envvar="BEATQ_DASHBOARD_BASIC_AUTH",
    metavar="USER:PASSWORD",
    help="Require HTTP basic auth with these credentials. [env BEATQ_DASHBOARD_BASIC_AUTH]",
)
@click.option(
    "-Q", "--queues", help="More queues to show, comma separated (known ones are always shown)."
)
@click.option(
    "--max-connections",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Connections served at once, open pages' live streams included; past it, 503.",
)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds a connection may stay silent (mid-request or between requests).",
)
@loglevel_option
@click.pass_context
@handle_errors
def dashboard(
    ctx: click.Context,
    host: str,
    port: int,
    token: str | None,
    basic_auth: str | None,
    queues: str | None,
    max_connections: int,
    timeout: float,
    loglevel: str | None,
) -> None:
    """Serve the web dashboard: workers, queues, recent tasks, schedules, the beat leader
    and dead letters, updated live. Every time is shown in its zone with its UTC offset."""
    from ..dashboard import Dashboard, serve

    app = get_app(ctx, loglevel)
    if urlsplit(app.conf.broker_url).scheme == "memory":
        raise ConfigurationError(
            "the dashboard needs a broker other processes share; memory:// lives inside one "
            "process: use sqlite:// or redis:// (-b URL or BEATQ_BROKER_URL)"
        )
    app.import_modules()
    app.broker.ping()
    board = Dashboard(app, [q.strip() for q in (queues or "").split(",")])
    try:
        server = serve(
            board,
            host,
            port,
            token=token,
            basic_auth=basic_auth,
            max_connections=max_connections,
            timeout=timeout,
        )
    except OSError as exc:
        click.echo(f"Error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_USAGE)

    def on_signal(signum: int, frame: Any) -> None:
        # shutdown() waits for serve_forever, which runs in this very thread
        threading.Thread(target=server.stop, daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    offset = datetime.now(app.timezone).strftime("%z")
    click.echo(
        f"beatq dashboard on {server.url} (times in {app.conf.timezone}, "
        f"UTC{offset[:3]}:{offset[3:]}{', auth required' if server.auth.enabled else ''}); "
        "Ctrl-C to stop"
    )
    sys.stdout.flush()
    board.start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.stopping.set()
        board.close()
