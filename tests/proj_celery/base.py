"""A base= task class with Celery's hooks; each journals what it got and where it ran."""

import os

from beatq import Task
from tests.journal import record


class Journaled(Task):
    def _note(self, hook, task_id, **fields):
        entry = {"hook": hook, "task": self.name, "id": task_id, "pid": os.getpid()}
        entry["request_id"] = self.request.id  # self.request is the run's, in every hook
        record("trace", {**entry, **fields})

    def before_start(self, task_id, args, kwargs):
        self._note("before_start", task_id, args=list(args), kwargs=kwargs)

    def on_success(self, retval, task_id, args, kwargs):
        self._note("on_success", task_id, retval=retval, args=list(args))

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        self._note(
            "on_failure",
            task_id,
            exc=f"{type(exc).__name__}: {exc}",
            einfo_type=type(einfo).__name__,
            einfo_exception=repr(einfo.exception),
            traceback_tail=einfo.traceback.strip().splitlines()[-1],
        )

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        self._note("on_retry", task_id, exc=f"{type(exc).__name__}: {exc}")

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self._note("after_return", task_id, status=status, retval=repr(retval))
