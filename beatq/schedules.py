"""An alias module for code coming from Celery: `celery.schedules` becomes `beatq.schedules`.

    from beatq.schedules import crontab, schedule      # as `from celery.schedules import ...`

Nothing is defined here. The schedules live in `beatq/beat/schedules.py`, beside the rest
of the beat, and beatq's own modules import them from there, never from this alias.
"""

from .beat.due import schedstate
from .beat.schedules import (
    ParseException,
    crontab,
    crontab_parser,
    every,
    once,
    parse_duration,
    schedule,
    solar,
)

__all__ = [
    "ParseException",
    "crontab",
    "crontab_parser",
    "every",
    "once",
    "parse_duration",
    "schedstate",
    "schedule",
    "solar",
]
