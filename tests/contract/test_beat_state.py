"""The Leases and BeatState roles (roles.Leases, roles.BeatState): the fenced leader lease and
each entry's settled run."""

from __future__ import annotations

import json
import time

import pytest

from beatq.brokers import (
    Backend,
    BeatDispatch,
    EntryState,
)
from tests.conftest import wait_for
from tests.contract.conftest import ids, out


# -- leases ---------------------------------------------------------------------------------------
def test_a_lease_has_one_holder_and_fences_with_its_token(b: Backend) -> None:
    token = b.acquire_lease("L", "alice", 10)
    assert token is not None and token >= 1
    assert b.acquire_lease("L", "bob", 10) is None
    assert b.acquire_lease("L", "alice", 10) is None, "not re-entrant"
    lease = b.get_lease("L")
    assert lease is not None and (lease.holder, lease.token) == ("alice", token)
    assert 9 < lease.remaining <= 10
    assert lease.since == pytest.approx(time.time(), abs=2)

    assert b.renew_lease("L", "alice", token + 1, 10) is False
    assert b.renew_lease("L", "bob", token, 10) is False
    assert b.renew_lease("L", "alice", token, 20) is True
    assert b.get_lease("L").remaining > 19  # type: ignore[union-attr]

    b.release_lease("L", "alice", token + 1)
    assert b.get_lease("L") is not None, "a wrong token releases nothing"
    b.release_lease("L", "alice", token)
    assert b.get_lease("L") is None
    assert b.renew_lease("L", "alice", token, 10) is False
    second = b.acquire_lease("L", "bob", 10)
    assert second is not None and second > token
    assert b.get_lease("other") is None


def test_an_expired_lease_can_be_taken_with_a_greater_token(b: Backend) -> None:
    first = b.acquire_lease("L", "alice", 0.3)
    assert first is not None
    wait_for(lambda: b.get_lease("L") is None, 3, "the lease to expire")
    second = b.acquire_lease("L", "bob", 10)
    assert second is not None and second > first
    assert b.renew_lease("L", "alice", first, 10) is False
    b.release_lease("L", "alice", first)
    assert b.get_lease("L").holder == "bob"  # type: ignore[union-attr]


# -- beat state -----------------------------------------------------------------------------------
def test_beat_dispatch_outcomes(b: Backend) -> None:
    token = b.acquire_lease("beat", "leader", 30)
    assert token is not None

    def dispatch(slot, next_run, *, send=(), busy=None, holder="leader", tok=token, info=None):
        info = info or json.dumps({"slot": slot}).encode()
        return b.beat_dispatch(
            "beat", holder, tok, BeatDispatch("e", slot, next_run, info, send, busy)
        )

    def entry() -> EntryState:
        return b.beat_entries()["e"]

    assert dispatch(100.0, 110.0, send=[out("run1")]) == "sent"
    assert entry() == EntryState("e", 100.0, 110.0, False, b'{"slot": 100.0}')
    assert b.queue_length("q") == 1

    # the same slot or an earlier one: done, nothing sent, the next run still moves
    assert dispatch(100.0, 120.0, send=[out("again")]) == "done"
    assert dispatch(90.0, 120.0, send=[out("older")]) == "done"
    assert entry() == EntryState("e", 100.0, 120.0, False, b'{"slot": 100.0}')
    assert b.queue_length("q") == 1

    # fencing: another holder, or a stale token, changes nothing
    assert dispatch(130.0, 140.0, send=[out("x")], holder="intruder") == "lost"
    assert dispatch(130.0, 140.0, send=[out("x")], tok=token + 1) == "lost"
    assert entry() == EntryState("e", 100.0, 120.0, False, b'{"slot": 100.0}')

    # paused: settled and skipped, nothing sent
    b.beat_pause("e", True)
    assert entry().paused is True
    assert dispatch(110.0, 120.0, send=[out("paused")]) == "paused"
    assert entry() == EntryState("e", 110.0, 120.0, True, b'{"slot": 100.0}')
    b.beat_pause("e", False)

    # busy: the last run's message is still stored
    assert dispatch(120.0, 130.0, send=[out("overlap")], busy="run1") == "busy"
    assert entry().settled == 120.0 and b.queue_length("q") == 1
    b.finish(ack=b.claim(["q"], 1, 30).claims)
    assert dispatch(130.0, None, send=[out("run2")], busy="run1") == "sent"
    assert entry() == EntryState("e", 130.0, None, False, b'{"slot": 130.0}')
    assert ids(b.claim(["q"], 10, 30).claims) == ["run2"]

    # an empty send settles a slot given up by catch-up
    assert dispatch(140.0, 150.0) == "sent"
    assert entry().settled == 140.0 and b.queue_length("q") == 0

    b.release_lease("beat", "leader", token)
    assert dispatch(150.0, 160.0, send=[out("late")]) == "lost"


def test_beat_dispatch_many_settles_each_run_as_beat_dispatch_would(b: Backend) -> None:
    token = b.acquire_lease("beat", "leader", 30)
    assert token is not None
    b.beat_dispatch("beat", "leader", token, BeatDispatch("done", 100.0, 110.0, b"{}", [out("d0")]))
    b.beat_pause("paused", True)
    runs = [BeatDispatch(f"e{i}", 100.0, 160.0, b'{"i": %d}' % i, [out(f"m{i}")]) for i in range(3)]
    runs += [
        BeatDispatch("done", 100.0, 110.0, b"{}", [out("d1")]),
        BeatDispatch("paused", 100.0, 160.0, b"{}", [out("p1")]),
    ]
    outcomes = b.beat_dispatch_many("beat", "leader", token, runs)
    assert outcomes == ["sent", "sent", "sent", "done", "paused"]
    assert ids(b.claim(["q"], 10, 30).claims) == ["d0", "m0", "m1", "m2"]
    state = b.beat_entries()
    assert [state[f"e{i}"].settled for i in range(3)] == [100.0] * 3
    assert state["e2"].info == b'{"i": 2}' and state["e2"].next_run == 160.0
    stale = b.beat_dispatch_many("beat", "leader", token + 1, runs[:1])
    assert stale == ["lost"]


def test_beat_plan_is_fenced_and_keeps_or_sets_entries(b: Backend) -> None:
    token = b.acquire_lease("beat", "leader", 30)
    assert token is not None
    assert b.beat_plan("beat", "leader", token + 1, {"a": (1.0, 2.0, b"A")}) is False
    assert b.beat_plan("beat", "other", token, {"a": (1.0, 2.0, b"A")}) is False
    assert b.beat_entries() == {}

    assert b.beat_plan("beat", "leader", token, {"a": (1.0, 2.0, b"A"), "b": (None, 5.0, b"B")})
    assert b.beat_entries() == {
        "a": EntryState("a", 1.0, 2.0, False, b"A"),
        "b": EntryState("b", None, 5.0, False, b"B"),
    }
    b.beat_pause("b", True)
    assert b.beat_entries()["b"].paused is True
    # a settled time of None keeps the stored one; removing forgets the pause too
    assert b.beat_plan("beat", "leader", token, {"a": (None, None, b"A2")}, remove=["b"])
    assert b.beat_entries() == {"a": EntryState("a", 1.0, None, False, b"A2")}
    assert b.beat_plan("beat", "leader", token, {"b": (None, 6.0, b"B")})
    assert b.beat_entries()["b"] == EntryState("b", None, 6.0, False, b"B")

    b.release_lease("beat", "leader", token)
    assert b.beat_plan("beat", "leader", token, {}, remove=["a"]) is False
    assert set(b.beat_entries()) == {"a", "b"}
