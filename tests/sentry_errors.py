"""Test-only: the README's "Errors to Sentry" lines, in a real worker, with Sentry's transport
replaced at its documented seam.

Imported as a task module of tests.proj (`BEATQ_TEST_INCLUDE=tests.sentry_errors`) when
SENTRY_TEST_FILE is set: `sentry_sdk.init(transport=FileTransport)` (a `Transport` subclass,
the seam sentry-sdk documents for sending events elsewhere) writes each event the SDK
would send to Sentry as one JSON line to that file. The receiver below is README's, word
for word (tests/test_sentry.py checks that it is).
"""

from __future__ import annotations

import json
import os

import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.transport import Transport

from beatq.signals import task_failure


class FileTransport(Transport):
    """Each event of an envelope as one JSON line in SENTRY_TEST_FILE, nothing sent out."""

    def capture_envelope(self, envelope: Envelope) -> None:
        events = [item.get_event() for item in envelope.items]
        lines = "".join(json.dumps(e, default=str) + "\n" for e in events if e is not None)
        fd = os.open(os.environ["SENTRY_TEST_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)


if os.environ.get("SENTRY_TEST_FILE"):
    sentry_sdk.init(
        dsn="https://public@sentry.example.com/1",
        transport=FileTransport,
        integrations=[LoggingIntegration(event_level=None)],
    )


# -- README: Errors to Sentry --------------------------------------------------------------
@task_failure.connect
def report_to_sentry(sender=None, task_id=None, exception=None, args=None, kwargs=None, **_):
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("beatq.task", sender.name)
        scope.set_tag("beatq.task_id", task_id)
        scope.set_context("beatq", {"task": sender.name, "id": task_id, "args": repr(args)})
        sentry_sdk.capture_exception(exception)
