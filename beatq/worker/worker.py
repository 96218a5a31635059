"""The worker: one loop that claims messages and feeds a pool, plus a heartbeat thread.

    claim a batch (one round trip) -> hand each to the pool as a slot frees up
    nothing ready -> block on the broker's wake-up until work or the next eta

The heartbeat thread renews the claims this worker holds, so a live worker's message
never reaches another worker, and publishes what the worker runs for `inspect`.

Urgency (SPEC §6: the first `-Q` queue the most urgent). A busy worker holds claims ahead
of its free slots: in its buffer (kept in `-Q` order, see handoff.py) and, in prefork,
behind the task a child runs. Those must not overtake more urgent work sent since:

    claims held that outrank some a prefork child waits on -> take those back (withdraw)
        into the buffer, which hands them out again in rank order (`_reorder`)
    less urgent claims waiting -> every URGENT_EVERY, claim from the more urgent queues
        only (one round trip) and give back as many of the least urgent (`_look_up`)

so the worker keeps holding what it held (its prefetch), the most urgent part of it.
Within a queue, a higher priority is more urgent (Outgoing.priority): claims are ranked
by queue, then priority, and a busy worker of any number of queues looks every
URGENT_EVERY for messages of its least urgent queue held with a priority above the
lowest it holds (none in a store never sent one: the look costs one claim that finds
nothing, ten a second at most, and only while claims wait).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from types import FrameType
from typing import Any

from .. import events as ev
from .. import signals
from ..app import Beatq
from ..brokers import Claim, Claimed, Outgoing
from ..brokers.roles import new_token
from ..brokers.urls import process_urls
from ..calling import MAX_PRIORITY
from ..exceptions import BrokerError, ConfigurationError
from ..metrics import Metrics
from ..stop_event import StopEvent
from ..timeline import worker_timeline
from .asyncio_pool import DEFAULT_CONCURRENCY, AsyncioPool
from .autoscale import Autoscale, parse_autoscale
from .delivery import Delivery
from .execute import AHEAD, Executor, Outcome
from .handoff import Handoff, split_rank
from .pool import Pool, SoloPool, ThreadPool
from .prefork import PreforkPool
from .recycle import Recycle
from .remote import CONTROL_EVERY, run_commands
from .throttle import Throttle

log = logging.getLogger("beatq.worker")

POOLS: dict[str, type[Pool]] = {
    "solo": SoloPool,
    "threads": ThreadPool,
    "prefork": PreforkPool,
    "asyncio": AsyncioPool,
}


class ColdShutdown(BaseException):
    """Raised in the main thread by a second stop signal: stop now, requeue what runs."""


class _StopWaiting(BaseException):
    """Raised by a stop signal in the main thread while it only waits for work."""


def default_hostname() -> str:
    return f"beatq@{socket.gethostname()}.{os.getpid()}"


class Worker:
    """Consumes `queues` (the first the most urgent) and runs their tasks in a pool.

    >>> Worker(app, queues=["celery"], pool="threads", concurrency=4).run()
    """

    BLOCK_PRECISION = 0.15  # seconds: how late a broker wait may wake past its timeout
    # seconds between two looks for more urgent work while less urgent claims wait: how
    # late such work may be noticed, for one round trip each time
    URGENT_EVERY = 0.1

    def __init__(
        self,
        app: Beatq,
        queues: Sequence[str] | None = None,
        pool: str | None = None,
        concurrency: int | None = None,
        hostname: str | None = None,
        prefetch_multiplier: int | None = None,
        idle_wait: float = 2.0,
        beat: Any = None,
        metrics: Metrics | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        autoscale: str | None = None,
    ) -> None:
        self.app = app
        self.hostname = hostname or default_hostname()
        # As Celery's worker: the modules of `include` and `imports` first, then celeryd_init,
        # and only then the settings are read, so what either sets counts (a pool sized
        # before them would ignore a worker_concurrency set there)
        app.import_modules()
        if signals.celeryd_init.receivers:
            given = {"queues": queues, "pool": pool, "concurrency": concurrency}
            signals.celeryd_init.send(
                sender=self.hostname, instance=self, conf=app.conf, options=given
            )
        conf = app.conf
        self.queues = list(queues or [conf.task_default_queue])
        self.pool_name = pool or conf.worker_pool
        if self.pool_name not in POOLS:
            raise ValueError(f"unknown pool {self.pool_name!r}; use one of: {', '.join(POOLS)}")
        if self.pool_name == "prefork" and not app.broker.shared_between_processes:
            # forked children would each see a copy of the store, not the store
            if pool is not None:
                raise ConfigurationError(
                    f"pool prefork cannot serve broker {app.broker.url!r}: it lives in this "
                    "process only, out of reach of forked children; use -P threads or "
                    "-P solo, or a broker shared between processes (sqlite:// or redis://)"
                )
            log.info("broker %s lives in this process only: pool threads", app.broker.url)
            self.pool_name = "threads"
        self.recycle = Recycle(
            max_tasks_per_child or conf.worker_max_tasks_per_child or None,
            max_memory_per_child or conf.worker_max_memory_per_child or None,
        )
        if self.recycle and self.pool_name != "prefork":
            raise ConfigurationError(
                f"max-tasks-per-child and max-memory-per-child replace prefork children; "
                f"pool {self.pool_name} has none: use -P prefork or drop them"
            )
        self.autoscale: Autoscale | None = None
        if autoscale is not None:
            if self.pool_name != "prefork":
                raise ConfigurationError(
                    f"--autoscale starts and retires prefork children; pool {self.pool_name} "
                    "has none: use -P prefork or drop --autoscale"
                )
            if concurrency is not None:
                raise ConfigurationError(
                    "--autoscale MAX,MIN sets the pool's size: drop -c (MAX is the most)"
                )
            high, low = parse_autoscale(autoscale)
            keepalive = float(conf.worker_autoscale_keepalive)
            self.autoscale = Autoscale(high, low, keepalive)
            concurrency = high
        default = DEFAULT_CONCURRENCY if self.pool_name == "asyncio" else os.cpu_count() or 1
        self.concurrency = (
            1
            if self.pool_name == "solo"
            else int(concurrency or conf.worker_concurrency or default)
        )
        multiplier = (
            conf.worker_prefetch_multiplier if prefetch_multiplier is None else prefetch_multiplier
        )
        multiplier = max(1, int(multiplier))
        self.prefetch = max(1, self.concurrency * multiplier)
        # Claims waiting in a prefork child behind its task come out of the prefetch: the
        # worker holds what it runs and `prefetch` more, whatever the pool.
        self.queued = min(PreforkPool.QUEUED, multiplier - 1) if self.pool_name == "prefork" else 0
        self.batch = max(1, self.prefetch - self.concurrency * self.queued)  # claimed at once
        options = conf.broker_transport_options or {}
        self.visibility = float(options.get("visibility_timeout", 60.0))
        self.heartbeat_interval = min(float(conf.worker_heartbeat_interval), self.visibility / 4)
        self.idle_wait = idle_wait
        self.ack_first: frozenset[str] = frozenset()  # see _acked_at_start
        self.held: dict[str, Claim] = {}  # claimed and not yet finished: renewed by heartbeat
        self.held_lock = threading.Lock()
        self.stopping = StopEvent()  # set by the signal handlers: see stop_event.py
        self.signals = 0
        self.handing_back = False  # a warm stop puts what waits back in its queue (_hand_back)
        self.cold = False  # a second signal came: stopping at once
        self.waiting = False  # the main thread is blocked on the broker's wake-up
        self.failures = 0  # broker calls failed in a row in the consumer loop
        self.top_up_failing = False  # the last claim ahead failed (said once: _top_up)
        self.started_at = time.time()
        self.pool: Pool
        self.beat = beat  # an embedded Beat (worker -B), run in a thread of its own
        self.events_on = bool(conf.worker_send_task_events)
        self.processed = 0  # tasks finished (in the pool, whatever the pool)
        self.totals: Counter[str] = Counter()  # tasks finished by name (inspect stats)
        self.revoked: dict[str, tuple[float, bool]] = {}  # task id -> (when, terminate)
        self.revoked_after = 0.0  # the newest revocation seen (the broker's clock)
        self.revoke_ttl = float(conf.worker_revoke_expires)
        # What was claimed and not yet handed to the pool. A busy pool's buffer is topped
        # up when it falls to a quarter of a batch, before it runs dry (see _top_up), so
        # each top-up claims most of a batch in its round trip.
        slots = POOLS[self.pool_name].capacity(self.concurrency, self.queued)
        # rate limits (throttle.py): the tasks' own, read again once their modules are in
        self.throttle = Throttle({}, bool(conf.worker_disable_rate_limits), cap=self.prefetch)
        self.handoff = Handoff(
            slots,
            self.revoked,
            self.stopping,
            low=self.batch // 4,
            queues=self.queues,
            throttle=self.throttle,
        )
        self.control_cursor: str | None = None  # where this worker reads the control channel
        self.ranked = len(set(self.queues)) > 1  # queues of different urgency (see _look_up)
        self.looked = 0.0  # when _look_up last looked (monotonic clock)
        self.executor: Executor | None = None  # this process's (the pool's too), from run
        self.metrics = metrics  # counted here, whatever the pool (prefork children report)
        self.timeline = worker_timeline(app, self.hostname, self.queues)  # the charts' counts

    # -- running -----------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped by a signal (or `stop`); the process exit status."""
        signals.worker_init.send(sender=self)  # after the task modules, as Celery's loader
        self.throttle.load(self.app.tasks)
        self.ack_first = self._acked_at_start()
        self._install_signals()
        self.executor = Executor(self.app, self.hostname)
        self.pool = self._make_pool(self.executor)
        if isinstance(self.pool, PreforkPool) and self.pool.crowded:
            self.app.broker.crowded()  # this thread's claims (the children say it themselves)
        self.pool.start()
        try:  # what was revoked before this worker started is skipped from the first claim
            self.sync_revoked()
        except BrokerError as exc:
            log.error("could not read the revoked tasks (%s); the heartbeat retries", exc)
        try:  # commands sent from now on reach this worker; none sent before
            self.control_cursor = self.app.broker.commands(None)[0]
        except BrokerError as exc:
            log.error("could not read the control channel (%s); the heartbeat retries", exc)
        self._event(ev.WORKER_ONLINE)
        if self.metrics is not None:
            self.metrics.watch_worker(
                self.app,
                self.queues,
                lambda: len(self.pool.running()),
                lambda: len(self._waiting(self.pool.running())),
                self._autoscale_info,
            )
        threading.Thread(target=self._heartbeat_loop, name="beatq-heartbeat", daemon=True).start()
        beat_thread = None
        if self.beat is not None:
            signals.beat_embedded_init.send(sender=self.beat)
            beat_thread = threading.Thread(target=self.beat.run, name="beatq-beat", daemon=True)
            beat_thread.start()
        log.info(
            "worker %s ready: queues %s, pool %s, concurrency %d, %d tasks registered",
            self.hostname,
            ",".join(self.queues),
            self.pool_name,
            self.concurrency,
            len(self.app.tasks),
        )
        signals.worker_ready.send(sender=self)
        try:
            self._consume()
            self._stop_beat(beat_thread)
            self._hand_back()
            log.info(
                "worker %s: warm shutdown, waiting for %d running task(s)",
                self.hostname,
                len(self.pool.held()),
            )
            self.pool.join()
        except ColdShutdown:
            # a second signal, wherever it landed: abort, requeue, leave
            self._stop_beat(beat_thread)
            self._cold_stop()
            signals.worker_shutdown.send(sender=self)
            return 0
        self.pool.close()
        self._unregister()
        log.info("worker %s stopped", self.hostname)
        signals.worker_shutdown.send(sender=self)
        return 0

    def _autoscale_info(self) -> dict[str, Any] | None:
        """The autoscaler's bounds, processes and decisions (inspect stats), or None."""
        pool = getattr(self, "pool", None)
        if self.autoscale is None or not isinstance(pool, PreforkPool):
            return None
        return self.autoscale.info(len(pool.children))

    def _stop_beat(self, thread: threading.Thread | None) -> None:
        if self.beat is not None:
            self.beat.stop()  # hands the lease over at once
            if thread is not None:
                thread.join(5)

    def stop(self) -> None:
        """Stop taking work and let running tasks finish."""
        self.stopping.set()

    def stop_warmly(self, why: str) -> None:
        """`stop`, from another thread (a control command): a wait for work ends at once
        where the broker can end it (otherwise within `idle_wait`)."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self._shutting_down(why, "Warm")
        if self.waiting:
            self.app.broker.interrupt_wait()

    def _make_pool(self, executor: Executor) -> Pool:
        if self.pool_name == "prefork":
            return PreforkPool(
                executor,
                self.concurrency,
                self._finished,
                self.handoff,
                self.queued,
                self.recycle,
                self.autoscale,
            )
        return POOLS[self.pool_name](executor, self.concurrency, self._finished, self.handoff)

    def _consume(self) -> None:
        broker = self.app.broker
        handoff = self.handoff
        throttle = self.throttle
        while not self.stopping.is_set():
            if throttle.waiting:
                self._unthrottle()
            try:
                if not handoff.buffer:
                    if not self._fill(broker):
                        continue
            except BrokerError as exc:
                self.failures += 1
                delay = min(0.1 * 2 ** (self.failures - 1), 5.0)
                log.error("broker unreachable (%s); retrying in %.1fs", exc, delay)
                self.stopping.wait(delay)
                continue
            while handoff.buffer and not self.stopping.is_set():
                self._look_up(broker)
                wait = self.URGENT_EVERY
                if throttle.waiting:
                    self._unthrottle()
                    # pool slots take the unlimited deliveries themselves (follow): wake
                    # when a limited one's turn comes, to put it at the head
                    turn = throttle.next_due()
                    if turn is not None:
                        wait = min(wait, max(turn, 0.001))
                if not handoff.reserve(timeout=wait):  # or nudged: the buffer runs low
                    self._top_up(broker)
                    continue
                delivery = handoff.take(self.pool.free)
                if delivery is None:  # stopping, or a pool slot took the rest (follow)
                    continue
                if handoff.is_revoked(delivery):
                    handoff.give_back()
                    self._skip_revoked(delivery)
                    continue
                if throttle.on and self._throttled(delivery):
                    continue
                self.pool.submit(delivery)
            if not handoff.buffer:
                self.pool.idle()

    def _unbuffer(self) -> list[Claim]:
        """Empty the buffer on a stop: what no pool slot will take (then `_release` it)."""
        with self.handoff.frozen() as rest:
            return rest

    # -- rate limits (see throttle.py) ------------------------------------------------------
    def _throttled(self, delivery: Delivery) -> bool:
        """Whether `delivery` must wait for its turn: then it waits in the throttle (or,
        when the worker holds enough waiting, in the broker) and its slot is given back."""
        wait, here = self.throttle.delay(delivery)
        if wait <= 0:
            return False
        self.handoff.give_back()
        if here or not self._defer(delivery, wait):
            self.throttle.hold(delivery, wait)
        return True

    def _defer(self, delivery: Delivery, wait: float) -> bool:
        """Send `delivery`'s message back to the broker, delayed `wait` seconds, in one
        atomic step with its acknowledgement. False if the broker could not be reached."""
        claim = delivery.claim
        later = Outgoing(claim.queue, claim.id, claim.body, time.time() + wait)
        try:
            self.app.broker.finish(ack=[claim], send=[later], token=new_token())
        except BrokerError as exc:
            log.error("could not give back a rate-limited task (%s); held here", exc)
            return False
        with self.held_lock:
            self.held.pop(claim.id, None)
        return True

    def _unthrottle(self) -> None:
        """Put the deliveries whose turn came back at the head of the buffer; behind one
        acknowledged already (solo: by the finish before it), which starts first."""
        buffer = self.handoff.buffer
        if buffer and buffer[0].acked:
            return  # their turn waits for that start (Handoff.peek folds none meanwhile)
        due = self.throttle.due()
        if due:
            self.handoff.put(due, before=True)

    def _unthrottle_all(self) -> list[Claim]:
        return [delivery.claim for delivery in self.throttle.take_all()]

    def _skip_revoked(self, delivery: Delivery) -> None:
        assert self.executor is not None
        self._finished(delivery, self.executor.skip(delivery.claim))

    def _acked_at_start(self) -> frozenset[str]:
        """The tasks acknowledged right before they start (not acks_late, no STARTED
        state): when a pool slot is free, the claim acknowledges the first message it
        takes if it is one of them (one round trip less). None with events on: a task's
        received and started events travel with its own acknowledgement."""
        if self.events_on:
            return frozenset()
        return frozenset(
            name
            for name, task in self.app.tasks.items()
            if not task.option("acks_late") and not task.option("track_started")
        )

    def _top_up(self, broker: Any) -> None:
        """The pool is busy and the buffer low: claim the rest of a batch now, so a slot
        that frees up finds its next claim here rather than waiting for one."""
        handoff = self.handoff
        if not handoff.runs_low() or self.pool.free() or self.stopping.is_set():
            return
        count = self.batch - len(handoff.buffer)
        try:
            claimed = broker.claim(self.queues, count, self.visibility, (), AHEAD)
        except BrokerError as exc:
            if not self.top_up_failing:  # said once while it lasts: tried again every 2 s
                self.top_up_failing = True
                log.error("could not claim more (%s); retrying", exc)
            claimed = Claimed([], None)
        else:
            self.top_up_failing = False
        if self._hold(claimed, count):
            handoff.refilled()
        else:
            handoff.dried()  # tried again a little later (Handoff.dried)

    def _fill(self, broker: Any) -> bool:
        """Claim a batch into the buffer; when there is none, wait for work. True if filled."""
        self.handoff.refilled()
        ack_first = bool(self.ack_first) and self.pool.free() and not self.throttle.on
        claimed = broker.claim(self.queues, self.batch, self.visibility, ack_first, AHEAD)
        # Said as soon as the broker answers, not after the wait for work that follows.
        if self.failures:
            log.warning("broker connection restored")
            self.failures = 0
        if self._hold(claimed, self.batch):
            return True
        timeout = self.idle_wait
        if claimed.next_eta is not None:
            # claimed AHEAD of its eta, held until then by the pool (Executor.execute)
            until = claimed.next_eta - AHEAD - time.time()
            if until <= self.BLOCK_PRECISION:
                # A blocking read times out only on the server's clock tick (100 ms at
                # Redis's default hz): the last stretch before an eta is timed here.
                self.stopping.wait(max(until, 0.0))
                return False
            timeout = min(timeout, until - self.BLOCK_PRECISION)
        turn = self.throttle.next_due()
        if turn is not None:  # a rate-limited task's turn comes
            if turn <= self.BLOCK_PRECISION:
                self.stopping.wait(turn)
                return False
            timeout = min(timeout, turn - self.BLOCK_PRECISION)
        # The wait and the claim after it are one round trip where the broker allows.
        # A stop signal ends the wait at once rather than when it times out (see _on_signal).
        try:
            self.waiting = True
            if self.stopping.is_set():  # the signal came while claiming: don't wait
                return False
            claimed = broker.wait_claim(
                self.queues, timeout, self.batch, self.visibility, ack_first, AHEAD
            )
        except _StopWaiting:
            return False
        finally:
            self.waiting = False
        return self._hold(claimed, self.batch)

    def _hold(self, claimed: Claimed, asked: int | None = None) -> bool:
        """Put claimed messages in the buffer (released on a stop); True if there were any.

        `asked`: how many a claim from all of this worker's queues asked for. Fewer came:
        it took all there was, so none is more urgent than what it holds, and the next
        look for more urgent work (`_look_up`) is due URGENT_EVERY from now, not before
        the first of them starts (an idle worker's task would wait for that round trip)."""
        claims = claimed.claims
        if not claims:
            return False
        if asked is not None and len(claims) < asked:
            self.looked = time.monotonic()
        with self.held_lock:
            for claim in claims:
                self.held[claim.id] = claim
        # the first acknowledged in its claim starts next, at once: the pool has a free slot
        self.handoff.hold(claims, claimed.acked)
        if self.ranked or self.handoff.prioritized:
            self._reorder(min(self.handoff.claim_rank(claim) for claim in claims))
        return True

    # -- urgency (see the module's docstring) ------------------------------------------------
    def _pool_waiting(self) -> list[Delivery]:
        """What the pool holds and has not started (prefork: behind a child's task)."""
        running = {delivery.id for delivery, _ in self.pool.running()}
        return [delivery for delivery in self.pool.held() if delivery.id not in running]

    def _reorder(self, best: int) -> None:
        """Claims of rank `best` were just buffered: what waits in the pool that they
        outrank goes back to the buffer, which hands everything out again in rank order
        (a slot given back for each)."""
        handoff = self.handoff
        if not any(handoff.rank(d) > best for d in self._pool_waiting()):
            return
        taken = self.pool.withdraw()
        handoff.put(taken, before=True)
        for _ in taken:
            handoff.give_back()

    def _look_up(self, broker: Any) -> None:
        """While less urgent claims wait (buffer or pool), look for more urgent work, at
        most every URGENT_EVERY: claim from the queues more urgent than the least urgent
        waiting, as many as wait at that rank; each found takes the place of one of them,
        which goes back to the head of its queue. Not started, it loses nothing."""
        now = time.monotonic()
        if now - self.looked < self.URGENT_EVERY or self.stopping.is_set():
            return
        self.looked = now
        handoff = self.handoff
        ranks = [handoff.rank(d) for d in self._pool_waiting() + list(handoff.buffer)]
        if not ranks:
            return
        worst = max(ranks)
        place, priority = split_rank(worst)
        # more urgent: any message of the queues before `place`, and one of `place`'s own
        # of a priority above the least urgent held
        queues, above = self.queues[:place], None
        if place < len(self.queues) and priority < MAX_PRIORITY:
            queues, above = self.queues[: place + 1], priority
        if not queues:
            return
        count = ranks.count(worst)
        try:
            # nothing early (ahead 0): only what is ready now outranks what is held
            claimed = broker.claim(queues, count, self.visibility, False, 0.0, above)
        except BrokerError as exc:
            log.error("could not look for more urgent work (%s); retrying", exc)
            return
        if self._hold(claimed):
            self._release(handoff.give_up(len(claimed.claims), worst))

    def _finished(self, delivery: Delivery, outcome: Outcome | None = None) -> None:
        with self.held_lock:
            self.held.pop(delivery.id, None)
            self.processed += 1
            if outcome is not None:
                self.totals[outcome.name] += 1
        if outcome is not None:
            if self.timeline is not None:
                self.timeline.done(outcome.state, outcome.runtime)
            if self.metrics is not None:
                self.metrics.task_done(outcome.name, outcome.state, outcome.runtime)

    # -- stopping --------------------------------------------------------------------------
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1 and signum != signal.SIGQUIT:
            log.warning(
                "worker %s: %s received, finishing running tasks (again to stop now)",
                self.hostname,
                name,
            )
            self.stopping.set()
            self._shutting_down(name, "Warm")
            if self.waiting:
                # The broker ends the wait as if woken: whatever the claim behind it takes
                # is held, and released by the warm shutdown. Failing that, the read is
                # interrupted here and its connection dropped.
                self.waiting = False
                if not self.app.broker.interrupt_wait():
                    raise _StopWaiting()
            return
        if self.cold:
            return  # stopping at once already: a third signal would cut the stop short
        self.cold = True
        log.warning("worker %s: %s received, stopping now", self.hostname, name)
        self.stopping.set()
        self._shutting_down(name, "Cold")
        if not self.handing_back:
            raise ColdShutdown()
        # else raised as the warm stop's hand-back ends (see _hand_back)

    def _shutting_down(self, sig: str, how: str) -> None:
        if signals.worker_shutting_down.receivers:
            signals.worker_shutting_down.send(sender=self.hostname, sig=sig, how=how, exitcode=0)

    def _hand_back(self) -> None:
        """A warm stop: what the pool and the buffer hold and have not started goes back
        to its queue. A second signal meanwhile stops at once as it ends: cut short, the
        claims taken back and not yet returned would be claimed still, by no one, until
        their visibility timeout."""
        self.handing_back = True
        try:
            self._release(self.pool.recall() + self._unbuffer() + self._unthrottle_all())
        finally:
            self.handing_back = False
        if self.cold:
            raise ColdShutdown()

    def _cold_stop(self) -> None:
        self.stopping.set()
        with self.handoff.frozen() as rest:  # no claim goes from the buffer to a slot meanwhile
            aborted = self.pool.terminate()
        pending = aborted + rest + self._unthrottle_all()
        if aborted:
            log.warning(
                "worker %s: aborted %d running task(s); they go back to their queue: %s",
                self.hostname,
                len(aborted),
                ", ".join(c.id for c in aborted),
            )
        self._release(pending)
        self._unregister()

    def _release(self, claims: list[Claim]) -> None:
        if not claims:
            return
        try:
            self.app.broker.release(claims)
        except BrokerError as exc:
            log.error(
                "could not return %d message(s) to their queue (%s); "
                "they come back after the visibility timeout (%.0fs)",
                len(claims),
                exc,
                self.visibility,
            )
        with self.held_lock:
            for claim in claims:
                self.held.pop(claim.id, None)

    def _unregister(self) -> None:
        try:
            self.app.broker.unregister(self.hostname)
        except BrokerError:
            pass
        self._event(ev.WORKER_OFFLINE)

    def _event(self, type_: str) -> None:
        """A worker event (worker -E), in a round trip of its own: once a heartbeat."""
        if not self.events_on:
            return
        fields = {
            "hostname": self.hostname,
            "pid": os.getpid(),
            "freq": self.heartbeat_interval,
            "active": len(self.pool.running()),
            "processed": self.processed,
            "pool": self.pool_name,
            "concurrency": self.concurrency,
            "queues": self.queues,
        }
        try:
            self.app.broker.add_events([ev.encode(type_, fields)])
        except BrokerError as exc:
            log.error("could not send %s event: %s", type_, exc)

    # -- revoked tasks -----------------------------------------------------------------------
    def sync_revoked(self) -> None:
        """Read the revocations made since the last look; stop running tasks revoked with
        terminate. Once a heartbeat, so a revocation reaches this worker within one."""
        found = self.app.broker.revoked(self.revoked_after)
        fresh = []
        for task_id, when, terminate in found:
            before = self.revoked.get(task_id)
            if before is None or (terminate and not before[1]):
                fresh.append((task_id, terminate))
            self.revoked[task_id] = (when, terminate or (before is not None and before[1]))
            self.revoked_after = max(self.revoked_after, when)
        if len(self.revoked) > 1000 or not found:
            horizon = self.revoked_after - self.revoke_ttl
            for task_id in [t for t, (when, _) in self.revoked.items() if when < horizon]:
                del self.revoked[task_id]
        for task_id, terminate in fresh:
            if not self.pool.holds(task_id):
                continue  # not here, or in the buffer: skipped when its turn comes
            if self.pool.skip(task_id):  # handed to the pool but not started
                log.info("worker %s: revoked task %s skipped", self.hostname, task_id)
            elif terminate:
                log.warning("worker %s: terminating revoked task %s", self.hostname, task_id)
                if not self.pool.stop_task(task_id):
                    log.warning("task %s finished before it could be terminated", task_id)

    # -- heartbeat -------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        """A heartbeat every `heartbeat_interval`; between them, a look at the control
        channel every CONTROL_EVERY (remote.py)."""
        beat_at = 0.0
        while True:
            if time.monotonic() >= beat_at:
                beat_at = time.monotonic() + self.heartbeat_interval
                try:
                    self.heartbeat()
                except BrokerError as exc:
                    log.error("heartbeat failed: %s", exc)
                except Exception:
                    log.exception("heartbeat failed")
            try:
                self.control()
            except BrokerError as exc:
                log.error("could not read the control channel: %s", exc)
            except Exception:
                log.exception("control command failed")
            left = beat_at - time.monotonic()
            if self.stopping.wait(max(0.0, min(CONTROL_EVERY, left))):
                return

    def control(self) -> None:
        """Run the control commands sent to this worker since the last look."""
        if self.control_cursor is None:  # the first read failed at start: from now on
            self.control_cursor = self.app.broker.commands(None)[0]
        run_commands(self)

    def heartbeat(self) -> None:
        """Renew the claims this worker holds and publish its state."""
        with self.held_lock:
            claims = list(self.held.values())
        broker = self.app.broker
        broker.renew(claims, self.visibility)
        broker.heartbeat(
            self.hostname, json.dumps(self.info()).encode(), self.heartbeat_interval * 3
        )
        self.sync_revoked()
        self._event(ev.WORKER_HEARTBEAT)
        if self.timeline is not None:
            self.timeline.tick(broker)

    def _describe(self, delivery: Delivery, **extra: Any) -> dict[str, Any]:
        claim = delivery.claim
        entry: dict[str, Any] = {"id": claim.id, "queue": claim.queue, **extra}
        try:
            message = delivery.message(self.app.conf.accept_content)
            entry.update(
                name=message.task,
                args=ev.short_repr(message.args),
                kwargs=ev.short_repr(message.kwargs),
                eta=message.eta,
            )
        except Exception:
            entry.update(name="?", args="?", kwargs="?")
        return entry

    def _waiting(self, running: list[tuple[Delivery, float]]) -> list[Delivery]:
        """The deliveries held and not started: in the pool (a prefork child's next), then
        in the buffer. `running`: the pool's running deliveries."""
        ids = {delivery.id for delivery, _ in running}
        waiting = [delivery for delivery in self.pool.held() if delivery.id not in ids]
        waiting += list(self.handoff.buffer)
        return waiting + self.throttle.held() if self.throttle.waiting else waiting

    def info(self) -> dict[str, Any]:
        """What `inspect` and `status` show, published with every heartbeat."""
        running = self.pool.running()
        active = [self._describe(delivery, time_start=started) for delivery, started in running]
        waiting = self._waiting(running)
        reserved = [self._describe(delivery) for delivery in waiting[:100]]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "hostname": self.hostname,
            "pid": os.getpid(),
            "queues": self.queues,
            "pool": self.pool_name,
            "concurrency": self.concurrency,
            "started": self.started_at,
            "registered": sorted(self.app.tasks),
            "active": active,
            "reserved": len(waiting),
            "reserved_tasks": reserved,  # claimed, waiting for a pool slot (the first 100)
            "timezone": str(self.app.conf.timezone),
            "processed": self.processed,
            "total": dict(self.totals),
            "rate_limits": self.throttle.limits(),
            "prefetch_count": self.prefetch,
            "autoscale": self._autoscale_info(),
            "visibility_timeout": self.visibility,
            "heartbeat_interval": self.heartbeat_interval,
            "revoked": len(self.revoked),
            "events": self.events_on,
            **process_urls(self.app.conf.broker_url, self.app.conf.result_backend),
            "rusage": {
                "utime": usage.ru_utime,
                "stime": usage.ru_stime,
                "maxrss_kb": usage.ru_maxrss,
            },
        }
