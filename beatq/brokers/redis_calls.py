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

A call that does not block on the server spins for its reply for a short while (`spin`,
500 µs by default) before it sleeps in the kernel: on a nearby Redis the reply comes in
tens of microseconds, and a thread that went to sleep waits as long again to be woken
(on a virtual machine, twice as long as the whole call). A thread whose replies keep
missing the spin sleeps on its calls for a second before it tries again, so a distant
server costs a few spins a second; a call made while another thread awaits its reply
sleeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import redis
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:
    from hiredis import pack_command
except ImportError:  # optional: redis-py packs then
    pack_command = None

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
    "beat_release",
    "beat_plan",
    "revoke",
    "schedules",
    "purge",
    "send_once",
    "chord_join",
    "check_claims",
)


# On a Redis Cluster, the first thing each function does (see `library`).
GUARD = """local stable = redis.pcall('EXISTS', KEYS[1] .. ':~a', KEYS[1] .. ':~b')
if type(stable) == 'table' and stable.err then
  return redis.error_reply('TRYAGAIN the slot of ' .. KEYS[1] .. ' is being migrated (' ..
    stable.err .. ')')
end
"""


def library(guarded: bool = False) -> tuple[str, str]:
    """The library's name and its source: lib.lua, then each script as a function.

    `guarded` (a Redis Cluster): each function first asks whether its slot is being
    migrated, and answers TRYAGAIN without touching anything when it is. During a
    migration Redis refuses, inside a script, any command on a key of the slot that is
    not there (moved already, or never made), and the script stops with its earlier
    writes kept: a claim that popped a message and then touched a list it had emptied
    would lose the message. The question is an EXISTS of two keys that never exist:
    on the slot's source node, a missing key of a migrating slot is refused; on its
    target, a command of several keys missing some is; on a slot at rest, it answers 0.
    A slot cannot begin or end a migration while a script runs, so a function that
    passed the guard is never refused later on."""
    folder = resources.files("beatq.brokers") / "lua"
    parts = [(folder / "lib.lua").read_text()]
    guard = GUARD if guarded else ""
    for name in SCRIPTS:
        # A script reads KEYS and ARGV as EVAL gives them; a function gets them as arguments.
        body = (folder / f"{name}.lua").read_text()
        parts.append(f"local function {name}(KEYS, ARGV)\n{guard}{body}\nend")
    code = "\n".join(parts)
    lib = "beatq_" + hashlib.sha1(code.encode()).hexdigest()[:12]
    register = [f"redis.register_function('{lib}_{name}', {name})" for name in SCRIPTS]
    return lib, "\n".join([f"#!lua name={lib}", code, *register, ""])


SPIN = 0.0005  # seconds a call polls for its reply before it sleeps (see above)
MISSES = 3  # replies in a row that miss the spin before a thread sleeps on its calls
RESPIN = 1.0  # seconds it then sleeps on them, before it tries spinning again


