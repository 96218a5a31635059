"""Settings: one table of defaults, Celery's old upper-case names, BEATQ_* environment overrides.

`app.conf` is a `Settings`: a dict with attribute access whose keys are Celery's lower-case
setting names. `config_from_object` also accepts the old upper-case names.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

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
    "task_routes": {},
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_track_started": False,
    "task_acks_late": False,
    "task_ignore_result": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_default_retry_delay": 180.0,
    "task_max_retries": 3,
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
    "task_send_sent_event": False,  # the client sends task-sent
    "beat_send_events": False,  # beat -E: beat-elected, -lost, -dispatched, -missed
    "events_max_len": 10_000,  # the event stream keeps about this many of the newest
    "beat_schedule": {},
    "beat_schedule_files": ["schedules/*.yaml"],
    "beat_lease_ttl": 4.0,  # seconds: a standby takes over within this after the leader dies
    "beat_max_loop_interval": 5.0,
    # A key, "file:PATH", or a list of them (the first signs, all verify): messages are
    # signed and workers run only signed ones (beatq/signing.py). None: no signing.
    # BEATQ_SECURITY_KEY is read when the app first signs, and whenever this is set.
    "security_key": None,
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
    "CELERY_IGNORE_RESULT": "task_ignore_result",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERY_TASK_PUBLISH_RETRY": "task_publish_retry",
    "CELERY_TASK_PUBLISH_RETRY_POLICY": "task_publish_retry_policy",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_POOL": "worker_pool",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERY_SEND_EVENTS": "worker_send_task_events",
    "CELERY_SEND_TASK_SENT_EVENT": "task_send_sent_event",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERYBEAT_MAX_LOOP_INTERVAL": "beat_max_loop_interval",
}

# Environment variables that win over the code.
ENV_OVERRIDES: dict[str, str] = {
    "BEATQ_BROKER_URL": "broker_url",
    "BEATQ_RESULT_BACKEND": "result_backend",
    "BEATQ_SECURITY_KEY": "security_key",
}


_ENV_FOR = {name: env for env, name in ENV_OVERRIDES.items()}


def canonical(name: str) -> str:
    """The lower-case setting name for `name`, translating Celery's old names."""
    return OLD_NAMES.get(name, name)


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
        super().__setitem__(canonical(key), value)

    def __getattr__(self, key: str) -> Any:
        try:
            if key in _ENV_FOR or key in OLD_NAMES:
                return self[key]
            return dict.__getitem__(self, key)  # the common case, on every send: one frame less
        except KeyError:
            raise AttributeError(f"no setting {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Take every setting from a module or object: lower-case names and old upper-case ones.

        With `namespace="CELERY"` (Django style), `CELERY_BROKER_URL` sets `broker_url`.
        """
        prefix = f"{namespace.upper()}_" if namespace else None
        for key in dir(obj):
            if key.startswith("_"):
                continue
            value = getattr(obj, key)
            if prefix:
                if key.startswith(prefix):
                    name = key[len(prefix) :].lower()
                    self[name if name in DEFAULTS else key] = value
                continue
            if key in OLD_NAMES or key.islower():
                if key.islower() and (callable(value) or type(value).__name__ == "module"):
                    continue
                self[key] = value

    def __iter__(self) -> Iterator[str]:
        return super().__iter__()
