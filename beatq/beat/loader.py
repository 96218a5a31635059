"""Loading entries from the app's `beat_schedule` and from YAML files, with precise errors.

A bad file is refused whole, with `file:line: entry 'name': reason`, before anything runs.
"""

from __future__ import annotations

import difflib
import glob
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any

import yaml

from ..calling import check_options, check_priority
from ..exceptions import ConfigurationError, ScheduleError
from ..timezones import get_zone
from .entries import CATCHUP, OVERLAP, Entry
from .schedules import ScheduleSyntaxError, crontab, every, once, parse_duration

ENTRY_KEYS = (
    "task",
    "every",
    "cron",
    "at",
    "args",
    "kwargs",
    "options",
    "timezone",
    "catchup",
    "catchup_window",
    "overlap",
    "jitter",
    "enabled",
    "description",
    "start_at",
    "end_at",
)
FILE_KEYS = ("timezone", "schedules")
PYTHON_KEYS = ("task", "schedule", "args", "kwargs", "options", "relative", *ENTRY_KEYS)
CRON_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


class EntryError(ValueError):
    """What is wrong with one entry, and the key it is about (for the line number)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; valid keys: {', '.join(valid)}"


def _aware(value: datetime, zone: tzinfo) -> datetime:
    return value.replace(tzinfo=zone) if value.tzinfo is None else value


def build_entry(
    name: str,
    spec: Mapping[str, Any],
    zone: tzinfo,
    source: str,
    registered: Iterable[str] | None = None,
) -> Entry:
    """An Entry from one definition (a YAML mapping or a beat_schedule item).

    Raises EntryError with the reason; the caller adds where it came from.
    """
    task = spec.get("task")
    if not isinstance(task, str) or not task:
        raise EntryError("needs 'task': the registered name of the task to run", "task")
    if registered is not None:
        names = sorted(registered)
        if task not in names:
            own = [n for n in names if not n.startswith("beatq.")]  # not the builtins
            shown = ", ".join(own[:8]) + (", ..." if len(own) > 8 else "")
            close = difflib.get_close_matches(task, own, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise EntryError(
                f"names task {task!r}, which is not registered{hint}; registered: {shown}", "task"
            )
    if "timezone" in spec and spec["timezone"] is not None:
        try:
            zone = get_zone(spec["timezone"])
        except ConfigurationError:
            raise EntryError(
                f"unknown time zone {spec['timezone']!r}; use an IANA name such as "
                "'UTC' or 'Asia/Shanghai'",
                "timezone",
            ) from None
    kinds = [k for k in ("every", "cron", "at", "schedule") if spec.get(k) is not None]
    if len(kinds) != 1:
        raise EntryError(
            "needs exactly one of 'every', 'cron' or 'at'"
            + (f" (has {', '.join(kinds)})" if kinds else ""),
            kinds[1] if len(kinds) > 1 else None,
        )
    kind = kinds[0]
    value = spec[kind]
    try:
        schedule = _schedule(kind, value, zone)
    except ScheduleSyntaxError as exc:
        raise EntryError(f"{kind}: {exc}", kind) from None
    args = spec.get("args") or []
    if not isinstance(args, (list, tuple)):
        raise EntryError(f"'args' must be a list, not {type(args).__name__}", "args")
    kwargs = spec.get("kwargs") or {}
    options = spec.get("options") or {}
    for key, val in (("kwargs", kwargs), ("options", options)):
        if not isinstance(val, Mapping):
            raise EntryError(f"{key!r} must be a mapping, not {type(val).__name__}", key)
    try:  # refused here, before start, not at each run in the beat (calling.py)
        check_options(options, "a periodic task")
        if options.get("priority") is not None:
            check_priority(options["priority"], "a periodic task")
    except (TypeError, ValueError) as exc:
        raise EntryError(str(exc), "options") from None
    catchup = spec.get("catchup", "latest")
    if catchup not in CATCHUP:
        raise EntryError(f"catchup {catchup!r} is not one of: {', '.join(CATCHUP)}", "catchup")
    overlap = spec.get("overlap", "allow")
    if overlap not in OVERLAP:
        raise EntryError(f"overlap {overlap!r} is not one of: {', '.join(OVERLAP)}", "overlap")
    enabled = spec.get("enabled", True)
    if not isinstance(enabled, bool):
        raise EntryError(f"'enabled' must be true or false, not {enabled!r}", "enabled")
    durations = {}
    for key, default in (("jitter", 0), ("catchup_window", "1h")):
        try:
            durations[key] = parse_duration(spec.get(key) or default)
        except ScheduleSyntaxError as exc:
            raise EntryError(f"{key}: {exc}", key) from None
    window = {key: _instant(key, spec.get(key), zone) for key in ("start_at", "end_at")}
    if None not in window.values() and window["end_at"] <= window["start_at"]:  # type: ignore[operator]
        raise EntryError(
            "end_at must be after start_at (no run at or after end_at, none before start_at)",
            "end_at",
        )
    return Entry(
        name=name,
        task=task,
        schedule=schedule,
        zone=zone,
        args=list(args),
        kwargs=dict(kwargs),
        options=dict(options),
        catchup=catchup,
        catchup_window=durations["catchup_window"],
        overlap=overlap,
        jitter=durations["jitter"],
        enabled=enabled,
        source=source,
        start_at=window["start_at"],
        end_at=window["end_at"],
    )


def _instant(key: str, value: Any, zone: tzinfo) -> float | None:
    """`start_at` / `end_at` as a POSIX instant: an ISO time (naive: in the entry's zone),
    a datetime, a date (its midnight) or POSIX seconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        pass
    elif isinstance(value, (int, float)):
        return float(value)
    elif isinstance(value, datetime):
        return _aware(value, zone).timestamp()
    elif isinstance(value, date):
        return datetime.combine(value, time(), zone).timestamp()
    elif isinstance(value, str):
        try:
            return _aware(datetime.fromisoformat(value), zone).timestamp()
        except ValueError:
            pass
    raise EntryError(
        f"{key} {value!r} is not a time; give an ISO 8601 time such as "
        "'2027-01-01T09:00:00' (read in the entry's zone) or a datetime",
        key,
    )


def _schedule(kind: str, value: Any, zone: tzinfo) -> Any:
    if kind == "schedule":  # Python: timedelta, seconds, crontab, every, once, datetime
        if hasattr(value, "next_after"):
            return value
        if isinstance(value, datetime):
            return once(_aware(value, zone))
        if hasattr(value, "run_every"):  # a Celery-style schedule object
            return every(value.run_every)
        return every(value)
    if kind == "every":
        return every(value)
    if kind == "cron":
        if isinstance(value, str):
            return crontab.from_string(value)
        if isinstance(value, Mapping):
            unknown = [k for k in value if k not in CRON_FIELDS]
            if unknown:
                raise ScheduleSyntaxError(
                    f"unknown field {unknown[0]!r}{_suggest(unknown[0], CRON_FIELDS)}"
                )
            fields: dict[str, Any] = {
                k: str(v) if isinstance(v, int) else v for k, v in value.items()
            }
            return crontab(**fields)
        raise ScheduleSyntaxError("give a cron string ('30 7 * * mon') or a mapping of fields")
    # at: an ISO time (YAML may already have parsed it)
    if isinstance(value, datetime):
        return once(_aware(value, zone))
    if isinstance(value, date):
        return once(datetime.combine(value, time(), zone))
    try:
        return once(_aware(datetime.fromisoformat(str(value)), zone))
    except ValueError:
        raise ScheduleSyntaxError(f"{value!r} is not an ISO 8601 time") from None


def load_python(app: Any) -> dict[str, Entry]:
    """The entries of `app.conf.beat_schedule`."""
    entries = {}
    zone = app.timezone
    for name, spec in (app.conf.beat_schedule or {}).items():
        where = f"beat_schedule[{name!r}]"
        if not isinstance(spec, Mapping):
            raise ScheduleError(f"{where}: must be a dict with 'task' and 'schedule'")
        unknown = [k for k in spec if k not in PYTHON_KEYS]
        if unknown:
            raise ScheduleError(
                f"{where}: unknown key {unknown[0]!r}{_suggest(unknown[0], PYTHON_KEYS)}"
            )
        try:
            entries[name] = build_entry(name, spec, zone, "python", app.tasks or None)
        except EntryError as exc:
            raise ScheduleError(f"{where}: {exc}") from None
    entries.update(load_added(app, entries))
    return entries


def load_added(app: Any, defined: Mapping[str, Entry]) -> dict[str, Entry]:
    """The entries of `app.add_periodic_task`, each with where it was added as its source;
    a name also in beat_schedule, or added twice differently, is an error."""
    for problem in getattr(app, "periodic_conflicts", ()):
        raise ScheduleError(problem)
    entries = {}
    for name, (spec, where) in getattr(app, "periodic_tasks", {}).items():
        if name in defined:
            raise ScheduleError(
                f"{where}: periodic task {name!r} is also in beat_schedule; give it another name="
            )
        try:
            entries[name] = build_entry(name, spec, app.timezone, where, app.tasks or None)
        except EntryError as exc:
            raise ScheduleError(f"{where}: periodic task {name!r}: {exc}") from None
    return entries


def _refuse_duplicates(path: Path, node: yaml.Node | None) -> None:
    """YAML keeps the last of two equal keys silently; a schedule file must not lose one.

    Checked on the nodes as written, before merge keys (`<<: *base`) are expanded.
    """

    def check(mapping: yaml.Node, what: str) -> None:
        if not isinstance(mapping, yaml.MappingNode):
            return
        seen: dict[str, int] = {}
        for key, _ in mapping.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            line = key.start_mark.line + 1
            if key.value in seen:
                raise ScheduleError(
                    f"{path}:{line}: {what} {key.value!r} is defined twice "
                    f"(also at line {seen[key.value]})"
                )
            seen[key.value] = line

    if not isinstance(node, yaml.MappingNode):
        return
    check(node, "top-level key")
    for key, value in node.value:
        if key.value == "schedules" and isinstance(value, yaml.MappingNode):
            check(value, "entry")
            for name, entry in value.value:
                check(entry, f"entry {name.value!r}: key")


def load_file(
    path: str | Path, zone: tzinfo, registered: Iterable[str] | None = None
) -> dict[str, Entry]:
    """The entries of one YAML file; ScheduleError names the file, line and entry."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScheduleError(f"{path}: cannot read: {exc.strerror}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        _refuse_duplicates(path, node)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ScheduleError(f"{path}:{line}: YAML syntax error: {exc.problem or exc}") from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise ScheduleError(f"{path}:1: expected a mapping with 'schedules:' (and 'timezone:')")
    lines = {k.value: (k.start_mark.line + 1, v) for k, v in node.value}
    for key, (line, _) in lines.items():
        if key not in FILE_KEYS:
            raise ScheduleError(
                f"{path}:{line}: unknown top-level key {key!r}{_suggest(key, FILE_KEYS)}"
            )
    if "timezone" in data:
        try:
            zone = get_zone(data["timezone"])
        except ConfigurationError as exc:
            raise ScheduleError(f"{path}:{lines['timezone'][0]}: {exc}") from None
    schedules = data.get("schedules") or {}
    if not isinstance(schedules, dict):
        raise ScheduleError(
            f"{path}:{lines['schedules'][0]}: 'schedules' must be a mapping of entries"
        )
    # Find each entry's nodes by the key YAML built from them (a bare `on` is True); the
    # entry keeps its name as written.
    build_key = yaml.constructor.SafeConstructor().construct_object
    entry_nodes = (
        {build_key(k): (k, v) for k, v in lines["schedules"][1].value} if schedules else {}
    )
    entries = {}
    for key, spec in schedules.items():
        key_node, value_node = entry_nodes[key]
        name = str(key_node.value)
        line = key_node.start_mark.line + 1
        where = f"{path}:{line}: entry {name!r}"
        if not isinstance(spec, dict):
            raise ScheduleError(
                f"{where}: must be a mapping with 'task' and 'every', 'cron' or 'at'"
            )
        for k, _v in value_node.value:
            if k.value not in ENTRY_KEYS:
                raise ScheduleError(
                    f"{path}:{k.start_mark.line + 1}: entry {name!r}: unknown key {k.value!r}"
                    f"{_suggest(k.value, ENTRY_KEYS)}"
                )
        key_lines = {k.value: k.start_mark.line + 1 for k, _ in value_node.value}
        try:
            entries[name] = build_entry(name, spec, zone, f"{path}:{line}", registered)
        except EntryError as exc:
            at = key_lines.get(exc.key or "", line)
            raise ScheduleError(f"{path}:{at}: entry {name!r}: {exc}") from None
    return entries


def schedule_files(patterns: Iterable[str]) -> list[Path]:
    """The files named or matched by `patterns` (globs relative to the working directory)."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        for match in matches:
            path = Path(match)
            if path not in found:
                found.append(path)
    return found


def load_all(app: Any, files: Iterable[str | Path], check_tasks: bool = True) -> dict[str, Entry]:
    """Every entry: the app's beat_schedule and the files; a name defined twice is an error."""
    registered = list(app.tasks) if check_tasks and app.tasks else None
    entries = load_python(app)
    for path in files:
        for name, entry in load_file(path, app.timezone, registered).items():
            if name in entries:
                first = entries[name].source
                raise ScheduleError(
                    f"{entry.source}: entry {name!r} is defined twice (also at {first})"
                )
            entries[name] = entry
    return entries


def duration_seconds(value: Any) -> float:
    return (
        parse_duration(value).total_seconds()
        if not isinstance(value, timedelta)
        else value.total_seconds()
    )
