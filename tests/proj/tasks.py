"""Tasks for the end-to-end tests. Side effects go to the journal (see tests.proj.record)."""

import os
import time

from beatq.utils.log import get_task_logger

from . import app, journal, record


class CustomError(Exception):
    """A task's own exception class, re-raised by AsyncResult.get."""


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def echo(value):
    return value


@app.task
def fail(message="boom"):
    raise CustomError(message)


@app.task
def sleep(seconds, tag=""):
    """Sleep in short steps (so soft limits land) and journal each run by tag."""
    record("runs", f"{tag}:start:{os.getpid()}")
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.01)
    record("runs", f"{tag}:end:{os.getpid()}")
    return tag


@app.task
def held(tag, timeout=30.0):
    """Journal the run by tag like `sleep`, but hold until the test journals `tag` to "release"."""
    from . import journal

    record("runs", f"{tag}:start:{os.getpid()}")
    deadline = time.time() + timeout
    while tag not in journal("release") and time.time() < deadline:
        time.sleep(0.01)
    record("runs", f"{tag}:end:{os.getpid()}")
    return tag


@app.task
def waits_for(disable_sync_subtasks):
    """Wait inside a task for another's result (Celery refuses that by default)."""
    return echo.delay("x").get(timeout=10, disable_sync_subtasks=disable_sync_subtasks)


@app.task(acks_late=True)
def sleep_late(seconds, tag=""):
    record("runs", f"{tag}:start:{os.getpid()}")
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.01)
    record("runs", f"{tag}:end:{os.getpid()}")
    return tag


@app.task(bind=True, max_retries=3)
def flaky(self, fail_times):
    """Fails `fail_times` times with self.retry(countdown=0.1), then returns the retries."""
    record("flaky", str(self.request.retries))
    if self.request.retries < fail_times:
        raise self.retry(countdown=0.1)
    return self.request.retries


@app.task(autoretry_for=(CustomError,), retry_backoff=0.05, retry_jitter=False, max_retries=2)
def auto_flaky(tag):
    record("auto", tag)
    raise CustomError(tag)


@app.task
def errback_old(task_id):
    """Old-style errback: gets the failed task's id."""
    record("errback", f"old:{task_id}")


@app.task
def errback_new(request, exc, traceback):
    """New-style errback: gets (request, exc, traceback)."""
    record("errback", f"new:{request.id}:{type(exc).__name__}:{exc}")


@app.task(soft_time_limit=0.3, time_limit=2)
def soft_limited(seconds):
    from beatq.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "soft limit caught"
    return "finished"


@app.task(time_limit=0.5)
def hard_limited(seconds):
    time.sleep(seconds)
    return "finished"


@app.task(queue="priority.high")
def urgent(tag):
    record("order", tag)
    return tag


@app.task
def ordered(tag):
    record("order", tag)
    return tag


# -- delivery, pools and reconnection (tests/test_delivery.py, test_pools.py, test_reconnect.py)


@app.task
def dl_span(seconds, tag=""):
    """Sleep; journal "tag pid start end" (wall clock) to "spans" to measure overlap."""
    start = time.time()
    while time.time() < start + seconds:
        time.sleep(0.01)
    record("spans", f"{tag} {os.getpid()} {start!r} {time.time()!r}")
    return tag


@app.task
def dl_exit(code=1):
    """The process running it dies at once, as on a segfault or an OOM kill."""
    os._exit(code)


@app.task
def dl_exit_after(seconds, code=1):
    """The process running it dies after `seconds`."""
    time.sleep(seconds)
    os._exit(code)


@app.task(time_limit=0.5)
def dl_blocked_sleep(seconds):
    """Stuck where SIGALRM cannot reach it (as in C code): only the prefork parent can stop it."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    return "finished"


@app.task
def dl_nap(seconds, tag=""):
    """Sleep; journal start and end (to "naps"); the journal needs no broker link."""
    record("naps", f"{tag}:start")
    time.sleep(seconds)
    record("naps", f"{tag}:end")
    return tag


# -- results, messages and config tests (res_, msg_, cfg_) -------------------------------------
@app.task(track_started=True)
def res_tracked(tag, timeout=10.0):
    """Hold until the test journals `tag` to "release", so its STARTED state can be seen."""
    from . import journal

    deadline = time.time() + timeout
    while tag not in journal("release") and time.time() < deadline:
        time.sleep(0.01)
    return tag


@app.task(bind=True)
def res_retry_once(self):
    """Retries once (RETRY state for 0.5 s, with CustomError as its reason), then succeeds."""
    if self.request.retries == 0:
        raise self.retry(exc=CustomError("again"), countdown=0.5)
    return f"done after {self.request.retries}"


@app.task
def res_stamp(tag=""):
    """Return the POSIX time the task started at."""
    return time.time()


@app.task(bind=True)
def res_errback_bound(self, task_id):
    """Old-style errback with bind=True: gets the failed task's id after self."""
    record("errback", f"bound:{task_id}")


