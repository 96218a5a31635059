"""An alias module for code coming from Celery: `celery.schedules` becomes `beatq.schedules`.

    from beatq.schedules import crontab, schedule      # as `from celery.schedules import ...`

Nothing is defined here. The schedules live in `beatq/beat/schedules.py`, beside the rest
of the beat, and beatq's own modules import them from there, never from this alias.
"""

from .beat.schedules import crontab, every, once, parse_duration, schedule

__all__ = ["crontab", "every", "once", "parse_duration", "schedule"]
