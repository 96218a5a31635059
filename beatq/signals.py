"""Signals, with Celery's names, senders and keyword arguments.

    from beatq.signals import task_failure

    @task_failure.connect
    def report(sender=None, task_id=None, exception=None, **kwargs):
        ...

    @task_failure.connect(sender="proj.tasks.add")    # only for that task
    def report_add(sender=None, **kwargs): ...

A receiver is called with `signal=` and `sender=` plus the signal's own keyword
arguments; write it with `**kwargs`, so that arguments added later do not break it. A
receiver that raises is logged and skipped: a signal never changes what a task does.

Where each fires (as in Celery), its sender, and its arguments:

    before_task_publish   the sending process; task name; body, exchange, routing_key,
                          headers, properties, declare, retry_policy
    after_task_publish    the sending process; task name; body, exchange, routing_key, headers
    task_received         the worker; the worker; request
    task_prerun           the process running the task; the task; task_id, task, args, kwargs
    task_postrun          the same; the task; task_id, task, args, kwargs, retval, state
    task_success          the same; the task; result
    task_failure          the same; the task; task_id, exception, args, kwargs, traceback, einfo
    task_retry            the same; the task; request, reason, einfo
    task_revoked          the worker; the task; request, terminated, signum, expired
    task_unknown          the worker; the worker; name, id, message, exc
    task_rejected         the worker; the worker; message, exc
    celeryd_init          the worker, first of all; its hostname; instance, conf, options
    worker_init           the worker, before its pool starts; the worker
    worker_process_init   each prefork child as it starts; None
    worker_process_shutdown  each prefork child as it stops; None; pid, exitcode
    worker_ready          the worker, ready to take work; the worker
    worker_shutting_down  the worker, at a stop signal; its hostname; sig, how, exitcode
    worker_shutdown       the worker, as it exits; the worker
    beat_init             a `beatq beat` as it starts; the beat
    beat_embedded_init    a beat inside a worker (-B) as it starts; the beat
    setup_logging         the CLI, before it sets up logging (a receiver replaces beatq's
                          own set-up); None; loglevel, logfile, format, colorize
    after_setup_logger    the CLI, after; None; logger, loglevel, logfile, format, colorize

With no receiver connected a signal costs one attribute test: the code that sends one
checks `signal.receivers` before it builds the arguments.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any

from .calling import check_keywords

log = logging.getLogger("beatq.signals")

Receiver = Callable[..., Any]


def _sender_key(sender: Any) -> Hashable:
    """What a `sender=` filter is compared by: a task by its name (so a name, the task
    or a shared task's proxy all match it), a string as itself, anything else by identity."""
    if sender is None or isinstance(sender, str):
        return sender
    name = getattr(sender, "name", None)
    if isinstance(name, str) and hasattr(sender, "apply_async"):
        return name
    return ("id", id(sender))


def _reference(receiver: Receiver, weak: bool, on_gone: Callable[[Any], None]) -> Callable[[], Any]:
    """A callable returning the receiver (or None once it was collected, when weak)."""
    if not weak:
        return lambda: receiver
    if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
        return weakref.WeakMethod(receiver, on_gone)  # type: ignore[arg-type]
    try:
        return weakref.ref(receiver, on_gone)
    except TypeError:  # a builtin or another object that cannot be weakly referenced
        return lambda: receiver


class Signal:
    """A named event that receivers connect to (Celery's `Signal`).

    >>> finished = Signal("finished")
    >>> @finished.connect
    ... def on_finished(sender=None, **kwargs): return sender
    >>> finished.send(sender="x")
    [(<function on_finished ...>, 'x')]
    """

    def __init__(self, name: str | None = None, providing_args: Any = None) -> None:
        self.name = name or "signal"
        # (lookup key, sender key, reference): replaced, never changed in place, so
        # `send` reads it without a lock; empty (false) when nothing is connected.
        self.receivers: list[tuple[Hashable, Hashable, Callable[[], Any]]] = []
        self._lock = threading.Lock()

    def connect(
        self,
        receiver: Receiver | None = None,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
        **kwargs: Any,
    ) -> Any:
        """Connect `receiver`; as a decorator, `@sig.connect` or `@sig.connect(sender=...)`.

        `sender`: only calls from that sender reach it (a task or a task name for task
        signals). `weak` (default, as Celery): held by a weak reference, so a receiver
        nothing else holds goes away; pass weak=False for a lambda or a closure.
        `dispatch_uid`: a key that makes connecting twice connect once. Returns the
        receiver (the decorator form returns it too)."""
        check_keywords(
            f"{self.name}.connect()",
            kwargs,
            {"retry": "a receiver is called once, never retried; retry inside it if you must"},
        )
        if receiver is None:

            def decorate(fun: Receiver) -> Receiver:
                self.connect(fun, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
                return fun

            return decorate
        key = dispatch_uid if dispatch_uid is not None else _lookup_id(receiver)
        sender_key = _sender_key(sender)

        def gone(_: Any) -> None:
            self._remove(key, sender_key)

        ref = _reference(receiver, weak, gone)
        with self._lock:
            if not any(k == key and s == sender_key for k, s, _ in self.receivers):
                self.receivers = [*self.receivers, (key, sender_key, ref)]
        return receiver

    def disconnect(
        self,
        receiver: Receiver | None = None,
        sender: Any = None,
        weak: bool | None = None,
        dispatch_uid: Hashable | None = None,
    ) -> bool:
        """Disconnect `receiver` (or the one connected with `dispatch_uid`) for `sender`;
        False if it was not connected."""
        key = dispatch_uid if dispatch_uid is not None else _lookup_id(receiver)
        return self._remove(key, _sender_key(sender))

    def _remove(self, key: Hashable, sender_key: Hashable) -> bool:
        with self._lock:
            kept = [r for r in self.receivers if not (r[0] == key and r[1] == sender_key)]
            removed = len(kept) != len(self.receivers)
            self.receivers = kept
        return removed

    def has_listeners(self, sender: Any = None) -> bool:
        return bool(self._live(sender))

    def _live(self, sender: Any) -> list[Receiver]:
        wanted = _sender_key(sender)
        found = []
        for _, sender_key, ref in self.receivers:
            if sender_key is None or sender_key == wanted:
                receiver = ref()
                if receiver is not None:
                    found.append(receiver)
        return found

    def send(self, sender: Any, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every receiver connected for `sender` (or for any sender) with
        `signal=self, sender=sender, **named`; returns [(receiver, its result)]. A
        receiver that raises is logged and its exception stands as its result."""
        if not self.receivers:
            return []
        responses: list[tuple[Receiver, Any]] = []
        for receiver in self._live(sender):
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as exc:
                log.exception("Signal handler %r for %s raised: %r", receiver, self.name, exc)
                response = exc
            responses.append((receiver, response))
        return responses

    send_robust = send

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


def _lookup_id(receiver: Any) -> Hashable:
    """A receiver's identity; a bound method by its object and function (each access
    makes a new bound method object)."""
    if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
        return (id(receiver.__self__), id(receiver.__func__))
    return id(receiver)


# -- tasks --------------------------------------------------------------------------------
before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
task_unknown = Signal("task_unknown")
task_rejected = Signal("task_rejected")

# -- workers ------------------------------------------------------------------------------
celeryd_init = Signal("celeryd_init")
worker_init = Signal("worker_init")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
worker_ready = Signal("worker_ready")
worker_shutting_down = Signal("worker_shutting_down")
worker_shutdown = Signal("worker_shutdown")

# -- beat ---------------------------------------------------------------------------------
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")

# -- logging ------------------------------------------------------------------------------
setup_logging = Signal("setup_logging")
after_setup_logger = Signal("after_setup_logger")

__all__ = [
    "Signal",
    "after_setup_logger",
    "after_task_publish",
    "beat_embedded_init",
    "beat_init",
    "before_task_publish",
    "celeryd_init",
    "setup_logging",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
    "worker_init",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
    "worker_shutting_down",
]
