"""Canvas: signatures, chain, group, chord — plain data that travels inside messages.

Every canvas is a dict, so it serializes into a message and back unchanged:

    task        {"task": name, "args": [...], "kwargs": {...}, "options": {...}, "immutable": b}
    chain       {"task": "beatq.chain", "kwargs": {"tasks": [...]}, "subtask_type": "chain", ...}
    group       {"task": "beatq.group", "kwargs": {"tasks": [...]}, "subtask_type": "group", ...}
    chord       {"task": "beatq.chord", "kwargs": {"header": group, "body": sig}, ...}

Applying one happens in two steps. `freeze` gives every task its id up front (so the
caller holds the final result, with `.parent` walking back), then `expand` turns the
canvas into the messages to send now. What comes later travels in the messages'
options: `chain` (the signatures to apply with this task's result) and `chord` (the
join this task counts toward; the member that completes the header sends the unlock).
When a task ends, workflow.py works out what those options ask for.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .brokers import ChordJoin, Outgoing, ResultWrite
from .calling import check_keywords
from .context import App, TaskLike, add_child, current_app
from .messages import new_id
from .result import AsyncResult, EagerResult, GroupResult, encode_group

# freeze()'s keywords that Celery's canvas passes itself as it builds a chord
_FREEZE_INNER = "Celery's own canvas passes it as it builds a chord; beatq's needs none"


class Signature(dict):
    """A task call to make later: `add.s(2, 2)`, `signature("proj.tasks.add", args=(2, 2))`."""

    subtask_type: str | None = None

    def __init__(
        self,
        task: str | TaskLike | Mapping[str, Any],
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
        app: App | None = None,
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
            if data.get("subtask_type"):
                self["subtask_type"] = data["subtask_type"]
            self._app = app or getattr(task, "_app", None)
            self._adopt_parts()
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
        if self.subtask_type:
            self["subtask_type"] = self.subtask_type
        self._app = app

    def _adopt_parts(self) -> None:
        """Rebuilt from data, a canvas holds Signatures rather than dicts, so that the ids
        `freeze` gives and the errbacks `link_error` adds land in it, not in a copy."""
        kwargs, kind = self["kwargs"], self.get("subtask_type")
        if kind in ("chain", "group"):
            kwargs["tasks"] = [maybe_signature(t, self._app) for t in kwargs["tasks"]]
        elif kind == "chord":
            for part in ("header", "body"):
                if kwargs.get(part) is not None:
                    kwargs[part] = maybe_signature(kwargs[part], self._app)

    # -- fields (settable, as Celery's) ----------------------------------------------------
    @property
    def task(self) -> str:
        return self["task"]

    @task.setter
    def task(self, value: str) -> None:
        self["task"] = value

    @property
    def name(self) -> str:
        """The task's name (as `Task.name`, so a signature reads like its task)."""
        return self["task"]

    @property
    def args(self) -> list[Any]:
        return self["args"]

    @args.setter
    def args(self, value: Iterable[Any]) -> None:
        self["args"] = list(value)

    @property
    def kwargs(self) -> dict[str, Any]:
        return self["kwargs"]

    @kwargs.setter
    def kwargs(self, value: Mapping[str, Any]) -> None:
        self["kwargs"] = dict(value)

    @property
    def options(self) -> dict[str, Any]:
        return self["options"]

    @options.setter
    def options(self, value: Mapping[str, Any]) -> None:
        self["options"] = dict(value)

    @property
    def immutable(self) -> bool:
        return self["immutable"]

    @immutable.setter
    def immutable(self, value: bool) -> None:
        self["immutable"] = bool(value)

    @property
    def id(self) -> str | None:
        """The task id `freeze` gave (None until frozen)."""
        return self.options.get("task_id")

    @property
    def app(self) -> App:
        if self._app is None:
            self._app = current_app()
        return self._app

    @property
    def type(self) -> Any:
        """The registered task (a `beatq.task.Task`) this signature calls."""
        return self.app.tasks[self.task]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: App | None = None) -> Signature:
        """The signature (or chain, group, chord) a dict describes: `dict(sig)` read back,
        from JSON, a message or a file."""
        if isinstance(data, Signature):
            data = copy.deepcopy(dict(data))
        return maybe_signature(data, app)

    # -- building ------------------------------------------------------------------------
    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A copy; new args come first (unless immutable), kwargs and options are merged."""
        new = maybe_signature(copy.deepcopy(dict(self)), self._app)
        if args and not self.immutable:
            new["args"] = list(args) + new["args"]
        if kwargs and not self.immutable:
            new["kwargs"].update(kwargs)
        new["options"].update(options)
        return new

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options in place (`queue`, `countdown`, `task_id`, ...) and return self."""
        if immutable is not None:
            self["immutable"] = immutable
        self["options"].update(options)
        return self

    def link(self, callback: Signature) -> Signature:
        """Run `callback` with this task's result when it succeeds; returns `callback`."""
        self["options"].setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Run `errback` when this task fails; returns `errback`."""
        self["options"].setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Signature) -> Signature:
        """`link_error`, returning this signature (`sig.on_error(eb).delay()`)."""
        self.link_error(errback)
        return self

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Give this canvas its ids now and return the result it will have: `_id` is the
        id of the task whose result that is (a chain's last task, a chord's body, a
        group's own id)."""
        check_keywords("freeze()", kwargs, dict.fromkeys(("chord", "group_index"), _FREEZE_INNER))
        for key, value in (("root_id", root_id), ("parent_id", parent_id)):
            if value is not None:
                self.options[key] = value
        if group_id is not None and not self.get("subtask_type"):
            self.options["group_id"] = group_id
        return freeze(self, self.app, _id=_id)

    # -- applying ------------------------------------------------------------------------
    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send it; `args` come before the signature's own unless it is immutable."""
        app = self.app
        add_to_parent = options.pop("add_to_parent", True)
        callbacks = {}
        if self.get("subtask_type"):  # a canvas places its callbacks on the right tasks
            callbacks = {k: options.pop(k) for k in ("link", "link_error") if k in options}
        # a copy: the ids given below must not stick to the caller's signature
        sig = self.clone(**options)
        for callback in as_signatures(callbacks.get("link"), app):
            sig.link(callback)
        for errback in as_signatures(callbacks.get("link_error"), app):
            sig.link_error(errback)
        check_calls(sig, app, list(args or ()), dict(kwargs or {}))
        if app.conf.task_always_eager:
            return _apply_eager(sig, app, list(args or ()), dict(kwargs or {}))
        result = freeze(sig, app)
        plan = Plan()
        expand(sig, app, plan, list(args or ()), dict(kwargs or {}))
        app.publish(plan.send, results=plan.results)
        if add_to_parent:
            add_child(result)  # sent from inside a running task: one of its children
        if sig.get("subtask_type") is None and _ignores(sig, app):
            result.ignored = True  # no result will come: get() returns None (AsyncResult)
        return result

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run it here, now, as a worker would (a canvas too), and return its result
        (an EagerResult, or a GroupResult of them)."""
        sig = self.clone(**options)
        return _apply_eager(sig, self.app, list(args or ()), dict(kwargs or {}))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here and now, as a plain function call."""
        call_args = list(self.args) if self.immutable else list(args) + list(self.args)
        return self.type(*call_args, **{**self.kwargs, **kwargs})

    def __or__(self, other: Any) -> Signature:
        """`a | b`: b gets a's result (a chain; after a group, a chord)."""
        if isinstance(other, Signature):
            return chain(self, other, app=self._app)
        return NotImplemented

    def __invert__(self) -> Any:
        """`~sig`: apply and wait for the result."""
        return self.apply_async().get()

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}({', '.join(parts)}){'!' if self.immutable else ''}"

    def __reduce__(self) -> Any:
        return (maybe_signature, (dict(self),))


