"""How many replicas a write on Redis must reach before it counts (transport options).

Redis replicates asynchronously: a write the master acknowledged and lost in a crash
before any replica copied it is gone after a failover. `WAIT n ms` after a write returns
how many replicas have it. beatq uses it in two places:

- the beat, behind Sentinel and on a Redis Cluster (or whenever `beat_min_replicas` >
  0): its lease is taken, and its dispatches count, only once `beat_min_replicas`
  replicas have them (on a cluster: of {home}'s master). A dispatched message is held
  unseen by workers until then (lua/lib.lua, hold_one; on a cluster, in the outbox). So
  a fencing token never goes backwards on a promoted replica, and a run's message is
  never run from a master whose settlement of that run a new master might lack.
- sends, when `min_replicas` > 0: `send` returns once that many replicas have the
  message (on a cluster: of each queue's master), or raises NotReplicated.

Options (broker_transport_options):
    min_replicas          replicas a send waits for (0, the default: none)
    beat_min_replicas     replicas the beat's lease and dispatches wait for (default: 1
                          behind Sentinel and on a Redis Cluster, else min_replicas)
    min_replicas_timeout  seconds a WAIT waits for them (default 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigurationError

TIMEOUT = 1.0  # seconds a WAIT waits by default
MAX_TIMEOUT = 60.0  # a longer WAIT holds a sender (and the beat) past any use


@dataclass(frozen=True)
class Replication:
    sends: int = 0  # min_replicas
    beat: int = 0  # beat_min_replicas
    timeout: float = TIMEOUT  # min_replicas_timeout, seconds

    @property
    def timeout_ms(self) -> int:
        return max(1, int(self.timeout * 1000))

    @classmethod
    def read(cls, options: dict[str, Any], fails_over: bool, shown: str) -> Replication:
        """Take the options out of `options` (transport options of broker `shown`, which
        `fails_over` to a replica by itself: Sentinel, a Redis Cluster); ConfigurationError
        naming the option for a value that makes no sense."""
        sends = _count(options.pop("min_replicas", 0), "min_replicas", shown)
        beat_default = max(sends, 1) if fails_over else sends
        beat = _count(options.pop("beat_min_replicas", beat_default), "beat_min_replicas", shown)
        timeout = options.pop("min_replicas_timeout", TIMEOUT)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or not 0 < timeout <= MAX_TIMEOUT
        ):
            raise ConfigurationError(
                f"broker {shown}: transport option min_replicas_timeout={timeout!r} must be "
                f"a number of seconds above 0 and at most {MAX_TIMEOUT:g} (how long a write "
                "waits for its replicas)"
            )
        return cls(sends, beat, float(timeout))


def _count(value: Any, name: str, shown: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ConfigurationError(
            f"broker {shown}: transport option {name}={value!r} must be a whole number of "
            "replicas from 0 (do not wait for any) to 100"
        )
    return value