@app.task
def msg_typeof(value):
    """The type the worker received (a pickled tuple stays a tuple)."""
    return type(value).__name__


@app.task(bind=True)
def msg_where(self, *args):
    """The queue this message was delivered from."""
    return self.request.delivery_info["queue"]


@app.task(bind=True)
def msg_routed_glob(self, *args):
    return self.request.delivery_info["queue"]


@app.task(bind=True)
def msg_routed_exact(self, *args):
    return self.request.delivery_info["queue"]


@app.task
def cfg_note(value):
    record("note", repr(value))
    return value


def _dl_steps(seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.01)


@app.task(soft_time_limit=0.3, time_limit=2)
def dl_soft_steps(seconds):
    """soft_limited in short sleeps: a pool thread's limit lands between two of them."""
    from beatq.exceptions import SoftTimeLimitExceeded

    try:
        _dl_steps(seconds)
    except SoftTimeLimitExceeded:
        return "soft limit caught"
    return "finished"


@app.task(time_limit=0.5)
def dl_hard_steps(seconds):
    """hard_limited in short sleeps."""
    _dl_steps(seconds)
    return "finished"


@app.task
def dl_stuck(seconds):
    """dl_blocked_sleep without a time limit of its own (a caller gives one per call)."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    return "finished"


# -- canvas tests (tests/test_canvas.py) --------------------------------------------------------
@app.task
def cv_xsum(numbers):
    return sum(numbers)


@app.task
def cv_note(value, tag=""):
    """Journal `tag` to "cv" (to see which links of a canvas ran) and pass `value` on."""
    record("cv", tag)
    return value


@app.task
def cv_body(values, tag="body"):
    """A chord body that journals each run to "cv_body" and returns the sum."""
    record("cv_body", f"{tag}:{sum(values)}")
    return sum(values)


@app.task(bind=True)
def cv_retry_once(self, x):
    """Journal each try to "cv_retry"; the first retries (countdown 0.1 s), the second returns x."""
    record("cv_retry", str(self.request.retries))
    if self.request.retries == 0:
        raise self.retry(countdown=0.1)
    return x


@app.task
def cv_slow(x, seconds, tag=""):
    """Journal "tag:start" to "cv", sleep `seconds` in short steps, return x."""
    record("cv", f"{tag}:start")
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.01)
    return x


@app.task
def cv_stamp(*args):
    """The POSIX time this task started at (arguments ignored)."""
    return time.time()


@app.task(bind=True)
def cv_where(self, *args):
    """The queue this message came from."""
    return self.request.delivery_info["queue"]


@app.task
def cv_seen(value, tag="seen"):
    """A callback that journals "tag:value" to "cv_seen"."""
    record("cv_seen", f"{tag}:{value}")
    return value


# -- async tasks (at_) ---------------------------------------------------------------------------
def _at_sync_front(coroutine_function):
    """A plain-def decorator around an async function: declared sync, it returns a coroutine."""

    def front(*args, **kwargs):
        return coroutine_function(*args, **kwargs)

    front.__name__ = front.__qualname__ = coroutine_function.__name__
    return front


async def _at_work(tag):
    record("at_hidden", tag)  # never reached: nothing awaits the coroutine
    return tag


at_behind_sync = app.task(name="tests.proj.tasks.at_behind_sync")(_at_sync_front(_at_work))


@app.task(bind=True)
async def at_sleep(self, seconds, tag=""):
    """Await `seconds`; journal "tag pid loop start end" to "at_runs" (loop: the running
    loop's id); return the tag and this run's request id (self.request in a coroutine)."""
    import asyncio

    began = time.time()
    await asyncio.sleep(seconds)
    loop = id(asyncio.get_running_loop())
    record("at_runs", f"{tag} {os.getpid()} {loop} {began} {time.time()}")
    return [tag, self.request.id]


@app.task
async def at_cancels_inside():
    """Cancel a task it awaits and let the CancelledError out (as aiohttp or anyio may)."""
    import asyncio

    inner = asyncio.ensure_future(asyncio.sleep(10))
    inner.cancel()
    await inner


@app.task
async def at_noop():
    return None


@app.task
async def at_limited(seconds, tag):
    """Await `seconds` in one await; journal what stopped it to "at_limits"."""
    import asyncio

    from beatq.exceptions import SoftTimeLimitExceeded

    try:
        await asyncio.sleep(seconds)
    except SoftTimeLimitExceeded:
        record("at_limits", f"{tag}:soft")
        return "soft"
    except asyncio.CancelledError:
        record("at_limits", f"{tag}:cancelled")
        raise
    record("at_limits", f"{tag}:done")
    return "done"


@app.task(bind=True, max_retries=3, default_retry_delay=0)
async def at_flaky(self, tag, fails):
    """Fail `fails` times through self.retry, then return the number of tries."""
    import asyncio

    await asyncio.sleep(0)
    record("at_tries", tag)
    if self.request.retries < fails:
        raise self.retry(exc=ValueError(f"try {self.request.retries}"))
    return self.request.retries


@app.task(autoretry_for=(ConnectionError,), retry_kwargs={"max_retries": 2, "countdown": 0})
async def at_autoretry(tag):
    import asyncio

    await asyncio.sleep(0)
    record("at_auto", tag)
    if len([t for t in journal("at_auto") if t == tag]) < 3:
        raise ConnectionError("not yet")
    return "third time"


@app.task
def at_plain(tag):
    """A plain-def task, for the asyncio pool's thread pool: the thread it ran in."""
    import threading

    return [tag, threading.current_thread().name]


@app.task
async def at_client(x):
    """Sends a task from inside a coroutine and awaits its result (the async client API)."""
    result = await add.adelay(x, 1)
    return await result.aget(timeout=30)


@app.task(time_limit=1)
async def at_spins(seconds):
    """Spin in Python without awaiting: the loop's own limit never gets a turn."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        pass
    return "spun"


@app.task
async def at_blocks(seconds, tag):
    """Block the loop's thread in C: the limit of a coroutine that never awaits."""
    record("at_limits", f"{tag}:start")
    time.sleep(seconds)
    record("at_limits", f"{tag}:end")
    return tag


# -- task loggers (lg_) --------------------------------------------------------------------------
lg_logger = get_task_logger(__name__)


@app.task
def lg_log(text):
    """Log `text` at INFO through a task logger (records carry this task's name and id)."""
    lg_logger.info("said %s", text)
    return text


# -- shared-file tests (sq_) --------------------------------------------------------------------
@app.task(bind=True)
def sq_host(self, seconds=0.0):
    """Sleep `seconds`, then return the name of the worker that ran it."""
    time.sleep(seconds)
    return self.request.hostname


@app.task(ignore_result=True)
def quiet(x):
    """No result stored: its success is an event with no state change to ride on."""
    record("quiet", str(x))
    return x


@app.task(bind=True)
def beat_stamp(self):
    """Journal this beat run's slot, the time it started and its eta ("slot start eta")."""
    run = self.request.options.get("beat") or {}
    record("beat_starts", f"{run.get('slot')!r} {time.time()!r} {self.request.eta!r}")


# -- Celery's tasks page: the request, Reject, lost children (gt_, tests/test_guide_tasks.py) -
def _gt_fields(request):
    """What a test reads of a request, as JSON."""
    return {
        "id": request.id,
        "parent_id": request.parent_id,
        "root_id": request.root_id,
        "hostname": request.hostname,
        "retries": request.retries,
        "is_eager": request.is_eager,
        "eta": request.eta,
        "expires": request.expires,
        "correlation_id": request.correlation_id,
        "delivery_info": request.delivery_info,
        "headers": request.headers,
        "timelimit": list(request.timelimit),
        "time_limit": request.time_limit,
        "soft_time_limit": request.soft_time_limit,
        "called_directly": request.called_directly,
    }


@app.task(bind=True)
def gt_request(self, header=None):
    """The request's fields; with `header`, that custom header read as an attribute."""
    fields = _gt_fields(self.request)
    if header:
        fields["attribute"] = getattr(self.request, header)
        fields["get"] = self.request.get(header)
    return fields


@app.task(bind=True)
def gt_descend(self, depth):
    """This request's fields and the id of the task it sends, `depth` - 1 levels down."""
    child = gt_descend.delay(depth - 1).id if depth > 0 else None
    return {"fields": _gt_fields(self.request), "child": child}


@app.task(bind=True, acks_late=True)
def gt_requeue_once(self, tag):
    """Celery's example: rejected with requeue until it comes back redelivered."""
    redelivered = self.request.delivery_info["redelivered"]
    record("gt_requeue_once", {"tag": tag, "redelivered": redelivered})
    if not redelivered:
        from beatq.exceptions import Reject

        raise Reject("no reason", requeue=True)
    return "received two times"


@app.task(bind=True)
def gt_requeue_forever(self, tag):
    """Rejects with requeue every time: the loop worker_requeue_max bounds."""
    from beatq.exceptions import Reject

    record("gt_requeue_forever", tag)
    raise Reject(f"not now ({tag})", requeue=True)


@app.task(acks_late=True)
def gt_reject(reason):
    from beatq.exceptions import Reject

    raise Reject(reason, requeue=False)


@app.task(bind=True, acks_late=True, reject_on_worker_lost=True)
def gt_lost_requeued(self, tag, seconds=30.0):
    """Journals its pid, then sleeps unless it was delivered again (its child killed)."""
    redelivered = self.request.delivery_info["redelivered"]
    record("gt_lost", {"tag": tag, "pid": os.getpid(), "redelivered": redelivered})
    if not redelivered:
        time.sleep(seconds)
    return f"{tag} ran again"


@app.task(bind=True, acks_late=True, reject_on_worker_lost=True)
def gt_lost_always(self, tag):
    """Sleeps every time, so each run's child can be killed: the requeue bound's test."""
    redelivered = self.request.delivery_info["redelivered"]
    record("gt_lost", {"tag": tag, "pid": os.getpid(), "redelivered": redelivered})
    time.sleep(30)


@app.task(acks_late=True, reject_on_worker_lost=True, time_limit=0.5)
def gt_lost_limited(tag):
    """Killed for its hard time limit: it fails, reject_on_worker_lost or not."""
    record("gt_lost", {"tag": tag, "pid": os.getpid(), "redelivered": False})
    time.sleep(30)


@app.task(bind=True, acks_late=True)
def gt_lost_failed(self, tag, seconds=30.0):
    """As gt_lost_requeued without reject_on_worker_lost: a lost child fails it."""
    record("gt_lost", {"tag": tag, "pid": os.getpid(), "redelivered": False})
    time.sleep(seconds)
    return tag


class GtNeedsArgs(Exception):
    """An exception whose __init__ wants other arguments than the ones it keeps."""

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code


class GtPathError(Exception):
    """An exception that keeps no arguments and words its message in __str__."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def __str__(self):
        return f"cannot open {self.path}"


@app.task
def gt_raise(kind):
    if kind == "needs-args":
        raise GtNeedsArgs(404, "no such page")
    if kind == "custom-str":
        raise GtPathError("/etc/beatq.conf")
    if kind == "worker-only":  # its module exists in the worker only
        raise type("WorkerOnlyError", (Exception,), {"__module__": "gt_worker_only"})("only here")
    if kind == "holds-a-lock":
        import threading

        raise ValueError("cannot pickle this", threading.Lock())
    raise LookupError(kind)


# Celery's guides, each its tasks in a module of its own (tests/test_guide_*.py)
from . import calling_guide, canvas_guide  # noqa: E402, F401


@app.task(bind=True)
def beat_run(self):
    """Journal the beat run this is (its entry and slot) with its task id (to "beat_runs")."""
    run = self.request.options.get("beat") or {}
    record("beat_runs", {"entry": run.get("entry"), "slot": run.get("slot"), "id": self.request.id})


@app.task
def sent(tag):
    """Journal `tag` (to "sent"): a client's send that ran."""
    record("sent", tag)


@app.task
def cl_stamp(tag):
    """Journal [tag, the POSIX time it ran at] (to "cl"): runs through a failover."""
    record("cl", [tag, time.time()])
