"""Results: what a task's state looks like in the store, and AsyncResult to read it.

A stored state is `<content type>;<encoding>\\n<payload>`, the payload being a dict
serialized with `result_serializer`:

    status      one of states.ALL_STATES
    result      the return value, or for an exception {exc_type, exc_module, exc_message}
    traceback   the formatted traceback text, or None
    date_done   POSIX seconds (UTC) when the state was stored
    runtime     seconds the task's body ran, as the worker measured it (SUCCESS, and a
                FAILURE the task raised; absent otherwise)
    task_id     the task's id
    name        the task's name
"""

from __future__ import annotations

import asyncio
import builtins
import sys
import time
from datetime import datetime
from typing import Any

from . import serializers, states
from .brokers import ResultWrite
from .calling import check_keywords
from .context import App, current_app, running_request
from .exceptions import BrokerError, TimeoutError


# -- exceptions in results --------------------------------------------------------------
def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    """A task's exception as a result stores it: class, module, arguments, and its text
    (`exc_str`) when that is not what the arguments say (a custom `__str__`, an
    `__init__` that words its own message), so a reader that cannot rebuild it still
    tells what happened."""
    cls = type(exc)
    data = {
        "exc_type": cls.__qualname__,
        "exc_module": cls.__module__,
        "exc_message": [_plain(a) for a in exc.args],
    }
    text = _text(exc)
    if text != _text(Exception(*exc.args)):
        data["exc_str"] = text
    return data


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a __str__ that fails: its class name says what there is
        return f"<{type(exc).__name__}: str() failed>"


# Stand-in classes, made once each: for a class this process lacks, by (module, name); for
# one it has but cannot rebuild an instance of, by that class.
_synthesized: dict[Any, type[BaseException]] = {}


