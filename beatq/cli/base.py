"""What every command shares: finding the app (`-A`), logging, exit codes."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..app import Beatq
from ..exceptions import BrokerAccessDenied, BrokerError, ConfigurationError
from ..log import setup_logging

# Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_FAILED = 1  # the task failed or was revoked; the command could not do its job
EXIT_USAGE = 2  # bad arguments, bad app path or configuration
EXIT_NOT_READY = 3  # the result is not there (yet)
EXIT_BROKER = 4  # the broker cannot be reached

F = TypeVar("F", bound=Callable[..., Any])


def find_app(path: str) -> Beatq:
    """Find the app as Celery does: `proj:app`, the module's app/beatq/celery attribute,
    any Beatq in the module, or the `proj.beatq` / `proj.celery` submodules."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import app module {module_name!r}: {exc}") from exc
    if attr:
        found: Any = module
        for part in attr.split("."):
            if not hasattr(found, part):
                raise ConfigurationError(
                    f"app {path!r} not found: module {module_name!r} has no attribute {part!r}"
                )
            found = getattr(found, part)
        if callable(found) and not isinstance(found, Beatq):
            found = found()
        if isinstance(found, Beatq):
            return found
        raise ConfigurationError(f"{path!r} is not a beatq app (found {type(found).__name__})")
    for name in ("app", "beatq", "celery"):
        if isinstance(getattr(module, name, None), Beatq):
            return getattr(module, name)
    for value in vars(module).values():
        if isinstance(value, Beatq):
            return value
    for sub in ("beatq", "celery"):
        try:
            submodule = importlib.import_module(f"{module_name}.{sub}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{module_name}.{sub}":
                raise
            continue
        for value in (getattr(submodule, n, None) for n in ("app", "beatq", "celery")):
            if isinstance(value, Beatq):
                return value
    raise ConfigurationError(
        f"no beatq app found in {module_name!r}; name it with -A {module_name}:app"
    )


def loglevel_option(f: F) -> F:
    return click.option(
        "-l",
        "--loglevel",
        default=None,
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
        help="Logging level (default WARNING; worker: INFO).",
    )(f)


def get_app(
    ctx: click.Context,
    loglevel: str | None,
    default_level: str = "WARNING",
    logfile: str | None = None,
) -> Beatq:
    """The app named by -A (with -b applied), logging set up in its time zone (to stderr,
    or appended to `logfile`)."""
    root = ctx.find_root()
    obj = root.obj or {}
    path = obj.get("app") or os.environ.get("BEATQ_APP")
    if not path:
        raise click.UsageError("no app given: use beatq -A proj COMMAND (or set BEATQ_APP)")
    if obj.get("broker"):
        # BEATQ_BROKER_URL wins over the app's code, so -b must set it to win over both
        # (and to reach the worker's child processes).
        os.environ["BEATQ_BROKER_URL"] = obj["broker"]
    # A bad -A raises ConfigurationError: `handle_errors` prints it as one line, exit 2,
    # without a usage text (the command line itself was fine).
    app = find_app(path)
    try:
        setup_logging(loglevel or obj.get("loglevel") or default_level, app.timezone, logfile)
    except OSError as exc:
        raise ConfigurationError(f"cannot write the log file {logfile}: {exc}") from None
    return app


def check_start(app: Beatq) -> None:
    """What a worker or a beat checks before it starts, failing in one line: its
    security_key setting (ConfigurationError, exit 2), and that the broker and the result
    store let it in (BrokerAccessDenied, exit 4: a wrong password or an untrusted TLS
    certificate does not mend with waiting). An unreachable store passes: a worker or
    beat started before its broker waits for it, retrying."""
    app.signer  # noqa: B018 (reading it checks the setting)
    stores = {app.conf.broker_url: app.broker}
    stores.setdefault(app.conf.result_backend or app.conf.broker_url, app.result_store)
    for store in stores.values():
        try:
            store.queue_length(app.conf.task_default_queue)
        except BrokerAccessDenied:
            raise
        except BrokerError:
            pass


def handle_errors(f: F) -> F:
    """Turn beatq's errors into one clear line and the right exit code."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except BrokerError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_BROKER)
        except ConfigurationError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


def metrics_options(f: F) -> F:
    """--metrics-port and --metrics-host, for the worker and the beat."""
    f = click.option(
        "--metrics-host",
        default="127.0.0.1",
        show_default=True,
        help="With --metrics-port: the address to listen on (0.0.0.0: every interface).",
    )(f)
    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        help="Serve Prometheus metrics at http://HOST:PORT/metrics (needs beatq[metrics]).",
    )(f)


def start_metrics(port: int | None, host: str) -> Any:
    """The process's Metrics, serving on host:port, or None without --metrics-port."""
    if port is None:
        return None
    from ..metrics import Metrics

    metrics = Metrics()
    bound = metrics.serve(port, host)
    logging.getLogger("beatq").info("metrics on http://%s:%d/metrics", host, bound)
    return metrics


def require_shared_broker(app: Beatq, command: str) -> None:
    """Refuse memory://: a command in its own process would only see its own empty store."""
    if app.conf.broker_url.startswith("memory:"):
        raise ConfigurationError(
            f"{command} needs a broker other processes share; memory:// lives inside one "
            "process: use sqlite:// or redis:// (-b URL or BEATQ_BROKER_URL)"
        )
