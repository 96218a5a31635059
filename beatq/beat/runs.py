"""`app.schedules`' runs out of turn (trigger, backfill) and each entry's run history: the
part of ScheduleStore (beat/store.py) that asks the leader to run something, or reads
what it ran. How the leader runs them: beat/store.py's module docstring.

What a paused entry and overlap "skip" mean here (README, Periodic tasks):
- A trigger or a backfill is an explicit request: it runs while the entry is paused (a
  pause stops the schedule's own slots only).
- Overlap "skip" holds: a requested run waits while the entry's last run is unfinished,
  and is sent once that run ends (never two at once; the request is not dropped).
"""

from __future__ import annotations

import builtins
import json
import time
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from ..exceptions import ScheduleError
from .entries import Entry
from .history import BACKFILL, TRIGGER, RunRecord, covered_from
from .specs import SpecError

MAX_BACKFILL = 100_000  # slots one backfill may ask for


class OutOfTurn:
    """ScheduleStore's trigger, backfill and history (`app`, `_known` are the store's)."""

    app: Any
    _known: Callable[[str], Entry | None]  # ScheduleStore's: the entry, or EntryNotFound

    def trigger(self, name: str, run_id: str | None = None) -> Any:
        """Run entry `name` once now, outside its schedule (paused or not). Called on many
        hosts with the same `run_id`, it runs once: the run's task id is the run id. The
        leader sends it within a second. Returns the run's AsyncResult."""
        self._known(name)
        run_id = self._run_id(run_id, "run_id")
        body = {"entry": name, "kind": TRIGGER, "at": time.time()}
        self.app.broker.schedule_request(run_id, json.dumps(body).encode(), _KEEP)
        return self.app.AsyncResult(run_id)

    def backfill(
        self,
        name: str,
        start: Any,
        end: Any,
        spacing: float = 0.0,
        run_id: str | None = None,
    ) -> str:
        """Run every slot of entry `name` in [start, end) that it settled without running
        (paused, missed, given up), oldest first, each once, across a change of leader.
        `spacing`: seconds between two of its runs (0: as fast as the beat sends). Returns
        the request's id (`run_id` if given: asking twice with one id backfills once)."""
        entry = self._known(name)
        zone = self.app.timezone
        begin, until = _instant(name, "start", start, zone), _instant(name, "end", end, zone)
        if until <= begin:
            raise SpecError(name, "end", "must be after start (the range is [start, end))")
        if until > time.time() + 1:
            raise SpecError(
                name,
                "end",
                "is in the future; backfill runs past slots (the schedule runs "
                "the rest): give an end up to now",
            )
        if not isinstance(spacing, (int, float)) or spacing < 0:
            raise SpecError(name, "spacing", f"{spacing!r}: give seconds >= 0")
        if entry is not None:
            count, at = 0, entry.next_after(begin - 1e-6)
            while at is not None and at < until:
                count += 1
                if count > MAX_BACKFILL:
                    raise SpecError(
                        name,
                        "end",
                        f"the range holds more than {MAX_BACKFILL} slots; backfill it in parts",
                    )
                at = entry.next_after(at)
            if not count:
                raise SpecError(name, "start", "the entry has no slot in [start, end)")
        self._check_covered(name, begin)
        request_id = self._run_id(run_id, "run_id")
        body = {"entry": name, "kind": BACKFILL, "start": begin, "end": until, "spacing": spacing}
        self.app.broker.schedule_request(request_id, json.dumps(body).encode(), _KEEP)
        return request_id

    def _check_covered(self, name: str, begin: float) -> None:
        """Refuse a backfill the history cannot tell about: which slots ran is read from
        it, so a slot whose record was dropped (the history is capped) would run again."""
        keep = int(self.app.conf.beat_history_len or 0)
        if keep <= 0:
            raise SpecError(
                name,
                "start",
                "backfill reads which slots ran from the run history, and "
                "beat_history_len is 0 (none is kept): set it above 0 on the beat",
            )
        found = [r for r in map(RunRecord.from_json, self.app.broker.history(name, keep)) if r]
        since = covered_from(found, keep)
        if since is not None and begin < since:
            shown = datetime.fromtimestamp(since, self.app.timezone).isoformat()
            raise SpecError(
                name,
                "start",
                f"the run history keeps its newest {keep} records, back to {shown}: a slot "
                "before that may have run (its record was dropped), and would run twice; "
                f"give a start at or after {shown}, or raise beat_history_len",
            )

    # -- history -----------------------------------------------------------------------------
    def history(self, name: str, limit: int = 100) -> builtins.list[RunRecord]:
        """Entry `name`'s newest `limit` slots, newest first: when each was sent, how late,
        its task id, final state and runtime (read from the result store now; see
        beat/history.py for `runtime` and `took`), or why it did not run. Kept per entry
        up to `beat_history_len` (default 1,000)."""
        if not isinstance(limit, int) or limit < 1:
            raise SpecError(name, "limit", f"{limit!r}: give a whole number >= 1")
        records = [
            r
            for r in (RunRecord.from_json(d) for d in self.app.broker.history(name, limit))
            if r is not None
        ]
        sent = [r for r in records if r.task_id and r.sent_at is not None]
        if sent:
            self._outcomes(sent)
        return records

    def _outcomes(self, records: builtins.list[RunRecord]) -> None:
        from ..result import decode_meta

        store = self.app.broker.results
        found = store.get_results([r.task_id for r in records if r.task_id])
        for record, data in zip(records, found):
            if data is None:
                record.state = "PENDING"
                continue
            try:
                meta = decode_meta(data, self.app.conf.accept_content)
            except Exception:  # a result this host cannot read: say so, never fail
                record.state = "UNKNOWN"
                continue
            record.state = meta.get("status")
            done = meta.get("date_done")
            if isinstance(done, (int, float)):
                record.finished_at = float(done)
                began = max(record.sent_at or 0.0, record.slot)
                record.took = max(float(done) - began, 0.0)
            runtime = meta.get("runtime")
            if isinstance(runtime, (int, float)) and not isinstance(runtime, bool):
                record.runtime = float(runtime)

    @staticmethod
    def _run_id(value: str | None, field_name: str) -> str:
        if value is None:
            return uuid.uuid4().hex
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise ScheduleError(
                f"{field_name} {value!r}: give a non-empty string (200 at most)", field=field_name
            )
        return value


_KEEP = 86400.0  # seconds a done run id is remembered (a repeat within it runs nothing)


def _instant(name: str, key: str, value: Any, zone: tzinfo) -> float:
    """`value` (a datetime, a date, an ISO time or POSIX seconds) as POSIX seconds; a
    naive time is read in the app's zone, as everywhere in beatq."""
    if isinstance(value, bool):
        pass
    elif isinstance(value, (int, float)):
        return float(value)
    elif isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=zone)).timestamp()
    elif isinstance(value, date):
        return datetime.combine(value, datetime.min.time(), zone).timestamp()
    elif isinstance(value, str):
        try:
            return _instant(name, key, datetime.fromisoformat(value), zone)
        except ValueError:
            pass
    elif isinstance(value, timedelta):
        return time.time() - value.total_seconds()  # that long ago
    raise SpecError(name, key, f"{value!r} is not a time; give an ISO time or a datetime")
