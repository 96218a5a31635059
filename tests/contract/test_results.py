"""The Results role (roles.Results): task states stored, read, waited for and forgotten."""

from __future__ import annotations

import time
from pathlib import Path

from beatq.brokers import Backend, ResultWrite, connect
from tests.conftest import scaled, wait_for
from tests.contract.conftest import Store, ids, in_thread, out


# -- storing and reading --------------------------------------------------------------------------
def test_a_final_result_replaces_the_state_and_is_read_first(b: Backend) -> None:
    b.finish(results=[ResultWrite("t", b"STARTED", 60, final=False)])
    assert b.get_result("t") == b"STARTED"
    assert b.get_results(["t"]) == [None], "get_results reads final states only"
    b.finish(results=[ResultWrite("t", b"SUCCESS", 60)])
    assert b.get_result("t") == b"SUCCESS"
    b.finish(results=[ResultWrite("t", b"RETRY", 60, final=False)])
    assert b.get_result("t") == b"SUCCESS", "a final state wins over a later non-final one"
    b.finish(results=[ResultWrite("u", b"FAILURE", 60)])
    assert b.get_results(["u", "missing", "t"]) == [b"FAILURE", None, b"SUCCESS"]


def test_forget_deletes_every_state_of_a_task(b: Backend) -> None:
    b.finish(results=[ResultWrite("t", b"SUCCESS", 60), ResultWrite("s", b"STARTED", 60, False)])
    b.forget("t")
    b.forget("s")
    b.forget("never-stored")
    assert b.get_result("t") is None and b.get_result("s") is None
    assert b.get_results(["t"]) == [None]


def test_results_expire_after_their_ttl(b: Backend) -> None:
    stored = time.monotonic()
    b.finish(results=[ResultWrite("short", b"R", 0.3), ResultWrite("long", b"L", 60)])
    b.finish(results=[ResultWrite("state", b"S", 0.3, final=False)])
    assert b.get_result("short") == b"R" and b.get_result("state") == b"S"
    wait_for(lambda: b.get_result("short") is None, 3, "the result to expire")
    assert time.monotonic() - stored >= 0.25
    wait_for(lambda: b.get_result("state") is None, 3, "the state to expire")
    assert b.get_results(["short", "long"]) == [None, b"L"]


# -- results: waiting -----------------------------------------------------------------------------
def test_wait_result_is_woken_by_a_finish_in_another_thread(store: Store, b: Backend) -> None:
    waiter = store.open()
    thread, done = in_thread(lambda: waiter.wait_result("t", 5))
    b.finish(results=[ResultWrite("t", b"STARTED", 60, final=False)])
    thread.join(0.15)
    assert thread.is_alive(), "a non-final state does not end the wait"
    finished = time.monotonic()
    b.finish(results=[ResultWrite("t", b"SUCCESS", 60)])
    thread.join(5)
    assert done["value"] == b"SUCCESS"
    assert done["at"] - finished < min(scaled(1.0), 4.0)  # woken, not timed out (5 s)


def test_wait_result_returns_a_stored_result_at_once_and_none_after_timeout(b: Backend) -> None:
    b.finish(results=[ResultWrite("t", b"SUCCESS", 60)])
    start = time.monotonic()
    assert b.wait_result("t", 5) == b"SUCCESS"
    assert b.wait_result("t", None) == b"SUCCESS"
    assert time.monotonic() - start < min(scaled(1.0), 4.0)  # at once, not after its 5 s
    start = time.monotonic()
    assert b.wait_result("missing", 0.3) is None
    assert 0.25 <= time.monotonic() - start < 10.0  # timed out, and did not hang


def test_every_waiter_on_a_result_wakes(store: Store, b: Backend) -> None:
    waiters = [in_thread(lambda w=store.open(): w.wait_result("t", 5)) for _ in range(3)]
    time.sleep(0.05)
    b.finish(results=[ResultWrite("t", b"SUCCESS", 60)])
    for thread, done in waiters:
        thread.join(5)
        assert done["value"] == b"SUCCESS"


# -- store_results, and results kept on another URL -----------------------------------------------
def test_store_results_stores_and_wakes_as_a_finish_does(store: Store, b: Backend) -> None:
    waiter = store.open()
    thread, done = in_thread(lambda: waiter.wait_result("t", 5))
    b.store_results([ResultWrite("s", b"STARTED", 60, final=False), ResultWrite("t", b"OK", 60)])
    thread.join(5)
    assert done["value"] == b"OK" and b.get_result("s") == b"STARTED"


def test_results_kept_on_another_url_are_stored_and_read_there(
    store: Store, tmp_path: Path
) -> None:
    """A broker given a result URL (`connect(url, results=...)`): its finish stores results
    there, before the rest of the step here, and `results` reads them there."""
    other = f"sqlite:///{tmp_path / 'results.db'}"
    broker = connect(store.url, store.options, results=other)
    store.opened.append(broker)
    assert broker.results.url == other and store.open().results.url == store.url
    broker.send([out("m"), out("n")])
    claims = broker.claim(["q"], 2, 30).claims
    broker.finish(ack=claims[:1], results=[ResultWrite("m", b"SUCCESS", 60)], send=[out("next")])
    broker.finish(results=[ResultWrite("n", b"STARTED", 60, final=False)])
    assert broker.results.get_result("m") == b"SUCCESS"
    assert broker.results.wait_result("m", 1) == b"SUCCESS"
    assert broker.results.get_result("n") == b"STARTED"
    own = store.open()
    assert own.get_result("m") is None and own.get_result("n") is None, "none kept here"
    assert ids(broker.claim(["q"], 10, 30).claims) == ["next"], "the rest of the finish here"
    elsewhere = connect(other)
    assert elsewhere.get_results(["m", "n"]) == [b"SUCCESS", None]
    elsewhere.close()
