"""The dashboard's schedule entries: read one with its run history, and add, change, remove,
run now and backfill the store's entries through `app.schedules` (beat/store.py).

    GET  /api/schedules/NAME?limit=N        the entry, its form values and its newest runs
    POST /api/schedules                     add a store entry (the form's fields)
    POST /api/schedules/NAME/update         change one (the form's fields, name aside)
    POST /api/schedules/NAME/remove
    POST /api/schedules/NAME/trigger        one run now: the run's task id
    POST /api/schedules/NAME/backfill       {"start": ISO, "end": ISO}, naive in the entry's zone

Nothing is checked here that `app.schedules` checks: the form's fields go to `add` and
`update` as the CLI's options do, and a refusal (a ScheduleError) comes back with the
field it names, for the page to show beside that field. What is done here is only the
form's own shape: JSON text for args and kwargs, `queue` into the options, an empty
box meaning the default.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ..beat.history import TRIGGER, RunRecord
from ..beat.record import EntryRecord
from ..beat.specs import SOURCE, SpecError, decode, entry_of
from ..beat.store import EntryNotFound
from ..exceptions import ScheduleError
from ..timezones import get_zone
from . import timefmt

log = logging.getLogger("beatq.dashboard")

# the form's boxes; `name` only when adding
FORM = (
    "name",
    "task",
    "schedule",
    "args",
    "kwargs",
    "queue",
    "timezone",
    "catchup",
    "overlap",
    "jitter",
    "start_at",
    "end_at",
)
REQUIRED = ("task", "schedule")  # an empty box is sent as it is, for the API to refuse
HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000


class ScheduleActions:
    """What the page does with schedule entries, each call on the board's broker thread:
    `call(fn, *args)` runs `fn` there, `changed()` says the board's snapshot is stale."""

    def __init__(self, app: Any, call: Callable[..., Any], changed: Callable[[], None]) -> None:
        self.app = app
        self.call = call
        self.changed = changed

    # -- reading ---------------------------------------------------------------------------
    def detail(self, name: str, limit: int = HISTORY_LIMIT) -> dict[str, Any]:
        """Entry `name`: where it comes from, whether the page may change it, its form
        values (a store entry's), and its newest `limit` runs, latest slot first."""
        return self.call(self._detail, name, limit)

    def _detail(self, name: str, limit: int) -> dict[str, Any]:
        entry = self.app.schedules.get(name)
        zone = self._zone(name, entry.spec)
        # newest slot first; a slot run again (backfilled) next to the record of its skip
        records = sorted(self.app.schedules.history(name, limit), key=lambda r: -r.slot)
        runs = [_run(r, zone) for r in records]
        return {
            "name": entry.name,
            "source": entry.source,
            "editable": entry.source == SOURCE,
            "task": entry.task,
            "schedule": entry.schedule,
            "zone": str(zone),
            "paused": entry.paused,
            "form": _form_values(entry.name, entry.spec) if entry.source == SOURCE else None,
            "runs": runs,
        }

    def _zone(self, name: str, spec: dict[str, Any]) -> Any:
        """The entry's zone: the leader's record of it, else its spec's, else the app's."""
        state = self.app.broker.beat_entry(name)
        if state is not None:
            return EntryRecord.from_json(state.info).zone(self.app.timezone)
        try:
            return get_zone(spec["timezone"]) if spec.get("timezone") else self.app.timezone
        except ValueError:  # a ConfigurationError: a zone this host does not know
            return self.app.timezone

    # -- acting ----------------------------------------------------------------------------
    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str):
            raise SpecError(str(name), "name", "give the entry's name, a string")
        fields = _fields(name, {k: v for k, v in body.items() if k != "name"}, {})
        entry = self._act(lambda: self.app.schedules.add(name, **fields))
        log.info("dashboard: added schedule entry %r", name)
        return {"entry": entry.name, "added": True}

    def update(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        given = body.get("name", name)
        if given != name:
            raise SpecError(
                name, "name", "an entry cannot be renamed; add one under the new name and "
                "remove this one",
            )  # fmt: skip
        current = self.call(lambda: self.app.schedules.get(name))
        options = dict(current.spec.get("options") or {}) if current.source == SOURCE else {}
        fields = _fields(name, {k: v for k, v in body.items() if k != "name"}, options)
        self._act(lambda: self.app.schedules.update(name, **fields))
        log.info("dashboard: changed schedule entry %r", name)
        return {"entry": name, "updated": True}

    def remove(self, name: str) -> dict[str, Any]:
        self._act(lambda: self.app.schedules.remove(name))
        log.info("dashboard: removed schedule entry %r", name)
        return {"entry": name, "removed": True}

    def trigger(self, name: str) -> dict[str, Any]:
        result = self._act(lambda: self.app.schedules.trigger(name))
        log.info("dashboard: ran schedule entry %r now (task %s)", name, result.id)
        return {"entry": name, "task_id": result.id}

    def backfill(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Backfill [start, end), given as times on the entry's wall clock (an offset, if
        written, wins); the answer says how many slots in the range did not run."""
        unknown = [k for k in body if k not in ("start", "end")]
        if unknown:
            raise SpecError(name, unknown[0], 'unknown field; send {"start": ..., "end": ...}')

        def act() -> dict[str, Any]:
            entry = self.app.schedules.get(name)
            zone = self._zone(name, entry.spec)
            start, end = (_in_zone(body.get(k), zone) for k in ("start", "end"))
            request_id = self.app.schedules.backfill(name, start, end)
            missing = self._missing(name, entry, start, end)
            return {
                "entry": name,
                "request_id": request_id,
                "slots": missing,
                "zone": str(zone),
            }

        done = self._act(act)
        log.info("dashboard: backfill %s of schedule entry %r", done["request_id"], name)
        return done

    def _missing(self, name: str, entry: Any, start: Any, end: Any) -> int | None:
        """How many slots of a store entry in [start, end) never ran (None: an entry of a
        file or code, whose schedule this process may not see)."""
        if entry.source != SOURCE:
            return None
        try:
            built = entry_of(name, entry.spec, self.app.timezone)
        except ScheduleError:  # asked already: say what was asked, not a refusal
            return None
        begin, until = (
            v.timestamp() if isinstance(v, datetime) else float(v) for v in (start, end)
        )
        kept = max(int(self.app.conf.beat_history_len or 0), 1)
        records = (RunRecord.from_json(d) for d in self.app.broker.history(name, kept))
        ran = {r.slot for r in records if r and r.sent_at is not None and r.kind != TRIGGER}
        count, at = 0, built.next_after(begin - 1e-6)
        while at is not None and at < until:
            count += at not in ran
            at = built.next_after(at)
        return count

    def _act(self, fn: Any) -> Any:
        done = self.call(fn)
        self.changed()
        return done


def _fields(name: str, body: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The form's values as `app.schedules.add` / `update` take them."""
    unknown = [k for k in body if k not in FORM[1:]]
    if unknown:
        shown = ", ".join(FORM[1:])
        raise SpecError(name, unknown[0], f"unknown field; the form sends: {shown}")
    fields: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, str) and key not in REQUIRED:
            value = value.strip() or None  # an empty box: the default
        if key in ("args", "kwargs") or (
            key == "schedule" and isinstance(value, str) and value.lstrip().startswith("{")
        ):
            value = _json_box(name, key, value)
        if key == "queue":
            options = {k: v for k, v in options.items() if k != "queue"}
            if value is not None:
                options["queue"] = value
            continue
        fields[key] = value
    if "queue" in body:
        fields["options"] = options
    return fields