class Calls:
    """FCALLs of the library and plain commands, each thread on its own connection."""

    def __init__(self, client: redis.Redis, spin: float = SPIN, guarded: bool = False) -> None:
        self.client = client
        self.spin = spin
        self.lib, self.source = library(guarded)
        self.local = threading.local()
        # One item per call awaiting its reply, blocking calls aside (append and pop are
        # atomic: no lock is taken on the way). A forked child has none of the parent's
        # other threads, nor their calls (one fork hook for every Calls: _after_fork).
        self.waiting: list[None] = []
        _LIVE.add(self)

    def _connection(self) -> Connection:
        local = self.local
        if getattr(local, "pid", None) != os.getpid():  # a forked child opens its own
            local.conn = self.client.connection_pool.get_connection()
            local.pid = os.getpid()
            local.misses = 0  # replies in a row that did not come within the spin
            local.sleep_until = 0.0  # this thread sleeps on its calls until then
            local.polled = None  # the socket `poller` was made for
            local.poller = None  # polls `polled`; None: that socket is not polled
            local.primed = None  # the socket a PING was sent on (prime) whose reply is unread
            local.quiet = getattr(local, "quiet", False)  # never spins (see `quiet`)
        return local.conn

    def quiet(self) -> None:
        """The calling thread waits for its replies in the kernel from now on, without
        spinning (one of more busy processes than cores: a spin takes a core that the
        server or a sibling process needs)."""
        self._connection()
        self.local.quiet = True

    def command(self, *args: Any, blocking: bool = False) -> Any:
        """Send one command and read its reply; a dropped connection is retried once.
        `blocking`: the server may hold the reply back (BLPOP, BLMOVE): never spin."""
        conn = self._connection()
        try:
            return self._roundtrip(conn, args, blocking)
        except (RedisConnectionError, RedisTimeoutError):
            # most often a connection the server closed while it sat idle (a restart)
            return self._roundtrip(conn, args, blocking)

    def _roundtrip(self, conn: Connection, args: tuple[Any, ...], blocking: bool) -> Any:
        try:
            conn.send_packed_command(_packed(conn, [args]))
            return self._reply(conn, conn.read_response, blocking)
        except ResponseError:
            raise  # the server answered: the connection is in step
        except BaseException:
            self._drop(conn)
            raise

    def _reply(self, conn: Connection, read: Callable[[], Any], blocking: bool) -> Any:
        """`read()` what the server answers to what was just sent on `conn`; unless the
        server may hold it back (`blocking`), spin for it first when no other call awaits
        its reply."""
        if self.local.primed is not None:
            self._read_primed(conn)
        if blocking:
            return read()
        waiting = self.waiting
        waiting.append(None)
        try:
            if len(waiting) == 1:
                self._spin(conn)
            return read()
        finally:
            waiting.pop()

    def _spin(self, conn: Connection) -> None:
        """Poll the socket until the reply's first bytes are there, for at most `spin`
        seconds; then the read waits in the kernel.

        Only a call alone in awaiting its reply spins (see `waiting`): while others are
        in flight, threads have work for the interpreter, and polling would take turns
        with them. A thread whose last MISSES replies did not come within the spin (a
        distant or busy server, a busy interpreter) sleeps on its calls for the next RESPIN
        seconds. TLS sockets are not polled (their first bytes are not the reply's)."""
        local = self.local
        if self.spin <= 0 or local.quiet:
            return
        if local.sleep_until and time.perf_counter() < local.sleep_until:
            return
        sock = getattr(conn, "_sock", None)
        if local.polled is not sock:  # a new connection (a reconnect)
            local.polled, local.poller = sock, None
            if sock is not None and not isinstance(sock, ssl.SSLSocket):
                local.poller = select.poll()
                local.poller.register(sock, select.POLLIN)
        if local.poller is None:
            return
        ready = local.poller.poll
        deadline = time.perf_counter() + self.spin
        while not ready(0):
            now = time.perf_counter()
            if now > deadline:
                local.misses += 1
                if local.misses >= MISSES:
                    local.misses = 0
                    local.sleep_until = now + RESPIN
                return
        local.misses = 0

    def prime(self) -> None:
        """Send a PING now whose reply the next call reads first: a server (and its host)
        that sat idle takes a few hundred microseconds to wake, and this lets it wake
        before a call that must be quick (the beat's dispatch at its instant). Returns at
        once; a connection error here is left to that call to meet."""
        try:
            conn = self._connection()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return
        if self.local.primed is not None or not hasattr(conn, "_sock"):
            return  # one PING at most; without the socket, no way to tell it was read
        try:
            conn.send_command("PING")
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self._drop(conn)
            return
        except BaseException:
            self._drop(conn)
            raise
        self.local.primed = conn._sock  # the one it went out on, after any reconnect

    def _read_primed(self, conn: Connection) -> None:
        """Read the PONG of `prime`, if it was sent on the socket the connection has now
        (a reconnect, ours or redis-py's own, loses it with the old socket)."""
        primed, self.local.primed = self.local.primed, None
        if getattr(conn, "_sock", None) is primed:
            with contextlib.suppress(ResponseError):
                conn.read_response()

    def _drop(self, conn: Connection) -> None:
        """Close this thread's connection (its replies can no longer be told apart)."""
        conn.disconnect()
        self.local.primed = None

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
            replies = self.pipeline([*before, call, *then], blocking=bool(before))
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
            return replies[len(before)]
        except ResponseError as exc:
            if not _missing(exc):
                raise
        self.load()
        return self.command(*call)  # the commands `before` and `then` ran already

    def fcall_many(
        self,
        name: str,
        calls: list[tuple[list[str], list[Any]]],
        spin: bool = True,
        then: Sequence[tuple[Any, ...]] = (),
    ) -> list[Any]:
        """Call script `name` once per (keys, args), all in one round trip; the replies
        (then those of the commands `then`, sent after the calls). `spin=False`: sleep
        for the replies at once."""
        commands = [("FCALL", f"{self.lib}_{name}", len(k), *k, *a) for k, a in calls]
        commands += then
        replies = self.pipeline(commands, blocking=not spin)
        if replies and _missing(replies[0]):  # then none of them ran
            self.load()
            replies = self.pipeline(commands, blocking=not spin)
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

    def pipeline(self, commands: list[tuple[Any, ...]], blocking: bool = False) -> list[Any]:
        """Send many commands in one write and read every reply (errors are returned).
        `blocking`: one of them may be held back by the server: never spin."""
        conn = self._connection()
        try:
            conn.send_packed_command(_packed(conn, commands))
            return self._reply(conn, lambda: _read_all(conn, len(commands)), blocking)
        except BaseException:
            self._drop(conn)
            raise


_LIVE: weakref.WeakSet[Calls] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for calls in list(_LIVE):
        calls.waiting.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _packed(conn: Connection, commands: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """`commands` in the wire format, packed by hiredis where it is installed (a tenth of
    the time redis-py takes to encode each argument in Python: 1.6 against 14 µs for an
    acknowledgement's 20); an argument hiredis does not pack (a bytearray, and what
    redis-py refuses with its own error) leaves them to redis-py."""
    if pack_command is not None:
        try:
            return [pack_command(command) for command in commands]
        except TypeError:
            pass
    return conn.pack_commands(commands)


def _read_all(conn: Connection, n: int) -> list[Any]:
    """The next `n` replies on `conn`; an error reply is returned, not raised."""
    replies = []
    for _ in range(n):
        try:
            replies.append(conn.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


def _missing(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and "function not found" in str(reply).lower()
