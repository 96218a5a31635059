"""One process's CPU for sends and runs, with tracing (beatq.otel) off or on, for
farm-bench to time whole (it reads the OS's user + system seconds of the process).

    OTEL_AB_URL=redis://127.0.0.1:PORT/3 farm-bench -n 9 \\
        --vs "python bench/profile/otel_process.py /path/to/old/tree 20000" -- \\
        python bench/profile/otel_process.py . 20000          # off against the old tree
    ... -- python bench/profile/otel_process.py . 20000 on    # on (against off as --vs)

Flushes the database of OTEL_AB_URL (give it a private redis-server), sends N no-ops with
`delay()` from the tree given, then runs every one of them through one Executor in this
process. `on`: traced by beatq.otel.instrument with an SDK TracerProvider, its default
BatchSpanProcessor and an exporter that drops the spans.
"""

from __future__ import annotations

import os
import sys

tree, n, on = sys.argv[1], int(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "on"
sys.path.insert(0, os.path.abspath(tree))

import redis  # noqa: E402

from beatq import Beatq  # noqa: E402
from beatq.worker.delivery import Delivery  # noqa: E402
from beatq.worker.execute import Executor  # noqa: E402

url = os.environ["OTEL_AB_URL"]
redis.Redis.from_url(url).flushdb()
app = Beatq("otelab", broker=url)
if on:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    import beatq.otel

    class Drop(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    beatq.otel.instrument(app, provider)


@app.task(ignore_result=True)
def noop() -> None:
    return None


for _ in range(n):
    noop.delay()
claims = []
while len(claims) < n:
    claims += app.broker.claim(["celery"], 1000, 600).claims
executor = Executor(app, "otelab")
for claim in claims:
    executor.execute(Delivery(claim))
assert app.broker.queue_length("celery") == 0, "every message ran"
