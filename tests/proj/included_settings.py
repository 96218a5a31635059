"""Worker and beat settings made where Celery projects make them: in a module the app
includes, and in a `celeryd_init` receiver (tests/test_guide_workers.py and
tests/test_beat_e2e.py include it with BEATQ_TEST_INCLUDE)."""

from __future__ import annotations

from beatq import signals
from tests.proj import app

app.conf.worker_concurrency = 3  # read by the worker after its include modules
app.conf.beat_lease_ttl = 9.0  # and by the beat after them


@signals.celeryd_init.connect
def per_worker(conf, **_: object) -> None:
    conf.worker_prefetch_multiplier = 5
