"""The Schedules role's rules, once, for the stores that keep it as rows in Python.

As rows.py does for leases and beat state: memory.py and sqlite.py differ only in how
they read and write the stored entries, requests and histories inside one atomic step
(`ScheduleRows`), and `RowSchedules` applies the rules of roles.Schedules to it. Redis
applies the same rules in lua/schedules.lua.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .records import Outgoing, RunRequest
from .roles import Schedules
from .rows import LeaseRow


class ScheduleRows(Protocol):
    """One atomic step over a store's run-time entries, requests and histories (and the
    leases and messages a fenced run needs)."""

    def lease(self, name: str) -> LeaseRow | None: ...

    def send(self, messages: Sequence[Outgoing], now: float) -> None: ...

    def stored(self, message_id: str) -> bool: ...

    def version(self) -> int: ...

    def bump(self) -> None:
        """Add one to the version."""

    def specs(self) -> dict[str, bytes]: ...

    def has_spec(self, name: str) -> bool: ...

    def put_spec(self, name: str, spec: bytes) -> None: ...

    def delete_spec(self, name: str) -> bool: ...

    def log_change(self, name: str, version: int) -> None:
        """Note that entry `name` changed (or went) at `version`."""

    def changes(self, since: int) -> dict[str, bytes | None]:
        """The entries noted as changed after `since`: their spec, None if gone."""

    def request(self, request_id: str) -> RunRequest | None: ...

    def requests(self) -> list[RunRequest]: ...

    def add_request(self, request_id: str, body: bytes) -> None: ...

    def move_request(self, request_id: str, cursor: float, done: float | None) -> None: ...

    def forget_done(self, before: float) -> None:
        """Forget the requests done before `before`."""

    def add_history(self, name: str, record: bytes, maxlen: int) -> None: ...

    def history(self, name: str, limit: int) -> list[bytes]: ...


class RowSchedules(Schedules):
    """roles.Schedules over `schedule_rows()`."""

    @abc.abstractmethod
    def schedule_rows(self, write: bool = True) -> contextlib.AbstractContextManager[ScheduleRows]:
        """One atomic step over this store's schedule rows (`write`: it may change them)."""

    def schedule_version(self) -> int:
        with self.schedule_rows(write=False) as rows:
            return rows.version()

    def schedule_specs(self) -> tuple[int, dict[str, bytes]]:
        with self.schedule_rows(write=False) as rows:
            return rows.version(), rows.specs()

    def schedule_changes(self, since: int) -> tuple[int, dict[str, bytes | None]]:
        with self.schedule_rows(write=False) as rows:
            return rows.version(), rows.changes(since)

    def schedule_put(self, name: str, spec: bytes, mode: str) -> bool:
        if mode not in ("add", "update", "set"):
            raise ValueError(f"mode must be 'add', 'update' or 'set', not {mode!r}")
        with self.schedule_rows() as rows:
            there = rows.has_spec(name)
            if (mode == "add" and there) or (mode == "update" and not there):
                return False
            rows.put_spec(name, spec)
            rows.bump()
            rows.log_change(name, rows.version())
            return True

    def schedule_add_many(self, items: Sequence[tuple[str, bytes]]) -> list[str]:
        with self.schedule_rows() as rows:
            there = [name for name, _ in items if rows.has_spec(name)]
            if there or not items:
                return there
            for name, spec in items:
                rows.put_spec(name, spec)
            rows.bump()
            version = rows.version()
            for name, _ in items:
                rows.log_change(name, version)
            return []

    def schedule_delete(self, name: str) -> bool:
        with self.schedule_rows() as rows:
            if not rows.delete_spec(name):
                return False
            rows.bump()
            rows.log_change(name, rows.version())
            return True

    def schedule_request(self, request_id: str, body: bytes, keep: float) -> bool:
        with self.schedule_rows() as rows:
            rows.forget_done(time.time() - keep)
            if rows.request(request_id) is not None:
                return False
            rows.add_request(request_id, body)
            rows.bump()
            return True

    def schedule_requests(self) -> list[RunRequest]:
        with self.schedule_rows(write=False) as rows:
            return rows.requests()

    def schedule_run(
        self,
        lease: str,
        holder: str,
        token: int,
        request_id: str,
        slot: float,
        last: bool,
        send: Sequence[Outgoing] = (),
        busy_id: str | None = None,
        record: tuple[str, bytes, int] | None = None,
    ) -> str:
        with self.schedule_rows() as rows:
            now = time.time()
            row = rows.lease(lease)
            if row is None or not row.held_by(holder, token, now):
                return "lost"
            found = rows.request(request_id)
            if found is None or found.done is not None:
                return "done"
            if found.cursor is not None and found.cursor >= slot:
                return "done"
            if busy_id and rows.stored(busy_id):
                return "busy"
            rows.send(send, now)
            rows.move_request(request_id, slot, now if last else None)
            if record is not None:
                rows.add_history(record[0], record[1], max(int(record[2]), 1))
            return "sent"

    def history_add(self, items: Sequence[tuple[str, bytes]], maxlen: int) -> None:
        if not items:
            return
        with self.schedule_rows() as rows:
            for name, record in items:
                rows.add_history(name, record, maxlen)

    def history(self, name: str, limit: int) -> list[bytes]:
        with self.schedule_rows(write=False) as rows:
            return rows.history(name, limit)


