"""The project's signal receivers: each journals the signal, its sender and the pid."""

import logging
import os
import sys

from beatq import signals
from tests.journal import record


def _sender(sender):
    if sender is None or isinstance(sender, str):
        return sender
    return getattr(sender, "name", None) or type(sender).__name__


def _journal(signal, **fields):
    def receiver(sender=None, **kwargs):
        entry = {"signal": signal.name, "sender": _sender(sender), "pid": os.getpid()}
        if hasattr(sender, "request"):  # a task's signal: the run it is about
            entry["current"] = sender.request.id
        for key, describe in fields.items():
            entry[key] = describe(kwargs.get(key))
        record("trace", entry)

    signal.connect(receiver, weak=False)


def _name(value):
    return getattr(value, "name", None)


_journal(signals.task_received, request=lambda r: r.id)
_journal(signals.task_prerun, task_id=str, task=_name, args=list)
_journal(signals.task_postrun, task_id=str, retval=repr, state=str)
_journal(signals.task_success, result=repr)
_journal(signals.task_failure, task_id=str, exception=repr, einfo=lambda e: type(e).__name__)
_journal(signals.task_retry, request=lambda r: r.id, reason=lambda r: type(r).__name__)
_journal(signals.task_revoked, request=lambda r: r.id, expired=bool, terminated=bool)
_journal(signals.task_unknown, name=str, id=str)
_journal(signals.task_rejected, exc=lambda e: type(e).__name__)
_journal(signals.before_task_publish, headers=lambda h: h["id"], routing_key=str)
_journal(signals.after_task_publish, headers=lambda h: h["id"])
_journal(signals.celeryd_init, instance=lambda w: w.hostname, options=lambda o: sorted(o))
_journal(signals.worker_init)
_journal(signals.worker_process_init)
_journal(signals.worker_process_shutdown, exitcode=int)
_journal(signals.worker_ready)
_journal(signals.worker_shutting_down, sig=str, how=str)
_journal(signals.worker_shutdown)
_journal(signals.beat_init)
_journal(signals.beat_embedded_init)
_journal(signals.after_setup_logger, logger=lambda lg: lg.name, loglevel=int)


@signals.setup_logging.connect
def own_logging(loglevel=None, **kwargs):
    """The project sets up logging itself (so beatq does not): its lines are marked."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("PROJ-LOG %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(loglevel)
    record("trace", {"signal": "setup_logging", "pid": os.getpid(), "loglevel": loglevel})
