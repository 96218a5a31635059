"""`app.schedules`: add, change, remove, pause, run now and backfill beat entries while the
system runs, and read each entry's run history.

Design, in five rules (the beat's guarantees stay whole: one leader, fenced dispatch,
each (entry, slot) once):

- Where entries live. A store entry is its spec (beat/specs.py: the entry as a schedule
  file writes it, JSON) under its name in the broker's `Schedules` role, beside the
  beat's own state. Files and code still define entries; each entry knows its source
  (`file:line`, `beat_schedule`/`add_periodic_task`, or "store"). A name a file or code
  defines is theirs: the API refuses to add, change or remove it and names the file.
- How the leader learns of a change. Every change bumps a version in the same atomic
  step; the leader reads the version every half second (one GET or SELECT) and, only when
  it moved, reads the specs again and plans what changed as it does for an edited file.
- A change mid-flight. The entry's settled instant in the broker, moved by the fenced
  dispatch, stays the one truth: a changed definition starts after the later of its
  settled instant and the time of the change, so no slot runs twice or under both
  definitions; a removed entry's heap item is dropped (its run in flight finishes).
- Run now (trigger). A request stored once per `run_id` (a second client with the same
  id is told it exists); the leader sends it with the run id as the task id, in one
  fenced step that also marks it done, so one run results however many hosts ask.
- Backfill. A request holding [start, end); the leader sends its slots (those the entry
  settled without running, as its history and its last slot sent say) oldest first, each
  in one fenced step that moves the request's cursor to that slot and writes its history
  record. A new leader resumes after the cursor: across a failover no slot is sent twice
  or dropped. A range the capped history no longer covers is refused (beat/runs.py).
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import ScheduleError
from .entries import Entry
from .loader import load_file, load_python, schedule_files
from .record import EntryRecord
from .runs import OutOfTurn
from .specs import SOURCE, SpecError, check_fires, decode, encode, entry_of, make_spec

ADD_STEP = 500  # entries add_many stores per broker call (see ScheduleStore._store_many)


class EntryNotFound(ScheduleError):
    """No entry of that name (in the store, the files, the code or the leader's plan)."""


@dataclass
class ScheduleEntry:
    """An entry as `get` and `list` show it: its definition and how it runs now."""

    name: str
    source: str  # "store", "path.yaml:12", "python", "add_periodic_task at ..."
    task: str | None
    schedule: str | None  # as `schedule list` prints it: "every 30s", "*/5 * * * *"
    spec: dict[str, Any] = field(default_factory=dict)  # a store entry's stored spec
    paused: bool = False
    next_run: float | None = None  # POSIX seconds, as the leader planned it
    last_run: float | None = None  # the slot of the last run sent
    runs: int = 0
    missed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "task": self.task,
            "schedule": self.schedule,
            "spec": self.spec,
            "paused": self.paused,
            "next_run": self.next_run,
            "last_run": self.last_run,
            "runs": self.runs,
            "missed": self.missed,
        }


