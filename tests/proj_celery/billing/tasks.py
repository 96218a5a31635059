"""The billing app's tasks: @shared_task, as reusable apps write them."""

import os

from beatq import shared_task
from tests.journal import record


@shared_task
def invoice(amount):
    record("runs", {"task": "invoice", "pid": os.getpid()})
    return f"invoiced {amount}"


@shared_task
def settle(period):
    """Run by the periodic task that celery.py adds on_after_configure."""
    record("settled", {"period": period, "pid": os.getpid()})
