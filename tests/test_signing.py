"""Signed messages (SPEC §15, beatq/signing.py) through real workers on Redis and SQLite.

With `security_key` set, every message a client, a beat or a worker sends carries an
HMAC-SHA256 of its header and payload; a worker with a key runs only messages signed with
one of its keys and moves the rest to the dead letters with a one-line reason.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from beatq import chain, chord, signing
from beatq.brokers import Outgoing
from beatq.exceptions import ConfigurationError
from tests.conftest import ROOT, WorkerProcess, scaled, stored_messages, wait_for
from tests.proj import journal

KEY = "key-" + "1" * 28
OLD = "old-" + "2" * 28
NEW = "new-" + "3" * 28
OTHER = "other-" + "4" * 26
BOTH = pytest.mark.backends("redis", "sqlite")


def keyed(env: dict[str, str], key: str) -> dict[str, str]:
    return {**env, "BEATQ_SECURITY_KEY": key}


def dead_letters(app) -> dict[str, str]:
    """Dead letters by message id: their reasons."""
    return {letter.id: letter.reason for letter in app.broker.dead_letters()}


def starts(tag: str) -> list[str]:
    return [line for line in journal("runs") if line.startswith(f"{tag}:start")]


@BOTH
def test_signed_tasks_callbacks_chords_retries_and_beat_runs_all_run(
    app, start_worker, env, monkeypatch, tmp_path: Path
):
    from tests.proj.tasks import add, cv_xsum, flaky

    monkeypatch.setitem(app.conf, "security_key", KEY)
    start_worker("-c", "2", extra_env={"BEATQ_SECURITY_KEY": KEY})  # prefork, the default
    timeout = scaled(20)
    assert add.delay(2, 2).get(timeout=timeout) == 4
    # the worker signs what it sends: callbacks, the chord's unlock, the retry
    assert chain(add.s(2, 2), add.s(4), add.s(8))().get(timeout=timeout) == 16
    assert chord((add.s(i, i) for i in range(4)), cv_xsum.s())().get(timeout=timeout) == 12
    assert flaky.delay(1).get(timeout=timeout) == 1
    schedule = tmp_path / "signed.yaml"
    schedule.write_text(
        "schedules:\n  signed-tick: {task: tests.proj.tasks.sleep, every: 1s, args: [0, beat]}\n"
    )
    argv = ["-A", "tests.proj", "beat", "-s", str(schedule), "--lease-ttl", "1.5"]
    beat = WorkerProcess(argv, keyed(env, KEY), tmp_path / "beat.log")
    try:
        wait_for(lambda: starts("beat"), 20, "a beat run signed and run")
    finally:
        beat.stop()
    assert dead_letters(app) == {}


@BOTH
def test_unsigned_wrongly_signed_and_tampered_messages_go_to_the_dead_letters_unrun(
    app, start_worker, monkeypatch
):
    from tests.proj.tasks import sleep

    worker = start_worker("-P", "threads", "-c", "2", extra_env={"BEATQ_SECURITY_KEY": KEY})
    unsigned = sleep.delay(0, "unsigned")
    monkeypatch.setitem(app.conf, "security_key", OTHER)
    wrong = sleep.delay(0, "wrong")
    monkeypatch.setitem(app.conf, "security_key", KEY)
    message, body = app.build_message(sleep.name, [0, "signed"], {}, sleep)
    tampered = body.replace(b'"signed"', b'"forged"')
    app.broker.send([Outgoing(message.queue, message.id, tampered)])
    after = sleep.delay(0, "after")  # signed: runs once those before it are dealt with

    assert after.get(timeout=scaled(20)) == "after"
    expected = {
        unsigned.id: "unsigned message refused: security_key is set",
        wrong.id: "bad signature: not signed with any accepted security_key",
        message.id: "bad signature: not signed with any accepted security_key",
    }
    wait_for(lambda: dead_letters(app) == expected, 10, f"the dead letters {expected}")
    assert [line.split(":")[0] for line in journal("runs")] == ["after", "after"]
    for id_ in (unsigned.id, wrong.id, message.id):
        assert app.AsyncResult(id_).state == "PENDING"
    # one line each, no traceback, the worker carries on; nothing left to loop on
    log = worker.log()
    for id_, reason in expected.items():
        lines = [line for line in log.splitlines() if id_ in line]
        assert len(lines) == 1 and reason in lines[0], lines
    assert "Traceback" not in log
    assert worker.process.poll() is None
    assert stored_messages(app) == []
    assert dead_letters(app) == expected


@BOTH
def test_key_rotation_accepts_every_listed_key_and_signs_with_the_first(
    app, start_worker, monkeypatch, tmp_path: Path
):
    from tests.proj.tasks import add

    keys = tmp_path / "beatq.keys"
    keys.write_text(f"{NEW}\n{OLD}\n")
    start_worker("-P", "threads", "-c", "2", extra_env={"BEATQ_SECURITY_KEY": f"file:{keys}"})
    timeout = scaled(20)
    monkeypatch.setitem(app.conf, "security_key", OLD)  # a client not yet moved on
    assert add.delay(1, 1).get(timeout=timeout) == 2
    monkeypatch.setitem(app.conf, "security_key", [NEW, OLD])
    assert add.delay(2, 2).get(timeout=timeout) == 4
    # the callback the worker sends is signed with the first key, NEW
    monkeypatch.setitem(app.conf, "security_key", OLD)
    add.apply_async((3, 3), link=add.s(5).set(queue="rotation-out"))
    parked = wait_for(
        lambda: [m for m in stored_messages(app) if m.queue == "rotation-out"], 10, "the callback"
    )
    assert signing.Signer([NEW.encode()]).refusal(parked[0].body) is None
    assert signing.Signer([OLD.encode()]).refusal(parked[0].body) == signing.BAD
    monkeypatch.setitem(app.conf, "security_key", OTHER)
    stray = add.delay(4, 4)
    reason = wait_for(lambda: dead_letters(app).get(stray.id), 10, "the stray's dead letter")
    assert reason == signing.BAD


@pytest.mark.backends("redis", "sqlite", "memory")
def test_a_signed_message_is_still_acknowledged_as_it_is_claimed(app, monkeypatch):
    """The early-acknowledgement rule (brokers/base.py, claim.lua) reads a signed header."""
    from tests.proj.tasks import add

    monkeypatch.setitem(app.conf, "security_key", KEY)
    sent = add.delay(1, 2)
    claimed = app.broker.claim(["celery"], 1, 60.0, ack_first=[add.name])
    assert [c.id for c in claimed.claims] == [sent.id] and claimed.acked


def test_key_settings_a_bad_one_is_refused_in_one_line(tmp_path: Path):
    assert signing.signer_for(None) is None and signing.signer_for("") is None
    key_file = tmp_path / "k"
    key_file.write_text(f"\n{NEW}\n\n{OLD}\n")
    signer = signing.signer_for([f"file:{key_file}", OTHER])
    assert signer is not None and signer.keys == (NEW.encode(), OLD.encode(), OTHER.encode())
    assert signing.signer_for(key_file).keys == (NEW.encode(), OLD.encode())  # a Path
    with pytest.raises(ConfigurationError, match="is 5 bytes; use at least 16"):
        signing.signer_for("short")
    with pytest.raises(ConfigurationError, match="cannot read key file"):
        signing.signer_for(f"file:{tmp_path / 'missing'}")
    body = signer.sign(b'{"id":"1","task":"t"}\n[[],{},{}]')
    assert signer.refusal(body) is None
    assert signer.refusal(body.replace(b'"sig":"', b'"sig":"0', 1)[:-1]) == signing.BAD
    assert signer.refusal(b'{"id":"1","task":"t"}\n[[],{},{}]') == signing.UNSIGNED


@pytest.mark.backends("redis", "sqlite")
def test_a_worker_with_an_unreadable_key_file_exits_2_with_one_line(env, tmp_path: Path):
    missing = tmp_path / f"{uuid.uuid4().hex}.key"
    done = subprocess.run(
        [sys.executable, "-m", "beatq", "-A", "tests.proj", "worker", "-P", "solo"],
        env=keyed(env, f"file:{missing}"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"Error: security_key: cannot read key file '{missing}': No such file or directory"
    )