class ScheduleStore(OutOfTurn):
    """The entries of `app`'s beat that live in its broker (see the module docstring).

    >>> app.schedules.add("report", "proj.tasks.report", "0 7 * * mon", args=[1])
    >>> app.schedules.update("report", schedule="30 7 * * mon")
    >>> app.schedules.trigger("report", run_id="report-rerun-1")   # an AsyncResult
    >>> app.schedules.history("report", limit=10)                  # newest first
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    # -- entries -----------------------------------------------------------------------------
    def add(
        self,
        name: str,
        task: str,
        schedule: Any,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        timezone: str | None = None,
        catchup: str | None = None,
        overlap: str | None = None,
        jitter: Any = None,
        start_at: Any = None,
        end_at: Any = None,
        **more: Any,
    ) -> ScheduleEntry:
        """Add entry `name`: `task` on `schedule` (what YAML takes: "*/5 * * * *", "30s",
        crontab(...), a timedelta, an ISO time or datetime for one run). `more`: the other
        keys of a file entry (catchup_window, enabled, description). ScheduleError if the
        name is taken or anything is wrong; the leader runs it within a second."""
        self._check_name(name)
        fields = {
            "task": task,
            "schedule": schedule,
            "args": list(args),
            "kwargs": dict(kwargs or {}),
            "options": dict(options or {}),
            "timezone": timezone,
            "catchup": catchup,
            "overlap": overlap,
            "jitter": jitter,
            "start_at": start_at,
            "end_at": end_at,
            **more,
        }
        spec = make_spec(name, fields)
        entry = self._check(name, spec)
        data = encode(spec)
        if not self.app.broker.schedule_put(name, data, "add"):
            raise ScheduleError(
                f"schedule entry {name!r} exists already; change it with update({name!r}, ...) "
                "or remove it first",
                field="name",
            )
        stored = {k: v for k, v in decode(data).items() if k != "source"}
        return ScheduleEntry(name, SOURCE, entry.task, str(entry.schedule), spec=stored)

    def add_many(
        self, specs: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]]
    ) -> builtins.list[ScheduleEntry]:
        """Add many entries at once: `{name: fields}` (as a schedule file's `schedules:`)
        or fields with a "name" each; the fields are `add`'s (`schedule`, or a file's
        `every`/`cron`/`at`). All are checked first and the batch is refused whole, with
        the first bad entry's error, if any is wrong or its name is taken; then they are
        stored `ADD_STEP` at a time (see _store_many): 10,000 take about a second, not 20."""
        items = _named(specs)
        registered = self._registered()
        owned = self._owners([name for name, _ in items])
        checked: dict[str, tuple[Entry, dict[str, Any], bytes]] = {}
        for n, (name, fields) in enumerate(items, start=1):
            where = f" (entry {n} of {len(items)}; nothing was added)"
            try:
                self._check_name(name, owned)
                if name in checked:
                    raise SpecError(name, "name", "given twice in one batch")
                spec = make_spec(name, fields)
                entry = self._check(name, spec, registered, as_json=False)
                checked[name] = (entry, spec, self._encoded(name, spec))
            except ScheduleError as exc:
                raise _again(exc, where) from None
        data = [(name, stored) for name, (_, _, stored) in checked.items()]
        taken = self._store_many(data)
        if taken:
            shown = ", ".join(repr(t) for t in taken[:5]) + (", ..." if len(taken) > 5 else "")
            raise ScheduleError(
                f"schedule entries {shown} exist already ({len(taken)} of {len(items)}); "
                "nothing was added: remove them first, or leave them out of the batch",
                field="name",
            )
        return [
            ScheduleEntry(name, SOURCE, entry.task, str(entry.schedule), spec=spec)
            for name, (entry, spec, _) in checked.items()
        ]

    def _store_many(self, data: builtins.list[tuple[str, bytes]]) -> builtins.list[str]:
        """Store `data` (name, spec) all or none: the names taken (nothing stored then).

        `ADD_STEP` entries a broker call, each atomic: one call of 10,000 held Redis (one
        script) or SQLite's writer for 130-350 ms on a loaded machine, and a beat's
        dispatch waited behind it. A name taken meanwhile (another client adding it while
        this batch is stored) removes the steps already stored. The leader may take up the
        first steps before the last is stored; a client killed midway leaves them stored."""
        broker = self.app.broker
        for start in range(0, len(data), ADD_STEP):
            taken = broker.schedule_add_many(data[start : start + ADD_STEP])
            if taken:
                for name, _ in data[:start]:
                    broker.schedule_delete(name)
                return taken
        return []

    def update(self, name: str, **fields: Any) -> ScheduleEntry:
        """Change fields of store entry `name` (those `add` takes; `schedule` replaces the
        schedule whatever its kind). The new definition runs from the next slot after now:
        no slot runs twice, none under both definitions."""
        current = self._stored(name)
        if not fields:
            raise SpecError(name, None, "update() was given no field to change")
        changes = make_spec(name, fields)
        spec = {k: v for k, v in current.items() if k not in ("source", "created", "updated")}
        if any(k in changes for k in ("every", "cron", "at")):
            for kind in ("every", "cron", "at"):
                spec.pop(kind, None)
        for key in [k for k, v in fields.items() if v is None and k != "schedule"]:
            spec.pop(key, None)  # None: back to the default
        spec.update(changes)
        self._check(name, spec)
        if not self.app.broker.schedule_put(name, encode(spec, current.get("created")), "update"):
            raise EntryNotFound(f"schedule entry {name!r} was removed meanwhile")
        return self.get(name)

    def remove(self, name: str) -> None:
        """Remove store entry `name`: a run in flight finishes, no more are sent. Its
        history stays readable."""
        self._stored(name)
        if not self.app.broker.schedule_delete(name):
            raise EntryNotFound(f"schedule entry {name!r} was removed meanwhile")

    def get(self, name: str) -> ScheduleEntry:
        """Entry `name`, whatever its source; EntryNotFound if there is none."""
        for entry in self.list():
            if entry.name == name:
                return entry
        raise self._not_found(name)

    def list(self) -> list[ScheduleEntry]:
        """Every entry: the store's, and those the leader planned from files and code (and
        this app's code), sorted by name."""
        broker = self.app.broker
        _, specs = broker.schedule_specs()
        states = broker.beat_entries()
        found: dict[str, ScheduleEntry] = {}
        for name, state in states.items():
            record = EntryRecord.from_json(state.info)
            found[name] = ScheduleEntry(
                name,
                record.source or "?",
                record.task,
                record.schedule,
                paused=state.paused,
                next_run=state.next_run,
                last_run=record.last_slot,
                runs=record.runs,
                missed=record.missed,
            )
        for name, data in specs.items():
            spec = decode(data)
            shown = found.get(name)
            if shown is not None and shown.source != SOURCE:
                continue  # a file or code entry of that name wins (see beat.py)
            if shown is None:
                shown = found[name] = ScheduleEntry(name, SOURCE, None, None)
                shown.paused = name in states and states[name].paused
            shown.source, shown.spec = (
                SOURCE,
                {k: v for k, v in spec.items() if k not in ("source",)},
            )
            shown.task = spec.get("task")
            try:
                shown.schedule = str(entry_of(name, spec, self.app.timezone).schedule)
            except ScheduleError:
                shown.schedule = None
        for name, entry in self._defined().items():
            if name not in found:
                found[name] = ScheduleEntry(name, entry.source, entry.task, str(entry.schedule))
        return [found[n] for n in sorted(found)]

    def pause(self, name: str) -> None:
        """Pause entry `name` (any source) on every beat: its slots are skipped, and its
        history says so, until `resume`."""
        self._known(name)
        self.app.broker.beat_pause(name, True)

    def resume(self, name: str) -> None:
        """Resume entry `name`; the slots skipped while paused are not caught up."""
        self._known(name)
        self.app.broker.beat_pause(name, False)

    # -- checks ------------------------------------------------------------------------------
    def _check_name(self, name: str, owned: Mapping[str, str] | None = None) -> None:
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise SpecError(str(name), "name", "give a non-empty name without outer spaces")
        if any(c in name for c in "\n\r"):
            raise SpecError(name, "name", "a name is one line")
        owner = self._owner(name) if owned is None else owned.get(name)
        if owner is not None:
            raise ScheduleError(
                f"schedule entry {name!r} is defined in {owner}; change it there, or add "
                "this one under another name",
                field="name",
            )

    def _check(
        self,
        name: str,
        spec: dict[str, Any],
        registered: builtins.list[str] | None = None,
        as_json: bool = True,
    ) -> Entry:
        """The entry of `spec`, checked as the beat will read it, to fire again, and (if
        `as_json`; add_many checks as it encodes) to be stored as JSON."""
        if registered is None:
            registered = self._registered()
        entry = entry_of(name, spec, self.app.timezone, registered)
        check_fires(entry, time.time())
        if as_json:
            self._encoded(name, spec)
        return entry

    @staticmethod
    def _encoded(name: str, spec: dict[str, Any]) -> bytes:
        """`spec` as stored; SpecError names the field that JSON cannot hold."""
        try:
            return encode(spec)
        except ScheduleError:
            for key, value in spec.items():  # which field it is
                try:
                    json.dumps(value)
                except (TypeError, ValueError) as exc:
                    raise SpecError(
                        name,
                        key,
                        f"cannot be stored in the broker as JSON ({exc}); give numbers, "
                        "strings, lists and dicts (a time as an ISO string)",
                    ) from None
            raise

    def _registered(self) -> builtins.list[str] | None:
        """The task names to check against: this app's, when it registered any of its own
        (a client that registers none may send tasks it does not know)."""
        self.app.import_modules()
        names = list(self.app.tasks)
        return names if any(not n.startswith("beatq.") for n in names) else None

    def _defined(self) -> dict[str, Entry]:
        """The entries of this app's code and of the schedule files this process sees
        (read again when a file or the code's entries change)."""
        paths = [Path(p) for p in schedule_files(self.app.conf.beat_schedule_files)]
        stamps = tuple((p, p.stat().st_mtime) for p in paths if p.exists())
        code = self.app.conf.beat_schedule or {}
        key = (stamps, id(code), tuple(code), tuple(getattr(self.app, "periodic_tasks", {})))
        cached = _DEFINED.get(id(self.app))
        if cached is not None and cached[0] == key:
            return cached[1]
        found = self._read_defined()
        _DEFINED[id(self.app)] = (key, found)
        return found

    def _read_defined(self) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        try:
            found.update(load_python(self.app))
        except ScheduleError:
            pass  # a bad beat_schedule is the beat's to refuse, with its reason
        for path in schedule_files(self.app.conf.beat_schedule_files):
            if Path(path).exists():
                try:
                    found.update(load_file(path, self.app.timezone))
                except ScheduleError:
                    pass  # `schedule check` says what is wrong with it
        return found

    def _owner(self, name: str) -> str | None:
        """Where a file or code entry `name` is defined (None: nowhere, or in the store)."""
        defined = self._defined().get(name)
        source = defined.source if defined is not None else None
        state = self.app.broker.beat_entry(name) if source is None else None
        if state is not None:
            source = EntryRecord.from_json(state.info).source
        if not source or source == SOURCE:
            return None
        return "the app's beat_schedule" if source == "python" else source

    def _owners(self, names: builtins.list[str]) -> dict[str, str]:
        """`_owner` of many names, in one read of the beat's state."""
        defined = self._defined()
        found = {n: defined[n].source for n in names if n in defined}
        states = self.app.broker.beat_entries()
        for name in names:
            if name not in found and name in states:
                source = EntryRecord.from_json(states[name].info).source
                if source and source != SOURCE:
                    found[name] = source
        return {n: "the app's beat_schedule" if s == "python" else s for n, s in found.items()}

    def _stored(self, name: str) -> dict[str, Any]:
        """Store entry `name`'s spec; a file or code entry is refused, naming its file."""
        owner = self._owner(name)
        if owner is not None:
            raise ScheduleError(
                f"schedule entry {name!r} is defined in {owner}, not in the store; change it there"
            )
        _, specs = self.app.broker.schedule_specs()
        if name not in specs:
            raise self._not_found(name)
        return decode(specs[name])

    def _known(self, name: str) -> Entry | None:
        """The entry `name` as this process can build it (None: known to the leader only);
        EntryNotFound if nobody knows it."""
        _, specs = self.app.broker.schedule_specs()
        defined = self._defined()
        if name in defined:
            return defined[name]
        if name in specs:
            try:
                return entry_of(name, decode(specs[name]), self.app.timezone)
            except ScheduleError:
                return None
        if self.app.broker.beat_entry(name) is not None:
            return None
        raise self._not_found(name)

    def _not_found(self, name: str) -> EntryNotFound:
        names = [e.name for e in self.list()]
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        return EntryNotFound(
            f"no schedule entry {name!r}; entries: {shown or '(none)'}; add one with "
            "app.schedules.add (or `beatq schedule add`)"
        )


