"""Task: a registered function with its options, and the Request it runs in."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from . import signals, states
from .calling import check_keywords, check_priority
from .canvas import (
    Plan,
    Signature,
    as_signatures,
    chord,
    chunks,
    expand,
    maybe_signature,
)
from .canvas import freeze as freeze_canvas
from .context import App, Stack, current_app
from .context import running_anywhere as _active
from .context import running_requests as _running
from .einfo import ExceptionInfo
from .exceptions import (
    AsyncTaskNotSupported,
    ConfigurationError,
    Ignore,
    MaxRetriesExceededError,
    Retry,
)
from .loops import Run, run_here
from .messages import new_id
from .rates import parse_rate
from .result import AsyncResult, EagerResult, state_write

log = logging.getLogger("beatq.task")


@dataclass
class Request:
    """What a running task knows of its call: `self.request` inside a bound task.

    Celery's fields: `id`, `args`, `kwargs`, `retries`, `eta` and `expires` (POSIX
    seconds), `is_eager`, `parent_id` (the task that sent this one) and `root_id` (the
    first task of the workflow), `group`, `hostname`, `delivery_info` (`exchange`,
    `routing_key`, `priority`, `redelivered`), `headers` (the custom headers of
    `apply_async(headers=...)`, also readable as attributes: `self.request.trace_id`),
    `timelimit` (hard, soft), `correlation_id`, `reply_to`, `callbacks`, `errbacks`.
    """

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
    headers: dict[str, Any] = field(default_factory=dict)
    timelimit: tuple[float | None, float | None] = (None, None)
    reply_to: str | None = None
    origin: str | None = None
    children: list[Any] | None = None  # results of what it sent (see context.add_child)

    @property
    def correlation_id(self) -> str:
        return self.id

    @property
    def called_directly(self) -> bool:
        """True for a plain call (`add(2, 2)`), False in a worker or `apply`."""
        return not self.id

    @property
    def time_limit(self) -> float | None:
        """The hard time limit this run has, in seconds (None: none)."""
        return self.timelimit[0]

    @property
    def soft_time_limit(self) -> float | None:
        return self.timelimit[1]

    @property
    def chord(self) -> Any:
        return self.options.get("chord")

    @property
    def chain(self) -> Any:
        return self.options.get("chain")

    @property
    def ignore_result(self) -> bool:
        return bool(self.options.get("ignore_result"))

    def get(self, key: str, default: Any = None) -> Any:
        """A field or a custom header by name, as Celery's `request.get(key)`."""
        value = getattr(self, key, _UNSET)
        return default if value is _UNSET else value

    def __getattr__(self, name: str) -> Any:
        # Only reached for a name that is not a field: a custom header, as in Celery,
        # where they are the request's attributes (tracing integrations read them so).
        headers = self.__dict__.get("headers")
        if headers and name in headers:
            return headers[name]
        raise AttributeError(f"{type(self).__name__!r} has no field or header {name!r}")


def _RequestStack() -> Stack:  # noqa: N802 (a task's own stack of requests)
    return Stack("beatq.task_requests")


# Task attributes that a call's options fall back to, and the app setting behind each.
TASK_DEFAULTS: dict[str, str | None] = {
    "serializer": "task_serializer",
    "compression": "task_compression",
    "acks_late": "task_acks_late",
    "reject_on_worker_lost": "task_reject_on_worker_lost",
    "ignore_result": "task_ignore_result",
    "track_started": "task_track_started",
    "time_limit": "task_time_limit",
    "soft_time_limit": "task_soft_time_limit",
    "max_retries": "task_max_retries",
    "default_retry_delay": "task_default_retry_delay",
    "queue": None,
    "expires": None,
    "priority": "task_default_priority",
    "rate_limit": "task_default_rate_limit",
}


_UNSET = object()
# the keyword arguments of an apply_many call given as args alone: one object for them
# all (Message.copies encodes calls given as one object once), read-only
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})

# A task option's setting, read from app.conf: each of TASK_DEFAULTS' settings is read as
# it is stored (none has an old name or an environment override: conf.Settings.__getitem__
# would give the same), without a Python frame (a send reads eight options).
_setting = dict.__getitem__

HOOKS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")