def dict_to_exception(data: dict[str, Any]) -> BaseException:
    """Rebuild a task's exception: its own class where this process has it imported.

    Only modules already imported are looked in: a result never makes us import code.
    An exception that cannot be rebuilt (its class is not here, or its `__init__` wants
    other arguments than it kept) comes back as a stand-in of the same class name, and
    module, whose str is the original text; a subclass of the real class when this
    process has it, so `except ThatError` still catches it.
    """
    name, module = data.get("exc_type", "Exception"), data.get("exc_module", "builtins")
    args = data.get("exc_message") or []
    if not isinstance(args, (list, tuple)):
        args = [args]
    text = data.get("exc_str")
    cls: Any = builtins if module == "builtins" else sys.modules.get(module)
    for part in str(name).split("."):
        cls = getattr(cls, part, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            exc = cls(*args)
            if text is None or _text(exc) == text:
                return exc
        except Exception:
            pass
        stand_in = _stand_in(cls, cls, str(name), module)
    else:
        stand_in = _stand_in((module, name), Exception, str(name), module)
    if text is None:
        text = _text(Exception(*args))
    exc = BaseException.__new__(stand_in, *args)  # its own __init__ is not called
    exc.__dict__["_beatq_text"] = text
    return exc


def _stand_in(key: Any, base: type[BaseException], name: str, module: str) -> type:
    """A class named `name` (in `module`) under `base`, whose str is the stored text."""
    found = _synthesized.get(key)
    if found is None:
        short = name.rpartition(".")[2]
        attrs = {"__module__": module, "__qualname__": name, "__str__": _stored_text}
        try:
            found = type(short, (base,), attrs)
        except Exception:  # a class that refuses subclasses: its name is still kept
            found = type(short, (Exception,), attrs)
        _synthesized[key] = found
    return found


def _stored_text(self: BaseException) -> str:
    return str(self.__dict__.get("_beatq_text", ""))


def is_exception_dict(value: Any) -> bool:
    return isinstance(value, dict) and "exc_type" in value and "exc_message" in value


# -- stored states ----------------------------------------------------------------------
def encode_meta(meta: dict[str, Any], serializer: str, compression: str | None) -> bytes:
    ct, ce, payload = serializers.encode(meta, serializer, compression)
    return f"{ct};{ce or ''}\n".encode() + payload


def decode_meta(data: bytes, accept: list[str] | None = None) -> dict[str, Any]:
    head, _, payload = data.partition(b"\n")
    ct, _, ce = head.decode().partition(";")
    return serializers.decode(payload, ct, ce or None, accept)


def make_meta(
    task_id: str,
    status: str,
    result: Any = None,
    traceback: str | None = None,
    name: str | None = None,
    children: list[Any] | None = None,
    runtime: float | None = None,
) -> dict[str, Any]:
    """A state to store; `children` (results of what the task sent) and `runtime` only when
    there are some."""
    if isinstance(result, BaseException):
        result = exception_to_dict(result)
    meta = {
        "task_id": task_id,
        "status": status,
        "result": result,
        "traceback": traceback,
        "date_done": time.time(),
        "name": name,
    }
    if children:
        meta["children"] = [child_ref(c) for c in children]
    if runtime is not None:
        meta["runtime"] = runtime
    return meta


def child_ref(result: Any) -> Any:
    """A child result as stored: its id, or for a group `[group id, [its members]]`."""
    if isinstance(result, GroupResult):
        return [result.id, [child_ref(r) for r in result.results]]
    return result if isinstance(result, (str, list)) else result.id


def child_result(ref: Any, app: App) -> Any:
    """The AsyncResult (or GroupResult) a stored child reference stands for."""
    if isinstance(ref, list):
        return GroupResult(ref[0], [child_result(r, app) for r in ref[1]], app=app)
    return AsyncResult(ref, app=app)


# Keywords of Celery's get() that beatq does not honour, with why.
_STATES_FIXED = "FAILURE and REVOKED raise, as Celery's defaults; leave it out"
_GET_REFUSED = {
    "callback": "get() returns the value once; call your function with it",
    "on_message": "get() wakes on the final state only; read .state and .info for progress",
    "on_interval": "get() does not poll; it is woken when the result is stored",
    "EXCEPTION_STATES": _STATES_FIXED,
    "PROPAGATE_STATES": _STATES_FIXED,
}


def _check_get(extra: dict[str, Any], disable_sync_subtasks: bool | None) -> None:
    """Refuse what get() does not honour; with `disable_sync_subtasks`, a call inside a
    task."""
    if extra:
        extra.pop("no_ack", None)  # nothing is consumed: results are read from the store
        check_keywords("get()", extra, _GET_REFUSED)
    if disable_sync_subtasks and running_request() is not None:
        raise RuntimeError(
            "get() inside a task with disable_sync_subtasks=True: a task that waits for "
            "another can hold every worker slot; chain them instead (task.s() | other.s())"
        )


class AsyncResult:
    """The result of a task, by id, readable from any process at any later time.

    >>> r = add.delay(4, 4); r.get(timeout=10)
    8
    >>> AsyncResult(r.id, app=app).state
    'SUCCESS'
    """

    #: Sent with `ignore_result`: no result will be stored, so `get()` returns None at
    #: once, as in Celery (a handle made later from the id alone does not know it).
    ignored = False

    def __init__(
        self,
        id: str,
        app: App | None = None,
        task_name: str | None = None,
        parent: AsyncResult | None = None,
    ) -> None:
        if app is None:
            app = current_app()
        self.id = id
        self.app = app
        self.task_name = task_name
        self.parent = parent
        self._final: dict[str, Any] | None = None

    # -- reading the store ------------------------------------------------------------------
    def _decode(self, raw: bytes) -> dict[str, Any]:
        return decode_meta(raw, self.app.conf.result_accept_content)

    def _meta(self) -> dict[str, Any]:
        if self._final is not None:
            return self._final
        raw = self.app.result_store.get_result(self.id)
        if raw is None:
            return {"status": states.PENDING, "result": None, "traceback": None}
        meta = self._decode(raw)
        if meta["status"] in states.READY_STATES:
            self._final = meta
        return meta

    @property
    def state(self) -> str:
        return self._meta()["status"]

    status = state

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value, or the exception for FAILURE, RETRY and REVOKED."""
        meta = self._meta()
        value = meta.get("result")
        if meta["status"] in states.EXCEPTION_STATES and is_exception_dict(value):
            return dict_to_exception(value)
        return value

    info = result

    @property
    def traceback(self) -> str | None:
        return self._meta().get("traceback")

    @property
    def children(self) -> list[Any]:
        """Results of what the task sent, as Celery's: tasks and canvases it sent while it
        ran, then its links and its chain's next step (once its state is stored)."""
        return [child_result(ref, self.app) for ref in self._meta().get("children") or ()]

    @property
    def date_done(self) -> datetime | None:
        done = self._meta().get("date_done")
        if done is None or self.state not in states.READY_STATES:
            return None
        return datetime.fromtimestamp(done, self.app.timezone)

    @property
    def name(self) -> str | None:
        return self._meta().get("name") or self.task_name

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        follow_parents: bool = True,
        disable_sync_subtasks: bool | None = None,
        **extra: Any,
    ) -> Any:
        """Wait for the task to finish and return its value (or raise its exception).

        As in Celery, when it failed because a task it depended on failed (a chord's
        header member, an earlier link of its chain), the exception raised is that
        task's own, the earliest in the workflow (`follow_parents=False`: this task's).
        The store wakes the waiter the moment the result is written; `interval` is
        accepted for Celery compatibility and unused (`no_ack` too: nothing is consumed).
        Inside a task, get() waits (Celery refuses by default); `disable_sync_subtasks=True`
        refuses it there with RuntimeError, as Celery does.
        """
        _check_get(extra, disable_sync_subtasks)
        if self.ignored:
            return None
        meta = self._wait(timeout)
        value = meta.get("result")
        if meta["status"] == states.SUCCESS:
            return value
        exc = dict_to_exception(value) if is_exception_dict(value) else Exception(value)
        if propagate:
            if follow_parents and self.parent is not None:
                self._raise_failed_parent()
            raise exc
        return exc

    async def aget(
        self, timeout: float | None = None, propagate: bool = True, follow_parents: bool = True
    ) -> Any:
        """`get()` for code in an event loop: `await result.aget(timeout=10)`. It waits on
        the same wake-up as get() without blocking the loop (on Redis, redis-py's asyncio
        client; on SQLite and memory://, which have no asynchronous wake-up, a thread of
        the loop's default executor waits on theirs: see Results.await_result)."""
        if self.ignored:
            return None
        meta = await self._await(timeout)
        value = meta.get("result")
        if meta["status"] == states.SUCCESS:
            return value
        exc = dict_to_exception(value) if is_exception_dict(value) else Exception(value)
        if propagate:
            if follow_parents and self.parent is not None:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self._raise_failed_parent)
            raise exc
        return exc

    async def _await(self, timeout: float | None) -> dict[str, Any]:
        """`_wait` for `aget`: the store's `await_result`, retried while it is away."""
        if self._final is not None:
            return self._final
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = 0.05
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                raw = await self.app.result_store.await_result(self.id, left)
            except BrokerError:
                if left == 0:
                    break
                await asyncio.sleep(backoff if left is None else min(backoff, left))
                backoff = min(backoff * 2, 2.0)
                continue
            if raw is not None:
                self._final = self._decode(raw)
                return self._final
            break
        raise TimeoutError(f"task {self.id} did not finish within {timeout}s")

    def _raise_failed_parent(self) -> None:
        """Raise the exception of the earliest failed task this one depended on, with a
        note naming it; return if none failed (only read when this task failed)."""
        lineage = []
        node = self.parent
        while node is not None:
            lineage.append(node)
            node = getattr(node, "parent", None)
        for node in reversed(lineage):
            members = _members(node)
            _read_finished(self.app, members)  # a chord's header: one round trip
            for member in members:
                if member.state in states.PROPAGATE_STATES:
                    exc = member.get(timeout=0, propagate=False, follow_parents=False)
                    if hasattr(exc, "add_note"):
                        exc.add_note(f"raised by task {member.id}, which {self.id} depended on")
                    raise exc

    wait = get

    def _wait(self, timeout: float | None) -> dict[str, Any]:
        if self._final is not None:
            return self._final
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = 0.05
        while True:
            # Asked once even when no time is left: get(timeout=0) returns a stored result.
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                raw = self.app.result_store.wait_result(self.id, left)
            except BrokerError:
                if left == 0:
                    break
                # The store went away: wait for it to come back, within the timeout.
                time.sleep(backoff if left is None else min(backoff, left))
                backoff = min(backoff * 2, 2.0)
                continue
            if raw is not None:
                self._final = self._decode(raw)
                return self._final
            break
        raise TimeoutError(f"task {self.id} did not finish within {timeout}s")

    def forget(self) -> None:
        """Delete the stored result."""
        self._final = None
        self.app.result_store.forget(self.id)

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Revoke the task (see `app.control.revoke`)."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id