class chain(Signature):  # noqa: N801 (Celery's name)
    """Tasks run one after another, each getting the previous one's result.

    >>> chain(add.s(2, 2), add.s(4), add.s(8))().get()
    16
    """

    subtask_type = "chain"

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        if len(tasks) == 1 and isinstance(tasks[0], Mapping) and "task" not in tasks[0]:
            raise TypeError("chain() takes signatures")
        if (
            len(tasks) == 1
            and isinstance(tasks[0], Mapping)
            and tasks[0].get("subtask_type") == "chain"
        ):
            data = dict(tasks[0])
            super().__init__(data, app=app)
            return
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            tasks = tuple(tasks[0])
        flat: list[Signature] = []
        for t in tasks:
            sig = maybe_signature(t, app)
            flat.extend(sig.tasks if isinstance(sig, chain) else [sig])
        app = app or next((t._app for t in flat if t._app), None)
        super().__init__("beatq.chain", (), {"tasks": flat}, options, app=app)

    @property
    def tasks(self) -> list[Signature]:
        return [maybe_signature(t, self._app) for t in self.kwargs["tasks"]]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def link(self, callback: Signature) -> Signature:
        """The callback gets the chain's result: it is linked to the last task."""
        return maybe_signature(self.kwargs["tasks"][-1], self._app).link(callback)

    def link_error(self, errback: Signature) -> Signature:
        """The errback runs once, for whichever task fails."""
        for t in self.kwargs["tasks"]:
            maybe_signature(t, self._app).link_error(errback)
        return errback

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks)


