"""Worker settings made where Celery projects make them: in a module the app includes, and
in a `celeryd_init` receiver (tests/test_guide_workers.py, BEATQ_TEST_INCLUDE)."""

from __future__ import annotations

from beatq import signals
from tests.proj import app

app.conf.worker_concurrency = 3  # read by the worker after its include modules


@signals.celeryd_init.connect
def per_worker(conf, **_: object) -> None:
    conf.worker_prefetch_multiplier = 5
