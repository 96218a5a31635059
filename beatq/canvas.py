"""Signatures: a task call as plain data (task name, args, kwargs, options).

A Signature is a dict, so it serializes into a message and back unchanged:
`{"task": ..., "args": [...], "kwargs": {...}, "options": {...}, "immutable": bool}`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Beatq
    from .result import AsyncResult
    from .task import Task


class Signature(dict):
    """A task call to make later: `add.s(2, 2)`, `signature("proj.tasks.add", args=(2, 2))`."""

    def __init__(
        self,
        task: str | Task | Mapping[str, Any],
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
        app: Beatq | None = None,
        **extra_options: Any,
    ) -> None:
        if isinstance(task, Mapping):
            data = dict(task)
            super().__init__(
                task=data["task"],
                args=list(data.get("args") or ()),
                kwargs=dict(data.get("kwargs") or {}),
                options=dict(data.get("options") or {}),
                immutable=bool(data.get("immutable", False)),
            )
            self._app = app or getattr(task, "_app", None)
            return
        name = task if isinstance(task, str) else task.name
        if app is None and not isinstance(task, str):
            app = task.app
        super().__init__(
            task=name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            options={**(options or {}), **extra_options},
            immutable=immutable,
        )
        self._app = app

    # -- fields --------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self["task"]

    @property
    def args(self) -> list[Any]:
        return self["args"]

    @property
    def kwargs(self) -> dict[str, Any]:
        return self["kwargs"]

    @property
    def options(self) -> dict[str, Any]:
        return self["options"]

    @property
    def immutable(self) -> bool:
        return self["immutable"]

    @property
    def app(self) -> Beatq:
        if self._app is None:
            from .app import current_app

            self._app = current_app()
        return self._app

    @property
    def type(self) -> Task:
        """The registered task this signature calls."""
        return self.app.tasks[self.task]

    # -- building ------------------------------------------------------------------------
    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A copy; new args are appended (unless immutable), kwargs and options merged."""
        new = Signature(copy.deepcopy(dict(self)), app=self._app)
        if args and not self.immutable:
            new["args"] = list(args) + new["args"]
        if kwargs and not self.immutable:
            new["kwargs"].update(kwargs)
        new["options"].update(options)
        return new

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options in place (`queue`, `countdown`, ...) and return self."""
        if immutable is not None:
            self["immutable"] = immutable
        self["options"].update(options)
        return self

    def link(self, callback: Signature) -> Signature:
        self["options"].setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        self["options"].setdefault("link_error", []).append(errback)
        return errback

    # -- applying ------------------------------------------------------------------------
    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send the call; `args` come before the signature's own unless it is immutable."""
        call_args = list(self.args) if self.immutable else list(args or ()) + list(self.args)
        call_kwargs = dict(self.kwargs) if self.immutable else {**self.kwargs, **(kwargs or {})}
        return self.app.send_task(self.task, call_args, call_kwargs, **{**self.options, **options})

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here and now, as a plain function call."""
        call_args = list(self.args) if self.immutable else list(args) + list(self.args)
        return self.type(*call_args, **{**self.kwargs, **kwargs})

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}({', '.join(parts)}){'!' if self.immutable else ''}"

    def __reduce__(self) -> Any:
        return (Signature, (dict(self),))


def signature(
    task: str | Task | Mapping[str, Any],
    args: Iterable[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    app: Beatq | None = None,
    **extra: Any,
) -> Signature:
    """Celery's `signature(...)`: also turns a signature dict back into a Signature."""
    if isinstance(task, Signature):
        return task
    return Signature(task, args, kwargs, options, app=app, **extra)


def as_signatures(value: Any, app: Beatq | None = None) -> list[Signature]:
    """`link=`/`link_error=` accept one signature or a list of them."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [value]
    return [s if isinstance(s, Signature) else Signature(s, app=app) for s in value]
