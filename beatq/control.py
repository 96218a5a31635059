"""`app.control`: tell workers what to do through the broker (revoke, for now).

Workers read the revoked ids with each heartbeat (`worker_heartbeat_interval`, 1 s by
default), so a revocation reaches every worker within about a second:

- a revoked task not yet started is not run: its state becomes REVOKED, its errbacks
  run and a chord it belongs to still completes (and fails), as when it expires;
- with `terminate=True` a running one is stopped where the pool allows: prefork kills
  the child process running it and starts another; threads and solo raise
  `TaskRevokedError` inside the task at its next Python instruction (a task blocked in
  a C call, such as a socket read without a timeout, stops only when that call returns).

Revocations are kept `worker_revoke_expires` seconds (3 hours by default), as Celery
keeps them; a task delayed by an eta further away than that runs when it comes due.
"""

from __future__ import annotations

from collections.abc import Sequence

from .context import App


class Control:
    """`app.control`.

    >>> app.control.revoke(result.id, terminate=True)
    """

    def __init__(self, app: App) -> None:
        self.app = app

    def revoke(
        self, task_id: str | Sequence[str], terminate: bool = False, signal: str | None = None
    ) -> None:
        """Revoke one task id or several: workers skip them, or stop them with `terminate`.

        `signal` is accepted for Celery's signature and not used: prefork always kills with
        SIGKILL, as its children ignore SIGTERM and SIGINT so that their tasks can finish
        when the worker stops warmly.
        """
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self.app.broker.revoke(ids, terminate, float(self.app.conf.worker_revoke_expires))

    def revoked(self) -> dict[str, bool]:
        """The revoked task ids still kept, and whether each is to be terminated."""
        return {id_: terminate for id_, _, terminate in self.app.broker.revoked()}
