"""The records that cross the backend interface stay frozen dataclasses, however they
are made (records._stored_at_once gives Claim, Outgoing and ResultWrite a quicker init)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from beatq.brokers.records import Claim, Outgoing, ResultWrite


def test_a_claim_outgoing_and_result_write_are_made_as_their_dataclass_makes_them() -> None:
    claim = Claim("id1", "celery", b"body", token="t")
    assert (claim.token, claim.redelivered, claim.priority) == ("t", False, 0)
    assert claim == Claim("id1", "celery", b"body", "t") and hash(claim) == hash(
        Claim("id1", "celery", b"body", "t")
    )
    assert claim != Claim("id1", "celery", b"body", "other")
    assert repr(claim) == (
        "Claim(id='id1', queue='celery', body=b'body', token='t', redelivered=False, priority=0)"
    )
    assert dataclasses.replace(claim, redelivered=True).redelivered is True
    assert pickle.loads(pickle.dumps(claim)) == claim  # as prefork children are sent it
    with pytest.raises(dataclasses.FrozenInstanceError):
        claim.token = "x"  # type: ignore[misc]
    with pytest.raises(TypeError, match="missing 2 required positional arguments"):
        Claim("id1")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        Claim("id1", "q", b"", bogus=1)  # type: ignore[call-arg]
    out = Outgoing("q", "id2", b"b", eta=5.0, priority=3)
    assert (out.eta, out.ack_at_claim, out.priority) == (5.0, False, 3)
    assert dataclasses.astuple(out) == ("q", "id2", b"b", 5.0, False, 3)
    write = ResultWrite("id3", b"meta", 60.0)
    assert write.final is True and dataclasses.asdict(write)["ttl"] == 60.0