class Task:
    """A function the app can send to workers. Made by `@app.task`.

    >>> @app.task
    ... def add(x, y): return x + y
    >>> add(2, 2)                 # a plain call, here
    4
    >>> add.delay(2, 2).get()     # a message, run by a worker
    4
    """

    name: str | None = None  # a Task subclass may set it; else made at registration
    bind = False
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict[str, Any] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    #: Celery's `typing`: a call whose arguments do not fit the function's parameters is
    #: refused where it is sent (a TypeError naming the task), not on a worker later.
    typing: bool = True
    _app: App | None = None
    _fits: _Fits | None = None  # the parameters, worked out at the first send (check_call)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:
            refuse_async_generator(cls.__dict__["run"], f"{cls.__module__}.{cls.__qualname__}.run")

    def __init__(
        self,
        app: App | None = None,
        fun: Callable[..., Any] | None = None,
        name: str | None = None,
        bind: bool = False,
        **options: Any,
    ) -> None:
        """`@app.task` makes one from a function (also with `base=` a subclass); a
        class-based task (`class Fetch(Task): name = ...; def run(self, url): ...`) is
        made with no arguments and registered with `app.register_task(Fetch())`.

        Options are `@app.task`'s keyword arguments; a subclass may also give them as
        class attributes (`acks_late = True`, `queue = "io"`)."""
        cls = type(self)
        if app is not None:
            self._app = app
        if fun is None:  # class-based: `run` is the subclass's method, self comes with it
            fun = self.run
            bind = False
        else:
            refuse_async_generator(fun, name or getattr(fun, "__name__", cls.__name__))
            self.run = fun  # type: ignore[method-assign]
        if name:
            self.name = name
        self.bind = bind
        self.__name__ = getattr(fun, "__name__", None) or cls.__name__
        self.__doc__ = fun.__doc__
        self.__wrapped__ = fun
        self.__module__ = getattr(fun, "__module__", None) or __name__
        self._options: dict[str, Any] = _class_options(cls)
        for key, value in options.items():
            if key in TASK_DEFAULTS:
                if key == "priority" and value is not None:
                    check_priority(value, f"task {name or self.__name__!r}")
                self._options[key] = value
            elif hasattr(cls, key) and not callable(getattr(cls, key)):
                setattr(self, key, value)
            else:
                raise TypeError(f"@app.task got an unknown option {key!r}")
        if self._options.get("rate_limit") is not None:
            _check_rate(self._options["rate_limit"], name or self.name or self.__name__)
        if "soft_time_limit" in self._options or "time_limit" in self._options:
            check_time_limits(
                self._options.get("soft_time_limit"),
                self._options.get("time_limit"),
                f"task {name or self.__name__!r}",
            )
        self.autoretry_for = tuple(self.autoretry_for)
        self._requests = _RequestStack()
        self._errback_arity = _positional_arity(fun) - (1 if bind else 0)
        self._hooked = _overrides_hooks(cls)
        #: An `async def` task: a worker awaits it on an event loop (see loops.py).
        self.is_async = is_coroutine_function(fun)

    @property
    def app(self) -> App:
        """The app this task is registered with (the current app until it is)."""
        app = self._app
        return current_app() if app is None else app

    @app.setter
    def app(self, value: App) -> None:
        self._app = value

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The task's body: the decorated function, or a Task subclass's own `run`."""
        raise NotImplementedError(f"{type(self).__name__} must define run(self, ...)")

    # -- hooks (Celery's): override them in a Task subclass or a `base=` class ----------
    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Called in the process that runs the task, just before it starts."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Called after the task succeeded (its result is stored)."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        """Called after the task failed (its failure is stored)."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        """Called after the task asked to be retried (the retry is sent)."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Any,
        kwargs: Any,
        einfo: ExceptionInfo | None,
    ) -> None:
        """Called after on_success or on_failure, with the state and the value or
        exception (not after a retry, as in Celery)."""

    def ended(
        self, request: Request, state: str, retval: Any, einfo: ExceptionInfo | None = None
    ) -> None:
        """What follows a run whose outcome is stored, in Celery's order: on_success
        and task_success, on_failure and task_failure, or on_retry and task_retry; then
        after_return (success and failure), then task_postrun. `self.request` is the
        run's request meanwhile. A hook that raises is logged: the outcome stands."""
        if not (
            self._hooked
            or _END_SIGNALS.get(state, _NO_SIGNAL).receivers
            or signals.task_postrun.receivers
        ):
            return
        self.push_request(request)
        try:
            self._end_hooks(request, state, retval, einfo)
        finally:
            self.pop_request()

    def _end_hooks(
        self, request: Request, state: str, retval: Any, einfo: ExceptionInfo | None
    ) -> None:
        task_id, args, kwargs = request.id, request.args, request.kwargs
        if state == states.SUCCESS:
            _hook(self, "on_success", retval, task_id, args, kwargs)
            if signals.task_success.receivers:
                signals.task_success.send(sender=self, result=retval)
        elif state == states.FAILURE:
            _hook(self, "on_failure", retval, task_id, args, kwargs, einfo)
            failure_signal(self, task_id, retval, args, kwargs, einfo)
        elif state == states.RETRY:
            exc = getattr(retval, "exc", None) or retval
            _hook(self, "on_retry", exc, task_id, args, kwargs, einfo)
            if signals.task_retry.receivers:
                signals.task_retry.send(sender=self, request=request, reason=retval, einfo=einfo)
        if state in (states.SUCCESS, states.FAILURE):
            _hook(self, "after_return", state, retval, task_id, args, kwargs, einfo)
        if signals.task_postrun.receivers:
            signals.task_postrun.send(
                sender=self,
                task_id=task_id,
                task=self,
                args=args,
                kwargs=kwargs,
                retval=retval,
                state=state,
            )

    def option(self, name: str) -> Any:
        """This task's value for an option, or the app's setting behind it."""
        options = self._options
        if name in options:
            return options[name]
        setting = TASK_DEFAULTS.get(name)
        if setting is None:
            return None
        app = self._app  # the `app` property's look-up, inline: a send reads eight options
        return _setting((current_app() if app is None else app).conf, setting)

    def __getattr__(self, name: str) -> Any:
        if name in TASK_DEFAULTS:
            return self.option(name)
        if name in _LAZY:  # a subclass whose __init__ did not call Task.__init__
            value = _LAZY[name](self)
            setattr(self, name, value)
            return value
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
        """Run with `request` as `self.request`, turning `autoretry_for` errors into retries.
        An async task is run to its end on this thread's event loop (see loops.py)."""
        if self.is_async:  # the signals and hooks here, in this thread's context
            running = self.enter_run(request)
            try:
                return run_here(Run(self.abody(request)))
            finally:
                self.leave_run(running)
        running = self.enter_run(request)
        try:
            value = self(*request.args, **request.kwargs)
        except Retry:
            raise
        except self.autoretry_for as exc:
            if self.dont_autoretry_for and isinstance(exc, self.dont_autoretry_for):
                raise
            raise self._autoretry(exc, request) from exc
        finally:
            self.leave_run(running)
        if inspect.iscoroutine(value):
            # A plain function that hands back a coroutine (an async function behind a sync
            # decorator) did not do its work: fail rather than store SUCCESS for it.
            value.close()
            raise TypeError(
                f"task {self.name!r} returned a coroutine that nothing awaited: its function "
                "is a plain def (a decorator may hide the async def under it); declare the "
                "task's own function with async def so the worker awaits it"
            )
        return value

    async def arun_in(self, request: Request) -> Any:
        """`run_in` for an async task, awaited on the loop that runs it: `self.request`,
        the hooks, the signals and `autoretry_for` as for a plain task."""
        running = self.enter_run(request)
        try:
            return await self.abody(request)
        finally:
            self.leave_run(running)

    async def abody(self, request: Request) -> Any:
        """An async task's own part of a run (`enter_run` done): await the task, turning
        `autoretry_for` errors into retries."""
        try:
            return await self(*request.args, **request.kwargs)
        except Retry:
            raise
        except self.autoretry_for as exc:
            if self.dont_autoretry_for and isinstance(exc, self.dont_autoretry_for):
                raise
            raise self._autoretry(exc, request) from exc

    def enter_run(self, request: Request) -> list[Any]:
        """Make `request` the running one (`self.request`, what it sends names as its
        parent), send task_prerun, call before_start; the stack to give `leave_run`.
        Both in the context that runs `ended` too (tracing's context is attached there)."""
        self.push_request(request)
        running = _running.stack
        running.append(request)
        _active.append(None)
        try:
            if signals.task_prerun.receivers:
                signals.task_prerun.send(
                    sender=self,
                    task_id=request.id,
                    task=self,
                    args=request.args,
                    kwargs=request.kwargs,
                )
            if self._hooked:
                self.before_start(request.id, request.args, request.kwargs)
        except BaseException:
            self.leave_run(running)
            raise
        return running

    def leave_run(self, running: list[Any]) -> None:
        _active.pop()
        running.pop()
        self.pop_request()

    def _autoretry(self, exc: BaseException, request: Request) -> BaseException:
        """What an `autoretry_for` error becomes: the Retry to raise (`self.retry` raises
        it itself, or MaxRetriesExceededError past max_retries)."""
        countdown = self.retry_kwargs.get("countdown")
        if self.retry_backoff:
            countdown = self.backoff(request.retries)
        opts = {k: v for k, v in self.retry_kwargs.items() if k != "countdown"}
        return self.retry(exc=exc, countdown=countdown, **opts)

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
            headers=dict(options.get("headers") or {}),
        )
        request.root_id = options.get("root_id") or request.id
        request.parent_id = options.get("parent_id")
        try:
            value = self.run_in(request)
        except Retry as exc:
            self.ended(request, states.RETRY, exc, ExceptionInfo())
            if exc.sig is None:
                return EagerResult(request.id, self.app, states.RETRY, exc, name=self.name)
            again = exc.sig
            # The retried call keeps this call's link and link_error, as on a worker.
            again_options = {**options, **again.options}
            return self.apply(again.args, again.kwargs, request.id, retries + 1, **again_options)
        except Exception as exc:
            einfo = ExceptionInfo()
            if self.app.conf.task_eager_propagates:
                self.ended(request, states.FAILURE, exc, einfo)
                raise
            trace = einfo.traceback
            self._eager_errbacks(request, exc, trace)
            self.ended(request, states.FAILURE, exc, einfo)
            return EagerResult(request.id, self.app, states.FAILURE, exc, trace, name=self.name)
        # `link=` takes one signature or a list, as apply_async does.
        for callback in as_signatures(options.get("link"), self.app):
            callback.type.apply(*_call_parts(callback, (value,)))
        self.ended(request, states.SUCCESS, value)
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
        if self.typing:
            self.check_call(args, kwargs)
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        return self.app.send_task(self.name, args, kwargs, task=self, **options)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    async def aapply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """`apply_async` for code in an event loop: `await fetch.aapply_async((url,))`.

        The send (one round trip, on the broker's blocking client) runs in a thread of
        the loop's default executor, so the loop goes on meanwhile; it runs in this
        coroutine's context, so a send from inside a running task names it as parent."""
        loop = asyncio.get_running_loop()
        send = functools.partial(contextvars.copy_context().run, self.apply_async)
        return await loop.run_in_executor(None, functools.partial(send, args, kwargs, **options))

    async def adelay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """`delay` for code in an event loop: `await fetch.adelay(url)` (see aapply_async)."""
        return await self.aapply_async(args, kwargs)

    def apply_many(
        self,
        calls: Iterable[Iterable[Any] | tuple[Iterable[Any], Mapping[str, Any]]],
        **options: Any,
    ) -> list[AsyncResult]:
        """Send many calls of this task in one round trip; each item is args, or (args, kwargs)."""
        pairs = [
            (call[0], call[1])
            if isinstance(call, tuple)
            and len(call) == 2
            and isinstance(call[1], Mapping)
            and isinstance(call[0], (list, tuple))
            else (call, _NO_KWARGS)
            for call in calls
        ]
        if self.typing and type(self).check_call is not Task.check_call:
            for args, kwargs in pairs:
                self.check_call(args, kwargs)
        elif self.typing:
            fits = self._fits
            if fits is None:
                fits = self._fits = _Fits.of(self)
            low, high = fits.low, fits.high
            for args, kwargs in pairs:
                # check_call's own first test, without a call a message
                if kwargs or type(args) not in (list, tuple) or not low <= len(args) <= high:
                    self.check_call(args, kwargs)
        return self.app.send_many(self, pairs, **options)

    def check_call(
        self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None
    ) -> None:
        """Raise TypeError, naming the task, unless `args` and `kwargs` fit the task's
        parameters (`self` left out of a bound task's). Every send checks this when the
        task's `typing` is on (the default, as in Celery), so a bad call fails where it
        is made. The parameters are read once; a call of positional arguments only, within
        their count, is let through without binding them."""
        fits = self._fits
        if fits is None:
            fits = self._fits = _Fits.of(self)
        args = args if isinstance(args, (list, tuple)) else list(args or ())
        if not kwargs and fits.low <= len(args) <= fits.high:
            return
        if fits.signature is None:
            return
        try:
            fits.signature.bind(*args, **(kwargs or {}))
        except TypeError as exc:
            shown = f"{getattr(self.run, '__name__', 'run')}{fits.signature}"
            raise TypeError(
                f"task {self.name!r} cannot take these arguments: {exc} (it is {shown}; "
                "the task option typing=False skips this check)"
            ) from None

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
        return chunks(self.s(), it, n, app=self.app)

    # -- states ---------------------------------------------------------------------------
    def update_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: Any = None,
        **kwargs: Any,
    ) -> None:
        """Store `state` (a custom one such as "PROGRESS", or a built-in) with `meta` for
        this run (or `task_id`): `AsyncResult(id).state` and `.info` read it from any
        process until the next state replaces it. Does not wake a waiting `get()`
        unless the state is a final one."""
        check_keywords("update_state()", kwargs)
        task_id = task_id or self.request.id
        if not task_id:
            raise ValueError("update_state outside a running task needs task_id=")
        if not state:
            raise ValueError("update_state needs state=, such as state='PROGRESS'")
        write = state_write(self.app, task_id, state, meta, name=self.name)
        self.app.result_store.store_results([write])

    # -- replacing -----------------------------------------------------------------------
    def replace(self, sig: Any) -> Any:
        """End this run and put `sig` (a signature, chain, group or chord) in its place, as
        Celery's `Task.replace`: `sig`'s result is stored under this task's id (a group's,
        as its list), and what was to follow this task (its links and errbacks, the rest
        of its chain, its chord) follows `sig` instead. Raises `Ignore`, which the worker
        takes as "acknowledge, store no state, send `sig`" in one step: write
        `return self.replace(sig)`. Run eagerly (`apply`, a plain call), `sig` runs here
        and its value is returned."""
        request = self.request
        sig = maybe_signature(sig, self.app).clone()
        kind = sig.get("subtask_type")
        if kind == "chain" and not sig.kwargs["tasks"]:
            raise ConfigurationError("Cannot replace with an empty chain")
        if request.is_eager or not request.id:
            return sig.apply().get()
        if kind == "group":  # a chord, so that one task (with this id) holds the list
            sig = chord(sig, Signature("beatq.accumulate", kwargs={"index": 0}, app=self.app))
        for callback in request.callbacks:
            sig.link(maybe_signature(callback, self.app))
        for errback in request.errbacks:
            sig.link_error(maybe_signature(errback, self.app))
        freeze_canvas(sig, self.app, _id=request.id)
        options = request.options
        then = list(options.get("chain") or ())
        if then:
            extra = options.get("chain_extra") or {}
        else:  # the last of its chain: it may count toward a chord
            extra = {"chord": options["chord"], "acks_late": True} if options.get("chord") else {}
        lineage = {"parent_id": request.id, "root_id": request.root_id or request.id}
        plan = Plan()
        expand(sig, self.app, plan, [], {}, then, extra, lineage)
        raise Ignore(f"replaced by {sig!r}", followup=plan)

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


