"""OpenTelemetry traces (beatq.otel) across real processes: a send here, the runs in a real
`beatq worker`, the dispatches of a real `beatq beat`, all in one trace.

This process traces with the SDK's in-memory exporter; the worker and beat trace with
tests.otel_spans (imported as a task module), which writes their spans to a file. What an
operator sees in a trace backend is what is asserted: one trace id from the sender's span
to the last callback's run, each span's parent, the span links of a chain and a chord,
the messaging attributes, a failed run's ERROR status, a beat run's entry, slot and
lateness.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from beatq import chain, chord, otel
from tests.conftest import ROOT, WorkerProcess, scaled, wait_for
from tests.otel_spans import read_spans, span_dict

pytestmark = pytest.mark.backends("redis", "sqlite")

INCLUDE = "tests.proj.canvas_guide,tests.otel_spans"
Span = dict[str, Any]


@pytest.fixture
def traced(app, tmp_path: Path) -> Iterator[tuple[Any, Callable[[], list[Span]], dict[str, str]]]:
    """This process traced (in memory); the env that traces a worker or beat to a file; a
    function returning every span so far, from here and from there."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(app, provider)
    path = tmp_path / "spans.jsonl"

    def spans() -> list[Span]:
        return [span_dict(s) for s in exporter.get_finished_spans()] + read_spans(path)

    env = {"BEATQ_TEST_INCLUDE": INCLUDE, "BEATQ_TEST_OTEL_FILE": str(path)}
    try:
        yield provider.get_tracer("tests"), spans, env
    finally:
        otel.uninstrument(app)


def one(spans: list[Span], name: str, task_id: str) -> Span:
    found = [
        s
        for s in spans
        if s["name"] == name and s["attributes"].get("messaging.message.id") == task_id
    ]
    assert len(found) == 1, f"{name} of {task_id}: {found}"
    return found[0]


def child_of(span: Span, parent: Span) -> bool:
    return span["trace_id"] == parent["trace_id"] and span["parent_id"] == parent["span_id"]


def linked_to(span: Span, other: Span, kind: str) -> bool:
    return any(
        link["span_id"] == other["span_id"]
        and link["trace_id"] == other["trace_id"]
        and link["attributes"].get("beatq.link.kind") == kind
        for link in span["links"]
    )


def test_a_chain_and_a_link_are_one_trace_from_the_send_to_the_last_run(
    app, start_worker, traced
) -> None:
    from tests.proj.tasks import add, mul

    tracer, spans, env = traced
    start_worker("-c", "2", extra_env=env)  # prefork: its children export the runs
    with tracer.start_as_current_span("web request") as request_span:
        chained = chain(add.s(2, 2), mul.s(10)).apply_async()
        linked = add.apply_async((1, 1), link=mul.s(3))
    assert chained.get(timeout=scaled(15)) == 40
    assert linked.get(timeout=scaled(15)) == 2
    first = chained.parent.id
    callback = linked.children[0].id if linked.children else None

    def complete() -> list[Span] | None:
        found = spans()
        names = [(s["name"], s["attributes"].get("messaging.message.id")) for s in found]
        wanted = [("beatq.run", chained.id), ("beatq.run", callback or "?")]
        return found if all(w in names for w in wanted) else None

    assert callback is not None, "the link's message is the first task's child"
    found = wait_for(complete, 20, "the callbacks' run spans")
    request_id = f"{request_span.get_span_context().span_id:016x}"
    trace_id = f"{request_span.get_span_context().trace_id:032x}"

    # delay() here -> run of add in the worker -> publish of mul from that run -> run of mul
    publish_add = one(found, "beatq.publish", first)
    run_add = one(found, "beatq.run", first)
    publish_mul = one(found, "beatq.publish", chained.id)
    run_mul = one(found, "beatq.run", chained.id)
    assert publish_add["kind"] == "PRODUCER" and run_add["kind"] == "CONSUMER"
    assert publish_add["parent_id"] == request_id and publish_add["trace_id"] == trace_id
    assert child_of(run_add, publish_add)
    assert child_of(publish_mul, run_add) and linked_to(publish_mul, run_add, "chain")
    assert child_of(run_mul, publish_mul)
    assert run_add["pid"] != publish_add["pid"], "the run is the worker's span"
    for span in (publish_add, run_add, publish_mul, run_mul):
        attributes = span["attributes"]
        assert attributes["messaging.system"] == "beatq"
        assert attributes["messaging.destination.name"] == "celery"
    for span in (publish_mul, run_mul):  # sent by add: the workflow's root is add
        assert span["attributes"]["messaging.message.conversation_id"] == first
    assert run_add["attributes"]["beatq.task.name"] == add.name
    assert run_add["attributes"]["beatq.task.state"] == "SUCCESS"
    assert run_mul["attributes"]["beatq.task.parent_id"] == first
    assert run_add["attributes"]["messaging.operation.type"] == "process"
    assert publish_add["attributes"]["messaging.operation.type"] == "send"

    # the link= callback: its publish span is linked to the run it follows
    run_linked = one(found, "beatq.run", linked.id)
    publish_callback = one(found, "beatq.publish", callback)
    run_callback = one(found, "beatq.run", callback)
    assert run_linked["trace_id"] == trace_id
    assert child_of(publish_callback, run_linked)
    assert linked_to(publish_callback, run_linked, "link")
    assert child_of(run_callback, publish_callback)


