"""The Schedules role (roles.Schedules): entries added at run time, the version that tells
the leader of a change, requests run slot by slot under the lease, and capped histories."""

from __future__ import annotations

import threading

from beatq.brokers import Backend
from tests.contract.conftest import Store, ids, out


def test_specs_add_update_delete_and_the_version_grows_with_each(b: Backend) -> None:
    assert b.schedule_version() == 0
    assert b.schedule_specs() == (0, {})
    assert b.schedule_put("nightly", b'{"cron": "0 3 * * *"}', "add") is True
    v1 = b.schedule_version()
    assert v1 > 0
    assert b.schedule_put("nightly", b"other", "add") is False, "add refuses a name taken"
    assert b.schedule_version() == v1, "a refused change leaves the version"
    assert b.schedule_put("missing", b"x", "update") is False, "update refuses a new name"
    assert b.schedule_put("nightly", b'{"cron": "0 4 * * *"}', "update") is True
    assert b.schedule_put("hourly", b'{"every": "1h"}', "set") is True
    version, specs = b.schedule_specs()
    assert version > v1
    assert specs == {"hourly": b'{"every": "1h"}', "nightly": b'{"cron": "0 4 * * *"}'}
    assert b.schedule_delete("nightly") is True
    assert b.schedule_delete("nightly") is False
    assert b.schedule_specs()[1] == {"hourly": b'{"every": "1h"}'}
    assert b.schedule_version() > version


def test_many_specs_are_added_all_or_none_with_one_version_bump(b: Backend) -> None:
    items = [(f"bulk-{n:05d}", f'{{"every": {n + 1}}}'.encode()) for n in range(5000)]
    assert b.schedule_add_many(items) == []
    version, specs = b.schedule_specs()
    assert version == 1, "one bump for the whole batch"
    assert len(specs) == 5000 and specs["bulk-04999"] == b'{"every": 5000}'
    clash = [("fresh", b"x"), ("bulk-00007", b"y"), ("bulk-00009", b"z")]
    assert b.schedule_add_many(clash) == ["bulk-00007", "bulk-00009"]
    assert b.schedule_version() == version, "a refused batch changes nothing"
    assert "fresh" not in b.schedule_specs()[1]
    assert b.schedule_specs()[1]["bulk-00007"] == b'{"every": 8}'
    assert b.schedule_add_many([]) == [] and b.schedule_version() == version


def test_changes_name_what_changed_after_a_version(b: Backend) -> None:
    assert b.schedule_changes(0) == (0, {})
    b.schedule_put("a", b"spec-a", "add")
    b.schedule_add_many([("b", b"spec-b"), ("c", b"spec-c")])
    version, found = b.schedule_changes(0)
    assert version == b.schedule_version()
    assert found == {"a": b"spec-a", "b": b"spec-b", "c": b"spec-c"}
    assert b.schedule_changes(version) == (version, {}), "nothing since"
    b.schedule_put("b", b"spec-b2", "update")
    b.schedule_delete("c")
    b.schedule_request("run-1", b"body", keep=3600)  # a request moves the version alone
    later, found = b.schedule_changes(version)
    assert later > version and found == {"b": b"spec-b2", "c": None}
    assert b.schedule_changes(later) == (later, {})
    b.schedule_put("c", b"again", "add")
    assert b.schedule_changes(later)[1] == {"c": b"again"}


def test_two_clients_adding_one_name_at_once_make_one_entry(store: Store) -> None:
    clients = [store.open() for _ in range(8)]
    won: list[bool] = []
    barrier = threading.Barrier(len(clients))

    def add(client: Backend, n: int) -> None:
        barrier.wait()
        won.append(client.schedule_put("once", f"spec-{n}".encode(), "add"))

    threads = [threading.Thread(target=add, args=(c, n)) for n, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False] * 7 + [True]


def test_a_request_is_stored_once_per_id_and_bumps_the_version(b: Backend) -> None:
    assert b.schedule_request("run-1", b"first", keep=3600) is True
    version = b.schedule_version()
    assert b.schedule_request("run-1", b"again", keep=3600) is False
    assert b.schedule_version() == version
    assert b.schedule_request("run-2", b"second", keep=3600) is True
    found = b.schedule_requests()
    assert [(r.id, r.body, r.cursor, r.done) for r in found] == [
        ("run-1", b"first", None, None),
        ("run-2", b"second", None, None),
    ]


def test_a_request_runs_slot_by_slot_under_the_lease_each_slot_once(b: Backend) -> None:
    token = b.acquire_lease("beat", "leader", 30)
    assert token is not None
    b.schedule_request("fill", b"backfill", keep=3600)
    assert b.schedule_run("beat", "other", token, "fill", 10.0, False, [out("m10")]) == "lost"
    assert b.schedule_run("beat", "leader", token + 1, "fill", 10.0, False) == "lost"
    assert b.schedule_run("beat", "leader", token, "fill", 10.0, False, [out("m10")]) == "sent"
    assert b.schedule_run("beat", "leader", token, "fill", 10.0, False, [out("x")]) == "done"
    assert b.schedule_run("beat", "leader", token, "fill", 5.0, False, [out("y")]) == "done"
    assert b.schedule_run("beat", "leader", token, "fill", 20.0, True, [out("m20")]) == "sent"
    assert b.schedule_run("beat", "leader", token, "fill", 30.0, True, [out("z")]) == "done"
    assert b.schedule_run("beat", "leader", token, "nope", 1.0, True, [out("w")]) == "done"
    claimed = b.claim(["q"], 10, 30)
    assert sorted(ids(claimed.claims)) == ["m10", "m20"], "only the slots sent once"
    (request,) = b.schedule_requests()
    assert request.cursor == 20.0 and request.done is not None


