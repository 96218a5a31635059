"""Celery's `celery.schedules`, under beatq's name: `from beatq.schedules import crontab`."""

from .beat.schedules import crontab, every, once, parse_duration, schedule

__all__ = ["crontab", "every", "once", "parse_duration", "schedule"]