@dataclass
class ScheduleTables:
    """The schedule rows of a store that lives in this process (memory://)."""

    version: int = 0
    specs: dict[str, bytes] = field(default_factory=dict)
    requests: dict[str, RunRequest] = field(default_factory=dict)  # in the order added
    histories: dict[str, list[bytes]] = field(default_factory=dict)  # oldest first
    log: dict[str, int] = field(default_factory=dict)  # entry -> version of its last change


class TableRows:
    """ScheduleRows over `ScheduleTables`, inside the step `base` (leases, messages) is."""

    def __init__(self, tables: ScheduleTables, base: object) -> None:
        self.tables = tables
        self.base = base

    def lease(self, name: str) -> LeaseRow | None:
        return self.base.lease(name)  # type: ignore[attr-defined,no-any-return]

    def send(self, messages: Sequence[Outgoing], now: float) -> None:
        self.base.send(messages, now)  # type: ignore[attr-defined]

    def stored(self, message_id: str) -> bool:
        return self.base.stored(message_id)  # type: ignore[attr-defined,no-any-return]

    def version(self) -> int:
        return self.tables.version

    def bump(self) -> None:
        self.tables.version += 1

    def specs(self) -> dict[str, bytes]:
        return dict(sorted(self.tables.specs.items()))

    def has_spec(self, name: str) -> bool:
        return name in self.tables.specs

    def put_spec(self, name: str, spec: bytes) -> None:
        self.tables.specs[name] = spec

    def delete_spec(self, name: str) -> bool:
        return self.tables.specs.pop(name, None) is not None

    def log_change(self, name: str, version: int) -> None:
        self.tables.log[name] = version

    def changes(self, since: int) -> dict[str, bytes | None]:
        specs = self.tables.specs
        return {n: specs.get(n) for n, v in sorted(self.tables.log.items()) if v > since}

    def request(self, request_id: str) -> RunRequest | None:
        return self.tables.requests.get(request_id)

    def requests(self) -> list[RunRequest]:
        return list(self.tables.requests.values())

    def add_request(self, request_id: str, body: bytes) -> None:
        self.tables.requests[request_id] = RunRequest(request_id, body)

    def move_request(self, request_id: str, cursor: float, done: float | None) -> None:
        found = self.tables.requests[request_id]
        self.tables.requests[request_id] = RunRequest(request_id, found.body, cursor, done)

    def forget_done(self, before: float) -> None:
        requests = self.tables.requests
        for key in [k for k, r in requests.items() if r.done is not None and r.done < before]:
            del requests[key]

    def add_history(self, name: str, record: bytes, maxlen: int) -> None:
        kept = self.tables.histories.setdefault(name, [])
        kept.append(record)
        if len(kept) > maxlen:
            del kept[: len(kept) - maxlen]

    def history(self, name: str, limit: int) -> list[bytes]:
        kept = self.tables.histories.get(name, [])
        return kept[::-1][:limit]
