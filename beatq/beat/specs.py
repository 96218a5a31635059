"""A run-time entry's spec: what `app.schedules.add` stores in the broker, and the Entry
the beat makes of it.

A spec is the entry as a schedule file would write it (`every`, `cron` or `at`, plus
task, args, kwargs, options, timezone, catchup, overlap, jitter, start_at, end_at,
enabled, description), as JSON: the one parser of entries (loader.build_entry) reads
specs, files and `beat_schedule` alike, so a store entry means what the same lines in a
YAML file mean. Python values are written in their YAML form here: a timedelta or an
`every` as seconds, a crontab as its fields (a cron string keeps cron's day rule, the
fields Celery's), a datetime as an ISO time.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from ..exceptions import ScheduleError
from .entries import Entry
from .loader import ENTRY_KEYS, EntryError, _suggest, build_entry
from .schedules import ScheduleSyntaxError, crontab, every, once, parse_duration

SOURCE = "store"  # an entry's source when it was added at run time
KINDS = ("every", "cron", "at")
# what add() and update() take besides the schedule: the spec's own keys
FIELDS = tuple(key for key in ENTRY_KEYS if key not in KINDS)


class SpecError(ScheduleError):
    """A refused spec: the entry, the field and the fix, in one line."""

    def __init__(self, name: str, field: str | None, reason: str) -> None:
        where = f"schedule entry {name!r}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {reason}")
        self.entry, self.field = name, field


def schedule_fields(name: str, value: Any) -> dict[str, Any]:
    """`schedule` (what YAML takes, or a Python schedule) as one spec key: every, cron or at.

    A string is a duration ("30s", "1h30m"), else an ISO time, else a cron expression."""
    if isinstance(value, timedelta) or (
        isinstance(value, (int, float)) and not isinstance(value, bool)
    ):
        return {"every": parse_duration(value).total_seconds()}
    if isinstance(value, every):
        if value.anchor != every(value.interval).anchor:
            raise SpecError(
                name, "schedule", "an every() with its own anchor cannot be stored; drop anchor="
            )
        return {"every": value.seconds}
    if hasattr(value, "run_every") and not isinstance(value, crontab):
        return {"every": parse_duration(value.run_every).total_seconds()}
    if isinstance(value, crontab):
        if value.day_or:  # read from a cron string: keep cron's either-day rule
            return {"cron": str(value)}
        return {"cron": {k: _field(v) for k, v in value.spec.items()}}
    if isinstance(value, once):
        return {"at": value.at.isoformat()}
    if isinstance(value, datetime):
        return {"at": value.isoformat()}
    if isinstance(value, date):
        return {"at": value.isoformat()}
    if isinstance(value, Mapping):  # crontab fields, as in a file
        return {"cron": dict(value)}
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return {"every": parse_duration(text).total_seconds()}
        except ScheduleSyntaxError:
            pass
        try:
            datetime.fromisoformat(text)
        except ValueError:
            return {"cron": text}
        return {"at": text}
    raise SpecError(
        name,
        "schedule",
        f"{value!r} is not a schedule; give a duration ('30s', a timedelta), a cron "
        "string ('*/5 * * * *') or crontab(...), or an ISO time / datetime for one run",
    )


def _field(value: Any) -> Any:
    if isinstance(value, (str, int)):
        return value
    return ",".join(str(v) for v in sorted(value))


def _plain(key: str, value: Any) -> Any:
    """A field's value as JSON can keep it (times as ISO, durations as seconds)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if key == "args" and isinstance(value, tuple):
        return list(value)
    return value


def make_spec(name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The spec of `fields` (add's arguments: `schedule` and FIELDS), unchecked."""
    unknown = [k for k in fields if k not in (*FIELDS, "schedule", *KINDS)]
    if unknown:
        raise SpecError(
            name, unknown[0], f"unknown field{_suggest(unknown[0], (*FIELDS, 'schedule'))}"
        )
    spec: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        if key == "schedule":
            spec.update(schedule_fields(name, value))
        else:
            spec[key] = _plain(key, value)
    return spec


def encode(spec: Mapping[str, Any], created: float | None = None) -> bytes:
    """The spec's bytes for the broker, stamped with when it was created and changed."""
    now = _time.time()
    stamped = {**spec, "source": SOURCE, "created": created or now, "updated": now}
    try:
        return json.dumps(stamped, sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        name = spec.get("task", "?")
        raise ScheduleError(
            f"schedule entry of task {name!r}: args, kwargs and options must be JSON "
            f"(numbers, strings, lists, dicts), to be stored in the broker: {exc}"
        ) from None


def decode(data: bytes) -> dict[str, Any]:
    """A stored spec (never raises: bytes that are not a JSON object read as {})."""
    try:
        found = json.loads(data)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def entry_of(
    name: str, spec: Mapping[str, Any], zone: Any, registered: Iterable[str] | None = None
) -> Entry:
    """The Entry of a stored spec; SpecError names the entry, the field and the fix."""
    fields = {k: v for k, v in spec.items() if k in ENTRY_KEYS}
    try:
        return build_entry(name, fields, zone, SOURCE, registered)
    except EntryError as exc:
        field = "schedule" if exc.key in KINDS else exc.key
        raise SpecError(name, field, str(exc)) from None


def check_fires(entry: Entry, now: float) -> None:
    """Refuse an entry that would never run again (as `schedule check` refuses one)."""
    if entry.next_after(now) is not None:
        return
    if entry.end_at is not None and entry.end_at <= now:
        raise SpecError(entry.name, "end_at", "is in the past: the entry would never run")
    raise SpecError(
        entry.name,
        "schedule",
        f"{entry.schedule} has no run after now: the entry would never run; give a time to come",
    )