class group(Signature):  # noqa: N801
    """Tasks run in parallel; the result is the list of their results, in order.

    >>> group(add.s(i, i) for i in range(10))().get()
    [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    """

    subtask_type = "group"

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        if (
            len(tasks) == 1
            and isinstance(tasks[0], Mapping)
            and tasks[0].get("subtask_type") == "group"
        ):
            super().__init__(dict(tasks[0]), app=app)
            return
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            tasks = tuple(tasks[0])
        sigs = [maybe_signature(t, app) for t in tasks]
        app = app or next((t._app for t in sigs if t._app), None)
        super().__init__("beatq.group", (), {"tasks": sigs}, options, app=app)

    @property
    def tasks(self) -> list[Signature]:
        return [maybe_signature(t, self._app) for t in self.kwargs["tasks"]]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    # No __len__ (len(group.tasks) counts the tasks): a dict whose len() is not its
    # number of keys is packed corrupt by msgpack, and an empty group would be falsy.

    def link_error(self, errback: Signature) -> Signature:
        for t in self.kwargs["tasks"]:
            maybe_signature(t, self._app).link_error(errback)
        return errback

    @property
    def id(self) -> str | None:
        """The group's id (`GroupResult.id`) once frozen."""
        return self.options.get("group_id")

    def link(self, callback: Signature) -> Signature:
        """As Celery's: `callback`, made immutable, is linked to the group's first task (it
        runs when that task succeeds, not when the group ends: for that, use a chord)."""
        tasks = self.kwargs["tasks"]
        if not tasks:
            raise TypeError("an empty group has no task to link to: use a chord (group | task)")
        immutable = maybe_signature(callback, self._app).clone().set(immutable=True)
        return maybe_signature(tasks[0], self._app).link(immutable)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        if options.get("link") is not None:
            raise TypeError(
                "group.apply_async(link=...): a group has no one result to pass on; "
                "use a chord, (group(...) | callback)(), to run it with the group's results"
            )
        return super().apply_async(args, kwargs, **options)

    def skew(self, start: float = 1.0, stop: float | None = None, step: float = 1.0) -> group:
        """Spread the members' starts, as Celery's: countdowns start, start + step, ...
        (past `stop`, `stop` again). Returns the group."""
        countdown = start
        for t in self.kwargs["tasks"]:
            maybe_signature(t, self._app).set(countdown=countdown)
            if stop is None or countdown + step <= stop:
                countdown += step
        return self

    def __or__(self, other: Any) -> Signature:
        """`group(...) | body` is a chord, as in Celery."""
        if isinstance(other, Signature):
            return chord(self, other, app=self._app)
        return NotImplemented

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"


class chunks(group):  # noqa: N801
    """`add.chunks(zip(a, b), 10)` or `chunks(add.s(), zip(a, b), 10)`: the task over
    every item's arguments, `n` items to a message; a group of `beatq.starmap` tasks
    (`.group()` gives it as a plain group, to `skew` it, as Celery's)."""

    def __init__(
        self, task: Any, it: Iterable[Any], n: int, app: App | None = None, **options: Any
    ) -> None:
        sig = maybe_signature(task, app)
        app = app or sig._app
        parts = [
            Signature("beatq.starmap", (), {"task": sig, "it": [list(i) for i in chunk]}, app=app)
            for chunk in chunks_of(it, n)
        ]
        super().__init__(parts, app=app, **options)

    def group(self) -> group:
        return group(self.tasks, app=self._app, **self.options)


