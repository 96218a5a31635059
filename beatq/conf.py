"""Settings: one table of defaults, Celery's old upper-case names, BEATQ_* environment overrides.

`app.conf` is a `Settings`: a dict with attribute access whose keys are Celery's lower-case
setting names. `config_from_object` also accepts the old upper-case names.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

from .exceptions import ConfigurationError

log = logging.getLogger("beatq.conf")

DEFAULTS: dict[str, Any] = {
    "broker_url": "sqlite:///beatq.sqlite3",  # embedded: no server to install (SPEC §9)
    "broker_transport_options": {},
    "broker_connection_retry": True,
    "broker_connection_max_retries": None,
    "result_backend": None,  # None: the broker stores results too
    "result_serializer": "json",
    "result_compression": None,
    "result_expires": 86400.0,
    "result_accept_content": None,
    "timezone": "UTC",
    "enable_utc": True,
    "imports": (),
    "include": (),
    "accept_content": ["json"],
    "task_serializer": "json",
    "task_compression": None,
    "task_default_queue": "celery",
    "task_default_priority": None,  # 0-255, higher first within a queue (RabbitMQ's order)
    "task_routes": {},
    "task_queues": None,  # Celery's declared queues: beatq makes queues on use; purge reads names
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_track_started": False,
    "task_acks_late": False,
    "task_reject_on_worker_lost": False,
    "task_ignore_result": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_default_retry_delay": 180.0,
    "task_max_retries": 3,
    "task_default_rate_limit": None,  # a rate limit for every task ("10/s"), per worker
    "task_publish_retry": True,
    "task_publish_retry_policy": {
        "max_retries": 3,
        "interval_start": 0.0,
        "interval_step": 0.2,
        "interval_max": 0.2,
    },
    "worker_concurrency": None,  # None: the number of CPUs
    "worker_pool": "prefork",
    "worker_prefetch_multiplier": 4,
    "worker_heartbeat_interval": 1.0,
    "worker_send_task_events": False,  # worker -E: task and worker events (beatq/events.py)
    "worker_revoke_expires": 10800.0,  # seconds a revoked id is kept (Celery's 3 hours)
    "worker_disable_rate_limits": False,  # True: workers ignore every rate_limit
    # Celery's child recycling: not offered yet, refused by the worker when set (issue 25)
    "worker_max_tasks_per_child": None,
    "worker_autoscale_keepalive": 30.0,  # seconds a child idles before --autoscale retires it
    "worker_max_memory_per_child": None,
    # times a message may be put back unfinished (Reject(requeue=True), a lost child with
    # reject_on_worker_lost) before it goes to the dead letters instead: no endless loop
    "worker_requeue_max": 100,
    "task_send_sent_event": False,  # the client sends task-sent
    "beat_send_events": False,  # beat -E: beat-elected, -lost, -dispatched, -missed
    "events_max_len": 10_000,  # the event stream keeps about this many of the newest
    "beat_schedule": {},
    "beat_schedule_files": ["schedules/*.yaml"],
    "beat_lease_ttl": 4.0,  # seconds: a standby takes over within this after the leader dies
    # the dashboard's charts (beatq/timeline.py): seconds per sample (0: off), seconds kept
    "timeline_interval": 10.0,
    "timeline_keep": 3600.0,
    "beat_history_len": 1000,  # run records kept per entry (app.schedules.history); 0: none
    "beat_max_loop_interval": 5.0,
    # A key, "file:PATH", or a list of them (the first signs, all verify): messages are
    # signed and workers run only signed ones (beatq/signing.py). None: no signing.
    # BEATQ_SECURITY_KEY is read when the app first signs, and whenever this is set.
    "security_key": None,
    # True: OpenTelemetry traces of sends, runs and beat dispatches, as beatq.otel.instrument
    # (app) makes them, from the app's first send or broker connection (needs beatq[otel])
    "otel_enabled": False,
}

# Celery's pre-4.0 names, accepted by config_from_object and update.
OLD_NAMES: dict[str, str] = {
    "BROKER_URL": "broker_url",
    "BROKER_TRANSPORT_OPTIONS": "broker_transport_options",
    "BROKER_CONNECTION_RETRY": "broker_connection_retry",
    "BROKER_CONNECTION_MAX_RETRIES": "broker_connection_max_retries",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_RESULT_SERIALIZER": "result_serializer",
    "CELERY_RESULT_COMPRESSION": "result_compression",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ENABLE_UTC": "enable_utc",
    "CELERY_IMPORTS": "imports",
    "CELERY_INCLUDE": "include",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_MESSAGE_COMPRESSION": "task_compression",
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_ROUTES": "task_routes",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_TRACK_STARTED": "task_track_started",
    "CELERY_ACKS_LATE": "task_acks_late",
    "CELERY_REJECT_ON_WORKER_LOST": "task_reject_on_worker_lost",
    "CELERY_IGNORE_RESULT": "task_ignore_result",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERY_TASK_PUBLISH_RETRY": "task_publish_retry",
    "CELERY_TASK_PUBLISH_RETRY_POLICY": "task_publish_retry_policy",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_POOL": "worker_pool",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERY_DEFAULT_RATE_LIMIT": "task_default_rate_limit",
    "CELERY_DISABLE_RATE_LIMITS": "worker_disable_rate_limits",
    "CELERYD_MAX_TASKS_PER_CHILD": "worker_max_tasks_per_child",
    "CELERYD_MAX_MEMORY_PER_CHILD": "worker_max_memory_per_child",
    "CELERY_SEND_EVENTS": "worker_send_task_events",
    "CELERY_SEND_TASK_SENT_EVENT": "task_send_sent_event",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERYBEAT_MAX_LOOP_INTERVAL": "beat_max_loop_interval",
    "CELERY_RESULT_ACCEPT_CONTENT": "result_accept_content",
    "CELERY_SECURITY_KEY": "security_key",
    "CELERY_DEFAULT_RETRY_DELAY": "task_default_retry_delay",
    "CELERY_MAX_RETRIES": "task_max_retries",
    "CELERYD_SEND_EVENTS": "worker_send_task_events",
}

# Celery's settings that beatq does not read: setting one logs that it has no effect.
CELERY_ONLY = frozenset(
    """
    task_annotations task_protocol task_store_eager_result task_remote_tracebacks
    task_store_errors_even_if_ignored task_acks_on_failure_or_timeout
    task_allow_error_cb_on_chord_header
    task_queue_max_priority task_inherit_parent_priority
    task_create_missing_queues task_create_missing_queue_type task_default_queue_type
    task_default_exchange task_default_exchange_type task_default_routing_key
    task_default_delivery_mode worker_direct result_backend_always_retry
    result_backend_max_sleep_between_retries result_backend_base_sleep_between_retries
    result_backend_max_retries result_backend_thread_safe result_backend_transport_options
    result_extended result_cache_max result_chord_join_timeout result_chord_retry_interval
    override_backends result_persistent result_exchange result_exchange_type
    database_engine_options database_short_lived_sessions database_table_schemas
    database_table_names database_create_tables_at_setup redis_backend_health_check_interval
    redis_backend_use_ssl redis_max_connections redis_socket_connect_timeout
    redis_socket_timeout redis_retry_on_timeout redis_socket_keepalive cache_backend
    cache_backend_options broker_read_url broker_write_url broker_failover_strategy
    broker_heartbeat broker_heartbeat_checkrate broker_use_ssl broker_pool_limit
    broker_connection_timeout broker_connection_retry_on_startup broker_channel_error_retry
    broker_login_method broker_transport broker_host broker_port broker_user broker_password
    broker_vhost worker_enable_prefetch_count_reduction worker_lost_wait
    worker_state_db worker_timer_precision worker_enable_remote_control
    worker_proc_alive_timeout worker_cancel_long_running_tasks_on_connection_loss
    worker_soft_shutdown_timeout worker_enable_soft_shutdown_on_idle event_queue_ttl
    event_queue_expires event_queue_prefix event_exchange event_serializer control_queue_ttl
    control_queue_expires control_exchange control_queue_durable control_queue_exclusive
    worker_hijack_root_logger worker_log_color worker_log_format worker_task_log_format
    worker_redirect_stdouts worker_redirect_stdouts_level security_certificate
    security_cert_store security_digest security_key_password worker_pool_restarts
    worker_autoscaler worker_consumer worker_timer worker_deduplicate_successful_tasks
    beat_scheduler beat_schedule_filename beat_sync_every beat_cron_starting_deadline
    """.split()
)

# Celery settings whose usual value is what beatq always does: taken without a word.
SAME_AS_BEATQ: dict[str, Any] = {
    "broker_connection_retry_on_startup": True,  # a worker started before its broker waits
    "task_create_missing_queues": True,  # a queue exists once something is sent to it
    "task_protocol": 2,
}

# The prefixes of Celery's old upper-case names: one of these that is not in OLD_NAMES is
# worth a word; other upper-case names in a settings module (Django's DEBUG) are not ours.
OLD_PREFIXES = ("CELERY_", "CELERYD_", "CELERYBEAT_", "CELERYMON_", "BROKER_", "CELERY_REDIS_")

# Environment variables that win over the code.
ENV_OVERRIDES: dict[str, str] = {
    "BEATQ_BROKER_URL": "broker_url",
    "BEATQ_RESULT_BACKEND": "result_backend",
    "BEATQ_SECURITY_KEY": "security_key",
}


_ENV_FOR = {name: env for env, name in ENV_OVERRIDES.items()}
# The keys `Settings` reads other than as they are: an old name, or one the environment
# may override.
_TRANSLATED = frozenset(OLD_NAMES) | frozenset(_ENV_FOR)


def canonical(name: str) -> str:
    """The lower-case setting name for `name`, translating Celery's old names."""
    return OLD_NAMES.get(name, name)


