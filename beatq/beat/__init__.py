"""The beat: periodic schedules, a leased leader, exact time zones."""

from .beat import Beat
from .entries import Entry
from .record import EntryRecord
from .schedules import crontab, every, once, schedule

__all__ = ["Beat", "Entry", "EntryRecord", "crontab", "every", "once", "schedule"]
