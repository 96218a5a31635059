"""The Redis backend: every multi-step change is one Lua script, loaded once.

Keys (prefix `beatq`, or the transport option `global_keyprefix`):

    {p}:q:{queue}   list    ready message ids; sent at the left, taken from the right
    {p}:d:{queue}   list    the queue's due lane: ids of delayed messages that fell due,
                            earliest eta at the right; taken before {p}:q:{queue}
    {p}:b:{queue}   zset    the queue's priority bands that may hold messages (see BAND)
    {p}:w:{queue}   list    at most one wake-up token for workers blocked on the queue
    {p}:wake:{t}    list    a stop signal's push that ends one worker's wait (60 s)
    {p}:msg         hash    id -> "queue\\n", a byte, the body: every message not yet
                            acknowledged; the byte is its delivery property (\\1: it may
                            be acknowledged as it is claimed, \\2: not; see `_stored`)
    {p}:delayed     zset    id by eta
    {p}:unacked     zset    "id|token" of each claim by its deadline (the visibility timeout)
    {p}:redelivered set     ids put back as their claim expired, until claimed again
    {p}:expired     zset    "id|token" of each expired claim, kept a day: its late
                            acknowledgement is stale (see Store.finish, lua/finish.lua)
    {p}:r:{id}      list    the final result of a task (one element; waiters BLMOVE on it)
    {p}:s:{id}      string  the latest non-final state (STARTED, RETRY)
    {p}:chord:{g}   set     finished members of chord g; {p}:chord:{g}:fired once complete
    {p}:dead        hash    id -> "queue\\n\\2body" of dead letters
    {p}:dead:why    hash    id -> reason
    {p}:dead:idx    zset    id by time of death
    {p}:lease:{n}   string  "holder|token" with the lease's expiry
    {p}:fence:{n}   string  the last fencing token handed out for lease n
    {p}:beat:settled hash   entry -> instant up to which its runs are settled
    {p}:beat:next   zset    entry by next run
    {p}:beat:info   hash    entry -> the beat's JSON record (task, schedule, counters)
    {p}:beat:paused set     paused entries
    {p}:beat:held   zset    dispatched messages held unseen until a replica has them, by
                            their own eta (0: none); only when the beat waits for replicas
    {p}:sched:spec  hash    entry -> its spec, for entries added at run time (app.schedules)
    {p}:sched:log   zset    entry -> the version of its last change (or removal)
    {p}:sched:ver   string  a counter bumped by every change of specs or requests
    {p}:sched:req   hash    request id -> "n\\nbody": a trigger or backfill, n its order
    {p}:sched:cur   hash    request id -> the last slot sent for it
    {p}:sched:done  zset    request id by when it was done
    {p}:sched:h:{e} list    entry e's run history, newest first, capped
    {p}:worker:{n}  string  a worker's last heartbeat info, expiring
    {p}:workers     zset    worker name by heartbeat expiry
    {p}:beats:{h}   string  a beat's last heartbeat info (leader or standby), expiring
    {p}:beats       zset    beat holder by heartbeat expiry
    {p}:events      stream  the event stream (field "e": one JSON event), capped
    {p}:revoked     zset    revoked task id by time of revocation (server clock)
    {p}:revoked:term set    revoked task ids to terminate if running
    {p}:control     stream  the control channel (field "c": one command), capped
    {p}:reply:{c}   hash    worker -> its reply to command c, expiring

    {p}:done:{t}    string  a finish's idempotency token, kept while a retry may come

Round trips (see redis_calls.py for how they are made cheap): sending messages is one
FCALL (`send`); a worker takes a batch of messages with one FCALL (`claim`); finishing a
task (ack, store result, send its callbacks) is one FCALL (`finish`), which can also
acknowledge the next task as it starts; waiting for a result is one BLMOVE. Events ride
along: `send` and `finish` with events pipeline their XADDs after the call, in the same
round trip.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis
import redis.asyncio as redis_asyncio
from redis.backoff import ExponentialBackoff
from redis.connection import Connection
from redis.exceptions import (
    AskError,
    ClusterError,
    NoPermissionError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..exceptions import (
    BrokerAccessDenied,
    BrokerError,
    ConfigurationError,
    LeaseLost,
    NotReplicated,
)
from . import redis_sentinel, redis_topology
from .records import (
    BeatDispatch,
    Claim,
    Claimed,
    DeadLetter,
    EntryState,
    Lease,
    Outgoing,
    RunRequest,
    Topology,
)
from .redis_calls import SPIN, Calls, _missing
from .redis_sentinel import SentinelLoginRefused, SentinelUrl, is_sentinel
from .replication import Replication
from .roles import NONE_STALE, Backend, Finish, Plan, Take, forget_elsewhere, new_token
from .urls import shown_url

MAX_BLOCK = 5.0  # seconds: the longest a blocking read waits before asking again
TOKEN_TTL = 86400.0  # seconds a finish's token is kept: a retry later than that is not caught


class RedisKeys:
    """Every Redis key beatq uses, built in one place (lua/lib.lua mirrors the per-id ones)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.msgs = f"{prefix}:msg"
        self.delayed = f"{prefix}:delayed"
        self.unacked = f"{prefix}:unacked"
        self.dead = f"{prefix}:dead"
        self.dead_reason = f"{prefix}:dead:why"
        self.dead_index = f"{prefix}:dead:idx"
        self.workers = f"{prefix}:workers"
        self.beats = f"{prefix}:beats"
        self.beat_settled = f"{prefix}:beat:settled"
        self.beat_next = f"{prefix}:beat:next"
        self.beat_info = f"{prefix}:beat:info"
        self.beat_paused = f"{prefix}:beat:paused"
        self.beat_held = f"{prefix}:beat:held"
        self.events = f"{prefix}:events"
        self.revoked = f"{prefix}:revoked"
        self.revoked_term = f"{prefix}:revoked:term"
        self.control = f"{prefix}:control"
        self.timeline = f"{prefix}:timeline"

    def queue(self, name: str) -> str:
        return f"{self.prefix}:q:{name}"

    def due(self, name: str) -> str:
        return f"{self.prefix}:d:{name}"

    def bands(self, name: str) -> str:
        return f"{self.prefix}:b:{name}"

    def wake(self, name: str) -> str:
        return f"{self.prefix}:w:{name}"

    def interrupt(self, token: str) -> str:
        return f"{self.prefix}:wake:{token}"

    def result(self, task_id: str) -> str:
        return f"{self.prefix}:r:{task_id}"

    def state(self, task_id: str) -> str:
        return f"{self.prefix}:s:{task_id}"

    def lease(self, name: str) -> str:
        return f"{self.prefix}:lease:{name}"

    def lease_since(self, name: str) -> str:
        return f"{self.prefix}:lease:{name}:since"

    def fence(self, name: str) -> str:
        return f"{self.prefix}:fence:{name}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def reply(self, command_id: str) -> str:
        return f"{self.prefix}:reply:{command_id}"

    def beat(self, holder: str) -> str:
        return f"{self.prefix}:beats:{holder}"


