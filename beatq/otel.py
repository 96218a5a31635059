"""OpenTelemetry traces of sends, runs and beat dispatches (`pip install 'beatq[otel]'`).

    import beatq.otel
    beatq.otel.instrument(app)          # or the setting: otel_enabled = True

Spans, with the tracer provider given or the global one (set it up as OpenTelemetry's
SDK documents; beatq never installs one):

    beatq.publish         PRODUCER  one per message sent: delay(), apply_async(), a canvas's
                                    messages, a retry, a callback, a beat run
    beatq.run             CONSUMER  one per run in a worker: a child of the publish span of
                                    its message (W3C trace context carried in the message)
    beatq.beat.dispatch   INTERNAL  one per run a beat sends, the parent of its publish span:
                                    entry, slot, kind, lateness, outcome

Trace context travels in the message's custom headers (the payload option `headers`,
`task.request.headers` in the task): `traceparent` and `tracestate` (W3C Trace Context,
with whatever propagator is set globally, `baggage` too by default). A retry is sent from
its run, so it continues the trace as that run's child; a message put back unfinished
(Reject(requeue=True), a lost worker with reject_on_worker_lost) keeps its body, so its
next run is another child of the same publish span; so does a dead letter sent back
(`beatq dead-letter requeue`).

What a finished task sends next (a `link` callback, a chain's next step, a chord's unlock
and then its body, an old-style errback, a retry) is sent from its run, after the task
returned: its publish span is a child of that run and carries a span link to it with
`beatq.link.kind` = link, link_error, chain, chord or retry, the canvas edge that
backends which show links draw directly. A message sent from inside a task's own code
(`add.delay()` in a task) is a plain child, with no link.

A failed run (task_failure) has status ERROR and the exception recorded as an event.
Attributes follow OpenTelemetry's messaging conventions: messaging.system "beatq",
messaging.operation.type "send"/"process", messaging.destination.name (the queue),
messaging.message.id (the task id), beatq.task.name; for a task sent by another,
messaging.message.conversation_id (the workflow's root id) and beatq.task.parent_id;
beatq.task.retries when retried, beatq.task.state at the run's end.

It rides on beatq's Celery signals (signals.py: before_task_publish, task_prerun,
task_failure, task_retry, task_postrun) and on `app.tracing` where a message is handed to
the broker (app.publish, the worker's finish, the beat's dispatch): with it off, nothing
here is imported and the cost is the attribute tests those already make. Signals are per
process: instrumenting one app traces every app's tasks in it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        f"beatq.otel needs OpenTelemetry ({exc}); install it with: pip install 'beatq[otel]'"
    ) from None

from . import signals
from .context import running_request

SYSTEM = "beatq"
CHORD_UNLOCK = "beatq.chord_unlock"

# Publish spans waiting for their message to be handed to the broker (`published`), by
# task id. A send that raised before that leaves one here: past this many, the oldest
# is ended, marked unconfirmed, so a process that sends for ever holds a bounded number.
PENDING_MAX = 10_000


@dataclass
class _Run:
    """A run in progress on this thread: its span, the context token that made it current,
    and what decides the kind of link of what it sends after it returned."""

    task_id: str
    task_name: str
    span: Span
    token: object
    callbacks: frozenset[str]
    errbacks: frozenset[str]


class Tracing:
    """The signal receivers and beat calls that make the spans (one per process: see
    `instrument`)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("beatq", _version(), tracer_provider)
        self.pending: dict[str, Span] = {}  # task id -> publish span, until it is sent
        self.dispatches: dict[str, Span] = {}  # task id -> beat dispatch span, until settled
        self.building: dict[str, str] = {}  # beat entry -> the task id of its open dispatch
        self.lock = threading.Lock()  # for evicting the oldest of those (see PENDING_MAX)
        # The runs in progress in this context (a thread's, or an asyncio task's on
        # -P asyncio, where several runs share the loop's thread), newest last: a tuple,
        # replaced and never changed in place, so no context sees another's.
        self.runs: contextvars.ContextVar[tuple[_Run, ...]] = contextvars.ContextVar(
            "beatq.otel.runs", default=()
        )

    # -- the signals -------------------------------------------------------------------------
    def connect(self) -> None:
        uid = "beatq.otel"
        signals.before_task_publish.connect(self.on_publish, weak=False, dispatch_uid=uid)
        signals.task_prerun.connect(self.on_prerun, weak=False, dispatch_uid=uid)
        signals.task_failure.connect(self.on_failure, weak=False, dispatch_uid=uid)
        signals.task_retry.connect(self.on_retry, weak=False, dispatch_uid=uid)
        signals.task_postrun.connect(self.on_postrun, weak=False, dispatch_uid=uid)

    def disconnect(self) -> None:
        uid = "beatq.otel"
        for signal in (
            signals.before_task_publish,
            signals.task_prerun,
            signals.task_failure,
            signals.task_retry,
            signals.task_postrun,
        ):
            signal.disconnect(dispatch_uid=uid)

    def on_publish(self, sender: str, headers: dict[str, Any], **kwargs: Any) -> None:
        """before_task_publish: start the publish span, put its context in the headers."""
        task_id = headers["id"]
        queue = kwargs.get("routing_key")
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.destination.name": queue,
            "messaging.message.id": task_id,
            "beatq.task.name": sender,
        }
        if headers.get("parent_id"):  # part of a workflow: its root, and the task that sent it
            attributes["messaging.message.conversation_id"] = headers.get("root_id")
            attributes["beatq.task.parent_id"] = headers["parent_id"]
        if headers.get("retries"):
            attributes["beatq.task.retries"] = headers["retries"]
        if headers.get("group"):
            attributes["beatq.task.group_id"] = headers["group"]
        if headers.get("eta"):
            attributes["beatq.task.eta"] = headers["eta"]
        links = None
        runs = self.runs.get()
        run = runs[-1] if runs else None
        # sent after a task returned (or by a chord's unlock, its body): what follows it
        if run is not None and (running_request() is None or run.task_name == CHORD_UNLOCK):
            kind = _follows(run, sender, task_id)
            attributes["beatq.link.kind"] = kind
            links = [Link(run.span.get_span_context(), {"beatq.link.kind": kind})]
        span = self.tracer.start_span(
            "beatq.publish", kind=SpanKind.PRODUCER, attributes=attributes, links=links
        )
        propagate.inject(headers, context=trace.set_span_in_context(span))
        if sender == CHORD_UNLOCK:
            # every member of a chord makes one; the broker sends the last member's only
            span.set_attribute("beatq.publish.conditional", True)
            span.end()
            return
        pending = self.pending
        if len(pending) >= PENDING_MAX:
            with self.lock:
                oldest = pending.pop(next(iter(pending), ""), None)
            if oldest is not None:
                oldest.set_attribute("beatq.publish.unconfirmed", True)
                oldest.end()
        pending[task_id] = span

    def published(self, outgoing: Iterable[Any]) -> None:
        """The broker has these messages (app.publish, a worker's finish): their publish
        spans end. Called directly, not through after_task_publish, whose receivers are
        handed each message decoded again."""
        pending = self.pending
        for o in outgoing:
            span = pending.pop(o.id, None)
            if span is not None:
                span.end()

    def on_prerun(self, sender: Any, task_id: str, task: Any, **kwargs: Any) -> None:
        """task_prerun: start the run span, a child of the publish span in the headers,
        current until task_postrun (what the task sends is its child)."""
        request = task.request
        headers = request.headers or {}
        parent = propagate.extract(headers) if "traceparent" in headers else None
        delivery = request.delivery_info or {}
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.destination.name": delivery.get("routing_key") or "",
            "messaging.message.id": task_id,
            "beatq.task.name": task.name,
        }
        if request.parent_id:  # part of a workflow: its root, and the task that sent it
            attributes["messaging.message.conversation_id"] = request.root_id
            attributes["beatq.task.parent_id"] = request.parent_id
        if request.retries:
            attributes["beatq.task.retries"] = request.retries
        if request.hostname:
            attributes["messaging.client.id"] = request.hostname
        if delivery.get("redelivered"):
            attributes["beatq.task.redelivered"] = True
        beat = (request.options or {}).get("beat")
        if isinstance(beat, dict) and beat.get("entry"):
            attributes["beatq.beat.entry"] = beat["entry"]
        span = self.tracer.start_span(
            "beatq.run", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        run = _Run(
            task_id, task.name, span, token, _names(request.callbacks), _names(request.errbacks)
        )
        self.runs.set((*self.runs.get(), run))

    def _run(self, task_id: str | None) -> _Run | None:
        runs = self.runs.get()
        if runs and runs[-1].task_id == task_id:
            return runs[-1]
        return None

    def on_failure(self, sender: Any, task_id: str, exception: BaseException, **kw: Any) -> None:
        """task_failure: the run's status is ERROR, its exception recorded."""
        run = self._run(task_id)
        if run is not None:
            run.span.record_exception(exception)
            run.span.set_status(
                Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}")
            )

    def on_retry(self, sender: Any, request: Any, reason: Any, **kwargs: Any) -> None:
        """task_retry: an event on the run (its retry is a publish span of its own)."""
        run = self._run(getattr(request, "id", None))
        if run is not None:
            run.span.add_event("beatq.retry", {"beatq.retry.reason": str(reason)})

    def on_postrun(self, sender: Any, task_id: str, state: str, **kwargs: Any) -> None:
        """task_postrun: the run span ends, with its state."""
        runs = self.runs.get()
        if not runs or runs[-1].task_id != task_id:
            return
        run = runs[-1]
        self.runs.set(runs[:-1])
        run.span.set_attribute("beatq.task.state", state or "")
        otel_context.detach(run.token)
        run.span.end()

    # -- the beat (called by beat/beat.py through app.tracing) -------------------------------
    def beat_build(
        self, entry: str, slot: float, kind: str | None, build: Callable[[], Any]
    ) -> Any:
        """Build a beat run's message (`build()`) under its dispatch span, which stays open
        until `beat_sent` says what became of it."""
        attributes = {
            "messaging.system": SYSTEM,
            "beatq.beat.entry": entry,
            "beatq.beat.slot": slot,
            "beatq.beat.kind": kind or "schedule",
        }
        span = self.tracer.start_span(
            "beatq.beat.dispatch", kind=SpanKind.INTERNAL, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            message, body = build()
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, repr(exc)))
            span.end()
            raise
        finally:
            otel_context.detach(token)
        span.set_attribute("messaging.message.id", message.id)
        span.set_attribute("beatq.task.name", message.task)
        # One dispatch of an entry is open at a time (a batch holds an entry once, catch-up
        # runs are settled one by one): one still open was made ready ahead and dropped
        # (see Beat._prepare), its message never sent.
        dropped = self.building.get(entry)
        if dropped is not None and dropped in self.dispatches:
            self.beat_sent(dropped, "unsent", None)
        self.building[entry] = message.id
        self.dispatches[message.id] = span
        return message, body

    def beat_sent(self, task_id: str, outcome: str, lateness: float | None) -> None:
        """A beat run's dispatch is settled: `outcome` is the broker's (sent, busy, paused,
        lost, done), `lateness` seconds after its slot it was sent."""
        publish = self.pending.pop(task_id, None)
        span = self.dispatches.pop(task_id, None)
        if publish is not None:
            if outcome != "sent":
                publish.set_attribute("beatq.publish.unsent", outcome)
            publish.end()
        if span is None:
            return
        span.set_attribute("beatq.beat.outcome", outcome)
        if lateness is not None:
            span.set_attribute("beatq.beat.lateness", lateness)
        if outcome == "lost":
            span.set_status(Status(StatusCode.ERROR, "lease lost: another beat leads"))
        span.end()


