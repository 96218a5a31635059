"""Messages through real workers: serializers, compression, dead letters, routing."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from beatq import AsyncResult, messages
from beatq.brokers import Outgoing
from tests.conftest import ROOT, scaled, wait_for
from tests.proj import journal
from tests.test_results import SharedWorker, point_app_at, shared_worker

SERIALIZERS = ["json", "pickle", "yaml", "msgpack"]
COMPRESSIONS = [None, "zlib", "gzip", "bz2", "lzma", "zstd"]
CONTENT_TYPES = {
    "json": "application/json",
    "pickle": "application/x-python-serialize",
    "yaml": "application/x-yaml",
    "msgpack": "application/x-msgpack",
}


@pytest.fixture(scope="module")
def shared(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedWorker]:
    yield from shared_worker(
        backend,
        request,
        tmp_path_factory.mktemp("shared"),
        {"BEATQ_TEST_ACCEPT": ",".join(SERIALIZERS)},
        "-P",
        "threads",
        "-c",
        "4",
    )


@pytest.fixture
def sapp(shared: SharedWorker, monkeypatch: pytest.MonkeyPatch):
    proj_app = point_app_at(shared, monkeypatch)
    yield proj_app
    proj_app.close()


def beatq_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beatq", "-A", "tests.proj", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )


def dead_letter(app, message_id: str):
    for letter in app.broker.dead_letters():
        if letter.id == message_id:
            return letter
    return None


def lines_naming(log: str, message_id: str) -> list[str]:
    return [line for line in log.splitlines() if message_id in line]


# -- serialization -----------------------------------------------------------------------------
def test_json_round_trips_rich_values_through_a_worker(sapp):
    from tests.proj.tasks import echo

    aware = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=ZoneInfo("Asia/Shanghai"))
    value = {
        "aware": aware,
        "naive": datetime(2026, 11, 1, 1, 30, 0, 5),
        "day": date(2024, 2, 29),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "decimal": Decimal("3.14159265358979323846264338327950288"),
        "bytes": bytes(range(256)),
        "tuple": (1, "two", 3.5),
        "range": range(5),
        "generator": (i * i for i in range(4)),
        "nested": [{"inner": (datetime(2000, 1, 1, tzinfo=timezone.utc),)}],
    }
    back = echo.delay(value).get(timeout=scaled(5))
    assert back["aware"] == aware and back["aware"].utcoffset() == timedelta(hours=8)
    assert back["naive"] == datetime(2026, 11, 1, 1, 30, 0, 5) and back["naive"].tzinfo is None
    assert back["day"] == date(2024, 2, 29) and type(back["day"]) is date
    assert back["uuid"] == uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert back["decimal"] == Decimal("3.14159265358979323846264338327950288")
    assert back["bytes"] == bytes(range(256))
    assert back["tuple"] == [1, "two", 3.5]
    assert back["range"] == [0, 1, 2, 3, 4]
    assert back["generator"] == [0, 1, 4, 9]
    assert back["nested"] == [{"inner": [datetime(2000, 1, 1, tzinfo=timezone.utc)]}]


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_per_call_serializer_and_compression(sapp, serializer):
    from tests.proj.tasks import echo, msg_typeof

    value = {
        "text": "héllo wörld " * 20,
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "raw": b"\x00\x01\xfe\xff",
        "numbers": list(range(50)),
    }
    sent = {}
    for compression in COMPRESSIONS:
        options = {"serializer": serializer, "compression": compression}
        # One copy parked in the broker shows what went on the wire...
        parked = echo.apply_async((value,), queue="parked", countdown=60, **options)
        sent[compression] = (parked.id, echo.apply_async((value,), **options))
    wire = {claim.id: messages.read_header(claim.body) for _, claim in sapp.broker.scheduled()}
    for compression, (parked_id, result) in sent.items():
        assert wire[parked_id]["ct"] == CONTENT_TYPES[serializer]
        assert wire[parked_id]["ce"] == compression
        # ...and the other one ran in the worker and came back intact.
        assert result.get(timeout=scaled(5)) == value, (serializer, compression)
    # Only pickle hands the worker a tuple: proof the worker decoded with the chosen serializer.
    typeof = msg_typeof.apply_async(((1, 2),), serializer=serializer, compression="gzip")
    assert typeof.get(timeout=scaled(5)) == ("tuple" if serializer == "pickle" else "list")


# -- dead letters ------------------------------------------------------------------------------
@pytest.mark.backends("redis", "sqlite")
def test_content_type_not_accepted_goes_to_dead_letters_and_can_be_requeued(app, start_worker, env):
    from tests.proj.tasks import add, msg_typeof

    strict = start_worker("-P", "solo")  # accept_content: json only
    refused = msg_typeof.apply_async(((1, 2),), serializer="pickle")
    letter = wait_for(lambda: dead_letter(app, refused.id), 5, "the dead letter")
    assert "application/x-python-serialize" in letter.reason
    assert "accept_content" in letter.reason
    assert letter.queue == "celery"
    assert add.delay(2, 2).get(timeout=scaled(5)) == 4  # the worker carries on
    assert app.AsyncResult(refused.id).state == "FAILURE"  # never run; waiters told (issue 22)
    [line] = lines_naming(strict.log(), refused.id)
    assert "dead letters" in line and "Traceback" not in strict.log()

    strict.stop()
    out = beatq_cli(env, "dead-letter", "requeue", refused.id)
    assert out.returncode == 0, out.stderr
    assert f"requeued {refused.id}" in out.stdout
    assert dead_letter(app, refused.id) is None
    assert app.broker.queue_length("celery") == 1

    start_worker("-P", "solo", extra_env={"BEATQ_TEST_ACCEPT": "json,pickle"})
    assert refused.get(timeout=scaled(5)) == "tuple"


def _send_garbage(app) -> str:
    message_id = f"garbage-{uuid.uuid4().hex[:8]}"
    app.broker.send([Outgoing("celery", message_id, b"garbage")])
    return message_id


def _send_unknown(app) -> str:
    return app.send_task("nope.nothing", (1,)).id


@pytest.mark.backends("redis", "sqlite")
@pytest.mark.parametrize(
    "send, reason",
    [(_send_garbage, "corrupt message"), (_send_unknown, "unknown task 'nope.nothing'")],
    ids=["corrupt body", "unknown task"],
)
def test_bad_message_goes_to_dead_letters_and_can_be_requeued(sapp, shared, send, reason):
    from tests.proj.tasks import add

    message_id = send(sapp)
    letter = wait_for(lambda: dead_letter(sapp, message_id), 5, "the dead letter")
    assert reason in letter.reason
    assert add.delay(3, 4).get(timeout=scaled(5)) == 7  # the worker carries on
    log = shared.process.log()
    assert len(lines_naming(log, message_id)) == 1
    assert "dead letters" in lines_naming(log, message_id)[0]

    first_death = letter.time
    out = beatq_cli(shared.env(), "dead-letter", "requeue", message_id)
    assert out.returncode == 0, out.stderr
    assert f"requeued {message_id}" in out.stdout
    # Back in its queue, the worker takes it again, and refuses it again: still not lost.
    again = wait_for(
        lambda: (d := dead_letter(sapp, message_id)) is not None and d.time > first_death and d,
        5,
        "the requeued message to come back",
    )
    assert reason in again.reason
    assert len(lines_naming(shared.process.log(), message_id)) == 2


@pytest.mark.backends("redis", "sqlite")
def test_requeue_of_an_unknown_id_fails(sapp, shared):
    out = beatq_cli(shared.env(), "dead-letter", "requeue", "no-such-id")
    assert out.returncode == 1
    assert "no-such-id" in out.stderr


def _header(message_id: str, content_type: str, encoding: str | None) -> bytes:
    head = {
        "v": 1,
        "id": message_id,
        "task": "tests.proj.tasks.echo",
        "ct": content_type,
        "ce": encoding,
        "queue": "celery",
    }
    return json.dumps(head).encode() + b"\n"


def test_yaml_is_loaded_safely_and_a_bad_payload_is_dead_lettered(sapp, tmp_path: Path):
    from tests.proj.tasks import add

    marker = tmp_path / "pwned"
    unsafe = f'[[!!python/object/apply:os.system ["touch {marker}"]], {{}}, {{}}]'.encode()
    yaml_id, zlib_id = f"yaml-{uuid.uuid4().hex[:8]}", f"zlib-{uuid.uuid4().hex[:8]}"
    sapp.broker.send(
        [
            Outgoing("celery", yaml_id, _header(yaml_id, "application/x-yaml", None) + unsafe),
            Outgoing("celery", zlib_id, _header(zlib_id, "application/json", "zlib") + b"nope"),
        ]
    )
    yaml_letter = wait_for(lambda: dead_letter(sapp, yaml_id), 5, "the yaml dead letter")
    zlib_letter = wait_for(lambda: dead_letter(sapp, zlib_id), 5, "the zlib dead letter")
    assert "python/object" in yaml_letter.reason
    assert "zlib" in zlib_letter.reason
    assert add.delay(1, 1).get(timeout=scaled(5)) == 2
    assert not marker.exists()
    refused = AsyncResult(yaml_id, app=sapp)  # never run; its waiters told (issue 22)
    assert refused.state == "FAILURE" and type(refused.result).__name__ == "DecodeError"


# -- routing -----------------------------------------------------------------------------------
ROUTES = {
    "tests.proj.tasks.msg_routed_*": {"queue": "q.glob"},
    "tests.proj.tasks.msg_routed_exact": "q.exact",
}


def test_queue_option_task_routes_and_task_queue(app, start_worker, monkeypatch):
    from tests.proj.tasks import msg_routed_exact, msg_routed_glob, msg_where, urgent

    monkeypatch.setitem(app.conf, "task_routes", ROUTES)
    on_call = msg_where.apply_async(queue="q.call")
    by_glob = msg_routed_glob.delay()
    by_name = msg_routed_exact.delay()  # the exact name wins over the pattern that matches it
    default = msg_where.delay()
    own_queue = urgent.delay("u1")
    call_wins = urgent.apply_async(("u2",), queue="q.call")
    lengths = {q: app.broker.queue_length(q) for q in ["q.call", "q.glob", "q.exact", "celery"]}
    assert lengths == {"q.call": 2, "q.glob": 1, "q.exact": 1, "celery": 1}
    assert app.broker.queue_length("priority.high") == 1

    # The worker routes the callbacks it sends with its own task_routes.
    linked, explicit = str(uuid.uuid4()), str(uuid.uuid4())
    parent = msg_where.apply_async(
        queue="q.call",
        link=[
            msg_routed_glob.s().set(task_id=linked),
            msg_routed_glob.s().set(task_id=explicit, queue="q.call"),
        ],
    )
    start_worker(
        "-P",
        "threads",
        "-Q",
        "q.call,q.glob,q.exact,priority.high,celery",
        extra_env={"BEATQ_TEST_ROUTES": json.dumps(ROUTES)},
    )
    assert on_call.get(timeout=scaled(5)) == "q.call"
    assert by_glob.get(timeout=scaled(5)) == "q.glob"
    assert by_name.get(timeout=scaled(5)) == "q.exact"
    assert default.get(timeout=scaled(5)) == "celery"
    assert own_queue.get(timeout=scaled(5)) == "u1" and call_wins.get(timeout=scaled(5)) == "u2"
    assert parent.get(timeout=scaled(5)) == "q.call"
    assert AsyncResult(linked, app=app).get(timeout=scaled(5)) == "q.glob"
    assert AsyncResult(explicit, app=app).get(timeout=scaled(5)) == "q.call"


def test_task_routes_as_a_list_with_a_router_function(app, monkeypatch):
    from tests.proj.tasks import add, msg_where, urgent

    def router(name, args, kwargs, options, task=None, **kw):
        if name.endswith(".add") and args and args[0] > 100:
            return {"queue": "q.big"}
        return None

    monkeypatch.setitem(app.conf, "task_routes", [router, {"tests.proj.tasks.msg_*": "q.msg"}])
    add.delay(1000, 1)
    add.delay(1, 1)
    msg_where.delay()
    urgent.delay("own queue first")
    lengths = {q: app.broker.queue_length(q) for q in ["q.big", "celery", "q.msg", "priority.high"]}
    assert lengths == {"q.big": 1, "celery": 1, "q.msg": 1, "priority.high": 1}


@pytest.mark.backends("redis", "sqlite")
def test_first_queue_of_dash_q_is_consumed_first(app, start_worker):
    from tests.proj.tasks import ordered, urgent

    results = []
    for i in range(3):
        results.append(ordered.delay(f"o{i}"))
        results.append(urgent.delay(f"u{i}"))
    start_worker("-P", "solo", "--prefetch-multiplier", "1", "-Q", "priority.high,celery")
    for result in results:
        result.get(timeout=scaled(5))
    assert journal("order") == ["u0", "u1", "u2", "o0", "o1", "o2"]