def check_time_limits(soft: Any, hard: Any, where: str) -> None:
    """Raise ValueError, one line naming `where`, unless the time limits are seconds (or
    None) and the soft one lies below the hard one: a soft limit past the hard one would
    never fire, since the hard one kills the task first."""
    for name, value in (("soft_time_limit", soft), ("time_limit", hard)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            raise ValueError(f"{where}: {name}={value!r} is not a number of seconds >= 0")
    if soft and hard and soft > hard:
        raise ValueError(
            f"{where}: soft_time_limit={soft:g} is greater than time_limit={hard:g}, so it "
            "would never fire (the hard limit kills the task first); give a soft limit below "
            "the hard one"
        )


def _callable_of(fun: Any) -> Any:
    """What runs when `fun` is called: itself, or an object's `__call__`."""
    return fun if inspect.isroutine(fun) else getattr(fun, "__call__", None)  # noqa: B004


def is_coroutine_function(fun: Any) -> bool:
    """Whether calling `fun` makes a coroutine to await (an `async def`, or an object
    whose `__call__` is one): the worker runs such a task on an event loop."""
    return inspect.iscoroutinefunction(_callable_of(fun))


def refuse_async_generator(fun: Any, name: str) -> None:
    """Raise AsyncTaskNotSupported (a TypeError), naming the task, when `fun` is an async
    generator: a task's run ends with one value to store, and nothing would iterate it."""
    if inspect.isasyncgenfunction(_callable_of(fun)):
        where = getattr(getattr(fun, "__code__", None), "co_filename", None)
        line = getattr(getattr(fun, "__code__", None), "co_firstlineno", None)
        at = f" ({where}:{line})" if where else ""
        raise AsyncTaskNotSupported(
            f"task {name!r}{at} is an async generator: a task returns one value; collect "
            "the items in an async def and return them (a list), or send a task per item"
        )


def _overrides_hooks(cls: type[Task]) -> bool:
    """Whether a Task subclass defines any of the hooks (else none is called)."""
    return any(getattr(cls, hook) is not getattr(Task, hook) for hook in HOOKS)


def _check_rate(value: Any, task: str) -> None:
    """Refuse a rate limit Celery would not read, where the task is declared."""
    try:
        parse_rate(value)
    except ValueError as exc:
        raise ValueError(f"task {task}: {exc}") from None


def _class_options(cls: type[Task]) -> dict[str, Any]:
    """The options a Task subclass gives as class attributes."""
    found = {}
    for key in TASK_DEFAULTS:  # Task itself defines none of them
        value = getattr(cls, key, _UNSET)
        if value is not _UNSET:
            found[key] = value
    return found


def failure_signal(
    task: Task, task_id: str, exc: BaseException, args: Any, kwargs: Any, einfo: Any
) -> None:
    """Send `task_failure` for a run of `task` that failed with `exc`."""
    if signals.task_failure.receivers:
        signals.task_failure.send(
            sender=task,
            task_id=task_id,
            exception=exc,
            args=args,
            kwargs=kwargs,
            traceback=einfo.tb if einfo is not None else None,
            einfo=einfo,
        )


def _hook(task: Task, name: str, *args: Any) -> None:
    try:
        getattr(task, name)(*args)
    except Exception:
        log.exception("Task %s[%s]: its %s hook raised", task.name, task.request.id, name)


_NO_SIGNAL = signals.Signal("none")
_END_SIGNALS = {
    states.SUCCESS: signals.task_success,
    states.FAILURE: signals.task_failure,
    states.RETRY: signals.task_retry,
}

# What Task.__init__ sets, made when first read by a subclass whose __init__ skipped it.
_LAZY: dict[str, Callable[[Task], Any]] = {
    "_options": lambda task: _class_options(type(task)),
    "_requests": lambda task: _RequestStack(),
    "_errback_arity": lambda task: _positional_arity(task.run),
    "_hooked": lambda task: _overrides_hooks(type(task)),
    "is_async": lambda task: is_coroutine_function(task.run),
}


@dataclass(frozen=True)
class _Fits:
    """A task's parameters as a send checks a call against them (Task.check_call): a
    positional-only call of `low` to `high` arguments fits without binding."""

    signature: inspect.Signature | None
    low: float = 0
    high: float = float("inf")

    @classmethod
    def of(cls, task: Task) -> _Fits:
        fun = task.run
        try:
            signature = inspect.signature(fun)
        except (TypeError, ValueError):  # a builtin or a C callable: nothing to check against
            return cls(None)
        params = list(signature.parameters.values())
        if task.bind and not inspect.ismethod(fun) and params:
            params = params[1:]  # `self`, given by the worker
            signature = signature.replace(parameters=params)
        kind = inspect.Parameter
        positional = [
            p for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)
        ]
        if any(p.kind is kind.KEYWORD_ONLY and p.default is p.empty for p in params):
            return cls(signature, float("inf"), -1.0)  # always bound: a keyword is required
        low = sum(1 for p in positional if p.default is p.empty)
        many = any(p.kind is kind.VAR_POSITIONAL for p in params)
        return cls(signature, low, float("inf") if many else len(positional))


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
