"""Running one claimed message: decode, check, run, then finish in one backend call.

The steps of a task, each a short function: `decode` (or dead-letter), wait for its eta
if it was claimed ahead of it, refuse an expired one, acknowledge early (unless
acks_late), run under its time limits, and `finish` atomically: acknowledge, store the
state, send callbacks or the retry.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, NamedTuple

from .. import events as ev
from .. import messages, serializers, signals, states
from ..app import Beatq, announce_published
from ..brokers import ChordJoin, Claim, Outgoing, ResultWrite
from ..canvas import Followup, Plan, all_ids, expand, maybe_signature, result_ref
from ..einfo import ExceptionInfo
from ..exceptions import (
    BrokerError,
    Ignore,
    NotRegistered,
    Reject,
    Retry,
    TaskRevokedError,
    WorkerLostError,
)
from ..loops import Run, run_here
from ..messages import Message
from ..result import encode_meta, make_meta
from ..task import Request, Task, failure_signal
from ..wakeup import until_wall
from ..workflow import (
    callback_message,
    chord_join,
    failure_writes,
    lineage,
    root_of,
    run_errbacks,
    tail_joins,
)
from .delivery import DECODE_ERRORS, Delivery
from .limits import raise_in, time_limits

BLOCKED_GRACE = 1.0  # seconds past its hard limit a coroutine blocking its loop is stopped

log = logging.getLogger("beatq.worker")

REJECTED = "REJECTED"  # outcomes beyond the task states, for metrics
IGNORED = "IGNORED"  # raise Ignore, or Task.replace
DEAD_LETTERED = "DEAD_LETTERED"
STALE = "STALE"  # its claim expired before it started, and it was delivered again
STALE_KEPT = 1000  # stale acknowledgements remembered for their `begin` (see _finish)
# Seconds ahead of its eta that a worker claims a delayed message (a beat's run is sent
# that early, see Beat.early); the pool holds it, decoded, and starts it at its instant
# (by this host's clock, AHEAD at most), so the wake-up, the claim and the decode are
# not on the way of an eta task's start. A message held is not yet acknowledged: its
# steps before the start (the acknowledgement, its events, its request) are taken
# START_LEAD before the instant, the broker woken PRIME_AHEAD before them (see
# Backend.prime: an idle Redis here took 1 ms to answer that acknowledgement).
AHEAD = 0.02
START_LEAD = 0.001
PRIME_AHEAD = 0.0003


class Begun(NamedTuple):
    """A message whose task is about to run (Executor.begin): its request, what its
    finish acknowledges (`ack`; `folded`: the next delivery's claim among them), its
    time limits, and the instant it waits for if it was claimed ahead (`held`)."""

    message: Message
    task: Task
    request: Request
    claim: Claim
    ack: list[Claim]
    folded: bool
    soft: Any
    hard: Any
    held: float | None


class Outcome(NamedTuple):
    """What became of a claimed message: its task name, a state, how long it ran."""

    name: str
    state: str
    runtime: float | None = None
    then_acked: bool = False  # the next claim (`then`) was acknowledged with this finish


def retrying(call: Callable[[], Any], stopping: Callable[[], bool] = lambda: False) -> Any:
    """Run `call` until the broker answers: a lost connection is retried with backoff.

    The task has run; its outcome must reach the store rather than vanish.
    """
    delay = 0.1
    failed = False
    while True:
        try:
            value = call()
        except BrokerError as exc:
            if stopping():
                raise
            log.error("broker unreachable (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            failed = True
            continue
        if failed:  # each error line above gets its ending
            log.warning("broker connection restored")
        return value


class Executor:
    """Runs claimed messages of one app. One per process (threads share it)."""

    def __init__(self, app: Beatq, hostname: str) -> None:
        self.app = app
        self.hostname = hostname
        conf = app.conf
        self.accept = list(conf.accept_content)
        self.result_serializer = conf.result_serializer
        self.result_compression = conf.result_compression
        expires = conf.result_expires
        if isinstance(expires, timedelta):
            expires = expires.total_seconds()
        self.result_ttl = float(expires) if expires else 10 * 365 * 86400.0
        # With security_key set, only messages signed with it run (see `_refusal`).
        self.signer = app.signer
        self.processed = 0
        self.events_on = bool(conf.worker_send_task_events)
        self.bodies: dict[str, int] = {}  # task id -> thread, while the task's own code runs
        self.runs: dict[str, Run] = {}  # task id -> run, while an async task's coroutine runs
        self.bodies_lock = threading.Lock()
        # Events with no state change to ride on (a task with ignore_result succeeding)
        # wait here for the next round trip instead of taking one of their own.
        self.pending: list[bytes] = []
        self.pending_lock = threading.Lock()
        self.warned_acked: set[str] = set()  # see _acked_by_sender
        # (id, token) of claims whose acknowledgement came back stale, until their `begin`
        # reads it (one acknowledged by the finish before it, `then`); insertion-ordered
        self.stale: dict[tuple[str, str], None] = {}
        self.requeue_max = int(conf.worker_requeue_max)

    # -- the steps -------------------------------------------------------------------------
    def execute(self, delivery: Delivery, then: Delivery | None = None) -> Outcome:
        """Run one claimed message to its end (see `_execute`). Never raises for a bad
        message or a failing task: a message the worker itself fails on (beyond what
        decode checks, e.g. a link whose arguments are not a list) is dead-lettered with
        the error rather than left claimed, to run again after every visibility timeout."""
        try:
            return self._execute(delivery, then)
        except Exception as exc:
            return self.salvage(delivery, exc)

    def salvage(self, delivery: Delivery, exc: Exception) -> Outcome:
        """`execute`'s ending for a message the worker itself failed on: dead-lettered
        with the error (a BrokerError is raised again: the broker is gone, and the claim
        comes back to a worker that can finish it)."""
        if isinstance(exc, BrokerError):
            raise exc
        log.error("the worker failed on message %s", delivery.claim.id, exc_info=exc)
        reason = f"the worker failed on this message: {exc!r}"
        if len(reason) > 200:
            reason = reason[:197] + "..."
        self._dead_letter(delivery.claim, reason)
        return Outcome("?", DEAD_LETTERED)

    def _execute(self, delivery: Delivery, then: Delivery | None = None) -> Outcome:
        """Run one claimed message to its end.

        Returns what became of it, for the worker's metrics. `delivery.acked`: it was
        acknowledged already, so it starts without an acknowledgement of its own. `then`
        is the delivery this thread runs next, if known: when it is to be acknowledged as
        it starts, this task's finish acknowledges it (one round trip less) and the
        outcome says `then_acked`; set `then.acked` before running it. Each message is
        decoded once, whether for `then` or to run it. An async task runs on this
        thread's event loop (loops.py)."""
        begun = self.begin(delivery, then)
        if isinstance(begun, Outcome):
            return begun
        task, request = begun.task, begun.request
        if begun.held is not None:
            until_wall(begun.held, START_LEAD)
        began = time.perf_counter()
        try:
            if task.is_async:  # signals and hooks in this thread's context, as `ended`
                running = task.enter_run(request)
                # The loop's own hard limit cancels the coroutine at an await; one that
                # blocks the loop never reaches one: this thread's limit, a moment later,
                # raises TimeLimitExceeded in it wherever it is.
                backstop = begun.hard + BLOCKED_GRACE if begun.hard else None
                try:
                    with self.coroutine(begun, entered=True) as run, time_limits(None, backstop):
                        value = run_here(run)
                finally:
                    task.leave_run(running)
            elif begun.soft or begun.hard:
                with time_limits(begun.soft, begun.hard):
                    value = self._run_body(task, request)
            else:
                value = self._run_body(task, request)
        except Exception as exc:
            return self.ended(begun, exc, time.perf_counter() - began)
        return self.succeeded(begun, value, time.perf_counter() - began)

    def begin(self, delivery: Delivery, then: Delivery | None = None) -> Begun | Outcome:
        """The steps before a task's own code: decode (or dead-letter), hold it until its
        eta if claimed ahead, refuse it expired, acknowledge it early (unless acks_late),
        its events and STARTED state. What is to run (`Begun`; wait until `held` if set),
        or what became of it (`Outcome`), already stored."""
        claim, acked = delivery.claim, delivery.acked
        message = self._decode(delivery)
        if message is None:
            return Outcome("?", DEAD_LETTERED)
        task = self.app.tasks.get(message.task)
        if task is None:
            own = sorted(n for n in self.app.tasks if not n.startswith("beatq."))
            registered = ", ".join(own[:10])
            reason = f"unknown task {message.task!r}; registered: {registered or '(none)'}"
            self._dead_letter(claim, reason)
            if signals.task_unknown.receivers:
                signals.task_unknown.send(
                    sender=self.hostname,
                    name=message.task,
                    id=message.id,
                    message=message,
                    exc=NotRegistered(message.task, list(self.app.tasks)),
                )
            return Outcome(message.task, DEAD_LETTERED)
        # claimed ahead of its instant (see AHEAD): held until then
        held = message.eta if message.eta is not None and message.eta > time.time() else None
        if held is not None:
            until_wall(held - START_LEAD, AHEAD, self.app.broker.prime, PRIME_AHEAD)
        self.processed += 1
        if message.expires is not None and time.time() > message.expires:
            self._expire(claim, message, task)
            return Outcome(message.task, states.REVOKED)
        acks_late = message.options.get("acks_late", task.option("acks_late"))
        if acks_late and acked:
            self._acked_by_sender(message.task)
        if acked and self._was_stale(claim):  # acknowledged by the finish before it
            return self._not_run_stale(message)
        early: list[bytes] = []
        if self.events_on:  # sent with the early acknowledgement: no round trip of their own
            now = time.time()
            fields = {**ev.sent_fields(message), "hostname": self.hostname}
            early = [
                ev.encode(ev.TASK_RECEIVED, fields, now),
                ev.encode(ev.TASK_STARTED, self._fields(message), now),
            ]
        track_started = task.option("track_started")
        if (not acks_late and not acked) or track_started:
            started = None
            if track_started and not _ignores(message, task):
                started = self._state(message, states.STARTED, {"hostname": self.hostname})
            self._finish(() if acks_late or acked else [claim], started, events=early)
            if self._was_stale(claim):
                return self._not_run_stale(message)
        elif early:
            retrying(lambda: self.app.broker.add_events(early))
        # what this task's finish acknowledges: itself if late, the next one if early
        ack = ([claim] if acks_late else []) + self._acked_at_start(then)
        folded = then is not None and then.claim in ack
        soft = message.options.get("soft_time_limit", task.option("soft_time_limit"))
        hard = message.options.get("time_limit", task.option("time_limit"))
        request = self._request(message, task, delivery.claim, (hard, soft))
        if log.isEnabledFor(logging.INFO):
            log.info("Task %s[%s] received", message.task, message.id)
        if signals.task_received.receivers:
            signals.task_received.send(sender=self.hostname, request=request)
        return Begun(message, task, request, claim, ack, folded, soft, hard, held)

    @contextlib.contextmanager
    def coroutine(self, begun: Begun, entered: bool = False) -> Iterator[Run]:
        """The run of an async task's coroutine under its limits (loops.Run), registered
        meanwhile so a revoke with terminate (`interrupt`) cancels it. `entered`: the
        caller made its request the running one (Task.enter_run), else the coroutine does."""
        task_id = begun.message.id
        task, request = begun.task, begun.request
        coro = task.abody(request) if entered else task.arun_in(request)
        run = Run(coro, begun.soft, begun.hard)
        with self.bodies_lock:
            self.runs[task_id] = run
        try:
            yield run
        finally:
            with self.bodies_lock:
                self.runs.pop(task_id, None)

    def succeeded(
        self, begun: Begun, value: Any, runtime: float, later: list[Any] | None = None
    ) -> Outcome:
        """Store the success of a run that returned `value` (see `begin`); then its hooks
        and signals run (Task.ended), or with `later` their arguments are added to it, for
        the caller to run where the run's signals began (the asyncio pool's loop)."""
        message, task, request = begun.message, begun.task, begun.request
        self._succeed(begun.ack, message, task, value, runtime, request.children)
        _then(later, task, request, states.SUCCESS, value)
        return Outcome(message.task, states.SUCCESS, runtime, begun.folded)

    def ended(
        self, begun: Begun, exc: Exception, runtime: float, later: list[Any] | None = None
    ) -> Outcome:
        """Store what became of a run that raised `exc` (see `begin`): a retry, ignored,
        rejected, revoked (terminated) or a failure; then its hooks (`later`: see
        `succeeded`)."""
        message, task, request = begun.message, begun.task, begun.request
        ack, folded = begun.ack, begun.folded
        try:
            raise exc  # handled below, as where it was raised: its traceback is the task's
        # Each outcome is stored first, then the task's hooks and the signals run (task.ended)
        except Retry as exc:
            self._retry(ack, message, task, exc)
            _then(later, task, request, states.RETRY, exc, ExceptionInfo())
            return Outcome(message.task, states.RETRY, then_acked=folded)
        except Ignore as exc:
            self._ignored(ack, message, exc)
            _then(later, task, request, IGNORED, exc)
            return Outcome(message.task, IGNORED, then_acked=folded)
        except Reject as exc:
            self._reject(ack, begun.claim, message, task, request, exc)
            _then(later, task, request, REJECTED, exc)
            return Outcome(message.task, REJECTED, then_acked=folded)
        except TaskRevokedError:  # revoked with terminate (threads, solo): see interrupt
            exc = TaskRevokedError(f"terminated after {runtime:.1f}s")
            log.warning("Task %s[%s] %s (REVOKED)", message.task, message.id, exc)
            self._fail(ack, message, task, request, exc, traceback.format_exc(), states.REVOKED)
            _revoked_signal(task, request, terminated=True)
            _then(later, task, request, states.REVOKED, exc)
            return Outcome(message.task, states.REVOKED, then_acked=folded)
        except Exception as exc:
            log.error(
                "Task %s[%s] raised %r\n%s", message.task, message.id, exc, traceback.format_exc()
            )
            self._fail(ack, message, task, request, exc, traceback.format_exc(), runtime=runtime)
            _then(later, task, request, states.FAILURE, exc, ExceptionInfo())
            return Outcome(message.task, states.FAILURE, runtime, folded)

    def _was_stale(self, claim: Claim) -> bool:
        """Whether the store refused `claim`'s acknowledgement as stale (see `_stale`)."""
        key = (claim.id, claim.token)
        if key not in self.stale:  # as a rule (empty)
            return False
        del self.stale[key]
        return True

    def _not_run_stale(self, message: Message) -> Outcome:
        """A message whose claim expired before it started: it was delivered again, and
        that delivery runs it. Acknowledged as it starts, a task runs at most once."""
        log.warning(
            "Task %s[%s] not run here: it was delivered again (acknowledged as it starts, "
            "it runs at most once)",
            message.task,
            message.id,
        )
        return Outcome(message.task, STALE)

    def _acked_at_start(self, then: Delivery | None) -> list[Claim]:
        """[then's claim] if it is a task acknowledged as it starts (not late, no STARTED
        state, no events: those ride on its own acknowledgement) and due now (one held
        until its eta is acknowledged just before it starts)."""
        if then is None or self.events_on:
            return []
        if self._refusal(then) is not None:
            return []  # it is dead-lettered when its turn comes
        try:
            message = then.message(self.accept)
        except DECODE_ERRORS:
            return []  # it is dead-lettered when its turn comes
        if message.eta is not None and message.eta > time.time():
            return []
        task = self.app.tasks.get(message.task)
        if task is None or task.option("track_started"):
            return []
        if message.options.get("acks_late", task.option("acks_late")):
            return []
        return [then.claim]

    def _refusal(self, delivery: Delivery) -> str | None:
        """Why `delivery` may not even be read: its signature, with security_key set (see
        signing.py); None if it may. Checked once per delivery."""
        if self.signer is None or delivery.signed:
            return None
        refused = self.signer.refusal(delivery.claim.body)
        delivery.signed = refused is None
        return refused

    def _acked_by_sender(self, name: str) -> None:
        """An acks_late task here whose message its sender let be acknowledged at claim
        (the sender's definition of the task is not acks_late: another version of the code,
        or a worker-only setting). It runs at most once, not at least once: say so, once."""
        if name in self.warned_acked:
            return
        self.warned_acked.add(name)
        log.warning(
            "Task %s is acks_late in this worker, but its sender marked its messages to be "
            "acknowledged as they are claimed, so a crash mid-task will not run it again; "
            "give the task acks_late where it is sent too (the sender decides at send time)",
            name,
        )

    def _decode(self, delivery: Delivery) -> Message | None:
        """The delivery's message (decoded once: see Delivery), or None: dead-lettered."""
        refused = self._refusal(delivery)
        if refused is not None:  # never decoded: its callbacks and errbacks are not ours
            self._dead_letter(delivery.claim, refused)
            return None
        try:
            return delivery.message(self.accept)
        except serializers.ContentDisallowed as exc:
            self._dead_letter(delivery.claim, str(exc))
            self._unread(delivery.claim, exc)
            rejected: Exception = exc
        except serializers.DecodeError as exc:
            self._dead_letter(delivery.claim, f"corrupt message: {exc}")
            self._unread(delivery.claim, exc)
            rejected = exc
        except messages.MessageError as exc:
            self._dead_letter(delivery.claim, f"corrupt message: {exc}")
            rejected = exc
        if signals.task_rejected.receivers:
            signals.task_rejected.send(sender=self.hostname, message=delivery.claim, exc=rejected)
        return None

    def _unread(self, claim: Claim, exc: Exception) -> None:
        """Store FAILURE, with `exc`, for a message whose header holds but whose payload
        this worker may not or cannot read (not in accept_content, corrupt), so a client
        waiting on it raises at once rather than waiting PENDING. Its callbacks, errbacks
        and chord lie in that payload: they are not run (the dead letter keeps them)."""
        header = messages.read_header(claim.body)  # it held, or this is not reached
        meta = make_meta(header["id"], states.FAILURE, exc, None, header["task"])
        data = encode_meta(meta, self.result_serializer, self.result_compression)
        write = ResultWrite(header["id"], data, self.result_ttl, True)
        retrying(lambda: self.app.result_store.store_results([write]))

    def _dead_letter(self, claim: Claim, reason: str) -> None:
        log.warning(
            "message %s from queue %r moved to dead letters: %s (see: beatq dead-letter list)",
            claim.id,
            claim.queue,
            reason,
        )
        retrying(lambda: self.app.broker.dead_letter(claim, reason))
        if self.events_on:
            try:
                name = messages.read_header(claim.body)["task"]
            except messages.MessageError:
                name = None
            fields = {"task_id": claim.id, "name": name, "queue": claim.queue, "reason": reason}
            event = ev.encode(ev.TASK_DEAD_LETTERED, {**fields, "hostname": self.hostname})
            retrying(lambda: self.app.broker.add_events([event]))

    def _request(
        self,
        message: Message,
        task: Task,
        claim: Claim | None = None,
        timelimit: tuple[Any, Any] = (None, None),
    ) -> Request:
        options = message.options
        return Request(
            id=message.id,
            task=message.task,
            args=message.args,
            kwargs=message.kwargs,
            retries=message.retries,
            eta=message.eta,
            expires=message.expires,
            parent_id=message.parent,
            root_id=message.root or message.id,
            group=message.group,
            callbacks=list(options.get("link") or ()),
            errbacks=list(options.get("link_error") or ()),
            delivery_info={
                "exchange": "",
                "routing_key": message.queue,
                "queue": message.queue,
                "priority": message.priority,
                "redelivered": bool(message.requeued) or (claim is not None and claim.redelivered),
            },
            hostname=self.hostname,
            options=options,
            headers=options.get("headers") or {},
            timelimit=timelimit,
        )

    # -- outcomes --------------------------------------------------------------------------
    def _succeed(
        self,
        ack: list[Claim],
        message: Message,
        task: Task,
        value: Any,
        runtime: float,
        children: list[Any] | None = None,
    ) -> None:
        """Store the success, with the task's children (what it sent, then its links and
        its chain's next step), and send those in the same step."""
        plan = Plan()
        if isinstance(value, Followup):  # a builtin's plan, carried out atomically with its ack
            plan, value = value.plan, value.value
        if log.isEnabledFor(logging.INFO):
            log.info("Task %s[%s] succeeded in %.6fs: %r", message.task, message.id, runtime, value)
        links = message.options.get("link")
        chain = message.options.get("chain")
        if links or chain:
            children = list(children or ())
        for sig in links or ():
            callback = callback_message(self.app, sig, (value,), message.id, root_of(message))
            plan.send.append(callback)
            children.append(callback.id)  # type: ignore[union-attr]
        if chain:
            extra = message.options.get("chain_extra")
            first = maybe_signature(chain[0], self.app)
            expand(first, self.app, plan, [value], {}, chain[1:], extra, lineage(message))
            children.append(result_ref(first))  # type: ignore[union-attr]
        if not _ignores(message, task):
            state = self._state(message, states.SUCCESS, value, None, children, runtime)
            plan.results.append(state)
        joins = [j for j in (self._join(message),) if j is not None] + plan.joins
        events = (
            self._event(ev.TASK_SUCCEEDED, message, result=ev.short_repr(value), runtime=runtime)
            if self.events_on  # the value's repr is made for the event alone
            else None
        )
        self._finish_joins(ack, plan.results, plan.send, joins, events)

    def _fail(
        self,
        ack: list[Claim],
        message: Message,
        task: Task | None,
        request: Request,
        exc: BaseException,
        tb: str | None,
        status: str = states.FAILURE,
        event: str = ev.TASK_FAILED,
        runtime: float | None = None,
    ) -> None:
        """Store the failure (and fail what was to follow in a chain), run the errbacks."""
        results = []
        if task is None or not _ignores(message, task) or status != states.FAILURE:
            results.append(self._state(message, status, exc, tb, request.children, runtime))
        for sig in message.options.get("chain") or ():
            results += failure_writes(self.app, all_ids(sig), exc, tb, status)
        errbacks = message.options.get("link_error") or ()
        send = run_errbacks(self.app, errbacks, request, exc, tb, root_of(message))
        joins = [j for j in (self._join(message),) if j is not None]
        chain = message.options.get("chain")
        if chain:  # the chain's tail that will never run may be what a chord waits for
            extra = message.options.get("chain_extra")
            joins += tail_joins(self.app, extra, chain[-1], root_of(message), self.result_ttl)
        if status == states.REVOKED and event == ev.TASK_FAILED:
            event = ev.TASK_REVOKED
        events = None
        if self.events_on:  # the exception's repr is made for the event alone
            tb_text = tb[-ev.TRACEBACK_MAX :] if tb else None
            events = self._event(event, message, exception=ev.short_repr(exc), traceback=tb_text)
        self._finish_joins(ack, results, send, joins, events)

    def _expire(self, claim: Claim, message: Message, task: Task) -> None:
        log.info(
            "Task %s[%s] expired before it started; not run (REVOKED)", message.task, message.id
        )
        exc = TaskRevokedError("expired")
        request = self._request(message, task)
        self._fail([claim], message, task, request, exc, None, states.REVOKED, ev.TASK_EXPIRED)
        _revoked_signal(task, request, expired=True)

    def revoke(
        self, claim: Claim, terminated: bool = False, reason: TaskRevokedError | None = None
    ) -> Outcome:
        """Record the task of `claim` as revoked without running it (or after terminating
        it: `reason` says how long it ran)."""
        message = self._decode(Delivery(claim))
        if message is None:
            return Outcome("?", DEAD_LETTERED)
        exc = reason or TaskRevokedError("terminated" if terminated else "revoked")
        if terminated:
            log.warning("Task %s[%s] %s (REVOKED)", message.task, message.id, exc)
        else:
            log.info("Task %s[%s] revoked; not run (REVOKED)", message.task, message.id)
        task = self.app.tasks.get(message.task)
        request = self._request(message, task) if task is not None else _bare_request(message)
        self._fail([claim], message, task, request, exc, None, states.REVOKED, ev.TASK_REVOKED)
        _revoked_signal(task, request, terminated=terminated)
        return Outcome(message.task, states.REVOKED)

    def skip(self, claim: Claim) -> Outcome | None:
        """`revoke` a claim never started; a failure to record it is logged, not raised
        (the worker counts the claim done either way)."""
        try:
            return self.revoke(claim)
        except Exception:
            log.exception("could not record revoked task %s", claim.id)
            return None

    def _retry(self, ack: list[Claim], message: Message, task: Task, exc: Retry) -> None:
        sig = exc.sig
        log.info("Task %s[%s] retry: %s", message.task, message.id, exc)
        options = {
            **{k: v for k, v in message.options.items()},
            "queue": message.queue,
            "task_id": message.id,
            "retries": message.retries + 1,
            "parent_id": message.parent,
            "root_id": message.root,
            "group_id": message.group,
            "priority": message.priority,
            "expires": message.expires,
            "serializer": serializers.short_name(message.content_type),
            "compression": message.content_encoding,
            **(sig.options if sig is not None else {}),
        }
        args = sig.args if sig is not None else message.args
        kwargs = sig.kwargs if sig is not None else message.kwargs
        retried, body = self.app.build_message(message.task, args, kwargs, task, **options)
        outgoing = self.app.outgoing(retried, body, task)
        tb = traceback.format_exc()
        state = self._state(message, states.RETRY, exc.exc or exc, tb)
        events = self._event(
            ev.TASK_RETRIED, message, exception=ev.short_repr(exc.exc or exc), eta=retried.eta
        )
        # An early-acked message is gone already; a late one is acknowledged before the
        # retry is sent under the same id, in the same atomic step.
        self._finish(ack, state, [outgoing], events=events)

    def _ignored(self, ack: list[Claim], message: Message, exc: Ignore) -> None:
        """Acknowledge a run that raised Ignore, with no state stored; what `Task.replace`
        sends in its place (`exc.followup`) is sent in the same atomic step."""
        log.info("Task %s[%s] ignored: %s", message.task, message.id, exc)
        plan = exc.followup if isinstance(exc.followup, Plan) else Plan()
        self._finish_joins(ack, plan.results, plan.send, plan.joins)

    def _reject(
        self,
        ack: list[Claim],
        claim: Claim,
        message: Message,
        task: Task,
        request: Request,
        exc: Reject,
    ) -> None:
        """`raise Reject(...)`: requeued (counted, up to worker_requeue_max), or moved to
        the dead letters with its result stored as FAILURE, so `get()` raises at once."""
        reason = str(exc.reason or "") or "no reason given"
        if exc.requeue and message.requeued < self.requeue_max:
            log.info(
                "Task %s[%s] rejected (%s); requeued (%d of at most %d)",
                message.task,
                message.id,
                reason,
                message.requeued + 1,
                self.requeue_max,
            )
            self._requeue(ack, claim, message)
            return
        if exc.requeue:
            reason = (
                f"rejected and requeued {message.requeued} times (worker_requeue_max), "
                f"then rejected again: {reason}"
            )
        else:
            reason = f"rejected by the task: {reason}"
        self._refuse(ack, claim, message, task, request, Reject(reason), ev.TASK_REJECTED)
        if signals.task_rejected.receivers:
            signals.task_rejected.send(sender=self.hostname, message=claim, exc=exc)

    def _requeue(self, ack: list[Claim], claim: Claim, message: Message) -> None:
        """Put `message` back at the end of its queue, its `requeued` count one up (its
        next run sees `delivery_info["redelivered"]`), acknowledging this delivery in the
        same atomic step (as a retry does)."""
        body = messages.requeued_body(claim.body, message.requeued + 1, self.signer)
        again = Outgoing(message.queue, message.id, body)
        acks = ack if claim in ack else [claim, *ack]  # one acknowledged at start: gone
        self._finish(acks, send=[again])

    def _refuse(
        self,
        ack: list[Claim],
        claim: Claim,
        message: Message,
        task: Task | None,
        request: Request,
        exc: BaseException,
        event: str = ev.TASK_FAILED,
    ) -> None:
        """Move `claim` to the dead letters with `exc` as the reason, and store its task's
        FAILURE (errbacks, chain and chord as for any failure): nobody waits PENDING."""
        self._dead_letter(claim, str(exc))
        others = [c for c in ack if c is not claim]  # the next one, acknowledged with this
        self._fail(others, message, task, request, exc, None, event=event)

    def _run_body(self, task: Task, request: Request) -> Any:
        """`task.run_in(request)`, its thread known meanwhile (`interrupt`)."""
        task_id = request.id
        with self.bodies_lock:
            self.bodies[task_id] = threading.get_ident()
        try:
            return task.run_in(request)
        finally:
            with self.bodies_lock:
                self.bodies.pop(task_id, None)

    def interrupt(self, task_id: str) -> bool:
        """Raise TaskRevokedError in the thread running task `task_id`'s own code (revoke
        with terminate in the threads and solo pools), or cancel its coroutine (an async
        task, any pool but prefork); False if it is not running here."""
        with self.bodies_lock:
            run = self.runs.pop(task_id, None)
            if run is not None:  # an async task: its coroutine is cancelled
                run.stop(TaskRevokedError("terminated"))
                return True
            ident = self.bodies.pop(task_id, None)
            if ident is None:
                return False
            raise_in(ident, TaskRevokedError)
            return True

    # -- helpers ---------------------------------------------------------------------------
    def _fields(self, message: Message) -> dict[str, Any]:
        return {**ev.task_fields(message), "hostname": self.hostname}

    def _event(self, type_: str, message: Message, **fields: Any) -> list[bytes]:
        """One task event to send with the finish, or none when events are off."""
        if not self.events_on:
            return []
        return [ev.encode(type_, {**self._fields(message), **fields})]

    def _state(
        self,
        message: Message,
        status: str,
        value: Any,
        tb: str | None = None,
        children: list[Any] | None = None,
        runtime: float | None = None,
    ) -> ResultWrite:
        meta = make_meta(message.id, status, value, tb, message.task, children, runtime)
        data = encode_meta(meta, self.result_serializer, self.result_compression)
        return ResultWrite(message.id, data, self.result_ttl, status in states.READY_STATES)

    def _finish(
        self,
        ack: Any = (),
        results: Any = (),
        send: Any = (),
        join: ChordJoin | None = None,
        events: Any = (),
    ) -> None:
        """One backend call, retried until the broker answers. Its token makes a retry
        after a lost reply a no-op, so callbacks are never sent twice."""
        if isinstance(results, ResultWrite):
            results = [results]
        results = list(results or ())
        token = uuid.uuid4().hex if send or join else None
        if not (ack or results or send or join):
            if events:  # nothing else to say: they wait for the next round trip (or idle)
                with self.pending_lock:
                    self.pending.extend(events)
            return
        with self.pending_lock:
            held, self.pending = self.pending, []
        try:
            events = [*held, *events]
            stale = retrying(
                lambda: self.app.broker.finish(ack, results, send, join, events, token)
            )
        except BaseException:
            with self.pending_lock:
                self.pending[:0] = held
            raise
        if stale:
            self._stale(ack, stale)
        if send and self.app.tracing is not None:  # beatq.otel: their publish spans end
            self.app.tracing.published(send)
        if send and signals.after_task_publish.receivers:
            announce_published(send)

    def _stale(self, ack: Any, stale: frozenset[str]) -> None:
        """Note the claims of `ack` whose acknowledgement the store refused as stale: one
        acknowledged as its task starts is not run (`begin` reads the note); one
        acknowledged after its run (acks_late) ran here while it was delivered again."""
        for claim in ack:
            if claim.id in stale:
                self.stale[(claim.id, claim.token)] = None
                log.warning(
                    "message %s was delivered again: its claim expired (was this worker "
                    "paused past its visibility timeout?), so its acknowledgement here "
                    "was refused",
                    claim.id,
                )
        while len(self.stale) > STALE_KEPT:  # an acks_late one's note is never read
            del self.stale[next(iter(self.stale))]

    def flush_events(self) -> None:
        """Send the events held back (see `_finish`) in a round trip of their own; the
        pool calls this when it runs out of work, so none waits long."""
        with self.pending_lock:
            held, self.pending = self.pending, []
        if held:
            try:
                self.app.broker.add_events(held)
            except BrokerError as exc:
                log.error("could not send %d event(s): %s", len(held), exc)

    def _join(self, message: Message) -> ChordJoin | None:
        """The chord join this message counts toward, with the unlock message to send."""
        chord = message.options.get("chord")
        if not chord:
            return None
        return chord_join(self.app, chord, message.id, root_of(message), self.result_ttl)

    def _finish_joins(
        self,
        ack: list[Claim],
        results: Any,
        send: Any,
        joins: list[ChordJoin],
        events: list[bytes] | None = None,
    ) -> None:
        """Finish with the first join in the same atomic step, then count the others (a
        chord's tasks that will never run): counting is idempotent, and the failures the
        unlock reads are stored by the first step."""
        first = joins[0] if joins else None
        self._finish(ack, results, send, first, events or ())
        for join in joins[1:]:
            self._finish(join=join)

    def fail_lost(self, claim: Claim, exc: BaseException) -> Outcome:
        """Record the task of `claim` as failed with `exc` (its process died or was killed),
        or as revoked when `exc` is a TaskRevokedError (revoked with terminate)."""
        if isinstance(exc, TaskRevokedError):
            return self.revoke(claim, terminated=True, reason=exc)
        try:
            if self._refusal(Delivery(claim)) is not None:  # its errbacks must not be sent
                raise messages.MessageError("refused")
            message = messages.decode(claim.body, self.accept)
        except (messages.MessageError, serializers.ContentDisallowed, serializers.DecodeError):
            self._finish([claim])
            return Outcome("?", states.FAILURE)
        task = self.app.tasks.get(message.task)
        if task is not None and self._requeues_lost(message, task, exc):
            if message.requeued < self.requeue_max:
                log.error(
                    "Task %s[%s] lost its process (%s); requeued (reject_on_worker_lost, "
                    "%d of at most %d)",
                    message.task,
                    message.id,
                    exc,
                    message.requeued + 1,
                    self.requeue_max,
                )
                self._requeue([claim], claim, message)
                return Outcome(message.task, REJECTED)
            exc = WorkerLostError(
                f"{exc}; requeued {message.requeued} times (worker_requeue_max) after its "
                "process was lost, not again"
            )
            self._dead_letter(claim, str(exc))
        log.error("Task %s[%s] failed: %r", message.task, message.id, exc)
        request = _bare_request(message)
        self._fail([claim], message, task, request, exc, f"{type(exc).__name__}: {exc}\n")
        if task is not None:  # its process is gone: the signal is sent from here, as Celery
            failure_signal(task, message.id, exc, message.args, message.kwargs, None)
        return Outcome(message.task, states.FAILURE)

    @staticmethod
    def _requeues_lost(message: Message, task: Task, exc: BaseException) -> bool:
        """Whether a task whose process died goes back to its queue: acks_late and
        reject_on_worker_lost, and the process was lost, not killed for its hard time
        limit (Celery's rule; a revoke with terminate is handled before)."""
        if not isinstance(exc, WorkerLostError) or not task.option("reject_on_worker_lost"):
            return False
        return bool(message.options.get("acks_late", task.option("acks_late")))


def _then(
    later: list[Any] | None,
    task: Task,
    request: Request,
    state: str,
    retval: Any,
    einfo: ExceptionInfo | None = None,
) -> None:
    """Run the hooks and signals of a stored outcome (Task.ended) now, or add their
    arguments to `later`."""
    if later is None:
        task.ended(request, state, retval, einfo)
    else:
        later.append((request, state, retval, einfo))


def _revoked_signal(
    task: Task | None, request: Request, terminated: bool = False, expired: bool = False
) -> None:
    if task is not None and signals.task_revoked.receivers:
        signals.task_revoked.send(
            sender=task, request=request, terminated=terminated, signum=None, expired=expired
        )


def _bare_request(message: Message) -> Request:
    return Request(id=message.id, task=message.task, args=message.args, kwargs=message.kwargs)


def _ignores(message: Message, task: Task) -> bool:
    """Whether to store no result: the call's `ignore_result`, else the task's."""
    return message.options.get("ignore_result", task.option("ignore_result"))
