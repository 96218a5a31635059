"""Workflow: what a task's end asks of the canvas around it.

canvas.py applies a canvas (`freeze`, then `expand` into the messages to send now);
what comes later travels in the messages' options (`link`, `link_error`, `chain`,
`chord`). When a task ends, the worker asks this module what follows, and carries it
out in the one backend call that finishes the task:

- `callback_message`: a `link` callback (or an old-style errback) as a message;
- `chord_join`: the task counted toward its chord's header, with the unlock message
  that the member completing the header sends; `unlock_plan` is what that unlock
  (`beatq.chord_unlock`, builtins.py) then does: send the body with the members'
  results, or fail it;
- on failure: `run_errbacks` (new-style errbacks run here, old-style ones sent),
  `failure_writes` (the final states of tasks that will never run) and `tail_joins`
  (their counts toward the chord that waits for them, so that it still completes,
  and fails); `errback_plan` runs the errbacks of a chord body that never ran.

Each function is handed the app; nothing here imports from worker/.
"""

from __future__ import annotations

import logging
from typing import Any

from . import states
from .brokers import ChordJoin, Outgoing, ResultWrite
from .canvas import Plan, all_ids, expand, final_ids, flat_ids, maybe_signature
from .context import App
from .exceptions import ChordError
from .messages import Message
from .result import (
    decode_meta,
    dict_to_exception,
    encode_meta,
    group_key,
    is_exception_dict,
    make_meta,
    result_ttl,
)
from .task import Request

# Errbacks run inside the worker: their failures are the worker's to log.
log = logging.getLogger("beatq.worker")


def root_of(message: Message) -> str:
    """The id of the first task of the workflow `message` belongs to (its own if none)."""
    return message.root or message.id


def lineage(message: Message) -> dict[str, str]:
    """The parent and root ids of what `message`'s task starts when it ends (a chain's
    next task): that task, and the first task of its workflow."""
    return {"parent_id": message.id, "root_id": root_of(message)}


def chord_join(
    app: App, chord: dict[str, Any], member: str, root_id: str | None, ttl: float
) -> ChordJoin:
    """Count `member` toward `chord` (a join from a message's options), with the unlock."""
    body = chord["body"]
    queue = (body.get("options") or {}).get("queue")
    unlock, data = app.build_message(
        "beatq.chord_unlock",
        [chord["id"], body, chord.get("extra") or {}],
        queue=queue,
        parent_id=member,
        root_id=root_id,
    )
    outgoing = app.outgoing(unlock, data)
    return ChordJoin(chord["id"], member, chord["size"], outgoing, ttl)


def tail_joins(
    app: App, extra: dict[str, Any] | None, tail: Any, root_id: str | None, ttl: float
) -> list[ChordJoin]:
    """The joins of `tail`'s final tasks toward the chord in `extra`, when they will never
    run because what fed them failed: the chord still completes, and fails."""
    chord = (extra or {}).get("chord")
    if not chord:
        return []
    return [chord_join(app, chord, member, root_id, ttl) for member in final_ids(tail)]


def callback_message(
    app: App, sig: Any, args: tuple[Any, ...], parent_id: str, root_id: str
) -> Outgoing:
    """The message for a link or an old-style errback, with `args` before its own."""
    sig = maybe_signature(sig, app)
    call_args = list(sig.args) if sig.immutable else [*args, *sig.args]
    options = {**sig.options, "parent_id": parent_id, "root_id": root_id}
    message, body = app.build_message(sig.task, call_args, sig.kwargs, **options)
    return app.outgoing(message, body)


def run_errbacks(
    app: App,
    errbacks: Any,
    request: Request,
    exc: BaseException,
    tb: str | None,
    root_id: str,
) -> list[Outgoing]:
    """Run new-style errbacks (request, exc, traceback) here; return old-style ones to send.

    As in Celery: an errback task taking three arguments is called in this process with
    the failed request; one taking one argument is sent with the failed task's id.
    """
    send = []
    for raw in errbacks:
        sig = maybe_signature(raw, app)
        errback = app.tasks.get(sig.task)
        if errback is not None and errback._errback_arity >= 3:
            try:
                errback(request, exc, tb, *sig.args, **sig.kwargs)
            except Exception:
                log.exception(
                    "errback %s for task %s[%s] failed", sig.task, request.task, request.id
                )
        else:
            send.append(callback_message(app, sig, (request.id,), request.id, root_id))
    return send