class EagerResult(AsyncResult):
    """The result of a task run in-process (`task_always_eager`, `Task.apply`)."""

    def __init__(
        self,
        id: str,
        app: App,
        status: str,
        value: Any,
        traceback: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(id, app=app, task_name=name)
        self._final = make_meta(id, status, value, traceback, name)
        self._exception = value if isinstance(value, BaseException) else None

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        follow_parents: bool = True,
        disable_sync_subtasks: bool | None = None,
        **extra: Any,
    ) -> Any:
        _check_get(extra, disable_sync_subtasks)
        if self._exception is not None:
            if propagate:
                raise self._exception
            return self._exception
        return self._final["result"]  # type: ignore[index]

    wait = get

    @property
    def result(self) -> Any:
        return self._exception if self._exception is not None else self._final["result"]  # type: ignore[index]

    def forget(self) -> None:
        pass

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        pass  # it ran already, here


def _members(node: Any) -> list[AsyncResult]:
    """The task results a result stands for: itself, or a group's members, in order."""
    if isinstance(node, GroupResult):
        return [m for r in node.results for m in _members(r)]
    return [node] if isinstance(node, AsyncResult) else []


def _read_finished(app: App, results: list[AsyncResult]) -> None:
    """Read the stored states of `results` not read yet, in one round trip."""
    pending = [r for r in results if r._final is None]
    if pending:
        found = app.result_store.get_results([r.id for r in pending])
        for r, raw in zip(pending, found):
            if raw is not None:
                meta = r._decode(raw)
                if meta["status"] in states.READY_STATES:
                    r._final = meta


