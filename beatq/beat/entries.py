"""A beat entry: what to send, on which schedule, in which zone, with which policies."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

from .schedules import Schedule

CATCHUP = ("skip", "latest", "all")
OVERLAP = ("allow", "skip")


@dataclass
class Entry:
    name: str
    task: str
    schedule: Schedule
    zone: tzinfo
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    catchup: str = "latest"
    catchup_window: timedelta = timedelta(hours=1)
    overlap: str = "allow"
    jitter: timedelta = timedelta(0)
    enabled: bool = True
    source: str = "python"  # "file.yaml:12" for entries from a file; "store" (app.schedules)
    start_at: float | None = None  # no run before this POSIX instant ...
    end_at: float | None = None  # ... nor at or after this one

    def next_after(self, instant: float) -> float | None:
        """The next run strictly after POSIX instant `instant`, as a POSIX instant, within
        [start_at, end_at)."""
        if self.start_at is not None and instant < self.start_at:
            instant = self.start_at - 1e-6  # a run at start_at itself is the first
        at = self.schedule.next_after(datetime.fromtimestamp(instant, self.zone))
        if at is None:
            return None
        found = at.timestamp()
        return None if self.end_at is not None and found >= self.end_at else found

    def slots_between(
        self, after: float, until: float, limit: int
    ) -> tuple[list[float], int, float | None]:
        """The runs in (after, until], the last `limit` of them, how many there were, and
        the next run after `until` (None: there is none)."""
        slots: list[float] = []
        count = 0
        at = self.next_after(after)
        while at is not None and at <= until:
            count += 1
            slots.append(at)
            if len(slots) > limit:
                slots.pop(0)
            at = self.next_after(at)
        return slots, count, at

    def fingerprint(self) -> str:
        """Changes when the definition changes (history is kept by name regardless)."""
        data = [
            self.task,
            str(self.schedule),
            str(self.zone),
            self.args,
            self.kwargs,
            self.options,
            self.catchup,
            self.catchup_window.total_seconds(),
            self.overlap,
            self.jitter.total_seconds(),
        ]
        if self.start_at is not None or self.end_at is not None:
            data.append([self.start_at, self.end_at])  # only then: older fingerprints hold
        text = json.dumps(data, sort_keys=True, default=repr)
        return hashlib.sha1(text.encode()).hexdigest()[:16]