def _names(signatures: Any) -> frozenset[str]:
    return frozenset(s.get("task") for s in signatures or () if isinstance(s, dict))


def _follows(run: _Run, name: str, task_id: str) -> str:
    """What a message sent by `run` after its task returned is to it."""
    if task_id == run.task_id:
        return "retry"
    if name == CHORD_UNLOCK or run.task_name == CHORD_UNLOCK:
        return "chord"
    if name in run.callbacks:
        return "link"
    if name in run.errbacks:
        return "link_error"
    return "chain"


_tracing: Tracing | None = None
_lock = threading.Lock()


def instrument(app: Any, tracer_provider: Any = None) -> Tracing:
    """Trace `app`'s sends, runs and beat dispatches (and, signals being per process,
    those of every app in this process). `tracer_provider`: OpenTelemetry's, else the
    global one. Calling it again changes nothing but `app`."""
    global _tracing
    with _lock:
        if _tracing is None:
            _tracing = Tracing(tracer_provider)
            _tracing.connect()
        app.tracing = _tracing
    return _tracing


def uninstrument(app: Any) -> None:
    """Stop tracing: the receivers are disconnected, `app` no longer traces its beat."""
    global _tracing
    with _lock:
        if _tracing is not None:
            _tracing.disconnect()
            _tracing = None
        app.tracing = None


__all__ = ["Tracing", "instrument", "uninstrument"]


def _version() -> str | None:
    """beatq's installed version, for the tracer's name (read here, not from the package:
    the package imports the app, which imports this module)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("beatq")
    except PackageNotFoundError:
        return None