class chord(Signature):  # noqa: N801
    """A group, then a body that gets the list of the group's results.

    >>> chord((add.s(i, i) for i in range(10)), xsum.s())().get()
    90
    """

    subtask_type = "chord"

    def __init__(
        self, header: Any, body: Any = None, app: App | None = None, **options: Any
    ) -> None:
        if isinstance(header, Mapping) and header.get("subtask_type") == "chord":
            super().__init__(dict(header), app=app)
            return
        header = header if isinstance(header, group) else group(header, app=app)
        body_sig = maybe_signature(body, app) if body is not None else None
        app = app or header._app or (body_sig._app if body_sig else None)
        super().__init__("beatq.chord", (), {"header": header, "body": body_sig}, options, app=app)

    @property
    def header(self) -> group:
        return group(self.kwargs["header"], app=self._app)

    @property
    def body(self) -> Signature | None:
        body = self.kwargs.get("body")
        return maybe_signature(body, self._app) if body is not None else None

    @body.setter
    def body(self, value: Any) -> None:
        self.kwargs["body"] = maybe_signature(value, self._app) if value is not None else None

    @property
    def tasks(self) -> list[Signature]:
        """The header's tasks (Celery's `chord.tasks`)."""
        return self.header.tasks

    def __or__(self, other: Any) -> Signature:
        """`chord | task` adds the task after the body (a group of one is its task)."""
        if isinstance(other, group) and len(other.kwargs["tasks"]) == 1:
            other = other.tasks[0]
        if isinstance(other, Signature) and other.get("subtask_type") in (None, "chain"):
            body = self.body
            return chord(
                self.header,
                other if body is None else chain(body, other, app=self._app),
                app=self._app,
                **self.options,
            )
        return super().__or__(other)

    def __call__(self, body: Any = None, **options: Any) -> Any:
        sig = chord(self.header, body, app=self._app, **self.options) if body is not None else self
        return sig.apply_async(**options)

    def link(self, callback: Signature) -> Signature:
        """The callback gets the chord's result: it is linked to the body."""
        return maybe_signature(self.kwargs["body"], self._app).link(callback)

    def link_error(self, errback: Signature) -> Signature:
        """The errback runs once if a member or the body fails: it is linked to the body
        (a chain body links it to each of its tasks)."""
        return maybe_signature(self.kwargs["body"], self._app).link_error(errback)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


_TYPES: dict[str | None, type[Signature]] = {
    None: Signature,
    "chain": chain,
    "group": group,
    "chord": chord,
}


def maybe_signature(value: Any, app: App | None = None) -> Signature:
    """The Signature (or chain, group, chord) for a signature or its dict."""
    if isinstance(value, Signature):
        if app is not None and value._app is None:
            value._app = app
        return value
    if not isinstance(value, Mapping):
        if isinstance(getattr(value, "name", None), str) and callable(getattr(value, "s", None)):
            return value.s()  # a task object stands for its signature with no arguments
        raise TypeError(f"not a signature: {value!r}")
    cls = _TYPES[value.get("subtask_type")]
    if cls is Signature:
        return Signature(value, app=app)
    return cls(value, app=app)


