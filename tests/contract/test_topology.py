"""The backend contract, continued: what a backend runs on (`Store.topology`) and the
live beats (`Workers.beat_heartbeat`, `beats`), on every backend."""

from __future__ import annotations

import json
import os

from redis.crc import key_slot

from beatq.brokers import Backend
from tests.conftest import wait_for
from tests.contract.conftest import Store, out


def test_beats_are_kept_apart_from_workers_expire_and_unregister(b: Backend) -> None:
    b.heartbeat("w1", b'{"w": 1}', 30)
    b.beat_heartbeat("b1", b'{"leader": true}', 0.3)
    b.beat_heartbeat("b2", b'{"leader": false}', 30)
    b.beat_heartbeat("b2", b'{"leader": true}', 30)  # the latest info wins
    assert b.beats() == {"b1": b'{"leader": true}', "b2": b'{"leader": true}'}
    assert b.workers() == {"w1": b'{"w": 1}'}  # a beat is no worker (control, inspect)
    b.beat_unregister("b2")
    assert b.beats() == {"b1": b'{"leader": true}'}
    wait_for(lambda: b.beats() == {}, 3, "the beat's heartbeat to expire")
    assert b.workers() == {"w1": b'{"w": 1}'}


def test_topology_names_the_kind_and_what_it_runs_on(store: Store, b: Backend) -> None:
    found = b.topology()
    data = json.loads(json.dumps(found.to_dict()))  # the shape is plain JSON
    assert data["kind"] == store.kind
    if store.kind == "memory":
        assert data["url"] == store.url and data["shards"] == [] and data["path"] is None
    elif store.kind == "sqlite":
        b.send([])  # the file exists once opened
        path = store.url.removeprefix("sqlite:///")
        assert (data["path"], data["journal_mode"]) == (path, "wal")
        assert data["size"] >= os.path.getsize(path) > 0
    elif store.kind == "cluster":
        queues = [f"q{i}" for i in range(12)]
        b.send([out(f"m-{q}", q) for q in queues])
        data = json.loads(json.dumps(b.topology().to_dict()))
        assert data["url"] == store.url and len(data["shards"]) == 3
        ranges = sorted(tuple(r) for shard in data["shards"] for r in shard["slots"])
        assert ranges[0][0] == 0 and ranges[-1][1] == 16383  # every slot, each once
        assert all(a[1] + 1 == b_[0] for a, b_ in zip(ranges, ranges[1:]))
        held = [q for shard in data["shards"] for q in shard["queues"]]
        assert sorted(held) == sorted(queues)  # each queue on one shard
        assert sum(1 for shard in data["shards"] if shard["queues"]) >= 2  # spread
        for shard in data["shards"]:
            master = shard["master"]
            assert (master["role"], master["status"]) == ("master", "ok") and master["version"]
            assert [r["role"] for r in shard["replicas"]] == ["replica"]
            for queue in shard["queues"]:  # the shard really serves it
                assert b.queue_length(queue) == 1
                slot = key_slot(b.unit(queue).queue(queue).encode())
                assert any(a <= slot <= z for a, z in shard["slots"])
    else:
        (shard,) = data["shards"]
        master = shard["master"]
        assert master["role"] == "master" and master["status"] == "ok"
        assert master["address"] == store.url.split("//")[1].split("/")[0]
        assert master["version"] and master["version"][0].isdigit()
        assert shard["replicas"] == [] and shard["slots"] == []