# The keys already warned about in this process: each is named once, however often set.
_warned: set[str] = set()


def check_key(name: str, value: Any = None, shown: str | None = None, prefix: str = "") -> None:
    """Log one warning (once per process per key) when `name` is not a setting beatq reads:
    a typo (`brokr_url`) gets a did-you-mean, a Celery setting beatq does not use says so.
    `shown`: the key as the user wrote it (`CELERY_BROKR_URL`), `prefix` its namespace."""
    shown = shown or name
    if name in DEFAULTS or shown in _warned:
        return
    if name in SAME_AS_BEATQ and SAME_AS_BEATQ[name] == value:
        return
    _warned.add(shown)
    if name in CELERY_ONLY or name in SAME_AS_BEATQ:
        log.warning("setting %r is Celery's; beatq does not read it, so it has no effect", shown)
        return
    if name.isupper():  # an old name: suggest the old name it is close to
        close = difflib.get_close_matches(name, list(OLD_NAMES), n=1, cutoff=0.8)
    else:
        close = difflib.get_close_matches(name, list(DEFAULTS), n=1, cutoff=0.7)
        close = [f"{prefix}{c.upper()}" if prefix else c for c in close]
    log.warning(
        "unknown setting %r: beatq does not read it, so it has no effect%s",
        shown,
        f" (did you mean {close[0]!r}?)" if close else "",
    )


