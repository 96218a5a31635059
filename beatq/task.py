"""Task: a registered function with its options, and the Request it runs in."""

from __future__ import annotations

import inspect
import random
import threading
import traceback as tb
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import states
from .canvas import Signature, as_signatures, chunks_of, group
from .context import App
from .exceptions import MaxRetriesExceededError, Retry
from .messages import new_id
from .result import AsyncResult, EagerResult


@dataclass
class Request:
    """What a running task knows of its call: `self.request` inside a bound task."""

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    eta: float | None = None
    expires: float | None = None
    is_eager: bool = False
    parent_id: str | None = None
    root_id: str | None = None
    group: str | None = None
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    errbacks: list[dict[str, Any]] = field(default_factory=list)
    delivery_info: dict[str, Any] = field(default_factory=dict)
    hostname: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def correlation_id(self) -> str:
        return self.id


class _RequestStack(threading.local):
    def __init__(self) -> None:
        self.stack: list[Request] = []


# Task attributes that a call's options fall back to, and the app setting behind each.
TASK_DEFAULTS: dict[str, str | None] = {
    "serializer": "task_serializer",
    "compression": "task_compression",
    "acks_late": "task_acks_late",
    "ignore_result": "task_ignore_result",
    "track_started": "task_track_started",
    "time_limit": "task_time_limit",
    "soft_time_limit": "task_soft_time_limit",
    "max_retries": "task_max_retries",
    "default_retry_delay": "task_default_retry_delay",
    "queue": None,
    "expires": None,
    "priority": None,
}


