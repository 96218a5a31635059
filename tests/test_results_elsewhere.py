"""Results kept on another URL than the broker (`result_backend`), end to end: a real worker
stores there what the client reads there, and the broker keeps none of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from beatq import chord, group
from beatq.brokers import connect
from tests.proj.tasks import CustomError, add, cv_body, fail


@pytest.mark.backends("redis", "sqlite")
def test_results_on_another_url_are_stored_and_read_there(
    app, tmp_path: Path, start_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    results_url = f"sqlite:///{tmp_path / 'results' / 'results.db'}"
    (tmp_path / "results").mkdir()
    monkeypatch.setenv("BEATQ_RESULT_BACKEND", results_url)
    start_worker("-P", "threads", "-c", "2", extra_env={"BEATQ_RESULT_BACKEND": results_url})

    assert add.delay(2, 2).get(timeout=10) == 4
    assert group(add.s(i, i) for i in range(5))().get(timeout=10) == [0, 2, 4, 6, 8]
    assert chord((add.s(i, i) for i in range(5)), cv_body.s())().get(timeout=10) == 20
    failed = fail.delay("elsewhere")
    with pytest.raises(CustomError, match="elsewhere"):
        failed.get(timeout=10)

    results = connect(results_url)
    broker_own = connect(app.conf.broker_url, app.conf.broker_transport_options)
    try:
        assert results.get_result(failed.id) is not None
        assert broker_own.get_result(failed.id) is None, "the broker keeps no results"
    finally:
        results.close()
        broker_own.close()
