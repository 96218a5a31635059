"""An entry's run history: one record per slot the leader settled, kept in the broker.

The leader writes a record for every slot it settles, run or not, after the fenced
dispatch that settled it (a separate round trip, after the run's message is out: a
run is never later for its history): when it was sent, how late, the task id, or why
it did not run. The task's outcome is not written by anyone: `app.schedules.history`
reads it from the result store when asked: its state, when it finished, how long its body
ran (`runtime`, the worker's own measure, stored with SUCCESS and with a FAILURE the task
raised) and how long after its run was sent it finished (`took`: the wait in the queue
and the run together; all there is for a result stored without a runtime).

Slots before an entry's `start_at` or at and after its `end_at` have no record, and need
no reason: they are not slots of the entry. Its schedule is bounded there
(Entry.next_after never yields one), so the leader never settles them, a backfill never
finds them, and `schedule show` has no next run once `end_at` is past.

Each entry keeps its newest `beat_history_len` records (1,000 by default; 0 keeps none).
A record is one flat JSON object, read tolerantly (a missing key is None).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

# why a slot did not run
PAUSED = "paused"
OVERLAP = "overlap: the previous run was unfinished"
CAUGHT_UP = "caught up: given up by the catch-up policy"
NO_LEADER = "missed while no beat led"

# what put the slot there
SCHEDULE, TRIGGER, BACKFILL = "schedule", "trigger", "backfill"


@dataclass
class RunRecord:
    """One slot of an entry, as its history keeps it."""

    slot: float  # the instant the run was for (a trigger: when it was asked for)
    kind: str = SCHEDULE  # schedule, trigger or backfill
    sent_at: float | None = None  # None: not sent (see reason)
    lateness: float | None = None  # seconds after its slot it was sent (0: ahead)
    task_id: str | None = None
    reason: str | None = None  # why it did not run
    at: float | None = None  # when the leader made the record (see covered_from)
    # read from the result store when the history is read, never stored
    state: str | None = None
    finished_at: float | None = None
    took: float | None = None  # seconds from its sending (or its slot, if later) to its end
    runtime: float | None = None  # seconds its body ran (the worker's measure), if stored

    def to_json(self) -> bytes:
        """The stored record: the fields that have a value, but the ones read later."""
        return encode(
            self.slot, self.kind, self.sent_at, self.lateness, self.task_id, self.reason, self.at
        )

    @classmethod
    def from_json(cls, data: bytes) -> RunRecord | None:
        """The record in `data`, or None when it is not one."""
        try:
            found = json.loads(data)
        except ValueError:
            return None
        if not isinstance(found, dict) or not isinstance(found.get("slot"), (int, float)):
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in found.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode(
    slot: float,
    kind: str = SCHEDULE,
    sent_at: float | None = None,
    lateness: float | None = None,
    task_id: str | None = None,
    reason: str | None = None,
    at: float | None = None,
) -> bytes:
    """A record's stored bytes, made without a RunRecord: the leader makes one per run."""
    fields: dict[str, Any] = {"slot": slot, "kind": kind}
    if at is not None:
        fields["at"] = at
    if sent_at is not None:
        fields["sent_at"] = sent_at
    if lateness is not None:
        fields["lateness"] = lateness
    if task_id is not None:
        fields["task_id"] = task_id
    if reason is not None:
        fields["reason"] = reason
    return json.dumps(fields).encode()


COVER_MARGIN = 1.0  # seconds: a run is sent ahead of its slot (Beat.early), leaders' clocks differ


def covered_from(records: Sequence[RunRecord], maxlen: int) -> float | None:
    """From when an entry's history, its newest `maxlen` `records` (newest first), holds a
    record of every slot that ran: None when nothing was dropped yet (fewer than `maxlen`).

    Records are kept in the order the leader made them, and a slot's record is made at or
    after its run (a backfill's long after its slot): every dropped record, whatever its
    slot, was made before the oldest kept one, so its slot is before that one's `at` (a
    record without one, made before it was kept: its later of slot and sending)."""
    if len(records) < maxlen or not records:
        return None
    oldest = records[-1]
    made = oldest.at if oldest.at is not None else max(oldest.slot, oldest.sent_at or 0.0)
    return made + COVER_MARGIN