def test_a_requested_run_waits_while_the_entrys_last_run_is_stored(b: Backend) -> None:
    """overlap "skip": the slot is not sent, nor its cursor moved, while that message is
    stored (unfinished); once it is acknowledged the same slot is sent."""
    token = b.acquire_lease("beat", "leader", 30)
    assert token is not None
    b.send([out("last-run")])
    b.schedule_request("now", b"", keep=3600)
    assert b.schedule_run("beat", "leader", token, "now", 1.0, True, [out("t")], "last-run") == (
        "busy"
    )
    (request,) = b.schedule_requests()
    assert (request.cursor, request.done) == (None, None), "nothing changed"
    b.finish(ack=b.claim(["q"], 1, 30).claims)
    assert b.history("e", 10) == [], "no record of a run not sent"
    kept = ("e", b'{"slot": 1.0}', 2)
    assert b.schedule_run(
        "beat", "leader", token, "now", 1.0, True, [out("t")], "last-run", kept
    ) == ("sent")
    assert ids(b.claim(["q"], 10, 30).claims) == ["t"]
    assert b.history("e", 10) == [b'{"slot": 1.0}'], "the run's record in the same step"
    assert b.schedule_run("beat", "leader", token, "now", 1.0, True, [out("x")], None, kept) == (
        "done"
    )
    assert b.history("e", 10) == [b'{"slot": 1.0}'], "a slot done already records nothing"


def test_a_new_leader_resumes_a_request_after_its_last_slot(b: Backend) -> None:
    first = b.acquire_lease("beat", "old", 0.2)
    assert first is not None
    b.schedule_request("fill", b"", keep=3600)
    assert b.schedule_run("beat", "old", first, "fill", 1.0, False, [out("s1")]) == "sent"
    b.release_lease("beat", "old", first)
    second = b.acquire_lease("beat", "new", 30)
    assert second is not None
    assert b.schedule_run("beat", "old", first, "fill", 2.0, False, [out("stale")]) == "lost"
    (request,) = b.schedule_requests()
    assert request.cursor == 1.0
    assert b.schedule_run("beat", "new", second, "fill", 1.0, False, [out("again")]) == "done"
    assert b.schedule_run("beat", "new", second, "fill", 2.0, True, [out("s2")]) == "sent"
    assert sorted(ids(b.claim(["q"], 10, 30).claims)) == ["s1", "s2"]


def test_done_requests_are_remembered_for_keep_seconds(b: Backend) -> None:
    token = b.acquire_lease("beat", "leader", 30)
    assert token is not None
    b.schedule_request("now-1", b"", keep=3600)
    assert b.schedule_run("beat", "leader", token, "now-1", 1.0, True) == "sent"
    assert b.schedule_request("now-1", b"", keep=3600) is False, "done, still remembered"
    assert b.schedule_request("other", b"", keep=0) is True  # forgets what was done before now
    assert [r.id for r in b.schedule_requests()] == ["other"]
    assert b.schedule_request("now-1", b"", keep=3600) is True


def test_history_is_newest_first_and_capped_per_entry(b: Backend) -> None:
    b.history_add([(f"e{n % 2}", f"r{n}".encode()) for n in range(10)], maxlen=3)
    assert b.history("e0", 10) == [b"r8", b"r6", b"r4"]
    assert b.history("e1", 2) == [b"r9", b"r7"]
    assert b.history("none", 5) == []
    b.history_add([], maxlen=3)
    b.history_add([("e0", b"r10")], maxlen=3)
    assert b.history("e0", 10) == [b"r10", b"r8", b"r6"]


def test_the_store_survives_reopening(store: Store) -> None:
    if store.kind == "memory":
        return  # one process's store: reopening is the same object
    first = store.open()
    first.schedule_put("kept", b"spec", "add")
    first.history_add([("kept", b"h")], maxlen=5)
    first.close()
    again = store.open()
    assert again.schedule_specs()[1] == {"kept": b"spec"}
    assert again.history("kept", 5) == [b"h"]


def test_one_entry_of_the_beat_state_reads_as_all_of_them_show_it(b: Backend) -> None:
    token = b.acquire_lease("beat", "leader", 30)
    assert token is not None
    plans = {"a": (10.0, 20.0, b'{"source": "x.yaml:3"}'), "b": (None, None, b"{}")}
    assert b.beat_plan("beat", "leader", token, plans)
    b.beat_pause("a", True)
    every = b.beat_entries()
    assert b.beat_entry("a") == every["a"]
    assert b.beat_entry("a").paused and b.beat_entry("a").info == b'{"source": "x.yaml:3"}'
    assert b.beat_entry("b") == every["b"]
    assert b.beat_entry("missing") is None