def _json_box(name: str, key: str, value: Any) -> Any:
    """args / kwargs as typed: JSON text (empty: none); a schedule written as a JSON
    object is cron's fields, as a file's `cron:` mapping."""
    example = {"args": "[1, 2]", "kwargs": '{"x": 1}'}.get(key, '{"minute": 0, "hour": 7}')
    if value is None:
        return [] if key == "args" else {}
    if not isinstance(value, str):
        return value  # JSON already: add() says if it is the wrong kind
    try:
        return json.loads(value)
    except ValueError as exc:
        raise SpecError(name, key, f"is not JSON ({exc}); give e.g. {example}") from None


def _form_values(name: str, spec: dict[str, Any]) -> dict[str, str]:
    """A store entry's spec as the form's boxes show it."""
    kind = next((k for k in ("cron", "every", "at") if spec.get(k) is not None), None)
    schedule = spec.get(kind) if kind else ""
    if kind == "every":
        schedule = f"{float(schedule):.6f}".rstrip("0").rstrip(".") + "s"
    elif kind == "cron" and isinstance(schedule, dict):
        schedule = json.dumps(schedule)  # cron's fields (both day fields must match)
    options = spec.get("options") or {}
    values = {
        "name": name,
        "task": spec.get("task") or "",
        "schedule": str(schedule),
        "args": json.dumps(spec.get("args") or []),
        "kwargs": json.dumps(spec.get("kwargs") or {}),
        "queue": str(options.get("queue") or ""),
    }
    for key in ("timezone", "catchup", "overlap", "jitter", "start_at", "end_at"):
        value = spec.get(key)
        if key in ("start_at", "end_at") and isinstance(value, (int, float)):
            value = datetime.fromtimestamp(value, timezone.utc).isoformat()  # POSIX seconds
        values[key] = "" if value is None else str(value)
    return values


