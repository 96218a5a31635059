"""Tasks every app has: `beatq.map`, `beatq.starmap`, `beatq.accumulate` and
`beatq.chord_unlock`."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from .canvas import Followup, maybe_signature
from .context import App
from .exceptions import BrokerError, ChordError
from .workflow import body_failed, unlock_plan

log = logging.getLogger("beatq.worker")


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

    @app.task(name="beatq.accumulate")
    def accumulate(*args: Any, index: int | None = None) -> Any:
        """What `Task.replace` puts after a group, under the replaced task's id: the
        group's list (its argument `index`), or all its arguments."""
        return args[index] if index is not None else list(args)

    @app.task(name="beatq.chord_unlock", acks_late=True, ignore_result=True, bind=True)
    def chord_unlock(
        self: Any, group_id: str, body: dict[str, Any], extra: dict[str, Any]
    ) -> Followup:
        """Sent once, by the member that completes the header: the body sent with the
        members' results, or failed if a member failed (see `workflow.unlock_plan`),
        in the step that acknowledges this task. The body's parent is that member."""
        request = self.request
        origin = {"parent_id": request.parent_id, "root_id": request.root_id or request.parent_id}
        try:
            plan = unlock_plan(app, group_id, body, extra, origin)
        except BrokerError:
            raise  # not the chord's fault: the unlock runs again (acks_late)
        except Exception as exc:
            # Never leave the body unfinished (its waiters would wait out their timeout):
            # it fails with what stopped the unlock, and its errbacks run.
            log.error("chord %s: its body could not be sent: %r", group_id, exc, exc_info=True)
            error = ChordError(f"chord {group_id}: its body could not be sent: {exc}")
            plan = body_failed(app, body, extra, error, traceback.format_exc())
        return Followup(None, plan)
