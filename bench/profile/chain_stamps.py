"""beatq's command line with stamps along a beat run's way: `python chain_stamps.py -A APP
beat|worker ...`. Each stamp is (step, time.time()); all are written at exit to
$TRACE_DIR/<pid>.txt, one "step time" a line. Used by beat_chain.py.

Beat:   b.ahead0/1 (the run made ready), b.prime0/1, b.woke (the wait ended),
        b.pop0/1, b.rundue0/1, b.slots0/1, b.prep0/1, b.dispatch0/1, b.bdm0/1
        (the backend call), b.send (its pipeline is written)
Worker: w.claimed (wait_claim returned claims), w.submit0, w.exec, w.decode0/1,
        w.hold0/1 (held until its eta), w.ack0/1 (Executor._finish: the acknowledgement
        at the start, and the finish), w.request0/1, w.runin0 (the task's own code is next)
"""

import atexit
import os
import sys
import time

from beatq.beat import beat as beat_module
from beatq.beat import entries
from beatq.brokers import redis as redis_backend
from beatq.brokers import redis_calls
from beatq.task import Task
from beatq.worker import execute, pool

stamps: list[tuple[str, float]] = []


def save() -> None:
    with open(os.path.join(os.environ["TRACE_DIR"], f"{os.getpid()}.txt"), "w") as f:
        f.writelines(f"{step} {t!r}\n" for step, t in stamps)


def around(cls, name: str, step: str) -> None:
    inner = getattr(cls, name)

    def stamped(*args, **kwargs):
        stamps.append((step + "0", time.time()))
        out = inner(*args, **kwargs)
        stamps.append((step + "1", time.time()))
        return out

    setattr(cls, name, stamped)


def after_precise_sleep() -> None:
    inner = beat_module.Beat._sleep

    def sleep(self, seconds, precise):
        inner(self, seconds, precise)
        if precise:
            stamps.append(("b.woke", time.time()))

    beat_module.Beat._sleep = sleep


def at_dispatch_send() -> None:
    inner = redis_calls.Calls.pipeline

    def pipeline(self, commands, blocking=False):
        if commands and commands[0][0] == "FCALL" and "beat_dispatch" in commands[0][1]:
            stamps.append(("b.send", time.time()))
        return inner(self, commands, blocking)

    redis_calls.Calls.pipeline = pipeline


def at_claimed() -> None:
    inner = redis_backend.RedisBackend.wait_claim

    def wait_claim(self, *args, **kwargs):
        out = inner(self, *args, **kwargs)
        if out.claims:
            stamps.append(("w.claimed", time.time()))
        return out

    redis_backend.RedisBackend.wait_claim = wait_claim


def at_execute() -> None:
    inner = execute.Executor.execute

    def run(self, *args, **kwargs):
        stamps.append(("w.exec", time.time()))
        return inner(self, *args, **kwargs)

    execute.Executor.execute = run


atexit.register(save)
after_precise_sleep()
at_dispatch_send()
at_claimed()
at_execute()
for cls, name, step in [
    (beat_module.Beat, "_build_ahead", "b.ahead"),
    (redis_backend.RedisBackend, "prime", "b.prime"),
    (beat_module.Beat, "_pop_due", "b.pop"),
    (beat_module.Beat, "_run_due", "b.rundue"),
    (entries.Entry, "slots_between", "b.slots"),
    (beat_module.Beat, "_prepare", "b.prep"),
    (beat_module.Beat, "_dispatch", "b.dispatch"),
    (redis_backend.RedisBackend, "beat_dispatch_many", "b.bdm"),
    (pool.SoloPool, "submit", "w.submit"),
    (execute.Executor, "_decode", "w.decode"),
    (execute, "until_wall", "w.hold"),
    (execute.Executor, "_finish", "w.ack"),
    (execute.Executor, "_request", "w.request"),
    (Task, "run_in", "w.runin"),
]:
    around(cls, name, step)

from beatq.cli import main  # noqa: E402

sys.argv[0] = "beatq"
main()