# What a Redis URL's query may set besides the connection's own arguments (the pool's).
_POOL_OPTIONS = frozenset({"max_connections", "timeout"})


def check_url(url: str, sentinel: SentinelUrl | None = None) -> None:
    """Refuse a Redis URL redis-py would accept here and fail on later: an option in its
    query that no connection takes (a typo, `?sockt_timeout=1`) or a value it cannot read,
    with one error naming the option (never the password). `sentinel`: the URL read as a
    sentinel:// one."""
    if sentinel is not None:
        parsed: dict[str, Any] = dict(sentinel.options)
        tls_options = sorted(n for n in parsed if n.startswith("ssl"))
        if tls_options and not sentinel.tls:
            raise ConfigurationError(
                f"broker URL {shown_url(url)}: {tls_options[0]!r} is a TLS option and the URL "
                "does not ask for TLS; begin it with sentinel+tls:// (TLS to the sentinels "
                "and to the master)"
            )
        tls = sentinel.tls
        parsed["connection_class"] = redis.connection.SSLConnection if tls else Connection
    else:
        try:
            parsed = redis.connection.parse_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"broker URL {shown_url(url)}: {exc}") from exc
    known = set(_POOL_OPTIONS)
    for cls in parsed.get("connection_class", Connection).__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None:
            known.update(inspect.signature(init).parameters)
    for name in parsed:
        if name not in known and name != "connection_class":
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(
                f"broker URL {shown_url(url)}: unknown option {name!r} in its query{hint}; "
                "remove it or use one of redis-py's connection options"
            )


@contextlib.contextmanager
def _errors(url: str) -> Iterator[None]:
    """Redis's errors as beatq's: one line that names the server (never its password)
    and, when Redis turned us away rather than being out of reach, what to fix."""
    try:
        yield
    except SentinelLoginRefused as exc:
        raise BrokerAccessDenied(f"Redis at {shown_url(url)}: {exc}") from exc
    except RedisAuthenticationError as exc:
        raise BrokerAccessDenied(
            f"Redis at {shown_url(url)} refused the login: {str(exc).rstrip('.')} "
            "(check the user name and password in the broker URL)"
        ) from exc
    except NoPermissionError as exc:
        raise BrokerAccessDenied(
            f"Redis at {shown_url(url)} refused a command: {exc} (the ACL user needs every "
            "key under beatq's key prefix, pub/sub and scripting: ~PREFIX* &* +@all -@dangerous)"
        ) from exc
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        _refuse_untrusted(url, exc)
        raise BrokerError(f"Redis at {shown_url(url)} is unreachable: {exc}") from exc
    except (ClusterError, AskError, TryAgainError, RedisClusterException) as exc:
        # a Redis Cluster without a master for a slot, or out of reach (a mistake of
        # beatq's own, a cross-slot call, is a plain ResponseError and stays one)
        _refuse_untrusted(url, exc)
        raise BrokerError(f"Redis Cluster at {shown_url(url)}: {exc}") from exc


def _refuse_untrusted(url: str, exc: BaseException) -> None:
    """BrokerAccessDenied when `exc` comes of a TLS certificate this client does not
    trust (a cause of its cause, through a cluster client's errors)."""
    cause = exc.__cause__
    for _ in range(8):  # a few links: the chain is short, and nothing forbids a loop
        if cause is None or isinstance(cause, ssl.SSLCertVerificationError):
            break
        cause = cause.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        raise BrokerAccessDenied(
            f"Redis at {shown_url(url)}: TLS certificate not trusted "
            f"({cause.verify_message}); name the CA that signed it with "
            "?ssl_ca_certs=/path/to/ca.crt in the broker URL"
        ) from exc


# The byte stored between a message's queue and its body: its delivery property.
ACK_AT_CLAIM, ACK_AFTER = b"\x01", b"\x02"

# A message of priority p > 0 is stored under the queue name f"{queue}{BAND}{p}", a band
# of its queue with lists of its own, which a claim drains before the queue's plain lists,
# the highest band first (lua/lib.lua). Messages without a priority are stored as before.
BAND = "\x1f"


def banded(queue: str, priority: int) -> str:
    """The queue name a message of `priority` is stored under."""
    return f"{queue}{BAND}{priority}" if priority else queue


def unbanded(name: str) -> tuple[str, int]:
    """The queue and the priority of a stored queue name (see `banded`)."""
    queue, sep, band = name.partition(BAND)
    return (queue, int(band)) if sep else (name, 0)


