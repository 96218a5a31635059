"""The Redis Cluster backend (redis+cluster://): queues spread over the cluster's shards.

Slot units. Every script builds its keys from a prefix (ARGV[1]); a prefix that carries a
hash tag puts every key a call builds in one slot. So the keys of one Redis (redis.py's
docstring lists them) are split into units, each under a prefix of its own:

    {p}:{q:QUEUE}   one queue: its lists, due lane, priority bands, wake-up list, and
                    the message hash, delayed set, claims, redelivered ids and dead
                    letters of that queue's messages
    {p}:{home}      everything else: leases and fencing tokens, the beat's state and
                    its outbox, schedules, workers, events, the control channel, revoked
                    tasks, the timeline, and the names of the queues ({p}:{home}:queues)
    {p}:{r:ID}      task ID's result and state (results spread by task id)
    {p}:{c:GROUP}   the finished members of chord GROUP

A call is made on the master of its unit's slot (redis_cluster.Routes). Each declares at
least one key of its unit; the keys a script builds from the prefix (a queue's priority
bands, found inside the claim) are in that slot, not each declared: Redis 7 refuses a
script that touches another slot, so a mistake fails loudly.

What needs two units is done in steps whose retry is idempotent:
- a claim over several queues takes queue by queue, in the order given (the urgency
  order), passing over a queue whose slot is mid-migration (BRIEF: it is asked again at
  the next claim, and waited for only when no other queue answered); a wait over
  several queues blocks on each queue's wake-up list in a thread of its own (`Waits`),
  asking a slot mid-migration again until it answers; an expired claim goes back as its
  own queue is next claimed from;
- a finish stores the results (their slots); counts the chord member (the chord's slot,
  which keeps the unlock message until it is sent); sends the messages bound for queues
  other than the acknowledged ones, each under a mark (the finish's token and the
  message id) a retry finds (`send_once`); then, per queue, acknowledges with the
  messages bound for that queue in the same call (a task's retry, by its own id, goes
  where the message it replaces is acknowledged). A retry bound for another queue than
  its claim's goes out only once the claim's queue said the claim is not stale, and
  that call keeps the claim live until its acknowledgement (lua/check_claims.lua: one
  round trip more, for such a finish only), so none is sent in a stale claim's stead
  (Store.finish), as on one Redis. A worker killed between two steps
  has its message delivered again and run again, as after a kill mid-task; no step,
  made again, doubles anything;
- the beat's dispatch settles the run (fenced, on {home}) and puts its messages in an
  outbox there, each with the mark of its run's (entry, slot), in one round trip; the
  outbox is then sent (`send_once`) and emptied. A new leader, and every leader as it
  renews its lease, sends what the outbox holds before dispatching anything new (what is
  bound for a shard out of reach, or a slot mid-migration, waits for the next time). A
  run dispatched again because its settlement was lost with a failed master is not sent
  again: its mark is in its queue's slot.

Replicas (replication.py, cluster_replicas.py). A send with `min_replicas` waits for
replicas of its queue's master in its round trip. The beat (`beat_min_replicas`, 1 by
default on a cluster) takes its lease, and counts a dispatch, once that many replicas of
{home}'s master have it, with a WAIT in the same round trip; the outbox is sent only
then (a dispatch no replica confirmed makes the leader step down: LeaseLost, and the
next leader sends it). The outbox forgets a run once that many replicas of its queue's
master have the run and its mark (written in one script, they replicate together), so
a failover of that shard loses neither: the outbox sends it again, or finds its mark.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.retry import Retry

from ..exceptions import BrokerError, ConfigurationError, NotReplicated
from . import cluster_replicas, redis_cluster, redis_topology
from .cluster_finishes import LaterFinishes
from .records import (
    BeatDispatch,
    ChordJoin,
    Claim,
    Claimed,
    DeadLetter,
    Outgoing,
    ResultWrite,
    Topology,
)
from .redis import (
    ACK_AFTER,
    ACK_AT_CLAIM,
    MAX_BLOCK,
    REDELIVERED,
    TOKEN_TTL,
    RedisBackend,
    RedisKeys,
    _claimed,
    _errors,
    _flatten,
    _member,
    _ms,
    _send_args,
    banded,
    check_url,
    shown_url,
    split_stored,
    stale_ids,
    unbanded,
)
from .redis_calls import SPIN
from .replication import Replication
from .roles import NONE_STALE, Finish, Results, Take, forget_elsewhere, new_token

log = logging.getLogger("beatq.broker")

DOWN_FOR = 1.0  # seconds a queue whose master could not be reached is left out of claims
BRIEF = 0.02  # seconds a call with other slots to call waits for a slot mid-migration
PINNED = 60.0  # seconds a finish's claims stay live from its check to its acknowledgement
OUTBOX_WAIT = 0.1  # seconds the outbox's send waits for replicas; else asked again later


def unit_prefix(base: str, tag: str) -> str:
    """The prefix of a slot unit's keys: `base`, then the unit's hash tag."""
    return f"{base}:{{{tag}}}"


def by_queue(items: Iterable[Any], queue_of: Callable[[Any], str]) -> dict[str, list[Any]]:
    """`items` grouped by their queue, in the order each queue first came."""
    grouped: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        grouped[queue_of(item)].append(item)
    return grouped


class ClusterResults(Results):
    """Task results on the cluster, each task's under its own hash tag ({p}:{r:ID})."""

    def __init__(self, url: str, base: str, routes: redis_cluster.Routes) -> None:
        self.url = url
        self.base = base
        self.routes = routes

    def _keys(self, task_id: str) -> tuple[str, str, str]:
        prefix = unit_prefix(self.base, f"r:{task_id}")
        return prefix, f"{prefix}:r:{task_id}", f"{prefix}:s:{task_id}"

    def store_results(self, results: Sequence[ResultWrite]) -> None:
        for r in results:  # the finish script, results only, in the task's slot
            prefix, final, _ = self._keys(r.task_id)
            args: list[Any] = [prefix, "", 1, 0, 1]
            args += ["final" if r.final else "state", r.task_id, r.meta, _ms(r.ttl)]
            args += ["", "", 0, 0, "", "", "", ""]  # no chord join, no unlock message
            with _errors(self.url):
                self.routes.fcall("finish", [final], args)

    def get_result(self, task_id: str) -> bytes | None:
        _, final, state = self._keys(task_id)
        with _errors(self.url):
            found, current = self.routes.pipeline(final, [("LINDEX", final, 0), ("GET", state)])
        for reply in (found, current):
            if isinstance(reply, Exception):
                raise reply
        return found if found is not None else current

    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        with _errors(self.url):
            pipe = self.routes.cluster.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.lindex(self._keys(task_id)[1], 0)
            return pipe.execute()

    def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        _, key, _ = self._keys(task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = MAX_BLOCK if deadline is None else deadline - time.monotonic()
            block = min(max(left, 0.001), MAX_BLOCK)
            with _errors(self.url):
                value = self.routes.command(
                    key, "BLMOVE", key, key, "RIGHT", "LEFT", block, blocking=True
                )
            if value is not None or (deadline is not None and time.monotonic() >= deadline):
                return value

    def forget(self, task_id: str) -> None:
        _, final, state = self._keys(task_id)
        with _errors(self.url):
            self.routes.command(final, "DEL", final, state)

    def disconnect(self) -> None:
        """The connections are the backend's (closed with it)."""


class Waits:
    """Blocking waits on the wake-up lists of queues in different slots: a BLPOP per
    queue, each in a thread of its own; the first woken ends the others (a push on
    their interrupt lists). Threads are kept between waits, so are their connections."""

    def __init__(self, routes: redis_cluster.Routes) -> None:
        self.routes = routes
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.size = 0
        self.pid = 0

    def _pool(self, size: int) -> concurrent.futures.ThreadPoolExecutor:
        """A pool of at least `size` threads (a wait's BLPOPs all block at once)."""
        if self.pool is None or self.pid != os.getpid() or self.size < size:
            if self.pool is not None and self.pid == os.getpid():
                self.pool.shutdown(wait=False)
            self.size = max(size, 8)
            self.pool = concurrent.futures.ThreadPoolExecutor(self.size, "beatq-cluster-wait")
            self.pid = os.getpid()  # a forked child makes its own
        return self.pool

    def _blpop(self, wake: str, interrupt: str, block: float, ended: threading.Event) -> bool:
        """BLPOP on one queue's lists. Its slot mid-migration holds up no other queue's
        wait: it is asked again, after a pause growing from 5 to 200 ms, until the wait
        ends (`ended`, or `block`); once it answers again, True (what was sent meanwhile
        may wait in the queue, its wake-up taken by an earlier wait)."""
        end = time.monotonic() + block
        pause, met = 0.005, False
        while True:
            try:
                with self.routes.hurried(BRIEF):
                    found = self.routes.command(
                        wake, "BLPOP", wake, interrupt, 0.001 if met else block, blocking=True
                    )
            except redis_cluster.Migrating:
                met = True
                left = end - time.monotonic()
                if left <= 0 or ended.wait(min(pause, left)):
                    return False
                pause = min(pause * 2, 0.2)
                continue
            return met or found is not None

    def wait(self, lists: Sequence[tuple[str, str]], block: float) -> bool:
        """Block up to `block` seconds on each (wake-up, interrupt) pair; True when one
        was pushed. A queue whose master cannot be reached is left to the others."""
        end = time.monotonic() + block
        pool = self._pool(2 * len(lists))  # room for BLPOPs of a wait before, ending
        ended = threading.Event()
        pending = {pool.submit(self._blpop, wake, stop, block, ended): stop for wake, stop in lists}
        woken = False
        while pending and not woken:
            left = end - time.monotonic() + 1.0  # the BLPOPs end by themselves by then
            done, _ = concurrent.futures.wait(
                pending, timeout=max(left, 0.0), return_when=concurrent.futures.FIRST_COMPLETED
            )
            if not done:
                break
            for future in done:
                pending.pop(future)
                if future.exception() is None and future.result():
                    woken = True
        ended.set()  # ends the waits on slots mid-migration
        if pending:  # end the BLPOPs still blocked
            for stop in pending.values():
                try:
                    self.routes.pipeline(stop, [("LPUSH", stop, 1), ("PEXPIRE", stop, 60000)])
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    pass
            concurrent.futures.wait(pending, timeout=1.0)
        if not woken and time.monotonic() < end:
            time.sleep(min(end - time.monotonic(), DOWN_FOR))  # every master out of reach
        return woken

    def close(self) -> None:
        if self.pool is not None and self.pid == os.getpid():
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = None


class ClusterBackend(RedisBackend):
    """Every role on a Redis Cluster (see the module's docstring)."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.url = url
        shown = shown_url(url)
        self.sentinel = None
        self.sentinel_kwargs = None
        self.cluster_url = redis_cluster.parse(url, shown)
        check_url(self.cluster_url.node_url(*self.cluster_url.nodes[0]))
        base = options.pop("global_keyprefix", None) or "beatq"
        if "{" in base or "}" in base:
            raise ConfigurationError(
                f"broker {shown}: global_keyprefix {base!r} holds a brace; on a Redis Cluster "
                "beatq puts its own hash tags ({...}) in its keys: use a prefix without braces"
            )
        self.base = base
        self.keys = RedisKeys(unit_prefix(base, "home"))
        # a master that fails has a replica promoted: the beat waits for one by default
        self.replication = Replication.read(options, True, shown)
        connection = {
            "socket_timeout": options.pop("socket_timeout", MAX_BLOCK + 5.0),
            "socket_connect_timeout": options.pop("socket_connect_timeout", 5.0),
            "socket_keepalive": True,
            "health_check_interval": options.pop("health_check_interval", 30),
        }
        spin = float(options.pop("reply_spin", SPIN))
        with _errors(url):
            self.client = redis_cluster.cluster_client(self.cluster_url, **connection)

        def node_client(host: str, port: int) -> redis.Redis:
            retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), 1)
            node = self.cluster_url.node_url(host, port)
            return redis.Redis.from_url(node, retry=retry, **connection)

        self.routes = redis_cluster.Routes(self.client, node_client, spin)
        self.waits = Waits(self.routes)
        self.wait_token = new_token()
        self.waited: dict[str, RedisKeys] = {}  # the queues this process waits on
        self.units: dict[str, RedisKeys] = {}
        self.known: set[str] = set()  # queue names registered on {home} by this process
        self.down: dict[str, float] = {}  # queue -> until when claims leave it out
        self.later = LaterFinishes()  # finishes a shard out of reach could not take yet
        # queue -> why its runs wait in the outbox, as last said (said again if it changes:
        # an outage said once must not hide a different error behind it)
        self.outbox_waits: dict[str, str] = {}
        self.outbox_stuck: str | None = None  # why the outbox could not be read or emptied
        self.keep_results_in(ClusterResults(url, base, self.routes))

    # -- units -------------------------------------------------------------------------------
    def unit(self, queue: str) -> RedisKeys:
        """The keys of `queue`'s slot unit."""
        found = self.units.get(queue)
        if found is None:
            found = self.units[queue] = RedisKeys(unit_prefix(self.base, f"q:{queue}"))
        return found

    def _register(self, queues: Iterable[str]) -> None:
        """Note queue names on {home} (once per name and process), for what walks every
        queue: purge, dead letters, scheduled messages, status."""
        new = [q for q in dict.fromkeys(queues) if q not in self.known]
        if new:
            with _errors(self.url):
                self.routes.command(self.keys.prefix, "SADD", self._registry, *new)
            self.known.update(new)

    @property
    def _registry(self) -> str:
        return f"{self.keys.prefix}:queues"

    def topology(self) -> Topology:
        slots = {q: key_slot(self.unit(q).prefix.encode()) for q in self.queue_names()}
        with _errors(self.url):
            shards = redis_topology.cluster_shards(self.client, self.routes.node_client, slots)
        return Topology("cluster", shown_url(self.url), shards)

    def queue_names(self) -> list[str]:
        """Every queue a message was ever sent to or claimed from on this cluster."""
        with _errors(self.url):
            names = self.routes.command(self.keys.prefix, "SMEMBERS", self._registry)
        return sorted(n.decode() for n in names)

    def _run(
        self, name: str, keys: list[str], args: list[Any], events: Sequence[bytes] = ()
    ) -> Any:
        with _errors(self.url):
            reply = self.routes.fcall(name, keys, args)
        if events:
            self.add_events(events)
        return reply

    # -- queue -------------------------------------------------------------------------------
    def send(self, messages: Sequence[Outgoing], events: Sequence[bytes] = ()) -> None:
        """Atomic per queue, each queue in the order its first message came. With
        `min_replicas`, each queue's send waits for that many replicas of its master in
        its round trip; NotReplicated once every queue's is made, naming those short."""
        short: list[tuple[str, int]] = []  # (what, replicas that have it) of each short
        if messages:
            grouped = by_queue(messages, lambda m: m.queue)
            self._register(grouped)
            need = self.replication.sends
            for queue, batch in grouped.items():
                u = self.unit(queue)
                keys, args = [u.msgs, u.delayed], [u.prefix, *_send_args(batch)]
                if not need:
                    self._run("send", keys, args)
                    continue
                _, acked = self._waited("send", keys, args, need)
                if acked < need:
                    where = f"{len(batch)} to queue {queue!r} (master {self._master(u.msgs)})"
                    short.append((where, acked))
        if events:
            self.add_events(events)
        if short:
            what = f"message(s) sent ({', '.join(w for w, _ in short)})"
            acked = min(n for _, n in short)
            raise self._not_replicated(what, acked, self.replication.sends, "min_replicas")

    def send_once(self, messages: Sequence[Outgoing], marks: Sequence[str], need: int = 0) -> bool:
        """Send each message unless its mark (one per message) was seen within a day
        (see lua/send_once.lua); with `need`, whether that many replicas of each queue's
        master have them (and their marks) within OUTBOX_WAIT."""
        grouped = by_queue(zip(messages, marks), lambda pair: pair[0].queue)
        self._register(grouped)
        confirmed = True
        for queue, pairs in grouped.items():
            flat: list[Any] = []
            for message, mark in pairs:
                flat += [*_flatten([message]), mark]
            confirmed = self._send_once(queue, flat, need) and confirmed
        return confirmed

    def _send_once(self, queue: str, flat: list[Any], need: int = 0) -> bool:
        u = self.unit(queue)
        keys, args = [u.msgs, u.delayed], [u.prefix, _ms(TOKEN_TTL), *flat]
        if not need:
            self._run("send_once", keys, args)
            return True
        _, acked = self._waited("send_once", keys, args, need, wait=OUTBOX_WAIT)
        return acked >= need

    # -- replicas (replication.py; cluster_replicas.py) --------------------------------------
    def _waited(
        self,
        name: str,
        keys: list[str],
        args: list[Any],
        need: int,
        events: Sequence[bytes] = (),
        wait: float | None = None,
    ) -> tuple[Any, int]:
        """Call script `name` and WAIT for `need` replicas of its slot's master in the
        same round trip (`wait` seconds at most, min_replicas_timeout by default): its
        reply and how many replicas have it."""
        replies, acked = self._fcalls(name, [(keys, args)], need=need, wait=wait)
        if events:
            self.add_events(events)
        return replies[0], acked

    def _fcalls(
        self,
        name: str,
        calls: list[tuple[list[str], list[Any]]],
        before: Sequence[tuple[Any, ...]] = (),
        need: int = 0,
        wait: float | None = None,
    ) -> tuple[list[Any], int]:
        """The commands `before`, then script `name` once per (keys, args), then WAIT
        for `need` replicas, in one round trip to the master of the first call's slot
        (every key in it); the calls' replies and how many replicas have them."""
        key = calls[0][0][0]
        lib = self.routes.lib
        made = [("FCALL", f"{lib}_{name}", len(k), *k, *a) for k, a in calls]
        timeout = self.replication.timeout_ms if wait is None else _ms(wait)
        with _errors(self.url):
            replies, acked = cluster_replicas.waited(
                self.routes, key, [*before, *made], need, timeout
            )
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies[len(before) :], acked

    def _master(self, key: str) -> str:
        """Where the master of `key`'s slot is, as last read ("?" when unknown)."""
        try:
            return self.routes.owner(key)
        except Exception:  # the map could not be read: said in the message, not raised
            return "?"

    def _release_held(self) -> None:
        """On a cluster the runs held until a replica has them are the outbox's."""
        self._send_outbox_now()

    def _not_replicated(
        self, what: str, acked: int, need: int, option: str = "beat_min_replicas"
    ) -> NotReplicated:
        if option == "beat_min_replicas":  # the beat's writes are on {home}
            what += f" on {{home}}'s master {self._master(self.keys.prefix)}"
        return NotReplicated(
            f"Redis Cluster at {shown_url(self.url)}: {what} reached {acked} of the {need} "
            f"replica(s) asked for within {self.replication.timeout:g}s ({option}); the "
            "master has it and loses it only if it fails before a replica copies it. Check "
            "the replicas' links (INFO replication; a master with no replica never "
            f"confirms), or set {option}=0 / raise min_replicas_timeout"
        )

    def take(self, ask: Take, before: Sequence[tuple[Any, ...]] = ()) -> Claimed:
        self._register(ask.queues)
        token = new_token()
        if len(ask.queues) == 1:
            return self._take_one(ask, before, token)
        # a queue whose slot is mid-migration is passed over (BRIEF), the others claimed
        # at once; when no other answered, there is nothing else to do: wait for it
        found = self._take_each(ask, token, hurry=True)
        return found if found is not None else self._take_each(ask, token, hurry=False)

    def _take_each(self, ask: Take, token: str, hurry: bool) -> Claimed | None:
        """`ask`, queue by queue in its order (the urgency order); a queue out of reach
        left out (DOWN_FOR), one mid-migration passed over when `hurry`. None when only
        queues mid-migration could have answered."""
        claims: list[Claim] = []
        acked, next_eta = False, None
        aheads = [0.0, ask.ahead] if ask.ahead > 0 else [0.0]
        reached = False
        migrating: set[str] = set()
        for ahead in aheads:  # early messages only when none of the queues has any due
            for i, queue in enumerate(ask.queues):
                if len(claims) >= ask.count:
                    break
                if self.down.get(queue, 0.0) > time.monotonic() or queue in migrating:
                    continue
                last = i == len(ask.queues) - 1
                above = ask.above if last else None
                first = ask.ack_first and not claims
                one = Take([queue], ask.count - len(claims), ask.visibility, first, ahead, above)
                try:
                    if hurry:
                        with self.routes.hurried(BRIEF):
                            got = self._take_one(one, (), token)
                    else:
                        got = self._take_one(one, (), token)
                except BrokerError as exc:
                    if hurry and isinstance(exc.__cause__, redis_cluster.Migrating):
                        log.debug("queue %r passed over in this claim: %s", queue, exc)
                        migrating.add(queue)  # did not run: claimed from when it answers
                    else:
                        self._left_out(queue, exc)
                    continue
                reached = True
                if got.claims and not claims:
                    acked = got.acked
                claims += got.claims
                if got.next_eta is not None:
                    next_eta = got.next_eta if next_eta is None else min(next_eta, got.next_eta)
            if claims:
                break
        if not reached:
            if migrating:
                return None
            raise BrokerError(f"Redis Cluster at {shown_url(self.url)}: no queue's master answers")
        return Claimed(claims, next_eta, acked)

    def _left_out(self, queue: str, exc: BrokerError) -> None:
        if self.down.get(queue, 0.0) < time.monotonic() - 10 * DOWN_FOR:
            log.warning("queue %r left out of claims for now: %s", queue, exc)
        self.down[queue] = time.monotonic() + DOWN_FOR

    def _take_one(self, ask: Take, before: Sequence[tuple[Any, ...]], token: str) -> Claimed:
        """`ask` of its one queue, in one call on the queue's master."""
        queue = ask.queues[0]
        u = self.unit(queue)
        above = "" if ask.above is None else ask.above
        first = "1" if ask.ack_first else ""
        args = [u.prefix, ask.count, ask.visibility, token, ask.ahead, first, above, queue]
        with _errors(self.url):
            reply = self.routes.fcall("claim", [u.msgs, u.delayed, u.unacked], args, before=before)
        return _claimed(reply, token)

    def _interrupt(self, queue: str) -> str:
        u = self.unit(queue)
        self.waited[queue] = u
        return u.interrupt(self.wait_token)

    def wait_take(self, ask: Take, timeout: float) -> Claimed:
        if len(ask.queues) != 1:
            self.wait(ask.queues, timeout, ask.ahead)
            return self.take(ask)
        # One queue: the BLPOP and the claim in one round trip to its master, as on one Redis.
        queue = ask.queues[0]
        block = min(max(timeout, 0.01), MAX_BLOCK)
        wait = ("BLPOP", self.unit(queue).wake(queue), self._interrupt(queue), block)
        return self.take(ask, before=[wait])

    def wait(self, queues: Sequence[str], timeout: float, ahead: float = 0.0) -> bool:
        block = min(max(timeout, 0.01), MAX_BLOCK)
        pairs = [(self.unit(q).wake(q), self._interrupt(q)) for q in queues]
        if len(pairs) == 1:
            wake, stop = pairs[0]
            with _errors(self.url):
                found = self.routes.command(wake, "BLPOP", wake, stop, block, blocking=True)
            return found is not None
        return self.waits.wait(pairs, block)

    def interrupt_wait(self) -> bool:
        done = False
        for queue in list(self.waited):
            stop = self._interrupt(queue)
            try:
                client = self.routes.fresh_client(stop, 1.0)
                with client:
                    pipe = client.pipeline(transaction=False)
                    pipe.lpush(stop, 1).expire(stop, 60)
                    pipe.execute()
                done = True
            except (redis.RedisError, OSError, KeyError):  # in a signal handler: never raise
                continue
        return done

    def renew(self, claims: Sequence[Claim], visibility: float) -> None:
        for queue, batch in by_queue(claims, lambda c: c.queue).items():
            self._run("renew", [self.unit(queue).unacked], [visibility, *map(_member, batch)])

    def release(self, claims: Sequence[Claim]) -> None:
        for queue, batch in by_queue(claims, lambda c: c.queue).items():
            u = self.unit(queue)
            args: list[Any] = [u.prefix]
            for c in batch:
                mark = REDELIVERED if c.redelivered else ACK_AFTER
                args += [banded(c.queue, c.priority), c.id, mark + c.body, _member(c)]
            self._run("release", [u.msgs, u.unacked, u.delayed], args)

    def queue_length(self, queue: str) -> int:
        u = self.unit(queue)
        with _errors(self.url):
            bands = self.routes.command(u.bands(queue), "ZRANGE", u.bands(queue), 0, -1)
            commands = []
            for name in [queue, *(banded(queue, int(b)) for b in bands)]:
                commands += [("LLEN", u.due(name)), ("LLEN", u.queue(name))]
            counts = self.routes.pipeline(u.prefix, commands)
        return sum(int(n) for n in counts)

    def purge(self, queues: Sequence[str]) -> int:
        total = 0
        for queue in dict.fromkeys(queues):
            u = self.unit(queue)
            total += int(self._run("purge", [u.msgs], [u.prefix, queue]))
        return total

    def scheduled(self, limit: int = 100) -> list[tuple[float, Claim]]:
        out = []
        for queue in self.queue_names():
            u = self.unit(queue)
            with _errors(self.url):
                pairs = self.client.zrange(u.delayed, 0, limit - 1, withscores=True)
                stored = self.client.hmget(u.msgs, [i for i, _ in pairs]) if pairs else []
            for (id_, eta), value in zip(pairs, stored):
                if value is not None:
                    name, body = split_stored(value)
                    out.append((float(eta), Claim(id_.decode(), name, body)))
        out.sort(key=lambda item: item[0])
        return out[:limit]

    # -- finishing -------------------------------------------------------------------------
    def store_results(self, results: Sequence[ResultWrite]) -> None:
        self.results.store_results(results)

    def finish(
        self,
        ack: Sequence[Claim] = (),
        results: Sequence[ResultWrite] = (),
        send: Sequence[Outgoing] = (),
        join: ChordJoin | None = None,
        events: Sequence[bytes] = (),
        token: str | None = None,
    ) -> frozenset[str]:
        """As `Delivery.finish`; one that meets a shard out of reach is made again in the
        background (cluster_finishes.py): a worker's pool threads go on taking the work
        of the other shards' queues meanwhile. Not a finish that sends without a token
        (a client's publish of a group or chord with its results): made again it would
        send again what reached the shards that answered, so it is made now and its
        BrokerError goes to the caller (whose publish retry policy applies)."""
        parent = super().finish
        if send and not token:
            return parent(ack, results, send, join, events, token)
        return self.later.run(lambda: parent(ack, results, send, join, events, token))

    def settle(self, step: Finish) -> frozenset[str]:
        # Steps whose retry doubles nothing (see the module's docstring): the results;
        # the chord's count and its unlock; messages to queues other than the acknowledged
        # ones, each once per finish token; then, per queue, the acknowledgement with the
        # messages to that queue, in one call (a retry of a task, by its own id, goes
        # where the message it replaces is acknowledged).
        if step.results:
            self.results.store_results(step.results)
        if step.join is not None:
            self._join(step.join)
        acked = by_queue(step.ack, lambda c: c.queue)
        send, stale = step.send, NONE_STALE
        if step.ack and send:
            # A message sent by the id of a claim (a retry, a task put back) to another
            # queue goes before that claim's acknowledgement: asked first whether the
            # claim is stale, it is not sent in a stale one's stead (see Store.finish).
            # Messages of ids of their own (callbacks) go whatever the claims, as on one
            # Redis: no round trip is added for them.
            queue_of = {c.id: c.queue for c in step.ack}
            moved = {m.id for m in send if queue_of.get(m.id, m.queue) != m.queue}
            if moved:
                stale = self._stale_claims(
                    by_queue([c for c in step.ack if c.id in moved], lambda c: c.queue)
                )
                send = [m for m in send if m.id not in stale]
        there = by_queue(send, lambda m: m.queue)
        elsewhere = [m for m in send if m.queue not in acked]
        if elsewhere:
            if step.token:
                self.send_once(elsewhere, [f"{step.token}:{m.id}" for m in elsewhere])
            else:
                self.send(elsewhere)
        self._register(acked)
        for queue, batch in acked.items():
            u = self.unit(queue)
            args: list[Any] = [u.prefix, step.token or "", _ms(TOKEN_TTL), len(batch)]
            args += [*map(_member, batch), 0, "", "", 0, 0, "", "", "", ""]
            args += _flatten(there.get(queue, ()))
            stale |= stale_ids(self._run("finish", [u.msgs, u.unacked, u.delayed], args))
        if step.events:
            self.add_events(step.events)
        return stale

    def _stale_claims(self, acked: Mapping[str, Sequence[Claim]]) -> frozenset[str]:
        """The ids of the stale claims of `acked` (by queue), asked of each queue's slot;
        the live ones kept live PINNED seconds at least (lua/check_claims.lua)."""
        stale = NONE_STALE
        for queue, batch in acked.items():
            u = self.unit(queue)
            keys = [u.unacked, u.msgs, f"{u.prefix}:expired"]
            stale |= stale_ids(self._run("check_claims", keys, [PINNED, *map(_member, batch)]))
        return stale

    def _join(self, join: ChordJoin) -> None:
        """Count a chord member; send the chord's unlock message once it is complete (see
        lua/chord_join.lua)."""
        prefix = unit_prefix(self.base, f"c:{join.group}")
        members, unlock = f"{prefix}:chord:{join.group}", f"{prefix}:chord:{join.group}:unlock"
        args = [join.member, join.size, _ms(join.ttl), *_flatten([join.unlock])]
        found = self._run("chord_join", [members, unlock], args)
        if found:
            self._register([join.unlock.queue])
            self._send_once(join.unlock.queue, [*found, f"chord:{join.group}"])
            with _errors(self.url):
                self.routes.command(unlock, "HSET", unlock, "sent", "1")

    # -- results (kept per task id: ClusterResults) ------------------------------------------
    def get_result(self, task_id: str) -> bytes | None:
        return self.results.get_result(task_id)

    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        return self.results.get_results(task_ids)

    def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        return self.results.wait_result(task_id, timeout)

    async def await_result(self, task_id: str, timeout: float | None) -> bytes | None:
        return await self.results.await_result(task_id, timeout)

    def forget(self, task_id: str) -> None:
        self.results.forget(task_id)

    # -- dead letters ------------------------------------------------------------------------
    def dead_letter(self, claim: Claim, reason: str) -> None:
        u = self.unit(claim.queue)
        stored = banded(claim.queue, claim.priority).encode() + b"\n" + ACK_AFTER + claim.body
        self._run(
            "dead_letter",
            [u.unacked, u.msgs, u.dead, u.dead_reason, u.dead_index],
            [_member(claim), claim.id, stored, reason, repr(time.time())],
        )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        out = []
        for queue in self.queue_names():
            u = self.unit(queue)
            with _errors(self.url):
                pairs = self.client.zrange(u.dead_index, 0, limit - 1, withscores=True)
                if not pairs:
                    continue
                ids = [i for i, _ in pairs]
                stored, reasons = self.routes.pipeline(
                    u.dead, [("HMGET", u.dead, *ids), ("HMGET", u.dead_reason, *ids)]
                )
            for (id_, when), value, reason in zip(pairs, stored, reasons):
                if value is not None:
                    name, body = split_stored(value)
                    why = (reason or b"").decode()
                    out.append(DeadLetter(id_.decode(), name, why, float(when), body))
        out.sort(key=lambda d: d.time)
        return out[:limit]

    def requeue_dead(self, ids: Sequence[str] | None = None) -> list[str]:
        moved: list[str] = []
        for queue in self.queue_names():
            u = self.unit(queue)
            keys = [u.dead, u.dead_reason, u.dead_index, u.msgs, u.delayed]
            found = self._run("requeue_dead", keys, [u.prefix, "", *(ids or ())])
            moved += [m.decode() for m in found]
        forget_elsewhere(self.results, moved)
        return moved

    # -- the beat: fenced settle and outbox on {home}, then the outbox sent ------------------
    def _busy(self, busy_id: str | None, send: Sequence[Outgoing]) -> str:
        """The busy id argument of a dispatch: BUSY when the entry's last message is
        still stored in its queue's slot (out of the dispatch's reach), else the id (the
        script looks in the outbox)."""
        if not busy_id:
            return ""
        for queue in dict.fromkeys(m.queue for m in send):
            u = self.unit(queue)
            try:
                with _errors(self.url):
                    if self.routes.command(u.msgs, "HEXISTS", u.msgs, busy_id):
                        return "\x01"
            except BrokerError as exc:
                # whether the last run is unfinished cannot be told: it counts as unfinished
                # (overlap: skip runs no two at once), and the other runs of the batch go on
                log.warning(
                    "queue %r is out of reach (%s): its entry's run counts as overlapping "
                    "its last one, %s",
                    queue,
                    exc,
                    busy_id,
                )
                return "\x01"
        return busy_id

    def beat_dispatch_many(
        self, lease: str, holder: str, token: int, runs: Sequence[BeatDispatch]
    ) -> list[str]:
        k = self.keys
        keys = [*self._beat_keys(lease), k.msgs, k.delayed, k.beat_held]
        calls, marks = [], []
        for run in runs:
            args = self._dispatch_args(holder, token, run)
            args[6] = self._busy(run.busy_id, run.send)
            calls.append((keys, args))
            marks += self._marks(f"beat:{run.entry}|{run.slot!r}", run.send)
        # the marks first: a replica never has a run in the outbox without its mark
        need = self.replication.beat
        if need:
            replies, acked = self._fcalls("beat_dispatch", calls, marks, need)
        else:
            with _errors(self.url):
                replies = self.routes.fcall_many("beat_dispatch", calls, spin=False, before=marks)
        outcomes = [r.decode() if isinstance(r, bytes) else str(r) for r in replies]
        unsent = [m.id for run, o in zip(runs, outcomes) if o != "sent" for m in run.send]
        self._drop_marks(unsent)
        if need:
            # the outbox is sent once `need` replicas of {home}'s master have the runs
            # settled; else the leader steps down and the next one sends it (_confirm)
            self._confirm(lease, holder, token, outcomes, acked, need)
        elif "sent" in outcomes:
            self._send_outbox_now()
        return outcomes

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
        busy = self._busy(busy_id, send)
        args = self._run_args(holder, token, request_id, slot, last, send, busy, record)
        keys = [*self._schedule_keys(lease), self.keys.beat_held]
        marks = self._marks(f"request:{request_id}|{float(slot)!r}", send)
        need = self.replication.beat
        if need:
            (reply,), acked = self._fcalls("schedules", [(keys, args)], marks, need)
        else:
            with _errors(self.url):
                reply = self.routes.fcall("schedules", keys, args, before=marks)
        outcome = reply.decode() if isinstance(reply, bytes) else str(reply)
        if outcome != "sent":
            self._drop_marks([m.id for m in send])
        if need:
            self._confirm(lease, holder, token, [outcome], acked, need)
        elif outcome == "sent":
            self._send_outbox_now()
        return outcome

    def _marks(self, run: str, send: Sequence[Outgoing]) -> list[tuple[Any, ...]]:
        """The commands that note, beside the outbox, the mark each message of a run is
        sent under: its run's (entry, slot), so a run dispatched again (a settlement
        lost with a master that failed before its replica had it) is never sent again.
        Made before the dispatch, in its round trip: replicated in that order."""
        return [
            ("SET", self._mark_key(m.id), f"{run}|{i}", "PX", _ms(TOKEN_TTL))
            for i, m in enumerate(send)
        ]

    def _drop_marks(self, ids: Sequence[str]) -> None:
        """Forget the marks of messages a dispatch did not send (lost, done, paused, busy)."""
        if ids:
            keys = [self._mark_key(i) for i in ids]
            with _errors(self.url):
                self.routes.command(self.keys.prefix, "DEL", *keys)

    def _mark_key(self, message_id: str) -> str:
        return f"{self.keys.prefix}:beat:mark:{message_id}"

    def send_outbox(self) -> int:
        """Send the messages the beat's dispatches left in the outbox (each once, by its
        run's mark), then empty it of them; how many were sent. Those bound for a queue
        whose shard is out of reach, or whose slot is mid-migration, stay for the next
        time (the lease's renewal), and the others go: a shard in a failover, or a slot
        being migrated, holds up neither the other queues' runs nor the renewal."""
        k = self.keys
        with _errors(self.url):
            held = self.client.zrange(k.beat_held, 0, -1, withscores=True)
            if not held:
                return 0
            ids = [id_ for id_, _ in held]
            stored = self.client.hmget(k.msgs, ids)
            found = self.client.mget([self._mark_key(i.decode()) for i in ids])
        bound: dict[str, list[tuple[Outgoing, str]]] = defaultdict(list)
        done = []  # ids sent, or no longer stored
        for (id_, eta), value, mark in zip(held, stored, found):
            if value is None:
                done.append(id_)
                continue
            name, _, body = value.partition(b"\n")
            queue, priority = unbanded(name.decode())
            due = float(eta) or None
            # the stored body carries its delivery byte; _flatten adds it again
            ack = body[:1] == ACK_AT_CLAIM
            message = Outgoing(queue, id_.decode(), body[1:], due, ack, priority)
            bound[queue].append((message, mark.decode() if mark else f"beat:{id_.decode()}"))
        need = self.replication.beat
        for queue, pairs in bound.items():
            try:
                # a slot mid-migration holds up neither the other queues nor the lease
                with self.routes.hurried(BRIEF):
                    confirmed = self.send_once([m for m, _ in pairs], [k for _, k in pairs], need)
            except (BrokerError, redis.RedisError) as exc:  # out of reach, or refusing writes
                why = f"{type(exc).__name__}: {exc}"
                if isinstance(exc.__cause__, redis_cluster.Migrating):
                    why = "migrating"  # a reshard's usual step: said at info level
                    if self.outbox_waits.get(queue) != why:
                        self.outbox_waits[queue] = why
                        log.info("the beat's runs for queue %r wait in its outbox: %s", queue, exc)
                elif self.outbox_waits.get(queue) != why:  # said once while it lasts
                    self.outbox_waits[queue] = why
                    log.warning("the beat's runs for queue %r wait in its outbox: %s", queue, why)
                continue
            if not confirmed:  # sent: kept until a replica of the queue's master has them
                if self.outbox_waits.get(queue) != "replicas":
                    self.outbox_waits[queue] = "replicas"
                    log.warning(
                        "the beat's runs for queue %r are sent and wait in its outbox until "
                        "%d replica(s) of the queue's master (%s) have them (beat_min_replicas)",
                        queue,
                        need,
                        self._master(self.unit(queue).msgs),
                    )
                continue
            was = self.outbox_waits.pop(queue, None)
            if was is not None:
                level = logging.INFO if was == "migrating" else logging.WARNING
                log.log(level, "the beat's runs for queue %r left its outbox", queue)
            done += [m.id.encode() for m, _ in pairs]
        if done:
            marks = [self._mark_key(i.decode()) for i in done]
            commands: list[tuple[Any, ...]] = [
                ("MULTI",),
                ("ZREM", k.beat_held, *done),
                ("HDEL", k.msgs, *done),
                ("ZREM", k.delayed, *done),
                ("DEL", *marks),
                ("EXEC",),
            ]
            with _errors(self.url):
                replies = self.routes.pipeline(k.prefix, commands)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise BrokerError(f"Redis Cluster at {shown_url(self.url)}: {reply}")
        return len(done)

    def _send_outbox_now(self) -> None:
        """`send_outbox` after a step that stands whether the outbox goes or not (a lease
        taken or renewed, runs settled): what it cannot send now waits for the lease's
        next renewal, said once while it lasts. Raising here would make the beat take
        the step for failed: a lease taken would go unused until it expired."""
        try:
            self.send_outbox()
        except (BrokerError, redis.RedisError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            if self.outbox_stuck != why:  # said again only if the reason changes
                self.outbox_stuck = why
                log.warning("the beat's outbox waits for the lease's next renewal: %s", why)
            return
        if self.outbox_stuck is not None:
            self.outbox_stuck = None
            log.warning("the beat's outbox is read again")

    def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        # with beat_min_replicas, the lease is taken once that many replicas of {home}'s
        # master have it, then the outbox is sent (RedisBackend: _release_held)
        token = super().acquire_lease(name, holder, ttl)
        if token is not None and not self.replication.beat:
            self._send_outbox_now()  # what a leader before left unsent, before anything new
        return token

    def renew_lease(self, name: str, holder: str, token: int, ttl: float) -> bool:
        # with beat_min_replicas, the outbox is sent only when replicas confirmed the
        # renewal (a master cut off from its replicas may be an old one)
        renewed = super().renew_lease(name, holder, token, ttl)
        if renewed and not self.replication.beat:
            self._send_outbox_now()
        return renewed

    # -- events, on {home} -------------------------------------------------------------------
    def add_events(self, items: Sequence[bytes], maxlen: int | None = None) -> None:
        if items:
            with _errors(self.url):
                replies = self.routes.pipeline(self.keys.events, self._xadds(items, maxlen))
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply

    # -- lifecycle ---------------------------------------------------------------------------
    def prime(self) -> None:
        try:
            self.routes.at(self.keys.prefix).prime()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass

    def crowded(self) -> None:
        self.routes.quiet()

    def ping(self) -> None:
        with _errors(self.url):
            self.routes.command(self.keys.prefix, "PING")

    def disconnect(self) -> None:
        self.later.close()  # the finishes left for later: a few seconds to land
        self.waits.close()
        self.routes.disconnect()
