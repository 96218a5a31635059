"""The options of a call: what `apply_async(**options)`, `send_task` and a signature's
options may hold, as Celery's calling guide lists them.

Each option is one of three kinds:

- honoured: beatq does what Celery documents for it;
- internal: set by beatq itself (canvas, retries, beat) on the messages it sends;
- refused: Celery's, but meaningless or not supported here; the error says why and
  what to do instead, so no option is ever accepted and then silently dropped.

Anything else is a typo or an invention: refused with a did-you-mean.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

#: What a caller may give, each honoured as Celery's calling guide describes it.
HONOURED = frozenset(
    {
        "countdown",
        "eta",
        "expires",
        "queue",
        "routing_key",  # as the queue's own name only (see check_routing)
        "exchange",  # the same
        "task_id",
        "link",
        "link_error",
        "serializer",
        "compression",
        "retry",
        "retry_policy",
        "priority",
        "ignore_result",
        "time_limit",
        "soft_time_limit",
        "headers",
        "add_to_parent",
        "result_cls",
        "acks_late",  # beatq's own: acknowledge this call's message after it ran
    }
)

#: What beatq itself puts in the messages it sends (canvas, retries, chords, beat).
INTERNAL = frozenset(
    {"parent_id", "root_id", "group_id", "group_index", "retries", "chord", "chain"}
    | {"chain_extra", "beat"}
)

#: Celery's options that beatq refuses, each with why and what to do instead.
REFUSED: dict[str, str] = {
    "shadow": "a task shown under another name in logs is not supported; log the detail "
    "from the task itself",
    "producer": "beatq sends through the app's broker connection; leave it out",
    "connection": "beatq sends through the app's broker connection; leave it out",
    "publisher": "beatq sends through the app's broker connection; leave it out",
    "reply_to": "replies go to the result store, not to an AMQP queue; leave it out",
    "delivery_mode": "every message is stored until it is acknowledged (persistent); leave it out",
    "mandatory": "an AMQP publishing flag with no meaning here; leave it out",
    "immediate": "an AMQP publishing flag with no meaning here; leave it out",
    "declare": "queues need no declaring: they exist once a message is sent to them",
    "stamped_headers": "canvas stamping is not supported",
    "stamps": "canvas stamping is not supported",
    "router": "route with queue= or the task_routes setting",
}

KNOWN = HONOURED | INTERNAL


def check_options(options: Mapping[str, Any], call: str = "apply_async()") -> None:
    """Raise TypeError, naming the option, for one that is refused or unknown (`call`
    says where it was given).

    Called on every send with options: a set comparison when they are all known."""
    if options.keys() <= KNOWN:
        return
    for name in options:
        if name in KNOWN:
            continue
        if name in REFUSED:
            raise TypeError(f"option {name!r} of {call} is not supported by beatq: {REFUSED[name]}")
        close = difflib.get_close_matches(name, sorted(HONOURED), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TypeError(
            f"unknown option {name!r} for {call}{hint}; the options are "
            f"{', '.join(sorted(HONOURED))}"
        )


def check_keywords(
    call: str, given: Mapping[str, Any], refused: Mapping[str, str] | None = None
) -> None:
    """Raise TypeError for the first keyword of `given`: the keywords a call shaped as
    Celery's took beyond those it honours. One of `refused` is named with why (a Celery
    keyword beatq does not honour), any other as unexpected. Never dropped silently."""
    for name in given:
        if refused and name in refused:
            raise TypeError(f"{call} does not take {name}= in beatq: {refused[name]}")
        raise TypeError(f"{call} got an unexpected keyword argument {name!r}")


#: The priorities a message may carry (Celery's 0 to 255 on RabbitMQ; 0 to 9 is usual).
MAX_PRIORITY = 255


def check_priority(value: Any, where: str = "apply_async(priority=...)") -> int:
    """`value` as a priority, or ValueError naming it: a whole number from 0 (the lowest,
    as a message without one) to 255, a higher one claimed first within its queue."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PRIORITY:
        raise ValueError(
            f"{where}: priority {value!r} is not a whole number from 0 to {MAX_PRIORITY} "
            "(higher runs first within a queue, as on RabbitMQ)"
        )
    return value


def check_routing(options: Mapping[str, Any], queue: str) -> None:
    """Refuse `routing_key` or `exchange` that would route elsewhere than `queue`.

    beatq routes by queue name alone. Celery on Redis binds each queue to an exchange and
    routing key of its own name, so those (and an empty exchange) say the same as the
    queue and are accepted; any other value would send the message somewhere Celery on
    AMQP would, and beatq cannot: refused, naming the fix."""
    key = options.get("routing_key")
    if key is not None and key != queue:
        raise TypeError(
            f"apply_async(routing_key={key!r}) would route away from queue {queue!r}: "
            f"beatq routes by queue name; give queue={key!r} instead"
        )
    exchange = options.get("exchange")
    if exchange and exchange != queue:
        name = exchange if isinstance(exchange, str) else getattr(exchange, "name", exchange)
        if name != queue:
            raise TypeError(
                f"apply_async(exchange={name!r}): beatq has no exchanges, it routes by "
                "queue name; give queue='...' (and leave exchange out)"
            )