def _in_zone(value: Any, zone: Any) -> Any:
    """A time typed on the entry's wall clock, made aware in its zone; anything else is
    given on as it is, for backfill() to take or refuse."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return value
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)
    return value


def _run(record: Any, zone: Any) -> dict[str, Any]:
    """One slot of the history, its times on the entry's wall clock."""
    if record.sent_at is None:
        outcome = "skipped"
    elif record.state == "FAILURE":
        outcome = "failed"
    elif record.state == "SUCCESS":
        outcome = "ok"
    else:
        outcome = "pending"
    took = record.took
    return {
        "slot": record.slot,
        "slot_local": timefmt.zoned(record.slot, zone),
        "slot_utc": timefmt.utc(record.slot),
        "kind": record.kind,
        "sent": timefmt.zoned(record.sent_at, zone) if record.sent_at is not None else None,
        "lateness_ms": round(record.lateness * 1000, 1) if record.lateness is not None else None,
        "task_id": record.task_id,
        "state": record.state,
        "took_s": round(took, 4) if took is not None else None,
        "took": timefmt.duration(took) if took is not None else None,
        "reason": record.reason,
        "outcome": outcome,
    }


def waiting_rows(broker: Any, zone: Any, planned: set[str]) -> list[dict[str, Any]]:
    """Store entries no leader has planned yet, as rows of the schedules table."""
    _, specs = broker.schedule_specs()
    rows = []
    for name in sorted(set(specs) - planned):
        spec = decode(specs[name])
        try:
            entry = entry_of(name, spec, zone)
            shown, entry_zone = str(entry.schedule), str(entry.zone)
        except ScheduleError:
            shown, entry_zone = None, str(zone)
        rows.append(
            {
                "name": name,
                "task": spec.get("task"),
                "schedule": shown,
                "zone": entry_zone,
                "source": SOURCE,
                "editable": True,
                "queue": (spec.get("options") or {}).get("queue"),
                "paused": False,
                "runs": 0,
                "missed": 0,
                "overlapped": 0,
                "last_run": None,
                "last_run_utc": None,
                "last_task_id": None,
                "lateness_ms": None,
                "next_run": None,
                "next_run_utc": None,
                "next_in": "waiting for the beat leader",
            }
        )
    return rows


def refusal(exc: ScheduleError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body of a refusal: 404 for an unknown entry, else 400, with the
    field it names (None: about no one field)."""
    status = 404 if isinstance(exc, EntryNotFound) else 400
    return status, {"error": str(exc), "field": getattr(exc, "field", None)}


def history_limit(query: dict[str, list[str]]) -> int:
    """`?limit=N` (1..1000; default 100)."""
    text = (query.get("limit") or [str(HISTORY_LIMIT)])[0]
    if not text.isdigit() or not 1 <= int(text) <= MAX_HISTORY_LIMIT:
        raise ValueError(f"limit {text[:20]!r}: give a whole number from 1 to {MAX_HISTORY_LIMIT}")
    return int(text)
