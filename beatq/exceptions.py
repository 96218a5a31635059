"""The errors beatq raises.

BeatqError
├─ ConfigurationError        bad setting, URL or app path
│  └─ ScheduleError          bad YAML/Python schedule (file, line, entry)
├─ BrokerError               backend unreachable or misbehaving
│  ├─ BrokerAccessDenied     the backend turned us away: login, TLS trust, ACL
│  └─ NotReplicated          a write no replica confirmed in time (min_replicas)
├─ LeaseLost                 the leader's lease expired or was taken
├─ TaskError
│  ├─ NotRegistered          a task name no worker knows
│  ├─ Retry                  raised by Task.retry to ask for another run
│  ├─ Reject                 raised by a task to refuse its message
│  ├─ Ignore                 raised by a task (or Task.replace) to end with no state stored
│  ├─ MaxRetriesExceededError a retry was asked for past max_retries
│  ├─ TaskRevokedError       the task was revoked or expired before it ran
│  ├─ WorkerLostError        the process running the task died
│  ├─ SoftTimeLimitExceeded  raised inside a task at its soft time limit
│  └─ TimeLimitExceeded      the task ran past its hard time limit
└─ TimeoutError              AsyncResult.get ran out of time
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any


class BeatqError(Exception):
    """Base of every error beatq raises."""


class ConfigurationError(BeatqError, ValueError):
    """A setting, a URL or an app path is wrong."""


class AsyncTaskNotSupported(ConfigurationError, TypeError):
    """A task declared as an async generator, which no pool can run to one value: refused
    where declared (a TypeError as Python's own for a wrong kind of callable; a
    ConfigurationError so the CLI reports it in one line). `async def` tasks run."""


class ScheduleError(ConfigurationError):
    """A schedule file or entry is wrong; the message names the file, line and entry.
    `field`: the entry's field the refusal is about, when it is about one (a form shows
    the message beside it)."""

    def __init__(self, *args: object, field: str | None = None) -> None:
        super().__init__(*args)
        self.field = field

    def __reduce__(self):  # pickle keeps `field`, a keyword argument
        return (_rebuild_schedule_error, (type(self), self.args, self.__dict__))


def _rebuild_schedule_error(
    cls: type[ScheduleError], args: tuple[object, ...], state: dict[str, object]
) -> ScheduleError:
    """Unpickle a ScheduleError or a subclass whose __init__ takes other arguments than
    its message (SpecError): made without calling __init__, its args and attributes set."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class BrokerError(BeatqError, ConnectionError):
    """The backend cannot be reached or answered something unexpected."""


class BrokerAccessDenied(BrokerError):
    """The backend was reached and refused us: a wrong user or password, a TLS certificate
    this client does not trust, or an ACL that forbids a command or key. Retrying the
    same thing will not help; the message says what to fix."""


class NotReplicated(BrokerError):
    """A write the master took was not confirmed by as many replicas as asked for
    (`min_replicas`) within the time allowed. The master has it: it is lost only if the
    master fails before a replica copies it. A send that raises this may still run: it is
    not retried, and sending it again could run it twice."""


class LeaseLost(BeatqError):
    """The beat's lease expired or another beat holds it."""


class TaskError(BeatqError):
    """Base of the errors about a task."""


class NotRegistered(TaskError, LookupError):
    """No task of this name is registered."""

    def __init__(self, name: str, registered: list[str] | None = None) -> None:
        self.name = name
        msg = f"task {name!r} is not registered"
        if registered is not None:
            shown = ", ".join(sorted(registered)[:10]) or "(none)"
            msg += f"; registered: {shown}"
        super().__init__(msg)

    def __reduce__(self):  # keep pickling/re-raising simple
        return (NotRegistered, (self.name,))


class Retry(TaskError):
    """Raised by `Task.retry`: the worker re-sends the task and marks it RETRY."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | datetime | None = None,
    ) -> None:
        self.exc = exc
        self.when = when
        self.sig: Any = None  # the call to make again (a Signature), set by Task.retry
        if message is None:
            message = "Retry" if when is None else f"Retry in {when}"
        super().__init__(message)


class Reject(TaskError):
    """Raised by a task to refuse its message; with requeue=True it goes back to its queue."""

    def __init__(self, reason: str = "", requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason)


class Ignore(TaskError):
    """Raised by a task to end its run with no state stored and nothing following it: the
    message is acknowledged (Celery's `Ignore`). `Task.replace` raises it with `followup`,
    what it sends instead, which the worker sends in the step that acknowledges."""

    def __init__(self, reason: str = "", followup: Any = None) -> None:
        self.followup = followup
        super().__init__(reason)


class MaxRetriesExceededError(TaskError):
    """`Task.retry` was called after `max_retries` retries."""


class ChordError(TaskError):
    """A member of a chord failed, so its body was not run."""


class TaskRevokedError(TaskError):
    """The task was revoked, or expired, before it ran."""


class WorkerLostError(TaskError):
    """The process running the task died before it finished."""


class SoftTimeLimitExceeded(TaskError):
    """Raised inside a task when it reaches its soft time limit."""


class TimeLimitExceeded(TaskError):
    """The task ran past its hard time limit and was stopped."""


class TimeoutError(BeatqError, builtins.TimeoutError):
    """`AsyncResult.get` waited longer than its timeout."""
