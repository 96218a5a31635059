"""The app as the modules under it see it: the `App` protocol, and `current_app()`; and
the task a worker runs in this thread (`running_request()`), which what it sends names as
its parent and adds to its children.

Results, canvas, tasks, events, control, the builtins and the workflow are each handed
an app. They type it as `App`, and find the default one with `current_app()`, rather
than importing `Beatq`: so app.py stands above them all and none of them imports it
back. `beatq.app.Beatq` is the one implementation; the protocol names only what those
modules use of it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping, Sequence
from datetime import tzinfo
from typing import Any, Protocol

from .brokers import Backend, Outgoing, Results, ResultWrite
from .conf import Settings
from .exceptions import ConfigurationError
from .messages import Message


class Revoker(Protocol):
    """`app.control` as results use it (`beatq.control.Control`)."""

    def revoke(
        self, task_id: str | Sequence[str], terminate: bool = False, signal: str | None = None
    ) -> None: ...


class App(Protocol):
    """What the modules under app.py use of a beatq app (see `beatq.app.Beatq`)."""

    conf: Settings

    @property
    def tasks(self) -> Mapping[str, Any]:
        """The registered tasks by name (each a `beatq.task.Task`)."""
        ...

    @property
    def broker(self) -> Backend: ...

    @property
    def result_store(self) -> Results: ...

    @property
    def timezone(self) -> tzinfo: ...

    @property
    def control(self) -> Revoker: ...

    def task(self, *args: Any, **options: Any) -> Any:
        """Register a function as a task: `@app.task` or `@app.task(name=..., ...)`."""
        ...

    def build_message(
        self,
        name: str,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task: Any = None,
        **options: Any,
    ) -> tuple[Message, bytes]: ...

    def outgoing(
        self, message: Message, body: bytes, task: Any = None, held: bool = False
    ) -> Outgoing:
        """`message` as the broker takes it, with its delivery property."""
        ...

    def send_task(
        self,
        name: str,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task: Any = None,
        **options: Any,
    ) -> Any:
        """Send one message; returns its `beatq.result.AsyncResult`."""
        ...

    def send_many(
        self, task: Any, calls: Sequence[tuple[Iterable[Any], Mapping[str, Any]]], **options: Any
    ) -> list[Any]:
        """Send many calls of one task; returns their `AsyncResult`s."""
        ...

    def publish(
        self,
        outgoing: Sequence[Outgoing],
        retry: bool = True,
        policy: Mapping[str, Any] | None = None,
        results: Sequence[ResultWrite] = (),
        events: Sequence[bytes] | None = None,
    ) -> None: ...


class TaskLike(Protocol):
    """A registered task as a signature names it (`beatq.task.Task`)."""

    name: str
    app: App


# Every app made in this process, the newest last (the default for `AsyncResult(id)`).
_current: list[App] = []


def current_app() -> App:
    """The most recently created app (what `AsyncResult(id)` uses without `app=`)."""
    if not _current:
        raise ConfigurationError("no beatq app exists yet; create one with Beatq('proj')")
    return _current[-1]


def set_current(app: App) -> None:
    """Make `app` the one `current_app()` returns (each new Beatq calls this)."""
    _current.append(app)


class Stack:
    """A list of the running code's own: one per thread, and one per asyncio task the
    asyncio pool starts (each in a fresh `contextvars.Context`), so tasks running side by
    side on one loop each see their own. A coroutine run on a thread's loop shares its
    thread's list."""

    __slots__ = ("_var",)

    def __init__(self, name: str) -> None:
        self._var: contextvars.ContextVar[list[Any]] = contextvars.ContextVar(name)

    @property
    def stack(self) -> list[Any]:
        try:
            return self._var.get()
        except LookupError:
            own: list[Any] = []
            self._var.set(own)
            return own


# The requests this thread (or asyncio task) runs, innermost last, whatever their task
# (Task.run_in pushes them): a message sent from inside one gets it as its parent (see
# `running_request`). `running_anywhere` holds an item per request running in the
# process, any thread (append and pop are atomic): a process that runs none (a client)
# pays one test per send, not a context-variable lookup.
running_requests = Stack("beatq.running_requests")
running_anywhere: list[None] = []


def running_request() -> Any:
    """The request (a `beatq.task.Request`) of the task a worker runs in this thread now,
    or None (also for an eager run, as Celery's `current_worker_task`)."""
    if not running_anywhere:
        return None
    stack = running_requests.stack
    if stack:
        request = stack[-1]
        if not request.is_eager:
            return request
    return None


def add_child(result: Any) -> None:
    """Count `result` (of what the running task sent) among that task's children, stored
    with its state (`AsyncResult.children`), as Celery's add_to_parent does."""
    request = running_request()
    if request is not None:
        if request.children is None:
            request.children = []
        request.children.append(result)