def group_key(group_id: str) -> str:
    """Where a group's member ids are saved in the result store."""
    return f"group:{group_id}"


def encode_group(app: App, group_id: str, ids: list[Any]) -> ResultWrite:
    """The saved form of a group: its member ids (a member that is itself a group of
    results, a list of ids), kept as long as results are."""
    meta = make_meta(group_key(group_id), states.SUCCESS, ids)
    data = encode_meta(meta, app.conf.result_serializer, app.conf.result_compression)
    return ResultWrite(group_key(group_id), data, result_ttl(app))


def state_write(
    app: App,
    task_id: str,
    status: str,
    value: Any = None,
    traceback: str | None = None,
    name: str | None = None,
) -> ResultWrite:
    """A state to store for `task_id`, encoded as `app` stores results."""
    meta = make_meta(task_id, status, value, traceback, name)
    data = encode_meta(meta, app.conf.result_serializer, app.conf.result_compression)
    return ResultWrite(task_id, data, result_ttl(app), status in states.READY_STATES)


def result_ttl(app: App) -> float:
    expires = app.conf.result_expires
    if hasattr(expires, "total_seconds"):
        expires = expires.total_seconds()
    return float(expires) if expires else 10 * 365 * 86400.0


class GroupResult:
    """The results of a group, in order: `get`, `ready`, `completed_count`, `save`, `restore`.

    >>> res = group(add.s(i, i) for i in range(3))()
    >>> res.get(timeout=1)
    [0, 2, 4]
    >>> GroupResult.restore(res.id, app=app).completed_count()
    3
    """

    def __init__(
        self,
        id: str,
        results: list[Any],
        app: App | None = None,
        parent: Any = None,
    ) -> None:
        if app is None:
            app = current_app()
        self.id = id
        self.results = results
        self.app = app
        self.parent = parent

    @property
    def children(self) -> list[Any]:
        return self.results

    def __iter__(self) -> Any:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        """How many members finished successfully."""
        return sum(1 for r in self.results if r.successful())

    def get(self, timeout: float | None = None, propagate: bool = True, **kwargs: Any) -> list[Any]:
        """Every member's value, in order; the first failure is raised unless propagate=False."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._fetch_finished()
        values = []
        for r in self.results:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            values.append(r.get(timeout=left, propagate=propagate, **kwargs))
        return values

    join = get

    def _fetch_finished(self) -> None:
        """Read every finished member in one round trip; only the others are waited for."""
        # only final states are kept: a member STARTED or in a custom state is waited for
        _read_finished(self.app, [r for r in self.results if isinstance(r, AsyncResult)])

    def forget(self) -> None:
        for r in self.results:
            r.forget()
        self.app.result_store.forget(group_key(self.id))

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Revoke every member, in one call."""
        ids = [r.id for r in self.results]
        self.app.control.revoke(ids, terminate=terminate, signal=signal)

    def save(self) -> None:
        """Keep the member ids in the store, so `GroupResult.restore(id)` finds them."""
        ids = [r.id for r in self.results]
        self.app.result_store.store_results([encode_group(self.app, self.id, ids)])

    @classmethod
    def restore(cls, group_id: str, app: App | None = None) -> GroupResult | None:
        """The group saved under `group_id` (applying a group saves it), or None."""
        if app is None:
            app = current_app()
        raw = app.result_store.get_result(group_key(group_id))
        if raw is None:
            return None
        shape = decode_meta(raw, app.conf.result_accept_content)["result"]
        return cls._from_shape(group_id, shape, app)

    @classmethod
    def _from_shape(cls, group_id: str, shape: list[Any], app: App) -> GroupResult:
        """Members as saved: an id, or a list of them (a chain that ended in a group)."""
        members = [
            cls._from_shape(group_id, part, app)
            if isinstance(part, list)
            else AsyncResult(part, app=app)
            for part in shape
        ]
        return cls(group_id, members, app=app)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"