class Task:
    """A function the app can send to workers. Made by `@app.task`.

    >>> @app.task
    ... def add(x, y): return x + y
    >>> add(2, 2)                 # a plain call, here
    4
    >>> add.delay(2, 2).get()     # a message, run by a worker
    4
    """

    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict[str, Any] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            refuse_async(cls.__dict__["run"], f"{cls.__module__}.{cls.__qualname__}.run")

    def __init__(
        self,
        app: App,
        fun: Callable[..., Any],
        name: str,
        bind: bool = False,
        **options: Any,
    ) -> None:
        refuse_async(fun, name)
        self.app = app
        self.run = fun
        self.name = name
        self.bind = bind
        self.__name__ = getattr(fun, "__name__", name)
        self.__doc__ = fun.__doc__
        self.__wrapped__ = fun
        self.__module__ = getattr(fun, "__module__", None) or __name__
        self._options: dict[str, Any] = {}
        for key, value in options.items():
            if key in TASK_DEFAULTS:
                self._options[key] = value
            elif hasattr(Task, key) and not callable(getattr(Task, key)):
                setattr(self, key, value)
            else:
                raise TypeError(f"@app.task got an unknown option {key!r}")
        self.autoretry_for = tuple(self.autoretry_for)
        self._requests = _RequestStack()
        self._errback_arity = _positional_arity(fun) - (1 if bind else 0)

    def option(self, name: str) -> Any:
        """This task's value for an option, or the app's setting behind it."""
        if name in self._options:
            return self._options[name]
        setting = TASK_DEFAULTS.get(name)
        return self.app.conf[setting] if setting else None

    def __getattr__(self, name: str) -> Any:
        if name in TASK_DEFAULTS:
            return self.option(name)
        raise AttributeError(name)

    # -- running here --------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.bind:
            return self.run(self, *args, **kwargs)
        return self.run(*args, **kwargs)

    @property
    def request(self) -> Request:
        stack = self._requests.stack
        return stack[-1] if stack else Request(id="", task=self.name)

    def push_request(self, request: Request) -> None:
        self._requests.stack.append(request)

    def pop_request(self) -> None:
        self._requests.stack.pop()

    def run_in(self, request: Request) -> Any:
        """Run with `request` as `self.request`, turning `autoretry_for` errors into retries."""
        self.push_request(request)
        try:
            value = self(*request.args, **request.kwargs)
        except Retry:
            raise
        except self.autoretry_for as exc:
            if self.dont_autoretry_for and isinstance(exc, self.dont_autoretry_for):
                raise
            countdown = self.retry_kwargs.get("countdown")
            if self.retry_backoff:
                countdown = self.backoff(request.retries)
            opts = {k: v for k, v in self.retry_kwargs.items() if k != "countdown"}
            raise self.retry(exc=exc, countdown=countdown, **opts) from exc
        finally:
            self.pop_request()
        if inspect.iscoroutine(value):
            # A plain function that hands back a coroutine (an async function behind a sync
            # decorator) did not do its work: fail rather than store SUCCESS for it.
            value.close()
            raise TypeError(
                f"task {self.name!r} returned a coroutine that nothing awaited: async tasks "
                "are not supported yet (SPEC §13 will add them)"
            )
        return value

    def backoff(self, retries: int) -> float:
        """Exponential backoff for `retry_backoff`: factor * 2**retries, capped, jittered."""
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        delay = min(factor * (2**retries), self.retry_backoff_max)
        return random.uniform(0, delay) if self.retry_jitter else delay

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        retries: int = 0,
        **options: Any,
    ) -> EagerResult:
        """Run the task here, now, as a worker would, and return its result."""
        request = Request(
            id=task_id or new_id(),
            task=self.name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            retries=retries,
            is_eager=True,
            options=options,
        )
        try:
            value = self.run_in(request)
        except Retry as exc:
            if exc.sig is None:
                return EagerResult(request.id, self.app, states.RETRY, exc, name=self.name)
            again = exc.sig
            # The retried call keeps this call's link and link_error, as on a worker.
            again_options = {**options, **again.options}
            return self.apply(again.args, again.kwargs, request.id, retries + 1, **again_options)
        except Exception as exc:
            if self.app.conf.task_eager_propagates:
                raise
            trace = tb.format_exc()
            self._eager_errbacks(request, exc, trace)
            return EagerResult(request.id, self.app, states.FAILURE, exc, trace, name=self.name)
        # `link=` takes one signature or a list, as apply_async does.
        for callback in as_signatures(options.get("link"), self.app):
            callback.type.apply(*_call_parts(callback, (value,)))
        return EagerResult(request.id, self.app, states.SUCCESS, value, name=self.name)

    def _eager_errbacks(self, request: Request, exc: BaseException, trace: str) -> None:
        """Run `link_error` here as a worker would: (request, exc, traceback), or the task id."""
        for errback in as_signatures(request.options.get("link_error"), self.app):
            task = errback.type
            if task._errback_arity >= 3:
                task(request, exc, trace, *errback.args, **errback.kwargs)
            else:
                task.apply(*_call_parts(errback, (request.id,)))

    # -- sending -------------------------------------------------------------------------
    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send a message for a worker; options: countdown, eta, expires, queue, task_id,
        link, link_error, serializer, compression, retry, retry_policy, priority."""
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        return self.app.send_task(self.name, args, kwargs, task=self, **options)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_many(
        self,
        calls: Iterable[Iterable[Any] | tuple[Iterable[Any], Mapping[str, Any]]],
        **options: Any,
    ) -> list[AsyncResult]:
        """Send many calls of this task in one round trip; each item is args, or (args, kwargs)."""
        pairs = []
        for call in calls:
            if (
                isinstance(call, tuple)
                and len(call) == 2
                and isinstance(call[1], Mapping)
                and isinstance(call[0], (list, tuple))
            ):
                pairs.append((call[0], call[1]))
            else:
                pairs.append((call, {}))
        return self.app.send_many(self, pairs, **options)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 (Celery's name)
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    # -- signatures ----------------------------------------------------------------------
    def s(self, *args: Any, **kwargs: Any) -> Signature:
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        return Signature(self, args, kwargs, immutable=True)

    def signature(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        return Signature(self, args, kwargs, options)

    subtask = signature

    def map(self, it: Iterable[Any]) -> Signature:
        """One message that runs this task over each item: `~xsum.map([range(10)])`."""
        return Signature("beatq.map", (), {"task": self.s(), "it": list(it)}, app=self.app)

    def starmap(self, it: Iterable[Any]) -> Signature:
        """One message that runs this task over each item's arguments."""
        return Signature(
            "beatq.starmap", (), {"task": self.s(), "it": [list(i) for i in it]}, app=self.app
        )

    def chunks(self, it: Iterable[Any], n: int) -> Signature:
        """A group of `starmap`s of `n` items each: `add.chunks(zip(a, b), 10)`."""
        return group((self.starmap(chunk) for chunk in chunks_of(it, n)), app=self.app)

    # -- retrying ------------------------------------------------------------------------
    def retry(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Ask for this task to run again later; raises `Retry` (returns it if not `throw`).

        Past `max_retries`, raises `exc` if given, else MaxRetriesExceededError.
        """
        request = self.request
        limit = self.option("max_retries") if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"task {self.name}[{request.id}] can't be retried past max_retries={limit}"
            )
        if eta is None and countdown is None:
            countdown = self.option("default_retry_delay")
        call_options = {**options}
        if eta is not None:
            call_options["eta"] = eta
        else:
            call_options["countdown"] = countdown
        sig = Signature(
            self,
            request.args if args is None else args,
            request.kwargs if kwargs is None else kwargs,
            call_options,
        )
        retry = Retry(exc=exc, when=eta or countdown)
        retry.sig = sig
        if throw:
            raise retry
        return retry

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"


def refuse_async(fun: Any, name: str) -> None:
    """Raise TypeError, naming the task, when `fun` is an `async def` (or an async generator).

    Until async tasks run natively (SPEC §13), a worker would only create the coroutine and
    store it as the result: refused where the task is declared, so nothing reports SUCCESS
    for work that never ran.
    """
    call = fun if inspect.isroutine(fun) else getattr(fun, "__call__", None)  # noqa: B004
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        where = getattr(getattr(fun, "__code__", None), "co_filename", None)
        line = getattr(getattr(fun, "__code__", None), "co_firstlineno", None)
        at = f" ({where}:{line})" if where else ""
        raise TypeError(
            f"task {name!r}{at} is an async def: async tasks are not supported yet "
            "(SPEC §13 will add them); declare it with a plain def, and run a coroutine "
            "inside with asyncio.run(...)"
        )


def _positional_arity(fun: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 99
    return sum(1 for p in params if p.kind in kinds)


def _call_parts(sig: Signature, parent_args: tuple[Any, ...]) -> tuple[list[Any], dict[str, Any]]:
    args = list(sig.args) if sig.immutable else list(parent_args) + list(sig.args)
    return args, dict(sig.kwargs)