def _chord_chain(found: list[Span], body_id: str) -> list[Span] | None:
    """`found` once it holds the body's run and publish, the unlock's run and publish
    and the member run that sent it; else None."""
    by_id = {s["span_id"]: s for s in found}
    body = [
        s
        for s in found
        if s["name"] in ("beatq.run", "beatq.publish")
        and s["attributes"].get("messaging.message.id") == body_id
    ]
    publish = next((s for s in body if s["name"] == "beatq.publish"), None)
    if len(body) < 2 or publish is None:
        return None
    unlock_run = by_id.get(publish.get("parent_id"))
    unlock_publish = unlock_run and by_id.get(unlock_run.get("parent_id"))
    member_run = unlock_publish and by_id.get(unlock_publish.get("parent_id"))
    return found if member_run else None


def test_a_chord_body_runs_in_the_trace_of_its_header(app, start_worker, traced) -> None:
    from tests.proj.canvas_guide import gc_tsum
    from tests.proj.tasks import add

    tracer, spans, env = traced
    start_worker("-P", "threads", "-c", "3", extra_env=env)
    with tracer.start_as_current_span("batch") as root:
        result = chord([add.s(i, i) for i in range(3)], gc_tsum.s()).apply_async()
    assert result.get(timeout=scaled(15)) == 6
    trace_id = f"{root.get_span_context().trace_id:032x}"
    # each span is written as it ends, from the worker's threads: the body can run (and its
    # span be written) before the thread that sent it ends its publish span, and a parent
    # ends after its children; so wait for the whole chain, member run to body run
    found = wait_for(lambda: _chord_chain(spans(), result.id), 20, "the chord's spans")
    body_run = one(found, "beatq.run", result.id)
    body_publish = one(found, "beatq.publish", result.id)
    assert body_run["trace_id"] == trace_id and child_of(body_run, body_publish)
    # the body is sent by the chord's unlock, itself sent by the header's last member
    unlock_run = next(s for s in found if s["span_id"] == body_publish["parent_id"])
    assert unlock_run["attributes"]["beatq.task.name"] == "beatq.chord_unlock"
    assert linked_to(body_publish, unlock_run, "chord")
    unlock_publish = next(s for s in found if s["span_id"] == unlock_run["parent_id"])
    member_run = next(s for s in found if s["span_id"] == unlock_publish["parent_id"])
    assert member_run["attributes"]["beatq.task.name"] == add.name
    assert linked_to(unlock_publish, member_run, "chord")
    members = [
        s
        for s in found
        if s["name"] == "beatq.run" and s["attributes"]["beatq.task.name"] == add.name
    ]
    assert len(members) == 3 and {s["trace_id"] for s in members} == {trace_id}


def test_a_failed_run_is_an_error_and_a_retry_continues_the_trace(
    app, start_worker, traced
) -> None:
    from tests.proj.tasks import CustomError, fail, flaky

    _, spans, env = traced
    start_worker("-P", "threads", extra_env=env)
    failed = fail.delay("no luck")
    retried = flaky.delay(1)
    with pytest.raises(CustomError):
        failed.get(timeout=scaled(15))
    assert retried.get(timeout=scaled(15)) == 1

    def runs() -> list[Span] | None:
        found = spans()
        ours = [s for s in found if s["name"] == "beatq.run"]
        return found if len(ours) >= 3 else None

    found = wait_for(runs, 20, "three run spans")
    failed_run = one(found, "beatq.run", failed.id)
    assert failed_run["status"] == "ERROR"
    assert "exception" in failed_run["events"]
    assert failed_run["attributes"]["beatq.task.state"] == "FAILURE"

    # the retry is sent from the first run: the second run is its grandchild, one trace
    first, second = sorted(
        (
            s
            for s in found
            if s["name"] == "beatq.run" and s["attributes"]["messaging.message.id"] == retried.id
        ),
        key=lambda s: s["attributes"].get("beatq.task.retries", 0),
    )
    assert first["attributes"]["beatq.task.state"] == "RETRY"
    assert "beatq.retry" in first["events"] and first["status"] == "UNSET"
    again = [s for s in found if s["name"] == "beatq.publish" and child_of(s, first)]
    assert len(again) == 1 and linked_to(again[0], first, "retry")
    assert child_of(second, again[0]) and second["attributes"]["beatq.task.state"] == "SUCCESS"


