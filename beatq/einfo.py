"""ExceptionInfo: an exception with its traceback, as Celery's hooks and signals get it."""

from __future__ import annotations

import sys
import traceback as tb
from types import TracebackType
from typing import Any


class ExceptionInfo:
    """The `einfo` of `on_failure`, `on_retry`, `after_return` and `task_failure`.

    `type`, `exception`, `tb` (the traceback object) and `traceback` (its text, also
    what str() gives), as Celery's (billiard's) ExceptionInfo has them. Made inside an
    `except` block it takes the exception being handled."""

    def __init__(
        self,
        exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | None = None,
        traceback: str | None = None,
    ) -> None:
        if exc_info is None:
            found: Any = sys.exc_info()
            exc_info = found
        self.type, self.exception, self.tb = exc_info  # type: ignore[misc]
        self._traceback = traceback

    @property
    def traceback(self) -> str:
        """The formatted traceback (formatted when first read: a hook rarely reads it)."""
        if self._traceback is None:
            self._traceback = "".join(tb.format_exception(self.type, self.exception, self.tb))
        return self._traceback

    @property
    def exc_info(self) -> tuple[Any, BaseException, TracebackType | None]:
        return self.type, self.exception, self.tb

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"
