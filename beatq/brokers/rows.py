"""The lease and beat-state rules, once, for the stores that keep them as rows in Python.

memory.py and sqlite.py hold leases and beat entries as rows (a dict, a table) and
differ only in how they read and write them inside one atomic step: each gives a `Rows`
view of that step, and `RowBeatState` applies the rules to it. Redis applies the same
rules in its scripts (lua/lease.lua, lua/beat_dispatch.lua, lua/beat_plan.lua), where
they must run to be atomic.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from .records import BeatDispatch, Lease, Outgoing
from .roles import BeatState, Plan


@dataclass(slots=True)
class LeaseRow:
    """A lease as stored: who holds it until when, and the last token handed out (which
    survives release and expiry, so tokens only grow)."""

    holder: str | None  # None: released
    token: int
    expires: float
    since: float

    def held(self, now: float) -> bool:
        return self.holder is not None and self.expires > now

    def held_by(self, holder: str, token: int, now: float) -> bool:
        """Whether `holder` holds it with `token` now: the fence of every fenced write."""
        return self.held(now) and (self.holder, self.token) == (holder, token)


class Rows(Protocol):
    """One atomic step over a store's leases, beat entries and messages."""

    def lease(self, name: str) -> LeaseRow | None: ...

    def put_lease(self, name: str, row: LeaseRow) -> None: ...

    def settled(self, entry: str) -> float | None:
        """The entry's settled instant (None: none yet, or no such entry)."""

    def set_entry(
        self, entry: str, settled: float | None, next_run: float | None, info: bytes | None
    ) -> None:
        """Store the entry (made if new); a None `settled` or `info` keeps the stored one."""

    def remove_entries(self, entries: Sequence[str]) -> None:
        """Forget entries, their paused flag too."""

    def paused(self, entry: str) -> bool: ...

    def stored(self, message_id: str) -> bool:
        """Whether the message is still stored (sent and not acknowledged)."""

    def send(self, messages: Sequence[Outgoing], now: float) -> None: ...


class RowBeatState(BeatState):
    """Leases and beat state over `rows()`: the rules of roles.Leases and roles.BeatState."""

    @abc.abstractmethod
    def rows(self, write: bool = True) -> contextlib.AbstractContextManager[Rows]:
        """One atomic step over this store's rows (`write`: it may change them)."""

    # -- leases ----------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        with self.rows() as rows:
            now = time.time()
            row = rows.lease(name)
            if row is not None and row.held(now):
                return None
            token = (row.token if row is not None else 0) + 1
            rows.put_lease(name, LeaseRow(holder, token, now + ttl, now))
            return token

    def renew_lease(self, name: str, holder: str, token: int, ttl: float) -> bool:
        with self._fenced(name, holder, token) as (rows, row, now):
            if row is None:
                return False
            row.expires = now + ttl
            rows.put_lease(name, row)
            return True

    def release_lease(self, name: str, holder: str, token: int) -> None:
        with self._fenced(name, holder, token) as (rows, row, _):
            if row is not None:
                row.holder = None
                rows.put_lease(name, row)

    def get_lease(self, name: str) -> Lease | None:
        with self.rows(write=False) as rows:
            now = time.time()
            row = rows.lease(name)
            if row is None or row.holder is None or not row.held(now):
                return None
            return Lease(row.holder, row.token, row.expires - now, row.since)

    @contextlib.contextmanager
    def _fenced(
        self, name: str, holder: str, token: int
    ) -> Iterator[tuple[Rows, LeaseRow | None, float]]:
        """A write step with lease `name` if `holder` holds it with `token` (else None)."""
        with self.rows() as rows:
            now = time.time()
            row = rows.lease(name)
            yield rows, (row if row is not None and row.held_by(holder, token, now) else None), now

    # -- beat state --------------------------------------------------------------------------
    def beat_dispatch_many(
        self, lease: str, holder: str, token: int, runs: Sequence[BeatDispatch]
    ) -> list[str]:
        with self._fenced(lease, holder, token) as (rows, held, now):
            if held is None:
                return ["lost"] * len(runs)
            return [_dispatch(rows, run, now) for run in runs]

    def beat_plan(
        self, lease: str, holder: str, token: int, entries: Plan, remove: Sequence[str] = ()
    ) -> bool:
        with self._fenced(lease, holder, token) as (rows, held, _):
            if held is None:
                return False
            for name, (settled, next_run, info) in entries.items():
                rows.set_entry(name, settled, next_run, info)
            rows.remove_entries(remove)
            return True


def _dispatch(rows: Rows, run: BeatDispatch, now: float) -> str:
    """One fenced run of `beat_dispatch` (the lease is held): its outcome."""
    settled = rows.settled(run.entry)
    if settled is not None and settled >= run.slot:
        rows.set_entry(run.entry, None, run.next_run, None)
        return "done"
    if rows.paused(run.entry):
        outcome = "paused"
    elif run.busy_id and rows.stored(run.busy_id):
        outcome = "busy"
    else:
        rows.send(run.send, now)
        rows.set_entry(run.entry, run.slot, run.next_run, run.info)
        return "sent"
    rows.set_entry(run.entry, run.slot, run.next_run, None)
    return outcome
