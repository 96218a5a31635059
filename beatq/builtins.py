"""Tasks every app has: `beatq.map`, `beatq.starmap` and `beatq.chord_unlock`."""

from __future__ import annotations

from typing import Any

from . import states
from .canvas import Followup, Plan, all_ids, expand, maybe_signature
from .context import App
from .exceptions import ChordError
from .result import decode_meta, dict_to_exception, group_key, is_exception_dict, result_ttl
from .workflow import errback_plan, failure_writes, tail_joins


def register_builtins(app: App) -> None:
    @app.task(name="beatq.map")
    def map_(task: dict[str, Any], it: list[Any]) -> list[Any]:
        """`xsum.map([range(10), range(100)])`: the task over each item, in one message."""
        sig = maybe_signature(task, app)
        return [sig(item) for item in it]

    @app.task(name="beatq.starmap")
    def starmap(task: dict[str, Any], it: list[Any]) -> list[Any]:
        """`add.starmap(zip(a, b))`: the task over each item's arguments, in one message."""
        sig = maybe_signature(task, app)
        return [sig(*item) for item in it]

    @app.task(name="beatq.chord_unlock", acks_late=True, ignore_result=True)
    def chord_unlock(group_id: str, body: dict[str, Any], extra: dict[str, Any]) -> Followup:
        """Sent once, by the member that completes the header: gather the members' results
        in order and send the body with them, or fail the body if a member failed."""
        store = app.result_store
        accept = app.conf.result_accept_content
        saved = store.get_result(group_key(group_id))
        if saved is None:
            raise ChordError(f"chord {group_id}: its saved group has expired")
        ids = decode_meta(saved, accept)["result"]
        values = []
        for member, raw in zip(ids, store.get_results(ids)):
            meta = decode_meta(raw, accept) if raw is not None else None
            if meta is None or meta["status"] != states.SUCCESS:
                return _fail_body(app, body, extra, member, meta)
            values.append(meta["result"])
        plan = Plan()
        expand(maybe_signature(body, app), app, plan, [values], {}, None, extra or None)
        return Followup(None, plan)


def _fail_body(
    app: App,
    body: dict[str, Any],
    extra: dict[str, Any] | None,
    member: str,
    meta: dict[str, Any] | None,
) -> Followup:
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
    tb = meta.get("traceback") if meta else None
    plan = Plan(results=failure_writes(app, all_ids(body), exc, tb))
    sig = maybe_signature(body, app)
    first = sig.tasks[0] if sig.get("subtask_type") == "chain" else sig
    plan.send += errback_plan(app, first, exc, tb)
    # a chord in an outer chord's header: the outer one counts this body as failed
    plan.joins = tail_joins(app, extra, body, None, result_ttl(app))
    return Followup(None, plan)