def _stored(m: Outgoing) -> bytes:
    """What a message's body is stored as: its delivery property, then the body."""
    return (ACK_AT_CLAIM if m.ack_at_claim else ACK_AFTER) + m.body


# In a claim's reply only, in place of that byte: the message was delivered before (its
# claim expired); claim.lua keeps the ids of such messages in {p}:redelivered until claimed.
REDELIVERED = b"\x03"


def split_stored(stored: bytes) -> tuple[str, bytes]:
    """The queue and the body of a stored message ("queue\\n", its property, the body; one
    stored before properties were has none)."""
    name, body, _ = _split(stored)
    return unbanded(name)[0], body


def _split(stored: bytes) -> tuple[str, bytes, int]:
    """The stored queue name, the body and the priority of a stored message."""
    queue, _, body = stored.partition(b"\n")
    if body[:1] in (ACK_AT_CLAIM, ACK_AFTER):
        body = body[1:]
    name = queue.decode()
    return name, body, (unbanded(name)[1] if BAND in name else 0)


def _member(claim: Claim) -> str:
    """A claim as the unacked set holds it: its delivery, not just its message."""
    return f"{claim.id}|{claim.token}"


def stale_ids(reply: Any) -> frozenset[str]:
    """The message ids of the stale claims lua/finish.lua returns ("id|token" each)."""
    if not reply:
        return NONE_STALE
    return frozenset((m.decode() if isinstance(m, bytes) else m).rpartition("|")[0] for m in reply)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _claimed(reply: list[Any], token: str) -> Claimed:
    """The reply of the claim script: the next eta, whether the first claim was
    acknowledged, then id, "queue\\nbody" pairs."""
    next_eta = float(reply[0]) if reply[0] else None
    claims = []
    for i in range(2, len(reply), 2):
        name, _, body = reply[i + 1].partition(b"\n")
        mark = body[:1]
        if mark in (ACK_AT_CLAIM, ACK_AFTER, REDELIVERED):
            body = body[1:]
        queue, priority = name.decode(), 0
        if BAND in queue:
            queue, priority = unbanded(queue)
        claims.append(Claim(reply[i].decode(), queue, body, token, mark == REDELIVERED, priority))
    return Claimed(claims, next_eta, reply[1] == 1)


def _flatten(messages: Sequence[Outgoing]) -> list[Any]:
    args: list[Any] = []
    for m in messages:
        queue = banded(m.queue, m.priority) if m.priority else m.queue
        args += [queue, m.id, _stored(m), "" if m.eta is None else repr(float(m.eta))]
    return args


def _send_args(messages: Sequence[Outgoing]) -> list[Any]:
    """The arguments of lua/send.lua for `messages`, in order: runs of those sharing a
    stored queue name and an eta (a batch of one call is one run), each as its queue, its
    eta ('' for none) and its length, then an id and a stored value per message (see
    `_stored`, prefixed here with "queue\\n" as the store keeps it: the script copies
    nothing)."""
    args: list[Any] = []
    add = args.append
    queue: str | None = None
    eta: float | None = None
    count_at = 0
    head = b""
    for m in messages:
        name = banded(m.queue, m.priority) if m.priority else m.queue
        if name != queue or m.eta != eta:
            if args:  # the run before is complete: its length
                args[count_at] = (len(args) - count_at) // 2
            queue, eta = name, m.eta
            args += [name, "" if eta is None else repr(float(eta)), 0]
            count_at = len(args) - 1
            head = name.encode() + b"\n"
        add(m.id)
        add(head + (ACK_AT_CLAIM if m.ack_at_claim else ACK_AFTER) + m.body)
    if args:
        args[count_at] = (len(args) - count_at) // 2
    return args


