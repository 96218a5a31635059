"""A Redis broker URL with a query redis-py cannot use is refused at once, by name.

redis-py parses such a URL without complaint and fails at the first connection with a
TypeError from deep inside; beatq checks the query when it makes the broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from beatq import Beatq
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
