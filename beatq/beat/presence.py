"""A beat's heartbeat: every beat, leader or standby, says every few seconds that it is
alive, which backend URL it uses and whether it leads (`Workers.beat_heartbeat`), for
`beatq status` and the dashboard. A beat that stops cleanly is forgotten at once; one
that dies, `3 * INTERVAL` seconds later.

The heartbeat has a thread of its own, so the beat's loop, which sleeps exactly until
the next run, never waits for it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..brokers import Backend
from ..exceptions import BrokerError

log = logging.getLogger("beatq.beat")

INTERVAL = 2.0  # seconds between a beat's heartbeats


class Presence:
    """Publish `describe()` under `holder` every `interval` seconds until `stop`, and at
    once after `changed` (the beat took the lead or lost it)."""

    def __init__(
        self,
        broker: Callable[[], Backend],
        holder: str,
        describe: Callable[[], dict[str, Any]],
        interval: float = INTERVAL,
    ) -> None:
        self.broker = broker
        self.holder = holder
        self.describe = describe
        self.interval = interval
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.failing = False

    def start(self) -> None:
        self.stopping.clear()
        self.thread = threading.Thread(target=self._loop, name="beatq-beat-heartbeat", daemon=True)
        self.thread.start()

    def changed(self) -> None:
        """Publish now, not at the next interval (without waiting for it)."""
        self.wake.set()

    def stop(self) -> None:
        """Stop beating and unregister (the next `beatq status` no longer lists it)."""
        self.stopping.set()
        self.wake.set()
        if self.thread is not None:
            # a heartbeat stuck on an unreachable broker holds the stop up a moment at most
            self.thread.join(self.interval)
            self.thread = None
        try:
            self.broker().beat_unregister(self.holder)
        except BrokerError as exc:
            log.info("beat %s: could not unregister (%s); it expires by itself", self.holder, exc)

    def beat(self) -> None:
        info = json.dumps(self.describe()).encode()
        self.broker().beat_heartbeat(self.holder, info, self.interval * 3)

    def _loop(self) -> None:
        while True:
            self.wake.clear()  # before reading the state: a change after it beats again
            try:
                self.beat()
                self.failing = False
            except BrokerError as exc:
                if not self.failing:  # the beat's loop logs the broker's state; once here
                    log.info("beat %s: heartbeat failed (%s); retrying", self.holder, exc)
                self.failing = True
            except Exception:  # a bug here must not end the heartbeat silently
                log.exception("beat %s: heartbeat failed", self.holder)
            self.wake.wait(self.interval)
            if self.stopping.is_set():
                return