class RedisBackend(Backend):
    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.url = url
        self.sentinel = redis_sentinel.parse(url, shown_url(url)) if is_sentinel(url) else None
        check_url(url, self.sentinel)
        self.keys = RedisKeys(options.pop("global_keyprefix", None) or "beatq")
        self.replication = Replication.read(options, self.sentinel is not None, shown_url(url))
        self.sentinel_kwargs = options.pop("sentinel_kwargs", None)
        # Blocking reads (BLPOP, BLMOVE) block at most MAX_BLOCK seconds at a time, so a
        # socket timeout above that detects a peer that vanished without closing the
        # connection. Our callers reconnect with backoff; redis-py retries only briefly.
        self.client = self._client(
            socket_timeout=options.pop("socket_timeout", MAX_BLOCK + 5.0),
            socket_connect_timeout=options.pop("socket_connect_timeout", 5.0),
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
            socket_keepalive=True,
            health_check_interval=options.pop("health_check_interval", 30),
        )
        self.calls = Calls(self.client, float(options.pop("reply_spin", SPIN)))
        # what interrupt_wait pushes to end this process's wait_claim (see there)
        self.interrupt_key = self.keys.interrupt(new_token())

    def _client(self, **kwargs: Any) -> redis.Redis:
        """A client of this backend's server (of the master, behind Sentinel)."""
        if self.sentinel is not None:
            return redis_sentinel.client(self.sentinel, self.sentinel_kwargs, **kwargs)
        return redis.Redis.from_url(self.url, **kwargs)

    def _run(
        self, name: str, keys: list[str], args: list[Any], events: Sequence[bytes] = ()
    ) -> Any:
        with _errors(self.url):
            if not events:
                return self.calls.fcall(name, keys, args)
            # One round trip: the call, then the events, written together.
            return self.calls.fcall(name, keys, args, then=self._xadds(events))

    def _xadds(self, items: Sequence[bytes], maxlen: int | None = None) -> list[tuple[Any, ...]]:
        cap = self.event_max_len if maxlen is None else maxlen
        return [("XADD", self.keys.events, "MAXLEN", "~", cap, "*", "e", i) for i in items]

    # -- queue ---------------------------------------------------------------------------
    def send(self, messages: Sequence[Outgoing], events: Sequence[bytes] = ()) -> None:
        if messages:
            k = self.keys
            keys, args = [k.msgs, k.delayed], [k.prefix, *_send_args(messages)]
            need = self.replication.sends
            if not need:
                self._run("send", keys, args, events)
                return
            _, acked = self._waited("send", keys, args, need, events)
            if acked < need:
                what = f"{len(messages)} message(s) sent (first id {messages[0].id})"
                raise self._not_replicated(what, acked, need, "min_replicas")
        elif events:
            self.add_events(events)

    # -- replicas (see replication.py) ----------------------------------------------------
    def _waited(
        self, name: str, keys: list[str], args: list[Any], need: int, events: Sequence[bytes] = ()
    ) -> tuple[Any, int]:
        """Call script `name` and WAIT for `need` replicas in the same round trip: its
        reply and how many replicas have it (WAIT counts every write of the connection)."""
        call = ("FCALL", f"{self.calls.lib}_{name}", len(keys), *keys, *args)
        wait = ("WAIT", need, self.replication.timeout_ms)
        with _errors(self.url):
            replies = self.calls.pipeline([call, *self._xadds(events), wait], blocking=True)
            if _missing(replies[0]):  # a server without the library: the events went in
                self.calls.load()
                replies = self.calls.pipeline([call, wait], blocking=True)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[0], int(replies[-1])

    def _not_replicated(
        self, what: str, acked: int, need: int, option: str = "beat_min_replicas"
    ) -> NotReplicated:
        where = shown_url(self.url)
        if self.sentinel is not None:
            where += " (master %s:%s)" % (redis_sentinel.master_address(self.client) or ("?", "?"))
        return NotReplicated(
            f"Redis at {where}: {what} reached {acked} of the {need} replica(s) asked for "
            f"within {self.replication.timeout:g}s ({option}); the master has it and loses it "
            "only if it fails before a replica copies it. Check the replicas' links (INFO "
            f"replication), or lower {option} / raise min_replicas_timeout"
        )

    def _release_held(self) -> None:
        """Set the beat's held messages free (after a WAIT confirmed them)."""
        k = self.keys
        self._run("beat_release", [k.beat_held, k.msgs, k.delayed], [k.prefix])

    def take(self, ask: Take, before: Sequence[tuple[Any, ...]] = ()) -> Claimed:
        k = self.keys
        token = new_token()
        above = "" if ask.above is None else ask.above
        args = [
            k.prefix,
            ask.count,
            ask.visibility,
            token,
            ask.ahead,
            "1" if ask.ack_first else "",
            above,
        ]
        with _errors(self.url):
            reply = self.calls.fcall(
                "claim", [k.msgs, k.delayed, k.unacked], [*args, *ask.queues], before=before
            )
        return _claimed(reply, token)

    def wait_take(self, ask: Take, timeout: float) -> Claimed:
        # One round trip: the BLPOP holds the claim back until it is served (woken, timed
        # out, or ended by interrupt_wait), then Redis runs the claim at once.
        block = min(max(timeout, 0.01), MAX_BLOCK)
        wait = ("BLPOP", *[self.keys.wake(q) for q in ask.queues], self.interrupt_key, block)
        return self.take(ask, before=[wait])

    def interrupt_wait(self) -> bool:
        # Over a connection of its own (the waiting one is busy, and the pool's lock may be
        # held by the code the signal interrupted), one push the BLPOP of wait_claim is on.
        try:
            client = self._client(socket_timeout=1.0, socket_connect_timeout=1.0)
            try:
                with client:
                    pipe = client.pipeline(transaction=False)
                    pipe.lpush(self.interrupt_key, 1).expire(self.interrupt_key, 60)
                    pipe.execute()
            finally:
                redis_sentinel.close_watchers(client)
            return True
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return False

    def wait(self, queues: Sequence[str], timeout: float, ahead: float = 0.0) -> bool:
        # a send with a new earliest eta leaves a wake-up token, whatever `ahead` is
        keys = [self.keys.wake(q) for q in queues]
        with _errors(self.url):
            return self.client.blpop(keys, timeout=min(max(timeout, 0.01), MAX_BLOCK)) is not None

    def renew(self, claims: Sequence[Claim], visibility: float) -> None:
        if claims:
            self._run("renew", [self.keys.unacked], [visibility, *map(_member, claims)])

    def release(self, claims: Sequence[Claim]) -> None:
        if claims:
            k = self.keys
            args: list[Any] = [k.prefix]
            for c in claims:  # put back, it is acknowledged by its worker (see Delivery.release)
                mark = REDELIVERED if c.redelivered else ACK_AFTER  # stored as ACK_AFTER
                args += [banded(c.queue, c.priority), c.id, mark + c.body, _member(c)]
            self._run("release", [k.msgs, k.unacked, k.delayed], args)

    def queue_length(self, queue: str) -> int:
        k = self.keys
        with _errors(self.url):
            bands = self.client.zrange(k.bands(queue), 0, -1)
            pipe = self.client.pipeline()  # MULTI: one count of every list
            for name in [queue, *(banded(queue, int(b)) for b in bands)]:
                pipe.llen(k.due(name)).llen(k.queue(name))
            return sum(int(n) for n in pipe.execute())

    def purge(self, queues: Sequence[str]) -> int:
        names = list(dict.fromkeys(queues))
        if not names:
            return 0
        return int(self._run("purge", [self.keys.msgs], [self.keys.prefix, *names]))

    def scheduled(self, limit: int = 100) -> list[tuple[float, Claim]]:
        with _errors(self.url):
            pairs = self.client.zrange(self.keys.delayed, 0, limit - 1, withscores=True)
            if not pairs:
                return []
            stored = self.client.hmget(self.keys.msgs, [i for i, _ in pairs])
        out = []
        for (id_, eta), value in zip(pairs, stored):
            if value is not None:
                queue, body = split_stored(value)
                out.append((float(eta), Claim(id_.decode(), queue, body)))
        return out

    # -- finishing -------------------------------------------------------------------------
    def settle(self, step: Finish) -> frozenset[str]:
        k, ack, join = self.keys, step.ack, step.join
        args: list[Any] = [k.prefix, step.token or "", _ms(TOKEN_TTL), len(ack)]
        args += map(_member, ack)
        args.append(len(step.results))
        for r in step.results:
            kind = "final" if r.final else "state"
            args += [kind, r.task_id, r.meta, _ms(r.ttl)]
        if join is None:
            args += ["", "", 0, 0, *_flatten([Outgoing("", "", b"")])]
        else:
            args += [join.group, join.member, join.size, _ms(join.ttl), *_flatten([join.unlock])]
        args += _flatten(step.send)
        stale = self._run("finish", [k.msgs, k.unacked, k.delayed], args, step.events)
        return stale_ids(stale)

    # -- results ---------------------------------------------------------------------------
    def get_result(self, task_id: str) -> bytes | None:
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            pipe.lindex(self.keys.result(task_id), 0)
            pipe.get(self.keys.state(task_id))
            final, state = pipe.execute()
        return final if final is not None else state

    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.lindex(self.keys.result(task_id), 0)
            return pipe.execute()

    def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        key = self.keys.result(task_id)
        # Rotating the one-element list onto itself blocks until the result exists and
        # leaves it in place, so every waiter on the same id wakes.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = MAX_BLOCK if deadline is None else deadline - time.monotonic()
            block = min(max(left, 0.001), MAX_BLOCK)
            with _errors(self.url):
                value = self.calls.command(
                    "BLMOVE", key, key, "RIGHT", "LEFT", block, blocking=True
                )
            if value is not None or (deadline is not None and time.monotonic() >= deadline):
                return value

    async def await_result(self, task_id: str, timeout: float | None) -> bytes | None:
        """`wait_result` on redis-py's asyncio client: the same BLMOVE wake-up, and no
        thread waits. A connection of its own (a blocking command holds one), closed at
        the end. Behind Sentinel, a thread waits (see Results.await_result)."""
        if self.sentinel is not None:
            return await super().await_result(task_id, timeout)
        key = self.keys.result(task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        with _errors(self.url):
            client = redis_asyncio.Redis.from_url(
                self.url,
                socket_timeout=MAX_BLOCK + 5.0,
                socket_connect_timeout=5.0,
                single_connection_client=True,
            )
        try:
            while True:
                left = MAX_BLOCK if deadline is None else deadline - time.monotonic()
                block = min(max(left, 0.001), MAX_BLOCK)
                with _errors(self.url):
                    value = await client.execute_command("BLMOVE", key, key, "RIGHT", "LEFT", block)
                if value is not None or (deadline is not None and time.monotonic() >= deadline):
                    return value
        finally:
            await client.aclose()

    def forget(self, task_id: str) -> None:
        with _errors(self.url):
            self.client.delete(self.keys.result(task_id), self.keys.state(task_id))

    # -- dead letters ----------------------------------------------------------------------
    def dead_letter(self, claim: Claim, reason: str) -> None:
        k = self.keys
        stored = banded(claim.queue, claim.priority).encode() + b"\n" + ACK_AFTER + claim.body
        self._run(
            "dead_letter",
            [k.unacked, k.msgs, k.dead, k.dead_reason, k.dead_index],
            [_member(claim), claim.id, stored, reason, repr(time.time())],
        )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        k = self.keys
        with _errors(self.url):
            pairs = self.client.zrange(k.dead_index, 0, limit - 1, withscores=True)
            if not pairs:
                return []
            ids = [i for i, _ in pairs]
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(k.dead, ids)
            pipe.hmget(k.dead_reason, ids)
            stored, reasons = pipe.execute()
        out = []
        for (id_, when), value, reason in zip(pairs, stored, reasons):
            if value is not None:
                queue, body = split_stored(value)
                why = (reason or b"").decode()
                out.append(DeadLetter(id_.decode(), queue, why, float(when), body))
        return out

    def requeue_dead(self, ids: Sequence[str] | None = None) -> list[str]:
        k = self.keys
        here = self._results is None  # the results are kept here: forgotten in the script
        moved = self._run(
            "requeue_dead",
            [k.dead, k.dead_reason, k.dead_index, k.msgs, k.delayed],
            [k.prefix, "1" if here else "", *(ids or ())],
        )
        moved = [m.decode() for m in moved]
        if not here:
            forget_elsewhere(self.results, moved)
        return moved

    # -- leases ----------------------------------------------------------------------------
    def _lease(
        self, op: str, name: str, holder: str, token: int, ttl: float, need: int = 0
    ) -> tuple[Any, int]:
        """The lease script's reply, and how many replicas confirmed it (when `need`)."""
        keys = [self.keys.lease(name), self.keys.fence(name), self.keys.lease_since(name)]
        args = [op, holder, token, max(1, int(ttl * 1000))]
        if not need:
            return self._run("lease", keys, args), 0
        return self._waited("lease", keys, args, need)

    def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        # Waiting for the beat's replicas: a token is handed out only once a replica has
        # it, so a promoted replica never hands the same one out again.
        need = self.replication.beat
        token, acked = self._lease("acquire", name, holder, 0, ttl, need)
        if not token:
            return None
        if acked < need:
            self._lease("release", name, holder, int(token), 1)
            raise self._not_replicated(f"the beat's lease (token {int(token)})", acked, need)
        if need:
            self._release_held()  # a leader that stepped down may have left some
        return int(token)

    def renew_lease(self, name: str, holder: str, token: int, ttl: float) -> bool:
        need = self.replication.beat
        renewed, acked = self._lease("renew", name, holder, token, ttl, need)
        if renewed and need and acked >= need:
            self._release_held()
        return bool(renewed)

    def release_lease(self, name: str, holder: str, token: int) -> None:
        self._lease("release", name, holder, token, 1)

    def get_lease(self, name: str) -> Lease | None:
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=True)
            pipe.get(self.keys.lease(name))
            pipe.pttl(self.keys.lease(name))
            pipe.get(self.keys.lease_since(name))
            value, pttl, since = pipe.execute()
        if value is None:
            return None
        holder, _, token = value.decode().rpartition("|")
        return Lease(holder, int(token), max(pttl, 0) / 1000, float(since) if since else None)

    # -- beat state -------------------------------------------------------------------------
    def _beat_keys(self, lease: str) -> list[str]:
        k = self.keys
        return [k.lease(lease), k.beat_settled, k.beat_next, k.beat_info, k.beat_paused]

    def beat_dispatch_many(
        self, lease: str, holder: str, token: int, runs: Sequence[BeatDispatch]
    ) -> list[str]:
        k = self.keys
        need = self.replication.beat
        keys = [*self._beat_keys(lease), k.msgs, k.delayed, *([k.beat_held] if need else [])]
        calls = [(keys, self._dispatch_args(holder, token, r)) for r in runs]
        then = [("WAIT", need, self.replication.timeout_ms)] if need else []
        with _errors(self.url):
            # no spin for the reply: on a small host, Redis and the worker this wakes may
            # be queued on the beat's own CPU (see wakeup.py)
            replies = self.calls.fcall_many("beat_dispatch", calls, spin=False, then=then)
        outcomes = [r.decode() if isinstance(r, bytes) else str(r) for r in replies]
        if need:
            self._confirm(lease, holder, token, outcomes, int(replies[-1]), need)
            outcomes = outcomes[:-1]
        return outcomes

    def _confirm(
        self, lease: str, holder: str, token: int, outcomes: list[str], acked: int, need: int
    ) -> None:
        """After fenced dispatches whose messages are held: set them free once `need`
        replicas confirmed them; else give the lease up (LeaseLost): a master cut off from
        its replicas may be an old one, and whoever leads next releases what it finds."""
        if acked >= need:
            if "sent" in outcomes:
                self._release_held()
            return
        with contextlib.suppress(BrokerError):
            self._lease("release", lease, holder, token, 1)
        raise LeaseLost(str(self._not_replicated("the beat's dispatch", acked, need)))

    def _dispatch_args(self, holder: str, token: int, run: BeatDispatch) -> list[Any]:
        return [
            self.keys.prefix,
            f"{holder}|{token}",
            run.entry,
            repr(float(run.slot)),
            "" if run.next_run is None else repr(float(run.next_run)),
            run.info,
            run.busy_id or "",
            *_flatten(run.send),
        ]

    def beat_plan(
        self, lease: str, holder: str, token: int, entries: Plan, remove: Sequence[str] = ()
    ) -> bool:
        args: list[Any] = [f"{holder}|{token}", len(entries)]
        for name, (settled, next_run, info) in entries.items():
            args += [
                name,
                "" if settled is None else repr(float(settled)),
                "" if next_run is None else repr(float(next_run)),
                info,
            ]
        args += list(remove)
        return bool(self._run("beat_plan", self._beat_keys(lease), args))

    def beat_entries(self) -> dict[str, EntryState]:
        k = self.keys
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(k.beat_settled)
            pipe.zrange(k.beat_next, 0, -1, withscores=True)
            pipe.hgetall(k.beat_info)
            pipe.smembers(k.beat_paused)
            settled, nexts, infos, paused = pipe.execute()
        next_of = {name.decode(): score for name, score in nexts}
        names = {n.decode() for n in (*settled, *infos)} | set(next_of)
        return {
            name: EntryState(
                name,
                float(settled[name.encode()]) if name.encode() in settled else None,
                next_of.get(name),
                name.encode() in paused,
                infos.get(name.encode()),
            )
            for name in sorted(names)
        }

    def beat_pause(self, entry: str, paused: bool) -> None:
        with _errors(self.url):
            if paused:
                self.client.sadd(self.keys.beat_paused, entry)
            else:
                self.client.srem(self.keys.beat_paused, entry)

    # -- schedules at run time (roles.Schedules) --------------------------------------------
    def _schedule_keys(self, lease: str = "") -> list[str]:
        p, k = self.keys.prefix, self.keys
        named = [f"{p}:sched:{n}" for n in ("spec", "ver", "req", "cur", "done")]
        return [*named, k.lease(lease), k.msgs, k.delayed, f"{p}:sched:log"]

    def schedule_version(self) -> int:
        with _errors(self.url):
            found = self.client.get(f"{self.keys.prefix}:sched:ver")
        return int(found or 0)

    def schedule_specs(self) -> tuple[int, dict[str, bytes]]:
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=True)
            pipe.get(f"{self.keys.prefix}:sched:ver")
            pipe.hgetall(f"{self.keys.prefix}:sched:spec")
            version, specs = pipe.execute()
        return int(version or 0), {n.decode(): specs[n] for n in sorted(specs)}

    def schedule_changes(self, since: int) -> tuple[int, dict[str, bytes | None]]:
        reply = self._run("schedules", self._schedule_keys(), ["changes", int(since)])
        version, flat = int(reply[0] or 0), reply[1:]
        found = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
        return version, {name: found[name] for name in sorted(found)}

    def schedule_put(self, name: str, spec: bytes, mode: str) -> bool:
        if mode not in ("add", "update", "set"):
            raise ValueError(f"mode must be 'add', 'update' or 'set', not {mode!r}")
        return bool(self._run("schedules", self._schedule_keys(), ["put", name, spec, mode]))

    def schedule_add_many(self, items: Sequence[tuple[str, bytes]]) -> list[str]:
        if not items:
            return []
        args: list[Any] = ["putmany"]
        for name, spec in items:
            args += (name, spec)
        there = self._run("schedules", self._schedule_keys(), args)
        return [n.decode() if isinstance(n, bytes) else str(n) for n in there or []]

    def schedule_delete(self, name: str) -> bool:
        return bool(self._run("schedules", self._schedule_keys(), ["delete", name]))

    def schedule_request(self, request_id: str, body: bytes, keep: float) -> bool:
        args = ["request", request_id, body, repr(float(keep))]
        return bool(self._run("schedules", self._schedule_keys(), args))

    def schedule_requests(self) -> list[RunRequest]:
        p = self.keys.prefix
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(f"{p}:sched:req")
            pipe.hgetall(f"{p}:sched:cur")
            pipe.zrange(f"{p}:sched:done", 0, -1, withscores=True)
            bodies, cursors, done = pipe.execute()
        done_at = dict(done)
        found = []
        for key, stored in bodies.items():
            order, _, body = stored.partition(b"\n")
            cursor = cursors.get(key)
            request = RunRequest(
                key.decode(), body, None if cursor is None else float(cursor), done_at.get(key)
            )
            found.append((int(order), request))
        return [request for _, request in sorted(found, key=lambda item: item[0])]

    def schedule_run(
        self,
        lease: str,
        holder: str,
        token: int,
        request_id: str,
        slot: float,
        last: bool,
        send: Sequence[Outgoing] = (),
        busy_id: str | None = None,
        record: tuple[str, bytes, int] | None = None,
    ) -> str:
        args = self._run_args(holder, token, request_id, slot, last, send, busy_id or "", record)
        need = self.replication.beat
        if not need:
            reply = self._run("schedules", self._schedule_keys(lease), args)
            return reply.decode() if isinstance(reply, bytes) else str(reply)
        keys = [*self._schedule_keys(lease), self.keys.beat_held]
        reply, acked = self._waited("schedules", keys, args, need)
        outcome = reply.decode() if isinstance(reply, bytes) else str(reply)
        self._confirm(lease, holder, token, [outcome], acked, need)
        return outcome

    def _run_args(
        self,
        holder: str,
        token: int,
        request_id: str,
        slot: float,
        last: bool,
        send: Sequence[Outgoing],
        busy: str,
        record: tuple[str, bytes, int] | None,
    ) -> list[Any]:
        """The arguments of lua/schedules.lua's `run` (a trigger's or backfill's slot)."""
        entry, data, maxlen = record if record is not None else ("", b"", 0)
        return [
            "run",
            self.keys.prefix,
            f"{holder}|{token}",
            request_id,
            repr(float(slot)),
            "1" if last else "",
            busy,
            entry,
            data,
            max(int(maxlen), 1),
            *_flatten(send),
        ]

    def beat_entry(self, name: str) -> EntryState | None:
        k = self.keys
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=True)
            pipe.hget(k.beat_settled, name)
            pipe.zscore(k.beat_next, name)
            pipe.hget(k.beat_info, name)
            pipe.sismember(k.beat_paused, name)
            settled, next_run, info, paused = pipe.execute()
        if settled is None and next_run is None and info is None:
            return None
        return EntryState(
            name, None if settled is None else float(settled), next_run, bool(paused), info
        )

    def history_add(self, items: Sequence[tuple[str, bytes]], maxlen: int) -> None:
        if not items:
            return
        # one call, its arguments flat: far cheaper to build than a command per item
        args: list[Any] = ["history", self.keys.prefix, max(int(maxlen), 1)]
        for name, record in items:
            args += (name, record)
        self._run("schedules", self._schedule_keys(), args)

    def history(self, name: str, limit: int) -> list[bytes]:
        if limit <= 0:
            return []
        with _errors(self.url):
            return list(self.client.lrange(f"{self.keys.prefix}:sched:h:{name}", 0, limit - 1))

    # -- workers ---------------------------------------------------------------------------
    def heartbeat(self, worker: str, info: bytes, ttl: float) -> None:
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.keys.worker(worker), info, px=max(1, int(ttl * 1000)))
            pipe.zadd(self.keys.workers, {worker: time.time() + ttl})
            pipe.execute()

    def unregister(self, worker: str) -> None:
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(self.keys.worker(worker))
            pipe.zrem(self.keys.workers, worker)
            pipe.execute()

    def workers(self) -> dict[str, bytes]:
        with _errors(self.url):
            self.client.zremrangebyscore(self.keys.workers, "-inf", time.time())
            names = [n.decode() for n in self.client.zrange(self.keys.workers, 0, -1)]
            if not names:
                return {}
            infos = self.client.mget([self.keys.worker(n) for n in names])
        return {n: i for n, i in zip(names, infos) if i is not None}

    def beat_heartbeat(self, holder: str, info: bytes, ttl: float) -> None:
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.keys.beat(holder), info, px=max(1, int(ttl * 1000)))
            pipe.zadd(self.keys.beats, {holder: time.time() + ttl})
            pipe.zremrangebyscore(self.keys.beats, "-inf", time.time())
            pipe.execute()

    def beat_unregister(self, holder: str) -> None:
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(self.keys.beat(holder))
            pipe.zrem(self.keys.beats, holder)
            pipe.execute()

    def beats(self) -> dict[str, bytes]:
        with _errors(self.url):
            alive = self.client.zrangebyscore(self.keys.beats, time.time(), "+inf")
            names = [n.decode() for n in alive]
            infos = self.client.mget([self.keys.beat(n) for n in names]) if names else []
        return {n: i for n, i in zip(names, infos) if i is not None}

    # -- events ----------------------------------------------------------------------------
    def add_events(self, items: Sequence[bytes], maxlen: int | None = None) -> None:
        if items:
            with _errors(self.url):
                for reply in self.calls.pipeline(self._xadds(items, maxlen)):
                    if isinstance(reply, Exception):
                        raise reply

    def read_events(
        self, after: str | None = None, count: int = 100, timeout: float | None = None
    ) -> list[tuple[str, bytes]]:
        cursor = after or "0-0"
        deadline = time.monotonic() + (timeout or 0.0)
        while True:
            left = deadline - time.monotonic()
            block = _ms(min(left, MAX_BLOCK)) if left > 0 else None
            with _errors(self.url):
                reply = self.client.xread({self.keys.events: cursor}, count=count, block=block)
            if reply:
                return [(id_.decode(), fields[b"e"]) for id_, fields in reply[0][1]]
            if block is None or time.monotonic() >= deadline:
                return []

    def recent_events(self, count: int = 100) -> list[tuple[str, bytes]]:
        with _errors(self.url):
            rows = self.client.xrevrange(self.keys.events, count=count)
        return [(id_.decode(), fields[b"e"]) for id_, fields in reversed(rows)]

    # -- timeline --------------------------------------------------------------------------
    def add_samples(self, samples: Sequence[tuple[float, bytes]], keep: float, maxlen: int) -> None:
        key = self.keys.timeline
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=True)
            if samples:
                pipe.zadd(key, {data: at for at, data in samples})
            pipe.zremrangebyscore(key, "-inf", f"({time.time() - keep!r}")
            pipe.zremrangebyrank(key, 0, -max(maxlen, 0) - 1)
            pipe.execute()

    def samples(self, since: float) -> list[tuple[float, bytes]]:
        with _errors(self.url):
            rows = self.client.zrangebyscore(self.keys.timeline, since, "+inf", withscores=True)
        return [(float(at), bytes(data)) for data, at in rows]

    # -- revoked tasks ----------------------------------------------------------------------
    def revoke(self, task_ids: Sequence[str], terminate: bool, ttl: float) -> None:
        if task_ids:
            k = self.keys
            args = [repr(float(ttl)), "1" if terminate else "", *task_ids]
            self._run("revoke", [k.revoked, k.revoked_term], args)

    def revoked(self, after: float = 0.0) -> list[tuple[str, float, bool]]:
        k = self.keys
        with _errors(self.url):
            low = repr(float(after))
            pairs = self.client.zrangebyscore(k.revoked, low, "+inf", withscores=True)
            if not pairs:
                return []
            flags = self.client.smismember(k.revoked_term, [i for i, _ in pairs])
        return [(i.decode(), float(when), bool(f)) for (i, when), f in zip(pairs, flags)]

    # -- control channel -------------------------------------------------------------------
    def send_command(self, command: bytes) -> None:
        with _errors(self.url):
            self.client.xadd(
                self.keys.control, {"c": command}, maxlen=self.control_max_len, approximate=False
            )

    def commands(self, after: str | None) -> tuple[str, list[bytes]]:
        with _errors(self.url):
            if after is None:
                last = self.client.xrevrange(self.keys.control, count=1)
                return (last[0][0].decode() if last else "0-0"), []
            reply = self.client.xread({self.keys.control: after})
        rows = reply[0][1] if reply else []
        return (rows[-1][0].decode() if rows else after), [fields[b"c"] for _, fields in rows]

    def reply(self, command_id: str, worker: str, data: bytes, ttl: float) -> None:
        key = self.keys.reply(command_id)
        with _errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(key, worker, data)
            pipe.pexpire(key, max(1, int(ttl * 1000)))
            pipe.execute()

    def replies(self, command_id: str) -> dict[str, bytes]:
        with _errors(self.url):
            found = self.client.hgetall(self.keys.reply(command_id))
        return {worker.decode(): data for worker, data in found.items()}

    # -- lifecycle -------------------------------------------------------------------------
    def prime(self) -> None:
        # A PING ahead, its reply read by the next call: Redis (and its host) wake from
        # idle now, not when the dispatch arrives (~0.3 ms after a second of idle).
        self.calls.prime()

    def crowded(self) -> None:
        self.calls.quiet()

    def ping(self) -> None:
        with _errors(self.url):
            self.client.ping()

    def topology(self) -> Topology:
        shown = shown_url(self.url)
        if self.sentinel is None:
            with _errors(self.url):
                where = redis_topology.address(self.client)
                return Topology("redis", shown, (redis_topology.server_shard(self.client, where),))
        order = {f"{h}:{p}": i for i, (h, p) in enumerate(self.sentinel.sentinels)}

        def place(watcher: redis.Redis) -> int:
            conn = watcher.connection_pool.connection_kwargs
            return order.get(f"{conn.get('host')}:{conn.get('port')}", len(order))

        watchers = sorted(redis_sentinel.watchers(self.client), key=place)
        view = redis_topology.sentinel_view(watchers, self.sentinel.service)
        with _errors(self.url):
            self.client.ping()  # connected to the master the sentinels name now
            host, port = redis_sentinel.master_address(self.client) or ("?", 0)
            shard = redis_topology.server_shard(self.client, f"{host}:{port}")
        return Topology(
            "sentinel",
            shown,
            (redis_topology.merged(shard, view),),
            view.sentinels,
            self.sentinel.service,
            view.epoch,
            view.last_failover,
        )

    def disconnect(self) -> None:
        self.client.close()
        self.client.connection_pool.disconnect()
        redis_sentinel.close_watchers(self.client)
