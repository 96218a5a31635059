"""The Workers role (roles.Workers) and what every store offers (roles.Store)."""

from __future__ import annotations

import time

from beatq.brokers import (
    Backend,
)
from tests.conftest import wait_for
from tests.contract.conftest import Store, ids, out


# -- workers --------------------------------------------------------------------------------------
def test_heartbeats_expire_and_unregister_forgets_at_once(b: Backend) -> None:
    b.heartbeat("w1", b'{"n": 1}', 0.3)
    b.heartbeat("w2", b'{"n": 2}', 30)
    b.heartbeat("w2", b'{"n": 3}', 30)
    assert b.workers() == {"w1": b'{"n": 1}', "w2": b'{"n": 3}'}
    b.unregister("w2")
    assert b.workers() == {"w1": b'{"n": 1}'}
    wait_for(lambda: b.workers() == {}, 3, "the heartbeat to expire")


def test_ping_and_several_clients_share_one_store(store: Store, b: Backend) -> None:
    b.ping()
    other = store.open()
    b.send([out("m")])
    assert ids(other.claim(["q"], 10, 30).claims) == ["m"]


# -- revoked tasks --------------------------------------------------------------------------------
def test_revocations_are_kept_with_their_terminate_flag(b: Backend) -> None:
    assert b.revoked() == []
    b.revoke(["t1", "t2"], terminate=False, ttl=60)
    b.revoke(["t3"], terminate=True, ttl=60)
    found = b.revoked()
    assert [(i, term) for i, _, term in found] == [("t1", False), ("t2", False), ("t3", True)]
    last = found[-1][1]
    assert [i for i, _, _ in b.revoked(after=last)] == ["t3"]  # at or after `after`
    b.revoke(["t1"], terminate=True, ttl=60)  # renewed, terminate added
    b.revoke(["t3"], terminate=False, ttl=60)  # renewed, terminate kept
    again = {i: term for i, _, term in b.revoked(after=last)}
    assert again["t1"] is True and again["t3"] is True


def test_old_revocations_are_dropped(b: Backend) -> None:
    b.revoke(["old"], terminate=False, ttl=0.2)
    time.sleep(0.3)  # the ttl itself is what is tested
    b.revoke(["new"], terminate=False, ttl=0.2)
    assert [i for i, _, _ in b.revoked()] == ["new"]