# per app (by id): the files' and code's entries, and what they were read from
_DEFINED: dict[int, tuple[Any, dict[str, Entry]]] = {}


def _named(
    specs: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
) -> list[tuple[str, dict[str, Any]]]:
    """add_many's entries as (name, fields), in the order given."""
    if isinstance(specs, Mapping):
        pairs = [(name, fields) for name, fields in specs.items()]
    elif isinstance(specs, (str, bytes)) or not isinstance(specs, Iterable):
        raise ScheduleError(
            f"add_many() takes {{name: fields}} or a list of fields with a 'name', not {specs!r}"
        )
    else:
        pairs = []
        for n, fields in enumerate(specs, start=1):
            if not isinstance(fields, Mapping) or "name" not in fields:
                raise ScheduleError(
                    f"add_many(): item {n} is not a mapping with a 'name' ({fields!r:.80})"
                )
            pairs.append((fields["name"], {k: v for k, v in fields.items() if k != "name"}))
    items = []
    for name, fields in pairs:
        if not isinstance(fields, Mapping):
            raise SpecError(str(name), None, "must be a mapping of fields (task, schedule, ...)")
        items.append((name, dict(fields)))
    return items


def _again(exc: ScheduleError, where: str) -> ScheduleError:
    """`exc` with `where` added to its message, its attributes kept."""
    exc.args = (f"{exc}{where}",)
    return exc