def _warn_unprefixed(key: str, prefix: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    new = canonical(key)
    log.warning(
        "setting %r is not read: with namespace %r only %s* names are; name it %r",
        key,
        prefix.rstrip("_"),
        prefix,
        f"{prefix}{new.upper()}",
    )


def _warn_no_namespace(key: str) -> None:
    """`CELERY_BEAT_SCHEDULE` read without a namespace: Django's settings loaded without
    `namespace="CELERY"` (Celery's old name for it, if any, would have been taken)."""
    if key in _warned:
        return
    _warned.add(key)
    log.warning(
        "setting %r is not read: it is %r under namespace 'CELERY'; load it with "
        'config_from_object(..., namespace="CELERY")',
        key,
        key[7:].lower(),
    )


class Settings(dict):
    """The app's settings: Celery's lower-case names, read as keys or attributes.

    >>> conf = Settings(); conf.update(timezone="Asia/Shanghai"); conf.timezone
    'Asia/Shanghai'
    """

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        super().__init__(DEFAULTS)
        if values:
            self.update(values)

    def __getitem__(self, key: str) -> Any:
        if key in _TRANSLATED:
            key = OLD_NAMES.get(key, key)
            env = _ENV_FOR.get(key)
            if env is not None and os.environ.get(env):
                return os.environ[env]
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        name = canonical(key)
        if name not in DEFAULTS:
            check_key(name, value, key)
        elif name == "enable_utc" and value is not True:
            # Celery's enable_utc=False stores local times; beatq always stores UTC.
            raise ConfigurationError(
                f"setting {key!r}={value!r} is not supported: beatq stores every time in "
                "UTC and prints it in the app's timezone; remove the setting and set "
                "timezone to the zone you want times shown in"
            )
        super().__setitem__(name, value)

    def __getattr__(self, key: str) -> Any:
        # The settings of DEFAULTS read as attributes do not come here (see _Setting
        # below): an old name, or a key set beyond DEFAULTS, do.
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no setting {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Take every setting from a module or object: lower-case names and old upper-case ones.

        With `namespace="CELERY"` (Django style), `CELERY_BROKER_URL` sets `broker_url` and
        only names with that prefix are read; an old Celery name left without it
        (`BROKER_URL`, `CELERYBEAT_SCHEDULE`) is named in a warning, as it is not read.
        """
        prefix = f"{namespace.upper()}_" if namespace else None
        for key in dir(obj):
            if key.startswith("_"):
                continue
            if prefix:
                if key.startswith(prefix):
                    self._set_namespaced(key, prefix, getattr(obj, key))
                elif key in OLD_NAMES:
                    _warn_unprefixed(key, prefix)
                continue
            if key in OLD_NAMES:
                self[key] = getattr(obj, key)
            elif key.islower():
                value = getattr(obj, key)
                if callable(value) or type(value).__name__ == "module":
                    continue
                self[key] = value
            elif key.startswith("CELERY_") and key[7:].lower() in DEFAULTS:
                _warn_no_namespace(key)
            elif key.startswith(OLD_PREFIXES):
                check_key(key)

    def _set_namespaced(self, key: str, prefix: str, value: Any) -> None:
        """`CELERY_BROKER_URL` as broker_url; an old name under the prefix
        (`CELERY_ALWAYS_EAGER`) as the setting it always meant."""
        name = key[len(prefix) :].lower()
        if name not in DEFAULTS and key in OLD_NAMES:
            name = OLD_NAMES[key]
        if name not in DEFAULTS:
            check_key(name, value, key, prefix)
        dict.__setitem__(self, name, value)

    def __iter__(self) -> Iterator[str]:
        return super().__iter__()

    def __dir__(self) -> list[str]:
        # the settings are keys, not attributes (config_from_object(conf) reads attributes)
        own = type(self).__dict__
        return [n for n in super().__dir__() if not isinstance(own.get(n), _Setting)]


class _Setting:
    """`conf.name` for a setting of DEFAULTS: its value in one call (its environment
    override first, if it has one). The send and task paths read a dozen settings a call;
    through `Settings.__getattr__` each paid for an AttributeError first (2.6k instructions
    against 1.2k, callgrind)."""

    __slots__ = ("name", "env")

    def __init__(self, name: str) -> None:
        self.name = name
        self.env = name in _ENV_FOR

    def __get__(self, conf: Settings | None, owner: type | None = None) -> Any:
        if conf is None:
            return self
        try:
            if self.env:
                return conf[self.name]  # Settings.__getitem__: the environment first
            return dict.__getitem__(conf, self.name)
        except KeyError:
            raise AttributeError(f"no setting {self.name!r}") from None


for _name in DEFAULTS:
    if _name not in OLD_NAMES:
        setattr(Settings, _name, _Setting(_name))
