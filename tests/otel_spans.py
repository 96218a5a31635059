"""Test-only: OpenTelemetry in the worker and beat processes of the tests, read from a file.

Imported as a task module of tests.proj (`BEATQ_TEST_INCLUDE=tests.otel_spans`) by a real
`beatq worker` or `beatq beat`, it traces the app (beatq.otel.instrument) with an SDK
TracerProvider whose exporter appends each finished span, as one JSON line, to the file
BEATQ_TEST_OTEL_FILE names. The test reads them back with `read_spans`. A simple (not
batching) span processor: each span is written as it ends, in the process (or prefork
child) that ended it, so nothing waits in a buffer a killed process would lose.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from beatq import otel
from tests.proj import app


def span_dict(span: ReadableSpan) -> dict[str, Any]:
    """What the tests look at in a span, ids as hex as trace backends show them."""
    context = span.get_span_context()
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "attributes": dict(span.attributes or {}),
        "links": [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
                "attributes": dict(link.attributes or {}),
            }
            for link in span.links
        ],
        "status": span.status.status_code.name,
        "status_message": span.status.description,
        "events": [event.name for event in span.events],
        "pid": os.getpid(),
        # for drawing it (docs/trace_shot.py): the process's service (OTEL_SERVICE_NAME) and
        # the span's bounds, nanoseconds since the epoch
        "service": span.resource.attributes.get("service.name"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
    }


class JsonLinesExporter(SpanExporter):
    """Appends each span as a JSON line to `path` (one write per batch: whole lines)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        text = "".join(json.dumps(span_dict(s)) + "\n" for s in spans)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def read_spans(path: Path) -> list[dict[str, Any]]:
    """The spans the processes wrote to `path` so far (none if it is not there yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


if os.environ.get("BEATQ_TEST_OTEL_FILE"):
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(JsonLinesExporter(os.environ["BEATQ_TEST_OTEL_FILE"]))
    )
    otel.instrument(app, provider)