def signature(
    task: str | TaskLike | Mapping[str, Any],
    args: Iterable[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    app: App | None = None,
    **extra: Any,
) -> Signature:
    """Celery's `signature(...)`: also turns a signature dict back into a Signature."""
    if isinstance(task, Mapping) and not isinstance(task, Signature):
        return maybe_signature(task, app)
    if isinstance(task, Signature):
        return task.clone()
    return Signature(task, args, kwargs, options, app=app, **extra)


def as_signatures(value: Any, app: App | None = None) -> list[Signature]:
    """`link=`/`link_error=` accept one signature or a list of them."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [value]
    return [maybe_signature(s, app) for s in value]


# -- freezing: ids up front ------------------------------------------------------------------
def freeze(sig: Signature, app: App, _seen: set[int] | None = None, _id: str | None = None) -> Any:
    """Give every task in `sig` its id (kept in its options) and return the result handle.

    `_id`, when given, is the id of the task whose result is `sig`'s (a chain's last, a
    chord's body; a group's own id). The same signature object used twice
    (`chain(*[add.s(1)] * 3)`) is copied, so each use gets its own id.

    A group's result has Celery's shape: a group nested in a group is unrolled into it
    (its members' results take its place), and a group of one member whose result is a
    group (`group(add.s(1, 2) | group(...))`) is that group's result.
    """
    seen = set() if _seen is None else _seen
    kind = sig.get("subtask_type")
    if kind is None:
        if _id is not None:
            sig.options["task_id"] = _id
        task_id = sig.options.setdefault("task_id", new_id())
        return AsyncResult(task_id, app=app, task_name=sig.task)
    if kind in ("chain", "group"):
        tasks = [_own(maybe_signature(t, app), seen) for t in sig.kwargs["tasks"]]
        sig.kwargs["tasks"] = tasks
        if kind == "group":
            if _id is not None:
                sig.options["group_id"] = _id
            group_id = sig.options.setdefault("group_id", new_id())
            results: list[Any] = []
            for t in tasks:
                member = freeze(t, app, seen)
                if t.get("subtask_type") == "group":
                    results.extend(member.results)
                else:
                    results.append(member)
            if len(results) == 1 and isinstance(results[0], GroupResult):
                return results[0]
            return GroupResult(group_id, results, app=app)
        result = None
        for i, t in enumerate(tasks):
            nxt = freeze(t, app, seen, _id if i == len(tasks) - 1 else None)
            _set_parent(nxt, result)
            result = nxt
        return result
    sig.kwargs["header"] = header_sig = _own(maybe_signature(sig.kwargs["header"], app), seen)
    body = sig.kwargs.get("body")
    header = freeze(header_sig, app, seen, None if body is not None else _id)
    if body is None:
        return header
    sig.kwargs["body"] = body_sig = _own(maybe_signature(body, app), seen)
    result = freeze(body_sig, app, seen, _id)
    _set_parent(result, header)
    return result


def _own(sig: Signature, seen: set[int]) -> Signature:
    """`sig`, or a copy of it if this canvas already holds that very object."""
    if id(sig) in seen:
        sig = sig.clone()
    seen.add(id(sig))
    return sig


def _set_parent(result: Any, parent: Any) -> None:
    first = result
    while getattr(first, "parent", None) is not None:
        first = first.parent
    first.parent = parent


def final_ids(sig: Mapping[str, Any]) -> list[str]:
    """The ids whose results make up `sig`'s result (a chain's last task, a group's members)."""
    kind = sig.get("subtask_type")
    if kind is None:
        return [sig["options"]["task_id"]]
    if kind == "chain":
        return final_ids(sig["kwargs"]["tasks"][-1])
    if kind == "group":
        return [i for t in sig["kwargs"]["tasks"] for i in final_ids(t)]
    body = sig["kwargs"].get("body")
    return final_ids(body if body is not None else sig["kwargs"]["header"])


def result_shape(sig: Mapping[str, Any]) -> Any:
    """The ids of `sig`'s result in the shape its value has: one id, or for a group (or
    a chain ending in one) a list, nested groups unrolled into it as Celery does."""
    kind = sig.get("subtask_type")
    if kind is None:
        return sig["options"]["task_id"]
    if kind == "chain":
        return result_shape(sig["kwargs"]["tasks"][-1])
    if kind == "group":
        shape: list[Any] = []
        for t in sig["kwargs"]["tasks"]:
            inner = result_shape(t)
            if t.get("subtask_type") == "group":
                shape.extend(inner)
            else:
                shape.append(inner)
        return shape
    body = sig["kwargs"].get("body")
    return result_shape(body if body is not None else sig["kwargs"]["header"])


def result_ref(sig: Mapping[str, Any]) -> Any:
    """What frozen `sig`'s result is, as a child of the task that starts it is stored (see
    result.child_ref): its id, or for a group `[group id, [its members]]`."""
    kind = sig.get("subtask_type")
    if kind is None:
        return sig["options"]["task_id"]
    if kind == "chain":
        return result_ref(sig["kwargs"]["tasks"][-1])
    if kind == "group":
        members: list[Any] = []
        for t in sig["kwargs"]["tasks"]:
            ref = result_ref(t)
            if t.get("subtask_type") == "group":
                members.extend(ref[1])
            else:
                members.append(ref)
        return [sig["options"]["group_id"], members]
    body = sig["kwargs"].get("body")
    return result_ref(body if body is not None else sig["kwargs"]["header"])


def flat_ids(shape: Any) -> list[str]:
    """The ids in a `result_shape`, in order."""
    if isinstance(shape, list):
        return [i for part in shape for i in flat_ids(part)]
    return [shape]


def all_ids(sig: Mapping[str, Any]) -> list[str]:
    """Every task id in a frozen canvas (to fail them all when what feeds them fails)."""
    kind = sig.get("subtask_type")
    if kind is None:
        return [
            sig["options"]["task_id"],
            *(i for c in sig["options"].get("chain") or () for i in all_ids(c)),
        ]
    if kind in ("chain", "group"):
        return [i for t in sig["kwargs"]["tasks"] for i in all_ids(t)]
    parts = [sig["kwargs"]["header"], sig["kwargs"].get("body")]
    return [i for p in parts if p is not None for i in all_ids(p)]


# -- expanding: the messages to send now -----------------------------------------------------


@dataclass
class Plan:
    """What applying a canvas sends now, in one atomic backend call."""

    send: list[Outgoing] = field(default_factory=list)
    results: list[ResultWrite] = field(default_factory=list)
    # chord members counted as failed because they will never run (see Executor._finish_joins)
    joins: list[ChordJoin] = field(default_factory=list)


@dataclass
class Followup:
    """A builtin task's return: its value, and a plan the worker carries out in the same
    atomic step that acknowledges the task (how a chord's unlock sends its body once)."""

    value: Any
    plan: Plan


def expand(
    sig: Mapping[str, Any],
    app: App,
    plan: Plan,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    then: list[Mapping[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    outer: dict[str, Any] | None = None,
) -> None:
    """Add to `plan` the messages that start frozen canvas `sig`.

    `args`/`kwargs` are the partial arguments (a parent's result); `then` is what runs
    after `sig` with its result; `extra` holds options for the tasks that finish `sig`
    (a chord join); `outer` holds the options handed down by the canvases around `sig`.
    """
    args, kwargs, then, extra = args or [], kwargs or {}, list(then or ()), extra or {}
    outer = outer or {}
    kind = sig.get("subtask_type")
    if kind is None:
        options = {**sig["options"], **outer}
        if then:
            # what finishes the chain (a chord join) travels with it to its last task
            options["chain"] = [*then, *(options.get("chain") or ())]
            if extra:
                options["chain_extra"] = extra
        else:
            options.update(extra)
        call_args = list(sig["args"]) if sig.get("immutable") else [*args, *sig["args"]]
        call_kwargs = dict(sig["kwargs"]) if sig.get("immutable") else {**sig["kwargs"], **kwargs}
        message, body = app.build_message(sig["task"], call_args, call_kwargs, **options)
        plan.send.append(app.outgoing(message, body))
    elif kind == "chain":
        tasks = sig["kwargs"]["tasks"]
        # as in Celery, a chain's options go to its first task (a countdown delays it all)
        down = _handed_down(sig, outer)
        expand(tasks[0], app, plan, args, kwargs, [*tasks[1:], *then], extra, down)
    elif kind == "group" and then:
        # a group followed by something is a chord
        body = then[0] if len(then) == 1 else chain(*then, app=app)
        _expand_chord(sig, body, app, plan, args, kwargs, extra, outer)
    elif kind == "group":
        plan.results.append(encode_group(app, sig["options"]["group_id"], result_shape(sig)))
        down = _handed_down(sig, outer)
        for t in sig["kwargs"]["tasks"]:
            expand(t, app, plan, args, kwargs, None, extra, down)
    else:
        down = _handed_down(sig, outer)
        body = sig["kwargs"].get("body")
        if then:
            body = chain(body, *then, app=app)
        # the body gets the chord's options too, but for the delay (the header has it)
        body_options = {k: v for k, v in down.items() if k not in ("countdown", "eta")}
        if body_options:
            body = maybe_signature(body, app).clone(**body_options)
        _expand_chord(sig["kwargs"]["header"], body, app, plan, args, kwargs, extra, down)


def _ignores(sig: Mapping[str, Any], app: App) -> bool:
    """Whether a plain signature's call stores no result (its option, else its task's)."""
    ignore = sig["options"].get("ignore_result")
    if ignore is None:
        task = app.tasks.get(sig["task"])
        return bool(task is not None and task.option("ignore_result"))
    return bool(ignore)


def check_calls(sig: Mapping[str, Any], app: App, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Raise TypeError (Task.check_call) if a task this canvas sends now, with the
    arguments it is sent with, cannot take them: a plain signature, a chain's first task,
    a group's members, a chord's header. What runs later gets a parent's result, known
    only then, and is not checked (as in Celery)."""
    kind = sig.get("subtask_type")
    if kind is None:
        task = app.tasks.get(sig["task"])
        if task is not None and task.typing:
            immutable = sig.get("immutable")
            call_args = list(sig["args"]) if immutable else [*args, *sig["args"]]
            call_kwargs = dict(sig["kwargs"]) if immutable else {**sig["kwargs"], **kwargs}
            task.check_call(call_args, call_kwargs)
    elif kind == "chain":
        tasks = sig["kwargs"]["tasks"]
        if tasks:
            check_calls(tasks[0], app, args, kwargs)
    elif kind == "group":
        for t in sig["kwargs"]["tasks"]:
            check_calls(t, app, args, kwargs)
    elif kind == "chord":
        check_calls(sig["kwargs"]["header"], app, args, kwargs)


# What a canvas keeps to itself (its ids, the canvas machinery's keys): never handed down.
_KEPT = frozenset({"task_id", "group_id", "link", "link_error", "chain", "chain_extra", "chord"})


def _handed_down(sig: Mapping[str, Any], outer: dict[str, Any]) -> dict[str, Any]:
    """The options a canvas gives its tasks: its own (`.set()`, `apply_async(**options)`),
    under those of the canvases around it, which win as in Celery."""
    own = {k: v for k, v in sig["options"].items() if k not in _KEPT}
    return {**own, **outer}


def _expand_chord(
    header: Mapping[str, Any],
    body: Mapping[str, Any],
    app: App,
    plan: Plan,
    args: list[Any],
    kwargs: dict[str, Any],
    extra: dict[str, Any],
    outer: dict[str, Any],
) -> None:
    group_id = header["options"]["group_id"]
    members = list(_flat_members(header, outer))
    # a member that is a chain ending in a group gives the body a list, as in Celery
    shape = [result_shape(m) for m, _ in members]
    ids = flat_ids(shape)
    plan.results.append(encode_group(app, group_id, shape))
    if not members:  # Celery runs the body at once with an empty list
        expand(body, app, plan, [[]], {}, None, extra)
        return
    join = {"id": group_id, "size": len(ids), "body": dict(body), "extra": extra}
    for member, down in members:
        # members are acknowledged when done, so one whose worker dies runs again
        joining = {"chord": join, "acks_late": True}
        expand(member, app, plan, args, kwargs, None, joining, down)


def _flat_members(
    header: Mapping[str, Any], outer: dict[str, Any]
) -> Iterable[tuple[Mapping[str, Any], dict[str, Any]]]:
    """A chord header's members, nested groups flattened, each with its handed-down options."""
    down = _handed_down(header, outer)
    for t in header["kwargs"]["tasks"]:
        if t.get("subtask_type") == "group":
            yield from _flat_members(t, down)
        else:
            yield t, down


# -- eager -----------------------------------------------------------------------------------
def _apply_eager(sig: Signature, app: App, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run a canvas in this process (task_always_eager), returning its result handle."""
    kind = sig.get("subtask_type")
    if kind is None:
        call_args = list(sig.args) if sig.immutable else [*args, *sig.args]
        return sig.type.apply(call_args, {**sig.kwargs, **kwargs}, **sig.options)
    if kind == "chain":
        result = None
        for i, t in enumerate(sig.tasks):
            step = (
                _apply_eager(t, app, args, kwargs)
                if i == 0
                else _apply_eager(t, app, [result.get()], {})
            )
            step.parent = result
            result = step
        return result
    if kind == "group":
        results = [_apply_eager(t, app, args, kwargs) for t in sig.tasks]
        return GroupResult(sig.options.get("group_id") or new_id(), results, app=app)
    header = _apply_eager(sig.header, app, args, kwargs)
    values = header.get(propagate=True)
    body = sig.body
    if body is None:
        return header
    out = _apply_eager(body, app, [values], {})
    return out if out is not None else EagerResult(new_id(), app, "SUCCESS", None)


def chunks_of(items: Iterable[Any], n: int) -> Iterable[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, n)):
        yield chunk
