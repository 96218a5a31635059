"""Beatq: the application — settings, task registry, and sending task messages."""

from __future__ import annotations

import fnmatch
import importlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from . import discovery, signals, signing, timezones
from . import events as ev
from .brokers import Backend, Outgoing, Results, ResultWrite, connect
from .builtins import register_builtins
from .calling import check_options, check_priority, check_routing
from .canvas import Signature, as_signatures
from .canvas import signature as canvas_signature
from .conf import DEFAULTS, Settings
from .context import add_child, running_request, set_current
from .context import current_app as current_app  # where `beatq.app.current_app` was
from .control import Control
from .exceptions import BrokerError, ConfigurationError, NotRegistered, NotReplicated
from .messages import Message, MessageError, new_id
from .messages import decode as decode_message
from .result import AsyncResult
from .signals import Signal
from .task import Task, check_time_limits

if TYPE_CHECKING:
    from .beat.store import ScheduleStore

_UNSET = object()
log = logging.getLogger("beatq.app")

# What add_periodic_task's call gives itself of a beat_schedule entry; the other keys of
# an entry (beat/loader.py's ENTRY_KEYS) it takes beside the call's options.
_CALL_KEYS = ("task", "every", "cron", "at", "args", "kwargs", "options")

# Options that shape the send, not the run: none of them travels in the message.
_SEND_ONLY = ("retry", "retry_policy", "routing_key", "exchange", "add_to_parent")