def errback_plan(app: App, failed: Any, exc: BaseException, tb: str | None) -> list[Outgoing]:
    """The errbacks of a task that will not run because what fed it failed (a chord body)."""
    request = Request(
        id=failed.id or "",
        task=failed.task,
        args=list(failed.args),
        kwargs=dict(failed.kwargs),
        options=dict(failed.options),
    )
    return run_errbacks(app, failed.options.get("link_error") or (), request, exc, tb, request.id)


def failure_writes(
    app: App, ids: list[str], exc: BaseException, tb: str | None, status: str = states.FAILURE
) -> list[ResultWrite]:
    """Final states for tasks that will never run (a chain stopped, a chord failed)."""
    ttl = result_ttl(app)
    out = []
    for task_id in ids:
        meta = make_meta(task_id, status, exc, tb)
        data = encode_meta(meta, app.conf.result_serializer, app.conf.result_compression)
        out.append(ResultWrite(task_id, data, ttl, True))
    return out


def unlock_plan(
    app: App,
    group_id: str,
    body: dict[str, Any],
    extra: dict[str, Any] | None,
    origin: dict[str, str] | None = None,
) -> Plan:
    """A complete chord's next step: the members' results gathered in order and the body
    sent with them; or, if a member failed (or has no result), the body failed. `origin`:
    the body's parent and root ids (the member that completed the header, its root)."""
    store = app.result_store
    accept = app.conf.result_accept_content
    saved = store.get_result(group_key(group_id))
    if saved is None:
        raise ChordError(f"chord {group_id}: its saved group has expired")
    shape = decode_meta(saved, accept)["result"]
    ids = flat_ids(shape)
    found = {}
    for member, raw in zip(ids, store.get_results(ids)):
        meta = decode_meta(raw, accept) if raw is not None else None
        if meta is None or meta["status"] != states.SUCCESS:
            return _failed_body(app, body, extra, member, meta)
        found[member] = meta["result"]
    values = _shaped(shape, found)
    plan = Plan()
    expand(maybe_signature(body, app), app, plan, [values], {}, None, extra or None, origin)
    return plan


def _shaped(shape: Any, values: dict[str, Any]) -> Any:
    """The members' values laid out as their ids are (see canvas.result_shape)."""
    if isinstance(shape, list):
        return [_shaped(part, values) for part in shape]
    return values[shape]


def _failed_body(
    app: App,
    body: dict[str, Any],
    extra: dict[str, Any] | None,
    member: str,
    meta: dict[str, Any] | None,
) -> Plan:
    """The body's tasks failed with ChordError naming `member`, its errbacks run."""
    if meta is None:
        reason = "has no result (ignore_result, or it expired)"
    else:
        value = meta.get("result")
        cause = dict_to_exception(value) if is_exception_dict(value) else value
        reason = (
            f"raised {type(cause).__name__}: {cause}"
            if meta["status"] != states.REVOKED
            else "was revoked"
        )
    exc = ChordError(f"Dependency {member} {reason}")
    return body_failed(app, body, extra, exc, meta.get("traceback") if meta else None)


def body_failed(
    app: App,
    body: dict[str, Any],
    extra: dict[str, Any] | None,
    exc: BaseException,
    tb: str | None = None,
) -> Plan:
    """The body's tasks failed with `exc`, its errbacks run, an outer chord told."""
    plan = Plan(results=failure_writes(app, all_ids(body), exc, tb))
    sig = maybe_signature(body, app)
    first = sig.tasks[0] if sig.get("subtask_type") == "chain" else sig
    plan.send += errback_plan(app, first, exc, tb)
    # a chord in an outer chord's header: the outer one counts this body as failed
    plan.joins = tail_joins(app, extra, body, None, result_ttl(app))
    return plan
