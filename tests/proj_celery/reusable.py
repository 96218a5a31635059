"""A reusable module's task: @shared_task runs before the project makes its app."""

import os

from beatq import shared_task
from tests.journal import record


@shared_task
def double(x):
    record("runs", {"task": "double", "pid": os.getpid()})
    return 2 * x
