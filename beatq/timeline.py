"""The short rolling history behind the dashboard's charts: how the last hour went.

Each worker and the beat leader count what they do into the current interval (`step`
seconds, aligned to the epoch, so every writer's intervals line up), in process, and
write one sample per interval to the broker (`Timeline.add_samples` in brokers/roles.py)
from a thread that makes round trips anyway: the worker's heartbeat, the beat's loop.
Counting a task is two additions under a lock: never a round trip per task.

    a worker's   {"t": start, "w": name, "ok": n, "fail": n, "rt": {bucket: n}, "depth": {q: n}}
    the beat's   {"t": start, "b": holder, "runs": n, "late": {bucket: n}, "late_max": seconds}

Run times and lateness are kept as counts per bucket (`BOUNDS`, a factor of √2 apart), so
the samples of many workers merge exactly and their percentiles are read from the merged
counts, to within one bucket. The broker keeps `timeline_keep` seconds of samples (an hour
by default), and at most `MAXLEN` of them. `chart` turns them into the dashboard's series.

Settings: `timeline_interval` (seconds per sample, 10; 0 turns the timeline off) and
`timeline_keep` (seconds kept, 3600).
"""

from __future__ import annotations

import abc
import json
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import states
from .exceptions import BrokerError

if TYPE_CHECKING:
    from .brokers.roles import Backend

#: Bucket upper bounds, seconds: 50 µs to about 20 minutes, each √2 times the last.
BOUNDS = tuple(5e-5 * 2 ** (i / 2) for i in range(50))
MAXLEN = 50_000  # samples kept at most: an hour of 10-s samples from about 130 writers
PENDING = 30  # samples a writer keeps while the broker is down, then drops the oldest


def bucket_value(index: int) -> float:
    """What a bucket stands for: the geometric middle of its bounds, seconds."""
    if index <= 0:
        return BOUNDS[0] / 2
    if index >= len(BOUNDS):
        return BOUNDS[-1]
    return math.sqrt(BOUNDS[index - 1] * BOUNDS[index])


