"""The beat's record of an entry: the definition it was planned from and how it has run.

The record is the bytes the beat hands the broker beside an entry's state (`info` in
`Backend.beat_plan`, `beat_dispatch` and `EntryState`); the broker stores them and never
looks inside. Three readers parse them, all through `EntryRecord.from_json`: a beat taking
over the leadership (so a restart or a new leader neither repeats nor loses a run), and
`beatq beat status` / `beatq schedule list` and the dashboard, which show them.

The format is one flat JSON object, with the keys the previous version wrote as a dict:

    {"task": "proj.tasks.add", "schedule": "every 10s", "timezone": "Asia/Shanghai",
     "catchup": "latest", "overlap": "allow", "jitter": "0s", "source": "python",
     "queue": "priority.high", "fingerprint": "b1e53ab3624de35a", "settled": 1800000010.0,
     "runs": 2, "missed": 0, "last_slot": 1800000010.0, "last_task_id": "7564…",
     "last_sent": 1800000010.0012, "lateness": 0.0012}

Reading is tolerant, so neither an upgrade nor a rollback loses an entry's last run: a
missing key takes its default, a value of the wrong type is dropped (its default again),
a key this version does not know is kept and written back unchanged, and bytes that are
not a JSON object read as an empty record. Writing leaves out every field that has no
value (and `overlapped` until the first), as the previous version left out the run fields
it had not set: its readers test for the key (`"lateness" in info`), not for null.

Where the broker's own settled instant is known (`EntryState.settled`) it is the truth:
the record's copy is only as new as the last run that was sent.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from ..exceptions import ConfigurationError
from ..timezones import get_zone
from .entries import Entry
from .schedules import format_duration

# stamped as a run is sent: written last, after the rest of the record was made ready
_STAMPS = ("last_sent", "lateness")


@dataclass
class EntryRecord:
    """What the beat keeps of an entry between runs and across leaders.

    >>> record = EntryRecord.from_json(state.info)     # state: an EntryState
    >>> record.runs, record.last_slot, record.zone(app.timezone)
    """

    # the definition the entry was last planned from (see `describe`)
    task: str | None = None
    schedule: str | None = None
    timezone: str | None = None
    catchup: str | None = None
    overlap: str | None = None
    jitter: str | None = None
    source: str | None = None
    queue: str | None = None
    fingerprint: str | None = None
    # how it has run
    settled: float | None = None  # runs at or before this instant are done (or given up)
    runs: int = 0  # runs sent
    missed: int = 0  # runs given up by the catch-up policy
    overlapped: int = 0  # runs skipped because the previous one was unfinished
    last_slot: float | None = None  # the instant the last run sent was for
    last_task_id: str | None = None
    last_sent: float | None = None  # when that run was sent (POSIX seconds)
    lateness: float | None = None  # seconds it was sent after its instant (0: ahead)
    # keys written by another beatq version, kept as they were
    extra: dict[str, Any] = field(default_factory=dict)

    # -- reading -----------------------------------------------------------------------------
    @classmethod
    def from_json(cls, data: bytes | str | None) -> EntryRecord:
        """The record in `data` (None or empty: a new record), however it was written:
        never raises (see the module docstring for what is kept of a bad value)."""
        if not data:
            return cls()
        try:
            fields = json.loads(data)
        except ValueError:
            return cls()
        return cls.from_dict(fields) if isinstance(fields, dict) else cls()

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> EntryRecord:
        """The record in a decoded JSON object, tolerant as `from_json`."""
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in fields.items():
            kind = _KINDS.get(key)
            if kind is None:
                extra[key] = value
            elif value is not None and (checked := kind(value)) is not None:
                values[key] = checked
        return cls(**values, extra=extra)

    def zone(self, default: tzinfo) -> tzinfo:
        """The entry's time zone, or `default` when the record names none (or one this
        host does not know)."""
        if self.timezone:
            try:
                return get_zone(self.timezone)
            except ConfigurationError:
                pass
        return default

    # -- changing ------------------------------------------------------------------------------
    def describe(self, entry: Entry) -> None:
        """Take `entry`'s definition as it is now: what status, list and the dashboard show,
        and the fingerprint that tells the beat whether the definition changed."""
        self.task = entry.task
        self.schedule = str(entry.schedule)
        self.timezone = str(entry.zone)
        self.catchup = entry.catchup
        self.overlap = entry.overlap
        self.jitter = format_duration(entry.jitter) if entry.jitter else "0s"
        self.source = entry.source
        self.queue = entry.options.get("queue")  # for the dashboard's list of queues
        self.fingerprint = entry.fingerprint()

    def copy(self, **changes: Any) -> EntryRecord:
        """A copy with `changes` (values of the fields' types); the copy's `extra` is its
        own. Made for each run the beat sends, so without `dataclasses.replace`'s checks."""
        new = object.__new__(EntryRecord)
        new.__dict__.update(self.__dict__, **changes)
        new.extra = dict(self.extra)
        return new

    # -- writing -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The record as its JSON object: the fields that have a value, then `extra`."""
        fields = self._unstamped()
        for key in _STAMPS:
            if (value := getattr(self, key)) is not None:
                fields[key] = value
        return fields

    def to_json(self) -> bytes:
        """The record's bytes for the broker (UTF-8 JSON)."""
        return json.dumps(self.to_dict()).encode()

    def open_json(self) -> bytes:
        """The record's JSON without its send stamps (`last_sent`, `lateness`) and without
        the closing brace: made ready before a run's instant, and finished by `close_json`
        at it, which costs next to nothing."""
        return json.dumps(self._unstamped()).encode()[:-1]

    @staticmethod
    def close_json(head: bytes, last_sent: float | None, lateness: float | None) -> bytes:
        """`head` (from `open_json`) finished with the send stamps: the same bytes as
        `to_json` of the record with those stamps."""
        # `head` is never "{": a record always has its counters. The common case first,
        # as one formatting: this runs at the run's instant
        if last_sent is not None and lateness is not None:
            return head + b', "last_sent": %r, "lateness": %r}' % (last_sent, lateness)
        if last_sent is not None:
            return head + b', "last_sent": %r}' % last_sent
        if lateness is not None:
            return head + b', "lateness": %r}' % lateness
        return head + b"}"

    def _unstamped(self) -> dict[str, Any]:
        values = self.__dict__
        fields = {key: values[key] for key in _UNSTAMPED if values[key] is not None}
        if not self.overlapped:
            del fields["overlapped"]  # absent until the first, as it always was
        for key, value in self.extra.items():
            fields.setdefault(key, value)
        return fields


# the fields written before the send stamps, in the order they are written
_UNSTAMPED = tuple(
    f.name for f in dataclasses.fields(EntryRecord) if f.name not in (*_STAMPS, "extra")
)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _instant(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if math.isfinite(value) and value >= 0 else None


# how each known key is read: its value, or None to drop it (the field keeps its default)
_KINDS = {
    **dict.fromkeys(
        (
            "task",
            "schedule",
            "timezone",
            "catchup",
            "overlap",
            "jitter",
            "source",
            "queue",
            "fingerprint",
            "last_task_id",
        ),
        _text,
    ),
    **dict.fromkeys(("settled", "last_slot", "last_sent", "lateness"), _instant),
    **dict.fromkeys(("runs", "missed", "overlapped"), _count),
}
