"""A claimed message on its way through a worker process, decoded once.

The worker wraps each Claim the broker hands out in a Delivery; the buffer, the pool and
the Executor pass that object along, so the message is decoded the first time one of them
needs it (to run it, to see whether the finish before it may acknowledge it, to show it in
`inspect`) and never again in that process. A prefork child is sent the Claim only (bytes
cross the pipe more cheaply than a decoded message) and wraps it in a Delivery of its own.
"""

from __future__ import annotations

from .. import messages, serializers
from ..brokers import Claim
from ..messages import Message

# What `Delivery.message` raises for a body that is not a message this worker may run.
DECODE_ERRORS = (messages.MessageError, serializers.ContentDisallowed, serializers.DecodeError)


class Delivery:
    """One claim and its message, decoded at most once.

    `acked`: the message was acknowledged already, in its claim or by the finish of the
    task that ran before it in the same thread or child, so it starts without an
    acknowledgement of its own. The flag travels with the claim rather than beside it.
    """

    __slots__ = ("claim", "acked", "signed", "_message", "_error", "_name")

    def __init__(self, claim: Claim, acked: bool = False) -> None:
        self.claim = claim
        self.acked = acked
        self.signed = False  # its signature was checked and holds (Executor._refusal)
        self._message: Message | None = None
        self._error: Exception | None = None
        self._name: str | None = None

    @property
    def name(self) -> str:
        """Its task's name, from the header alone (read once; the message decoded, if it
        was, says it already). Raises messages.MessageError for a body that is not a
        message."""
        if self._name is None:
            if self._message is not None:
                self._name = self._message.task
            else:
                self._name = messages.read_header(self.claim.body)["task"]
        return self._name

    @property
    def id(self) -> str:
        return self.claim.id

    def message(self, accept: list[str]) -> Message:
        """The decoded message; decoded on the first call, kept for the next ones.

        Raises one of DECODE_ERRORS (the same one at every call) for a corrupt body or
        a content type not in `accept`. Two threads asking at once may both decode it;
        either result is the same message."""
        if self._message is not None:
            return self._message
        if self._error is not None:
            raise self._error
        try:
            self._message = messages.decode(self.claim.body, accept)
        except DECODE_ERRORS as exc:
            self._error = exc
            raise
        return self._message

    def __repr__(self) -> str:
        return f"Delivery({self.claim.id!r}, acked={self.acked})"
