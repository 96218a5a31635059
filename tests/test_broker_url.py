"""A Redis broker URL with a query redis-py cannot use is refused at once, by name.

redis-py parses such a URL without complaint and fails at the first connection with a
TypeError from deep inside; beatq checks the query when it makes the broker."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from beatq import Beatq, brokers
from beatq.brokers import connect
from beatq.exceptions import ConfigurationError


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("sockt_timeout=1", ["'sockt_timeout'", "did you mean 'socket_timeout'"]),
        ("foo=1", ["unknown option 'foo'"]),
        ("socket_timeout=soon", ["socket_timeout"]),
    ],
)
def test_a_bad_query_option_is_refused_naming_it(query: str, words: list[str]) -> None:
    app = Beatq("urls", broker=f"redis://:secret@127.0.0.1:1/0?{query}")
    with pytest.raises(ConfigurationError) as caught:
        app.broker  # noqa: B018 (making the broker is what is checked)
    message = str(caught.value)
    assert all(w in message for w in words), message
    assert "secret" not in message


def test_redis_py_options_in_the_query_are_taken(redis_url: str) -> None:
    url = f"{redis_url}?socket_timeout=7&health_check_interval=3&max_connections=9&client_name=q"
    app = Beatq("urls", broker=url)
    try:
        kwargs = app.broker.client.connection_pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["client_name"]) == (7.0, "q")
        assert app.broker.client.connection_pool.max_connections == 9
    finally:
        app.close()


def test_the_cli_exits_2_with_one_line() -> None:
    url = "redis://127.0.0.1:1/0?sockt_timeout=1"
    done = subprocess.run(
        [sys.executable, "-m", "beatq", "-A", "tests.proj", "-b", url, "status"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'socket_timeout'" in lines[0], done.stderr


# -- transport options: a typo is refused, Celery's own are said to have no effect ---------
@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("redis://127.0.0.1:1/0", {"min_replica": 1}, "did you mean 'min_replicas'"),
        ("redis://127.0.0.1:1/0", {"sentinel_kwargs": {}}, "it is for sentinel:// URLs"),
        ("sqlite:///{tmp}/x.db", {"min_replicas": 1}, "its options are busy_timeout"),
        ("memory://opts", {"visibilty_timeout": 5}, "did you mean 'visibility_timeout'"),
    ],
)
def test_a_transport_option_the_store_does_not_read_is_refused(url, options, message, tmp_path):
    with pytest.raises(ConfigurationError, match=message):
        connect(url.format(tmp=tmp_path), options)


def test_celerys_transport_options_are_taken_and_said_once_to_have_no_effect(caplog, monkeypatch):
    monkeypatch.setattr(brokers, "_said", set())
    with caplog.at_level(logging.WARNING, logger="beatq.broker"):
        for _ in range(2):
            connect("memory://celery-opts", {"priority_steps": [0, 3, 6, 9], "sep": ":"}).close()
    assert caplog.text.count("'priority_steps' has no effect in beatq: priorities") == 1
    assert caplog.text.count("'sep' has no effect in beatq") == 1