class Beatq:
    """A beatq application.

    >>> app = Beatq("proj", broker="redis://localhost:6379/0")
    >>> app.conf.update(timezone="Asia/Shanghai")
    >>> @app.task
    ... def add(x, y): return x + y
    """

    def __init__(
        self,
        main: str | None = None,
        broker: str | None = None,
        backend: str | None = None,
        include: Iterable[str] | None = None,
        config_source: Any = None,
        namespace: str | None = None,
        task_cls: type[Task] | str | None = None,
        set_as_current: bool = True,
        **settings: Any,
    ) -> None:
        _refuse_celery_only(settings)
        settings.update(settings.pop("changes", None) or {})  # Celery's dict of settings
        self.main = main
        self.namespace = namespace  # config_from_object's default namespace, as in Celery
        self.task_cls = task_cls  # the default base= of @app.task ("module:Class" too)
        # Celery's app signals (`@app.on_after_configure.connect`); see `_configure`, `finalize`
        self.on_configure = Signal("app.on_configure")
        self.on_after_configure = Signal("app.on_after_configure")
        self.on_after_finalize = Signal("app.on_after_finalize")
        self.configured = False
        self.finalized = False
        self._configured_with: list[Callable[..., Any]] = []  # on_after_configure's receivers
        self._discover: list[tuple[Any, str | None]] = []  # autodiscover_tasks, not yet run
        # add_periodic_task's entries: name -> (beat_schedule-style spec, where it was added)
        self._periodic: dict[str, tuple[dict[str, Any], str]] = {}
        self.periodic_conflicts: list[str] = []  # a name added twice, differently
        self.conf = Settings(settings)
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        if include:
            self.conf.include = tuple(include)
        self.tasks: dict[str, Task] = {}
        self._backends: dict[str, tuple[int, Backend]] = {}
        self._lock = threading.Lock()
        # (the security_key value it was made for, the Signer); see `signer`
        self._signer: tuple[Any, signing.Signer | None] = (_UNSET, None)
        self.events = ev.Events(self)
        self.control = Control(self)
        # beatq.otel.Tracing once traced (instrument(), or otel_enabled): the beat's spans
        self.tracing: Any = None
        if set_as_current:
            set_current(self)
        register_builtins(self)
        _apps.add(self)
        for shared in list(_shared_tasks):  # @shared_task run before this app was made
            shared.register(self)
        if config_source is not None:
            self.config_from_object(config_source)

    # -- settings ------------------------------------------------------------------------
    def config_from_object(
        self, obj: Any, namespace: str | None = None, silent: bool = False, force: bool = False
    ) -> bool:
        """Load settings from a module, a path to one ("proj.config", "django.conf:settings"),
        or any object; `namespace="CELERY"` reads CELERY_-prefixed names, Django style
        (default: the app's `namespace=`). `silent`: a module that cannot be imported is
        skipped (returns False), as Celery's."""
        if isinstance(obj, str):
            path, _, attr = obj.partition(":")
            try:
                obj = importlib.import_module(path)
            except ImportError as exc:
                if silent:
                    return False
                raise ConfigurationError(f"cannot import config module {path!r}: {exc}") from exc
            if attr:
                try:
                    obj = getattr(obj, attr)
                except AttributeError:
                    raise ConfigurationError(f"config module {path!r} has no {attr!r}") from None
        self.conf.from_object(obj, namespace or self.namespace)
        self._backends.clear()
        return True

    @property
    def timezone(self) -> tzinfo:
        return timezones.get_zone(self.conf.timezone)

    def now(self) -> datetime:
        """The current time in the app's time zone."""
        return datetime.now(self.timezone)

    # -- backends (one per broker URL, per process) ----------------------------------------------
    @property
    def broker(self) -> Backend:
        """The backend that holds queues, delayed messages, dead letters, leases and beat
        state; its results are kept by `result_backend` when that names another URL."""
        entry = self._backends.get(self.conf.broker_url)
        if entry is None or entry[0] != os.getpid():
            return self._connect()
        return entry[1]

    def _connect(self) -> Backend:
        if not self.configured:  # the first use of the settings: as Celery's app does
            self._configure()
        url = self.conf.broker_url
        if url == DEFAULTS["broker_url"]:
            _say_default_store(url)
        with self._lock:
            entry = self._backends.get(url)
            if entry is None or entry[0] != os.getpid():
                options = self.conf.broker_transport_options
                backend = connect(url, options, self.conf.result_backend)
                backend.event_max_len = int(self.conf.events_max_len)
                entry = self._backends[url] = (os.getpid(), backend)
            return entry[1]

    @property
    def result_store(self) -> Results:
        """The store of results: `result_backend`'s, or the broker's when unset."""
        broker = self.broker
        # a result_backend changed since the broker was connected: connected again (the
        # broker's own check stays one lookup, on every send)
        if broker.results.url != (self.conf.result_backend or broker.url):
            with self._lock:
                self._backends.pop(broker.url, None)
            broker = self._connect()
        return broker.results

    @property
    def signer(self) -> signing.Signer | None:
        """What signs this app's messages and verifies a worker's, from `security_key`
        (BEATQ_SECURITY_KEY wins over the code); None when neither is set.

        Worked out on first use and again when the setting is changed, not on every send:
        the variable is read then too (reading it costs as much as the signature)."""
        setting = dict.get(self.conf, "security_key")
        made_for, signer = self._signer
        if setting is not made_for:
            value = os.environ.get("BEATQ_SECURITY_KEY") or setting
            signer = signing.signer_for(value)
            self._signer = (setting, signer)
        return signer

    def close(self) -> None:
        for _, backend in self._backends.values():
            backend.close()
        self._backends.clear()

    # -- tasks -----------------------------------------------------------------------------
    def task(self, *args: Any, **options: Any) -> Any:
        """Register a function as a task: `@app.task` or `@app.task(bind=True, ...)`."""

        def register(fun: Callable[..., Any]) -> Task:
            name = options.pop("name", None) or self.gen_task_name(fun)
            base = options.pop("base", None) or self._task_cls()
            task = base(self, fun, name, **options)
            self.tasks[name] = task
            return task

        if len(args) == 1 and callable(args[0]) and not options:
            return register(args[0])
        if args:
            raise TypeError("use @app.task or @app.task(option=value, ...)")
        return register

    def _task_cls(self) -> type[Task]:
        """The default base of @app.task: `task_cls` (a class, or "module:Class" imported
        on first use, as the module may import the app), else Task."""
        cls = self.task_cls
        if cls is None:
            return Task
        if isinstance(cls, str):
            module, _, attr = cls.partition(":") if ":" in cls else cls.rpartition(".")
            try:
                cls = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise ConfigurationError(f"task_cls {self.task_cls!r}: {exc}") from exc
            self.task_cls = cls
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise ConfigurationError(f"task_cls must be a subclass of beatq.Task, not {cls!r}")
        return cls

    def register_task(self, task: Task | type[Task]) -> Task:
        """Register a class-based task (`class Fetch(Task): ... def run(self, ...)`),
        given as an instance or a class; named `module.Class` unless it has a `name`."""
        if isinstance(task, type):
            task = task()
        task.app = self
        if not task.name:
            cls = type(task)
            module = self.main if cls.__module__ == "__main__" and self.main else cls.__module__
            task.name = f"{module}.{cls.__qualname__}"
        self.tasks[task.name] = task
        return task

    def gen_task_name(self, fun: Callable[..., Any]) -> str:
        module = fun.__module__
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{fun.__qualname__}"

    def import_modules(self) -> None:
        """Import the modules named by `include` and `imports`, and those autodiscover_tasks
        finds, so their tasks register; then the app is finalized (`on_after_finalize`).
        What a worker, a beat and the schedule commands do as they start."""
        self._configure()
        for name in (*self.conf.imports, *self.conf.include):
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ConfigurationError(
                    f"cannot import {name!r} listed in include/imports: {exc}"
                ) from exc
        while self._discover:
            packages, related_name = self._discover.pop(0)
            discovery.discover(packages, related_name)
        self.finalize()

    def autodiscover_tasks(
        self,
        packages: discovery.Packages = None,
        related_name: str | None = "tasks",
        force: bool = False,
    ) -> None:
        """Import `<package>.tasks` for each package, so that their tasks register.

        `packages`: a list, or a callable returning one, read when the modules are
        imported (Django: `lambda: settings.INSTALLED_APPS`); None: Django's installed
        apps, when Django is configured. The import happens as a worker or a beat starts
        (`import_modules`), as in Celery; `force=True` imports now. A package without the
        module is skipped; a tasks module that fails to import raises `DiscoveryError`
        (an ImportError) with its own message."""
        if force or self.finalized:
            discovery.discover(packages, related_name)
        else:
            self._discover.append((packages, related_name))

    def _configure(self) -> None:
        """Send `on_configure` and `on_after_configure`, once, when the settings are first
        used (the first connection to the broker) or the app is finalized, whichever
        comes first: receivers connected in the project's modules are connected by then."""
        if self.configured:
            return
        self.configured = True
        if self.conf.otel_enabled:
            if self.conf.otel_enabled is not True:
                raise ConfigurationError(
                    f"setting otel_enabled is {self.conf.otel_enabled!r}; set it to True or False"
                )
            from . import otel  # only now: OpenTelemetry is an extra (beatq[otel])

            otel.instrument(self)
        self.on_configure.send(sender=self)
        sent = self.on_after_configure.send(sender=self, source=self.conf)
        self._configured_with = [receiver for receiver, _ in sent]

    def _configure_late(self) -> None:
        """Call the `on_after_configure` receivers connected after it was sent (in a tasks
        module that autodiscover_tasks imported): Celery never calls them, silently."""
        called = self._configured_with
        for receiver in self.on_after_configure._live(self):
            if receiver in called:
                continue
            called.append(receiver)
            try:
                receiver(signal=self.on_after_configure, sender=self, source=self.conf)
            except Exception as exc:  # as Signal.send: logged, the start goes on
                log.exception(
                    "Signal handler %r for app.on_after_configure raised: %r", receiver, exc
                )

    def finalize(self, auto: bool = False) -> None:
        """Mark the app complete and send `on_after_finalize`, once (Celery's name and
        signal): after the task modules are imported as a worker or beat starts."""
        self._configure()
        if self.finalized:
            return
        self.finalized = True
        if self.on_after_configure.receivers:
            self._configure_late()
        self.on_after_finalize.send(sender=self)

    # -- periodic tasks in code ------------------------------------------------------------
    def add_periodic_task(
        self,
        schedule: Any,
        sig: Any,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **opts: Any,
    ) -> str:
        """Run `sig` on `schedule` (seconds, a timedelta, a crontab, any beatq schedule)
        in the beat, as an entry of the code (as `beat_schedule`'s): with the beat's lease,
        fencing and catch-up. Returns the entry's name: `name`, or the signature's repr
        as in Celery (`proj.tasks.test('hello')`).

        `opts` are the call's options (`queue`, `expires`, ...) and beatq's entry keys
        (`catchup`, `overlap`, `jitter`, ...). A name added again with the same entry is
        kept once; with another entry it is refused (ConfigurationError, and the beat
        refuses to start): Celery would keep the last silently, losing the first."""
        from .beat.loader import ENTRY_KEYS  # the beat package imports this module

        sig = self._periodic_signature(sig, args, kwargs)
        options = dict(sig.options)
        entry: dict[str, Any] = {
            k: opts.pop(k) for k in ENTRY_KEYS if k in opts and k not in _CALL_KEYS
        }
        options.update(opts)
        entry.update(
            task=sig.task,
            schedule=schedule,
            args=list(sig.args),
            kwargs=dict(sig.kwargs),
            options=options,
        )
        key = name or repr(sig)
        caller = sys._getframe(1)
        where = f"add_periodic_task at {_relative(caller.f_code.co_filename)}:{caller.f_lineno}"
        known = self._periodic.get(key)
        if known is None:
            self._periodic[key] = (entry, where)
        elif known[0] != entry:
            problem = (
                f"periodic task {key!r} is added twice with different entries ({known[1]}, "
                f"and {where}); give each its own name= (Celery would keep the last only)"
            )
            self.periodic_conflicts.append(problem)
            raise ConfigurationError(problem)
        return key

    def _periodic_signature(self, sig: Any, args: Any, kwargs: Any) -> Signature:
        """`sig` (a signature, a task or a task name) with add_periodic_task's args and
        kwargs merged as Celery merges them (args first)."""
        if isinstance(sig, str):
            sig = self.signature(sig)
        elif not isinstance(sig, Signature):
            if not isinstance(getattr(sig, "name", None), str):
                raise TypeError(
                    f"add_periodic_task needs a signature (task.s(...)), a task or a task "
                    f"name, not {type(sig).__name__}"
                )
            sig = self.signature(sig.name)
        if sig.get("subtask_type"):
            raise ConfigurationError(
                f"add_periodic_task runs one task, not a {sig['subtask_type']} ({sig!r}): "
                "make a task that starts it, and schedule that task"
            )
        if args or kwargs:
            sig = sig.clone(args, kwargs)
        return sig

    @property
    def periodic_tasks(self) -> dict[str, tuple[dict[str, Any], str]]:
        """The entries added by add_periodic_task: name -> (entry, where it was added)."""
        return dict(self._periodic)

    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(name, list(self.tasks)) from None

    def signature(self, name: str | Mapping[str, Any], *args: Any, **kwargs: Any) -> Signature:
        """`app.signature("proj.add", (2, 2))`, or a signature's dict read back."""
        return canvas_signature(name, *args, app=self, **kwargs)

    @property
    def schedules(self) -> ScheduleStore:
        """The beat entries kept in the broker: add, update, remove, pause, resume,
        trigger, backfill and history while the system runs (beat/store.py)."""
        from .beat.store import ScheduleStore

        return ScheduleStore(self)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 (Celery's name)
        return AsyncResult(task_id, app=self)

    # -- sending ---------------------------------------------------------------------------
    def route(self, name: str, args: Any, kwargs: Any, task: Task | None) -> str:
        """The queue for a call with no explicit `queue=`: task's own, task_routes, default."""
        queue = task.option("queue") if task is not None else None
        if queue:
            return queue
        routes = self.conf.task_routes
        if not routes:
            return self.conf.task_default_queue
        for router in routes if isinstance(routes, (list, tuple)) else [routes]:
            found = _lookup_route(router, name, args, kwargs)
            if found:
                return found
        return self.conf.task_default_queue

    def build_message(
        self,
        name: str,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task: Task | None = None,
        **options: Any,
    ) -> tuple[Message, bytes]:
        """The message for a call, and its encoded body. An option beatq does not know or
        does not support is refused here, with a TypeError that names it (calling.py)."""
        if not self.configured:  # a setting such as otel_enabled acts from the first send on
            self._configure()
        if options:
            check_options(options)
        if task is None:
            task = self.tasks.get(name)
        opt = task.option if task is not None else _no_option
        args = list(args or ())
        kwargs = dict(kwargs or {})
        eta = options.pop("eta", None)
        countdown = options.pop("countdown", None)
        if eta is not None:
            eta_ts = self._eta_timestamp(eta) if isinstance(eta, datetime) else float(eta)
        elif countdown is not None:
            eta_ts = time.time() + timezones.seconds_from_now(countdown, "countdown")
        else:
            eta_ts = None
        expires = options.pop("expires") if "expires" in options else opt("expires")
        queue = options.pop("queue", None) or self.route(name, args, kwargs, task)
        if "routing_key" in options or "exchange" in options:
            check_routing(options, queue)
        serializer = options.pop("serializer", None) or opt("serializer")
        compression = options.pop("compression", None) or opt("compression")
        task_id = options.pop("task_id", None) or new_id()
        announce = bool(signals.before_task_publish.receivers)
        policy = options.get("retry_policy") if announce else None
        exec_options = self._exec_options(name, options, opt) if options else {}
        parent = exec_options.pop("parent_id", None)
        root = exec_options.pop("root_id", None)
        if parent is None:  # sent from inside a running task: it is the parent (as Celery)
            running = running_request()
            if running is not None:
                parent = running.id
                root = root or running.root_id or running.id
        priority = exec_options.pop("priority", None)
        if priority is None:
            priority = opt("priority")
        if priority is not None:
            priority = check_priority(priority)
        message = Message(
            id=task_id,
            task=name,
            args=args,
            kwargs=kwargs,
            options=exec_options,
            queue=queue,
            eta=eta_ts,
            expires=None if expires is None else timezones.expiry_timestamp(expires, self.timezone),
            retries=int(exec_options.pop("retries", 0)),
            parent=parent,
            root=root,
            group=exec_options.pop("group_id", None),
            priority=priority,
        )
        if announce:
            announce_before(message, policy)
        body = message.encode(
            serializer or self.conf.task_serializer,
            compression or self.conf.task_compression,
            self.signer,
        )
        return message, body

    def _exec_options(
        self, name: str, options: dict[str, Any], opt: Callable[[str], Any]
    ) -> dict[str, Any]:
        """The options of a call that travel in its message (those that shape the send
        taken out), checked: links as signatures, custom headers, time limits, flags."""
        for key in _SEND_ONLY:
            options.pop(key, None)
        exec_options = {k: v for k, v in options.items() if v is not None}
        for key in ("link", "link_error"):
            if key in exec_options:
                exec_options[key] = as_signatures(exec_options[key], self)
        if "headers" in exec_options:
            exec_options["headers"] = _custom_headers(exec_options["headers"])
        if "soft_time_limit" in exec_options or "time_limit" in exec_options:
            check_time_limits(
                exec_options.get("soft_time_limit", opt("soft_time_limit")),
                exec_options.get("time_limit", opt("time_limit")),
                f"sending {name!r}",
            )
        for key in ("acks_late", "ignore_result"):  # a worker refuses "yes" (truthy, as "no")
            if key in exec_options and not isinstance(exec_options[key], bool):
                raise TypeError(f"{key}= takes True or False, not {exec_options[key]!r}")
        return exec_options

    def _eta_timestamp(self, eta: datetime) -> float:
        """The instant of an `eta=` datetime; a naive one is read in the app's timezone
        (SPEC §4). A naive eta more than a minute in the past is most often
        `datetime.utcnow() + ...` under a zone east of UTC: warned about, once."""
        ts = timezones.to_timestamp(eta, self.timezone)
        if eta.tzinfo is None and ts < time.time() - 60:
            _warn_naive_eta(eta, ts, self.conf.timezone)
        return ts

    def send_task(
        self,
        name: str,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task: Task | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send a message for task `name` (registered here or not) and return its result.

        `ignore_result=True` (or the task's own option) stores no result, and the handle
        returned knows it: its `get()` returns None at once, as in Celery. `result_cls`
        makes the handle of that class. Sent from inside a running task, the result is one
        of that task's children (`add_to_parent=False`: not)."""
        add_to_parent = options.pop("add_to_parent", True)
        result_cls = options.pop("result_cls", None) or AsyncResult
        message, body = self.build_message(name, args, kwargs, task, **options)
        outgoing = self.outgoing(message, body, task)
        events = [_sent_event(message)] if self.conf.task_send_sent_event else ()
        self.publish([outgoing], *self._retry_options(options), events=events)
        result = result_cls(message.id, app=self, task_name=name)
        if add_to_parent and message.parent is not None:
            add_child(result)
        if self._ignores(options, task):
            result.ignored = True
        return result

    def _ignores(self, options: Mapping[str, Any], task: Task | None) -> bool:
        """Whether a call stores no result: its own `ignore_result`, else its task's."""
        ignore = options.get("ignore_result")
        if ignore is None:
            return bool(task is not None and task.option("ignore_result"))
        return bool(ignore)

    def send_many(
        self,
        task: Task,
        calls: Sequence[tuple[Iterable[Any], Mapping[str, Any]]],
        **options: Any,
    ) -> list[AsyncResult]:
        """Send many calls of one task in one round trip (see `Task.apply_many`).

        The options are worked out once, for the first call; the others copy its message
        with their own id and arguments (a router that looks at the arguments, or a
        given task_id, makes every call its own). Sent from inside a running task, the
        results are that task's children, as send_task's (`add_to_parent=False`: not)."""
        result_cls = options.pop("result_cls", None)  # the handles' class, as send_task's
        add_to_parent = options.pop("add_to_parent", True)
        outgoing: list[Outgoing] = []
        events: list[bytes] | None = [] if self.conf.task_send_sent_event else None
        routes = self.conf.task_routes
        routers = routes if isinstance(routes, (list, tuple)) else [routes]
        each = "task_id" in options or any(callable(r) for r in routers)
        each = each or bool(signals.before_task_publish.receivers)  # one signal per message
        for args, kwargs in calls if each else calls[:1]:
            message, body = self.build_message(task.name, args, kwargs, task, **options)
            outgoing.append(self.outgoing(message, body, task))
            if events is not None:
                events.append(_sent_event(message))
        if not each and len(calls) > 1:
            first, o = message, outgoing[0]
            queue, eta, ack_at_claim, priority = o.queue, o.eta, o.ack_at_claim, o.priority
            rest = calls[1:]
            copies = first.copies(rest, self.signer)
            outgoing += [
                Outgoing(queue, id_, body, eta, ack_at_claim, priority) for id_, body in copies
            ]
            if events is not None:
                for (id_, _), (args, kwargs) in zip(copies, rest, strict=True):
                    copy = first.again(list(args or ()), dict(kwargs or {}), id_)
                    copy.sent, copy.content_type = first.sent, first.content_type
                    copy.content_encoding = first.content_encoding
                    events.append(_sent_event(copy))
        self.publish(outgoing, *self._retry_options(options), events=events or ())
        name = task.name
        if result_cls is None:
            results = [AsyncResult(o.id, self, name) for o in outgoing]
        else:
            results = [result_cls(o.id, app=self, task_name=name) for o in outgoing]
        if self._ignores(options, task):
            for result in results:
                result.ignored = True
        if add_to_parent and message.parent is not None:
            for result in results:
                add_child(result)
        return results

    def ack_at_claim(self, message: Message, task: Task | None = None) -> bool:
        """Whether `message` may be acknowledged as a worker claims it (`Outgoing`): its
        task, known here, is acknowledged as it starts (not acks_late, per call or per
        task) and stores no STARTED state. Unknown here: False, its worker decides."""
        if task is None:
            task = self.tasks.get(message.task)
            if task is None:
                return False
        late = message.options.get("acks_late")
        if late is None:
            late = task.option("acks_late")
        return not late and not task.option("track_started")

    def outgoing(
        self, message: Message, body: bytes, task: Task | None = None, held: bool = False
    ) -> Outgoing:
        """`message` (encoded as `body`) as the broker takes it: queue, id, eta and its
        delivery property. `held`: sent ready although its body has an eta (a beat run
        sent ahead, which its worker holds until then): never acknowledged at claim."""
        priority = message.priority or 0
        if held:
            return Outgoing(message.queue, message.id, body, None, False, priority)
        return Outgoing(
            message.queue,
            message.id,
            body,
            message.eta,
            self.ack_at_claim(message, task),
            priority,
        )

    def _retry_options(self, options: Mapping[str, Any]) -> tuple[bool, Any]:
        """A send's retry flag (its own, or task_publish_retry) and its retry_policy."""
        retry = options["retry"] if "retry" in options else self.conf.task_publish_retry
        return retry, options.get("retry_policy")

    def publish(
        self,
        outgoing: Sequence[Outgoing],
        retry: bool = True,
        policy: Mapping[str, Any] | None = None,
        results: Sequence[ResultWrite] = (),
        events: Sequence[bytes] | None = None,
    ) -> None:
        """Hand encoded messages (and saved groups) to the broker in one atomic step,
        retrying a lost connection per `policy` (over task_publish_retry_policy). `events`
        (task-sent) go in the same round trip; None: made from the messages when
        task_send_sent_event is on."""
        if events is None:
            events = self._sent_events(outgoing) if self.conf.task_send_sent_event else ()
        try:
            return self._publish_once(outgoing, results, events)
        except NotReplicated:
            raise  # the master has it: sent again, it could run twice
        except BrokerError:
            if not retry:
                raise
            policy = {**self.conf.task_publish_retry_policy, **(policy or {})}
            retries = int(policy.get("max_retries") or 0)
            if not retries:
                raise
        delay = float(policy.get("interval_start", 0.0))
        for attempt in range(retries):
            time.sleep(delay)
            delay = min(
                delay + float(policy.get("interval_step", 0.2)),
                float(policy.get("interval_max", 0.2)),
            )
            try:
                return self._publish_once(outgoing, results, events)
            except NotReplicated:
                raise
            except BrokerError:
                if attempt + 1 == retries:
                    raise

    def _publish_once(
        self, outgoing: Sequence[Outgoing], results: Sequence[ResultWrite], events: Any
    ) -> None:
        if results:
            self.broker.finish(results=results, send=outgoing, events=events)
        else:
            self.broker.send(outgoing, events)
        if self.tracing is not None:  # beatq.otel: their publish spans end
            self.tracing.published(outgoing)
        if signals.after_task_publish.receivers:
            announce_published(outgoing)

    def _sent_events(self, outgoing: Sequence[Outgoing]) -> list[bytes]:
        """task-sent for each message (task_send_sent_event), sent with the messages."""
        found = []
        for o in outgoing:
            try:
                message = decode_message(o.body, None)
            except ValueError:  # MessageError, DecodeError: not ours to judge here
                continue
            found.append(_sent_event(message))
        return found

    def __repr__(self) -> str:
        return f"<Beatq {self.main or '__main__'}>"

    # Last in the class: below this, `Task` in the class body would name the property.
    @property
    def Task(self) -> type[Task]:  # noqa: N802 (Celery's name)
        """The base class of this app's tasks, as Celery's `app.Task`: `task_cls`, else
        beatq.Task. `class Audited(app.Task)`; `app.Task = Audited` makes it the default."""
        return self._task_cls()

    @Task.setter
    def Task(self, cls: type[Task] | str) -> None:  # noqa: N802
        self.task_cls = cls


Celery = Beatq  # `from beatq import Celery`: code written for Celery keeps its name

# Every app made in this process (shared tasks register with each), and the shared tasks.
_apps: weakref.WeakSet[Beatq] = weakref.WeakSet()
_shared_tasks: list[SharedTask] = []


class SharedTask:
    """What `@shared_task` gives: the task as the current app has it.

    The function is registered with every app, those made before and after the
    decorator ran; each use (`.delay()`, a call, `.s()`, `.name`) goes to the task of
    the current app (`beatq.current_app()`, the newest), as Celery's proxy does."""

    def __init__(self, fun: Callable[..., Any], options: Mapping[str, Any]) -> None:
        self._fun = fun
        self._options = dict(options)
        self._tasks: weakref.WeakKeyDictionary[Beatq, Task] = weakref.WeakKeyDictionary()
        self.__wrapped__ = fun
        self.__doc__ = fun.__doc__
        self.__name__ = getattr(fun, "__name__", "task")

    def register(self, app: Beatq) -> Task:
        """This function's task in `app`, registered there if it is not yet."""
        task = self._tasks.get(app)
        if task is None:
            task = app.task(**self._options)(self._fun)
            self._tasks[app] = task
        return task

    def _task(self) -> Task:
        app = current_app()
        if not isinstance(app, Beatq):  # pragma: no cover (the only App is Beatq)
            raise ConfigurationError(f"current app {app!r} is not a Beatq")
        return self.register(app)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(shared, Task) holds, as for Celery's proxy
        try:
            return type(self._task())
        except ConfigurationError:
            return SharedTask

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._task(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)

    def __repr__(self) -> str:
        try:
            return repr(self._task())
        except ConfigurationError:
            return f"<@shared_task: {self.__name__} (no app yet)>"


def shared_task(*args: Any, **options: Any) -> Any:
    """A task for reusable apps (`@shared_task` or `@shared_task(bind=True, ...)`) that
    binds to whichever app the program makes, before or after this decorator runs; the
    same options as `@app.task`."""

    def make(fun: Callable[..., Any]) -> SharedTask:
        shared = SharedTask(fun, options)
        _shared_tasks.append(shared)
        for app in list(_apps):
            shared.register(app)
        return shared

    if len(args) == 1 and callable(args[0]) and not options:
        return make(args[0])
    if args:
        raise TypeError("use @shared_task or @shared_task(option=value, ...)")
    return make


def _headers(message: Message) -> dict[str, Any]:
    """A message's headers as Celery's before/after_task_publish give them (protocol 2)."""

    def iso(ts: float | None) -> str | None:
        return None if ts is None else datetime.fromtimestamp(ts, timezones.UTC).isoformat()

    return {
        **(message.options.get("headers") or {}),  # beatq's own go over a custom namesake
        "lang": "py",
        "task": message.task,
        "id": message.id,
        "eta": iso(message.eta),
        "expires": iso(message.expires),
        "retries": message.retries,
        "root_id": message.root or message.id,
        "parent_id": message.parent,
        "group": message.group,
        "priority": message.priority,
    }


# The headers beatq itself gives before/after_task_publish; any other is a custom header.
_STANDARD_HEADERS = frozenset(
    ("lang", "task", "id", "eta", "expires", "retries", "root_id", "parent_id", "group", "priority")
)


def _body(message: Message) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    opts = message.options
    embed = {
        "callbacks": opts.get("link"),
        "errbacks": opts.get("link_error"),
        "chain": opts.get("chain"),
        "chord": opts.get("chord"),
    }
    return message.args, message.kwargs, embed


def announce_before(message: Message, retry_policy: Any = None) -> None:
    """Send `before_task_publish` for a message about to be encoded and sent. What its
    receivers add to `headers` (a tracing integration's trace context) travels with the
    message as its custom headers, as in Celery."""
    custom = message.options.get("headers") or {}
    headers = _headers(message)  # the custom ones among them
    signals.before_task_publish.send(
        sender=message.task,
        body=_body(message),
        exchange="",
        routing_key=message.queue,
        headers=headers,
        properties={"correlation_id": message.id, "priority": message.priority},
        declare=[],
        retry_policy=retry_policy,
    )
    found = {**custom, **{k: v for k, v in headers.items() if k not in _STANDARD_HEADERS}}
    if found != custom:
        message.options["headers"] = _custom_headers(found)


def _custom_headers(value: Any) -> dict[str, Any]:
    """`apply_async(headers=...)`: a mapping of names (str) to values the task's
    serializer can carry; TypeError, naming the fault, for anything else."""
    if not isinstance(value, Mapping):
        raise TypeError(f"headers= takes a dict of custom headers, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"headers=: a header name must be a str, not {key!r}")
    return dict(value)


def announce_published(outgoing: Iterable[Outgoing]) -> None:
    """Send `after_task_publish` for each message just handed to the broker."""
    for o in outgoing:
        try:
            message = decode_message(o.body, None)
        except (MessageError, ValueError):  # not ours to judge here (DecodeError too)
            continue
        signals.after_task_publish.send(
            sender=message.task,
            body=_body(message),
            exchange="",
            routing_key=message.queue,
            headers=_headers(message),
        )


# Celery(...)'s arguments that have no meaning in beatq, and why: refused, not dropped.
_CELERY_ONLY_ARGS = {
    "loader": "beatq has no loaders: settings come from conf and config_from_object",
    "amqp": "beatq has no AMQP layer: brokers are chosen by broker_url",
    "events": "beatq's events are app.events, not replaceable",
    "log": "beatq's logging is set up by its CLI (or the setup_logging signal)",
    "control": "beatq's remote control is app.control, not replaceable",
    "fixups": "beatq has no fixups: Django's apps are read by autodiscover_tasks()",
    "autofinalize": "beatq's app is finalized as a worker or beat starts",
}


def _refuse_celery_only(settings: Mapping[str, Any]) -> None:
    for key, why in _CELERY_ONLY_ARGS.items():
        if key in settings:
            raise TypeError(f"Celery({key}=...) is not supported by beatq: {why}")


_warned_naive_eta = False


def _warn_naive_eta(eta: datetime, ts: float, zone: str) -> None:
    global _warned_naive_eta
    if _warned_naive_eta:
        return
    _warned_naive_eta = True
    late = time.time() - ts
    ago = f"{late / 3600:.1f} h" if late >= 3600 else f"{late / 60:.0f} min"
    log.warning(
        "eta=%s has no time zone, so it is read in the app's timezone (%s): %s ago, and "
        "the task runs at once. Pass an aware datetime: datetime.now(timezone.utc) + "
        "timedelta(...), not datetime.utcnow() (warned once per process)",
        eta.isoformat(sep=" "),
        zone,
        ago,
    )


_said_default_store = False


def _say_default_store(url: str) -> None:
    """Log once per process the file a process uses when no broker is configured: a client
    and a worker started in two directories would use two files and never meet."""
    global _said_default_store
    if _said_default_store:
        return
    _said_default_store = True
    log.info(
        "no broker_url is set: using the embedded default, the SQLite file %s (set "
        "broker_url or BEATQ_BROKER_URL to share it with processes started elsewhere)",
        os.path.abspath(url.split("///", 1)[1]),
    )


def _relative(path: str) -> str:
    """`path` relative to the working directory when it lies under it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def _sent_event(message: Message) -> bytes:
    return ev.encode(ev.TASK_SENT, ev.sent_fields(message), message.sent or None)


def _no_option(name: str) -> None:
    return None


def _lookup_route(router: Any, name: str, args: Any, kwargs: Any) -> str | None:
    if callable(router):
        route = router(name, args, kwargs, {})
    elif isinstance(router, Mapping):
        route = router.get(name)
        if route is None:
            for pattern, value in router.items():
                if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern):
                    route = value
                    break
    else:
        route = None
    if isinstance(route, str):
        return route
    if isinstance(route, Mapping):
        return route.get("queue")
    return None
