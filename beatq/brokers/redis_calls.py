"""How the Redis backend talks to Redis on its hot paths: one Lua library, one connection
per thread.

The scripts in lua/*.lua are loaded once per server as one Redis function library
(FUNCTION LOAD, Redis 7+) and called with FCALL: the shared helpers in lib.lua are set up
once when the library loads, not on every call as an EVALSHA of lib + script would. The
library's name carries a digest of its source, so processes running different versions
of beatq on one server each call their own code. A server that lost its functions (a
restart without persistence) gets the library again on the first call that misses it.

Each thread calls through a connection of its own, taken from the client's pool once:
no pool lookup, lock or health probe per call, and the reply is parsed by hiredis when
it is installed. A call interrupted by anything (a signal raising in the main thread, a
lost server) drops its connection, so a late reply is never read as the next call's.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

SCRIPTS = (
    "send",
    "claim",
    "renew",
    "release",
    "finish",
    "requeue_dead",
    "dead_letter",
    "lease",
    "beat_dispatch",
    "beat_plan",
    "revoke",
)


def library() -> tuple[str, str]:
    """The library's name and its source: lib.lua, then each script as a function."""
    folder = resources.files("beatq.brokers") / "lua"
    parts = [(folder / "lib.lua").read_text()]
    for name in SCRIPTS:
        # A script reads KEYS and ARGV as EVAL gives them; a function gets them as arguments.
        body = (folder / f"{name}.lua").read_text()
        parts.append(f"local function {name}(KEYS, ARGV)\n{body}\nend")
    code = "\n".join(parts)
    lib = "beatq_" + hashlib.sha1(code.encode()).hexdigest()[:12]
    register = [f"redis.register_function('{lib}_{name}', {name})" for name in SCRIPTS]
    return lib, "\n".join([f"#!lua name={lib}", code, *register, ""])


class Calls:
    """FCALLs of the library and plain commands, each thread on its own connection."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.lib, self.source = library()
        self.local = threading.local()

    def _connection(self) -> Connection:
        local = self.local
        if getattr(local, "pid", None) != os.getpid():  # a forked child opens its own
            local.conn = self.client.connection_pool.get_connection()
            local.pid = os.getpid()
        return local.conn

    def command(self, *args: Any) -> Any:
        """Send one command and read its reply; a dropped connection is retried once."""
        conn = self._connection()
        try:
            return self._roundtrip(conn, args)
        except (RedisConnectionError, RedisTimeoutError):
            # most often a connection the server closed while it sat idle (a restart)
            return self._roundtrip(conn, args)

    def _roundtrip(self, conn: Connection, args: tuple[Any, ...]) -> Any:
        try:
            conn.send_command(*args)
            return conn.read_response()
        except ResponseError:
            raise  # the server answered: the connection is in step
        except BaseException:
            conn.disconnect()
            raise

    def fcall(
        self,
        name: str,
        keys: list[str],
        args: list[Any],
        then: Sequence[tuple[Any, ...]] = (),
        before: Sequence[tuple[Any, ...]] = (),
    ) -> Any:
        """Call script `name` of the library (loading the library first if the server
        lacks it) and return its reply; commands `before` and `then` go in the same round
        trip, on either side of the call (a blocking `before` holds the call back until
        it is served: Redis runs a connection's commands in order)."""
        call = ("FCALL", f"{self.lib}_{name}", len(keys), *keys, *args)
        try:
            if not then and not before:
                return self.command(*call)
            replies = self.pipeline([*before, call, *then])
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
            return replies[len(before)]
        except ResponseError as exc:
            if not _missing(exc):
                raise
        self.load()
        return self.command(*call)  # the commands `before` and `then` ran already

    def fcall_many(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Call script `name` once per (keys, args), all in one round trip; the replies."""
        commands = [("FCALL", f"{self.lib}_{name}", len(k), *k, *a) for k, a in calls]
        replies = self.pipeline(commands)
        if replies and _missing(replies[0]):  # then none of them ran
            self.load()
            replies = self.pipeline(commands)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    def load(self) -> None:
        try:
            self.command("FUNCTION", "LOAD", self.source)
        except ResponseError as exc:
            if "already exists" not in str(exc):  # another process loaded it meanwhile
                raise

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send many commands in one write and read every reply (errors are returned)."""
        conn = self._connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            replies = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            conn.disconnect()
            raise


def _missing(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and "function not found" in str(reply).lower()
