"""The leader lease: one holder at a time, renewed while it lives, with a fencing token."""

from __future__ import annotations

import logging
import time

from ..brokers import Backend

log = logging.getLogger("beatq.beat")


class LeaderLease:
    """Acquire, renew and release lease `name` for `holder`.

    The backend grants it in one atomic step, only when no live holder has it (none, or
    its expiry has passed), with an expiry `ttl` seconds ahead, and hands out a token that
    grows with every acquisition (`Backend.acquire_lease`). Each dispatch carries the
    token, and the backend refuses one whose token is not the current holder's. Renewal
    happens at a third of the ttl, so two renewals can fail before the lease is lost.
    """

    def __init__(self, backend: Backend, name: str, holder: str, ttl: float) -> None:
        self.backend = backend
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.token: int | None = None
        self.renew_at = 0.0  # monotonic time of the next renewal

    @property
    def held(self) -> bool:
        return self.token is not None

    def acquire(self) -> bool:
        token = self.backend.acquire_lease(self.name, self.holder, self.ttl)
        if token is None:
            return False
        self.token = token
        self.renew_at = time.monotonic() + self.ttl / 3
        return True

    def renew(self) -> bool:
        """Extend the lease; False (and no longer held) when it was lost."""
        if self.token is None:
            return False
        if not self.backend.renew_lease(self.name, self.holder, self.token, self.ttl):
            self.token = None
            return False
        self.renew_at = time.monotonic() + self.ttl / 3
        return True

    def release(self) -> None:
        if self.token is not None:
            token, self.token = self.token, None
            self.backend.release_lease(self.name, self.holder, token)

    def lost(self) -> None:
        """Forget the lease after the broker refused a dispatch."""
        self.token = None