def test_a_beat_dispatch_is_the_root_of_its_run(
    app, env: dict[str, str], start_worker, traced, tmp_path: Path
) -> None:
    _, spans, otel_env = traced
    schedule = tmp_path / "traced.yaml"
    entry = {"task": "tests.proj.tasks.add", "every": "1s", "args": [2, 3]}
    schedule.write_text(yaml.safe_dump({"schedules": {"tick": entry}}))
    start_worker("-P", "threads", extra_env=otel_env)
    argv = ["-A", "tests.proj", "beat", "-s", str(schedule), "--lease-ttl", "1.5", "-l", "info"]
    beat = WorkerProcess(argv, {**env, **otel_env}, tmp_path / f"beat-{uuid.uuid4().hex[:6]}.log")
    try:

        def dispatched_and_run() -> tuple[Span, Span, Span] | None:
            found = spans()
            for dispatch in (s for s in found if s["name"] == "beatq.beat.dispatch"):
                task_id = dispatch["attributes"].get("messaging.message.id")
                runs = [
                    s
                    for s in found
                    if s["name"] == "beatq.run"
                    and s["attributes"].get("messaging.message.id") == task_id
                ]
                if runs:
                    return dispatch, one(found, "beatq.publish", task_id), runs[0]
            return None

        dispatch, publish, run = wait_for(dispatched_and_run, 30, "a beat run's spans")
    finally:
        beat.signal(signal.SIGTERM)
        beat.stop()
    assert dispatch["parent_id"] is None, "a beat run starts its trace"
    assert child_of(publish, dispatch) and child_of(run, publish)
    attributes = dispatch["attributes"]
    assert attributes["beatq.beat.entry"] == "tick"
    assert attributes["beatq.beat.outcome"] == "sent"
    assert attributes["beatq.beat.kind"] == "schedule"
    slot = attributes["beatq.beat.slot"]
    assert slot == int(slot), "an every: 1s slot is a whole second"
    assert 0.0 <= attributes["beatq.beat.lateness"] < scaled(1.0)
    assert attributes["beatq.task.name"] == "tests.proj.tasks.add"
    assert run["attributes"]["beatq.beat.entry"] == "tick"
    assert run["attributes"]["beatq.task.state"] == "SUCCESS"
    assert dispatch["pid"] == beat.pid != run["pid"]


def test_overlapping_async_runs_on_one_loop_each_end_their_own_span(
    app, start_worker, traced
) -> None:
    """On -P asyncio several runs share the loop's thread at once: each run span is kept
    in its run's own context, so each ends, with its own state, and its callback's run
    is in its trace."""
    from tests.proj.tasks import at_sleep, mul

    tracer, spans, env = traced
    start_worker("-P", "asyncio", "-c", "10", extra_env=env)
    with tracer.start_as_current_span("fan out") as root:
        sent = [at_sleep.apply_async((0.3, f"t{i}"), link=mul.si(i, 2)) for i in range(4)]
    assert [r.get(timeout=scaled(15))[0] for r in sent] == ["t0", "t1", "t2", "t3"]
    trace_id = f"{root.get_span_context().trace_id:032x}"
    callbacks = [r.children[0].id for r in sent]

    def complete() -> list[Span] | None:
        found = spans()
        ran = {
            s["attributes"].get("messaging.message.id") for s in found if s["name"] == "beatq.run"
        }
        return found if ran >= {*callbacks, *(r.id for r in sent)} else None

    found = wait_for(complete, 20, "the runs' spans")
    for result, callback in zip(sent, callbacks):
        run = one(found, "beatq.run", result.id)
        assert run["trace_id"] == trace_id
        assert run["attributes"]["beatq.task.state"] == "SUCCESS"
        publish = one(found, "beatq.publish", callback)  # sent from the run's finish
        assert child_of(publish, run) and linked_to(publish, run, "link")
        assert child_of(one(found, "beatq.run", callback), publish)


# -- turning it on ----------------------------------------------------------------------------
SETTING = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from beatq import Beatq

app = Beatq("setting", broker="memory://setting", otel_enabled=True)

@app.task
def add(x, y):
    return x + y

sent = add.delay(1, 2)  # the first send of the process: traced already
print(json.dumps([[s.name, s.attributes["messaging.message.id"]] for s in
                  exporter.get_finished_spans()] + [sent.id]))
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_setting_traces_from_the_first_send_with_the_global_provider() -> None:
    out = run_python(SETTING)
    assert out.returncode == 0, out.stderr
    *spans, sent = json.loads(out.stdout)
    assert spans == [["beatq.publish", sent]]


def test_a_setting_that_is_not_a_bool_is_refused_naming_it() -> None:
    from beatq import Beatq
    from beatq.exceptions import ConfigurationError

    app = Beatq("refused", broker="memory://refused", set_as_current=False, otel_enabled="yes")
    with pytest.raises(ConfigurationError, match="otel_enabled is 'yes'; set it to True"):
        app.send_task("anything")


def test_without_the_extra_the_error_says_what_to_install() -> None:
    code = "import sys; sys.modules['opentelemetry'] = None; import beatq.otel"
    out = run_python(code)
    assert out.returncode == 1
    assert "install it with: pip install 'beatq[otel]'" in out.stderr


def test_beatq_imports_no_opentelemetry_unless_turned_on() -> None:
    code = (
        "import sys, beatq, beatq.worker, beatq.beat.beat, beatq.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'beatq.otel'))))"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