def quantile(counts: dict[int, int], q: float) -> float | None:
    """The `q` quantile (0..1) of bucket counts, or None when there are none."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            return bucket_value(index)
    return bucket_value(max(counts))


class _Writer(abc.ABC):
    """One process's counts, by interval, and the samples not written yet.

    A count goes to the interval of the instant it is made (an interval is still open
    until its writer's next tick after it ends); `tick` closes the intervals that ended."""

    def __init__(self, name: str, step: float, keep: float) -> None:
        self.name, self.step, self.keep = name, float(step), float(keep)
        self.lock = threading.Lock()
        self.open: dict[float, dict[str, Any]] = {}  # interval start -> its sample so far
        self.current = self.interval(time.time())  # the interval of the last tick
        self.pending: list[tuple[float, bytes]] = []

    def interval(self, now: float) -> float:
        """The start of the interval `now` falls in."""
        return now - now % self.step

    @abc.abstractmethod
    def _empty(self) -> dict[str, Any]:
        """A sample of an interval nothing was counted in yet."""

    def _counts(self, now: float) -> dict[str, Any]:
        # with `lock` held: the sample of `now`'s interval
        start = now - now % self.step
        counts = self.open.get(start)
        if counts is None:
            counts = self.open[start] = self._empty()
        return counts

    def _close(self, now: float, last: dict[str, Any] | None = None) -> None:
        """Turn the intervals that ended before `now` into samples to write; `last` adds to
        the sample of the one that ended last (made if nothing was counted in it)."""
        current = self.interval(now)
        with self.lock:
            if last is not None:
                self._counts(current - self.step).update(last)
            ended = sorted(start for start in self.open if start < current)
            for start in ended:
                sample = {"t": start, **self.open.pop(start)}  # unique: writer and interval
                data = json.dumps(sample, separators=(",", ":")).encode()
                self.pending.append((start, data))
            del self.pending[:-PENDING]
            self.current = current

    def due(self, now: float) -> bool:
        """Whether an interval has ended since the last tick."""
        return self.interval(now) > self.current

    def write(self, broker: Backend) -> None:
        """Write the samples not written yet; kept for the next try if the broker fails."""
        with self.lock:
            pending, self.pending = self.pending, []
        if not pending:
            return
        try:
            broker.add_samples(pending, self.keep, MAXLEN)
        except BrokerError:
            with self.lock:
                self.pending[:0] = pending
                del self.pending[:-PENDING]
            raise


class WorkerTimeline(_Writer):
    """What a worker counts: tasks succeeded and failed, their run times, and (read from
    the broker once per interval) the depth of its queues."""

    def __init__(self, name: str, queues: Sequence[str], step: float, keep: float) -> None:
        super().__init__(name, step, keep)
        self.queues = list(dict.fromkeys(queues))

    def _empty(self) -> dict[str, Any]:
        return {"w": self.name, "ok": 0, "fail": 0, "rt": {}}

    def done(self, state: str, runtime: float | None, now: float | None = None) -> None:
        """Count a task that finished here (any thread)."""
        if state == states.SUCCESS:
            key = "ok"
        elif state == states.FAILURE:
            key = "fail"
        else:
            return
        now = time.time() if now is None else now
        with self.lock:
            counts = self._counts(now)
            counts[key] += 1
            if runtime is not None:
                index = bisect_left(BOUNDS, runtime)
                runtimes = counts["rt"]
                runtimes[index] = runtimes.get(index, 0) + 1

    def tick(self, broker: Backend, now: float | None = None) -> None:
        """From the heartbeat: once an interval has ended, read the queues' depths and
        write its sample (one round trip per queue and one for the samples). A worker
        writes a sample every interval, idle or not: its queues' depths."""
        now = time.time() if now is None else now
        if self.due(now):
            depth = {queue: broker.queue_length(queue) for queue in self.queues}
            self._close(now, {"depth": depth})
        self.write(broker)


class BeatTimeline(_Writer):
    """What the beat leader counts: runs sent and how late each went out. An interval
    with no run sent writes nothing: a gap in the chart, not a lateness of zero."""

    def _empty(self) -> dict[str, Any]:
        return {"b": self.name, "runs": 0, "late": {}, "late_max": 0.0}

    def dispatched(self, lateness: float, now: float | None = None) -> None:
        """Count a run sent `lateness` seconds after its slot."""
        lateness = max(lateness, 0.0)
        now = time.time() if now is None else now
        with self.lock:
            counts = self._counts(now)
            counts["runs"] += 1
            index = bisect_left(BOUNDS, lateness)
            counts["late"][index] = counts["late"].get(index, 0) + 1
            counts["late_max"] = max(counts["late_max"], lateness)

    def tick(self, broker: Backend, now: float | None = None) -> None:
        """From the leader's loop: once an interval has ended, write its sample."""
        now = time.time() if now is None else now
        if self.due(now):
            self._close(now)
        self.write(broker)


def worker_timeline(app: Any, name: str, queues: Sequence[str]) -> WorkerTimeline | None:
    """The worker's timeline as the app's settings say (None: turned off)."""
    step = float(app.conf.timeline_interval or 0)
    return WorkerTimeline(name, queues, step, app.conf.timeline_keep) if step > 0 else None


def beat_timeline(app: Any, name: str) -> BeatTimeline | None:
    """The beat's timeline as the app's settings say (None: turned off)."""
    step = float(app.conf.timeline_interval or 0)
    return BeatTimeline(name, step, app.conf.timeline_keep) if step > 0 else None


def _merge(into: dict[int, int], counts: dict[str, int]) -> None:
    for index, count in counts.items():
        into[int(index)] = into.get(int(index), 0) + int(count)


def _at_most(value: float | None, limit: float | None) -> float | None:
    return value if value is None or limit is None else min(value, limit)


def chart(
    samples: Sequence[tuple[float, bytes]], now: float, step: float, span: float
) -> dict[str, Any]:
    """The dashboard's series over the `span` seconds before `now`, one point per ended
    interval of `step` seconds, oldest first (None where no writer reported):

        t            interval starts (POSIX seconds)
        ok, fail     tasks succeeded, failed, per second
        p50, p99     run time percentiles, seconds
        depth        {queue: ready messages} (the most any worker read)
        late_p50, late_max   beat lateness, seconds
    """
    last = math.floor(now / step) * step - step  # the last interval that has ended
    count = max(1, int(span // step))
    starts = [last - step * i for i in range(count - 1, -1, -1)]
    index = {round(t / step): n for n, t in enumerate(starts)}
    ok: list[float | None] = [None] * count
    fail: list[float | None] = [None] * count
    runtimes: list[dict[int, int]] = [{} for _ in starts]
    late: list[dict[int, int]] = [{} for _ in starts]
    late_max: list[float | None] = [None] * count
    depth: dict[str, list[int | None]] = {}
    for at, data in samples:
        n = index.get(round(at / step))
        if n is None:
            continue
        try:
            sample = json.loads(data)
        except ValueError:
            continue
        if "w" in sample:
            ok[n] = (ok[n] or 0) + sample.get("ok", 0) / step
            fail[n] = (fail[n] or 0) + sample.get("fail", 0) / step
            _merge(runtimes[n], sample.get("rt", {}))
            for queue, length in sample.get("depth", {}).items():
                series = depth.setdefault(queue, [None] * count)
                series[n] = max(series[n] or 0, int(length))
        elif "b" in sample:
            _merge(late[n], sample.get("late", {}))
            late_max[n] = max(late_max[n] or 0.0, float(sample.get("late_max", 0.0)))
    return {
        "step": step,
        "t": starts,
        "ok": ok,
        "fail": fail,
        "p50": [quantile(c, 0.5) for c in runtimes],
        "p99": [quantile(c, 0.99) for c in runtimes],
        "depth": dict(sorted(depth.items())),
        # a bucket's middle may pass the largest value in it: never shown above the max
        "late_p50": [_at_most(quantile(c, 0.5), m) for c, m in zip(late, late_max)],
        "late_max": late_max,
    }
