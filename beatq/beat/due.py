"""Celery's schedule protocol, answered from `next_after`: `is_due` and `remaining_estimate`.

beatq's beat asks a schedule only for `next_after(dt)`. Code written against Celery's
`celery.schedules` asks two other questions, given the time of the last run:

- `remaining_estimate(last_run_at)`: a timedelta from now to the next run after
  `last_run_at` (negative when that run is overdue);
- `is_due(last_run_at)`: `schedstate(is_due, next)`: whether a run is due now, and the
  seconds until the scheduler should ask again: until the next run after this one when
  due (`(True, 20)`: run now, ask again in 20 s), until the pending run when not.

"Now" is `nowfun()` when the schedule was given one (as Celery's `nowfun=`), else the
clock. The schedule's zone (where a crontab's hours are read) is that of `nowfun()`'s
result, else the `timezone` of the `app=` it was given, else UTC. A naive `last_run_at`
is read in that zone, as beatq reads every naive datetime in the app's zone (SPEC §4).

An interval (`every`, `schedule`) runs on beatq's fixed grid: when `last_run_at` is a
slot of it, as the beat's own runs are, the answers equal Celery's
(`last_run_at + run_every - now`); a `last_run_at` between slots is due at the next slot.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, NamedTuple

UTC = timezone.utc


class schedstate(NamedTuple):  # noqa: N801 (Celery's name)
    """What `is_due` answers: run now or not, and the seconds until asking again."""

    is_due: bool
    next: float


class DueProtocol:
    """`is_due`/`remaining_estimate` for a schedule class that has `next_after(dt)`."""

    nowfun: Callable[[], datetime] | None = None
    app: Any = None

    def next_after(self, dt: datetime) -> datetime | None:  # pragma: no cover (the schedule's)
        raise NotImplementedError

    @property
    def tz(self) -> tzinfo:
        """The zone the schedule is read in (see the module docstring)."""
        return self._now_and_zone()[1]

    def now(self) -> datetime:
        """The current time, aware, in the schedule's zone."""
        return self._now_and_zone()[0]

    def _now_and_zone(self) -> tuple[datetime, tzinfo]:
        zone = getattr(self.app, "timezone", None) or UTC
        if self.nowfun is None:
            return datetime.now(zone), zone
        now = self.nowfun()
        if now.tzinfo is None:
            return now.replace(tzinfo=zone), zone
        return now, now.tzinfo

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """The time from now until the next run after `last_run_at`; negative when overdue.

        `timedelta.max` when the schedule has no run left after it."""
        now, zone = self._now_and_zone()
        return self._remaining(last_run_at, now, zone)

    def is_due(self, last_run_at: datetime) -> schedstate:
        """`(True, seconds to the run after this one)` when a run after `last_run_at` is due
        now, else `(False, seconds until it is)`."""
        now, zone = self._now_and_zone()
        left = self._remaining(last_run_at, now, zone).total_seconds()
        if left > 0:
            return schedstate(False, left)
        return schedstate(True, max(self._remaining(now, now, zone).total_seconds(), 0.0))

    def _remaining(self, last_run_at: datetime, now: datetime, zone: tzinfo) -> timedelta:
        if last_run_at.tzinfo is None:
            last_run_at = last_run_at.replace(tzinfo=zone)
        following = self.next_after(last_run_at.astimezone(zone))
        if following is None:
            return timedelta.max
        return following - now
