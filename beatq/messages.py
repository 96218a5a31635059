"""The task message: the only thing that crosses a broker.

Wire format (version 1). A message body is two parts joined by one newline byte::

    <header: compact JSON object, one line, always JSON>\\n<payload: bytes>

The header is readable without trusting the payload, so a worker can dead-letter a
message of a content type it does not accept, and `inspect` can show any message:

    v         1                                protocol version
    id        "5f0c…"                          task id (also the result key)
    task      "proj.tasks.add"                 registered task name
    ct        "application/json"               content type of the payload
    ce        null | "zlib" | "gzip" | ...     compression of the payload
    eta       null | 1732465801.5              POSIX seconds (UTC) before which it must not run
    expires   null | 1732465861.5              POSIX seconds (UTC) after which it is not run
    retries   0                                how many times it has been retried
    parent    null | "…"                       id of the task that sent it
    root      null | "…"                       id of the first task of the workflow
    group     null | "…"                       id of the group it belongs to
    queue     "celery"                         queue it was routed to
    priority  null | 0..255                    within its queue, higher first (Outgoing.priority)
    sent      1732465798.2                     POSIX seconds when it was sent
    requeued  absent | 1..                     times a worker put it back unfinished
                                               (Reject(requeue=True), reject_on_worker_lost)
    sig       absent | "<64 hex digits>"       HMAC-SHA256 with security_key, first member
                                               when present (see signing.py)

The payload, serialized with the content type and compressed with the encoding, is
`[args, kwargs, options]` where options is a dict holding `link` and `link_error`
(lists of signature dicts, see canvas.py) and any other per-call execution options
(`time_limit`, `soft_time_limit`, `acks_late`, `ignore_result`, `chord`, ...), and the
call's custom `headers` (a dict, only when given: `apply_async(headers={...})`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import serializers

if TYPE_CHECKING:
    from .signing import Signer

VERSION = 1

_HEADER_ENCODER = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps makes one a call
_ascii_string = json.encoder.encode_basestring_ascii
# json.loads of a header that starts '{"' (UTF-8, as json.loads detects it): the same
# value or error, three Python frames less
_loads_header = serializers.one_shot_decoder(json.JSONDecoder())

# The header of a message, bar its id and send time, encoded once per set of values (task,
# queue, eta, ...) as the two runs of members around "sent" (see Message._header_parts): a
# task sent again and again finds its own here. Cleared when full, so per-call values (a
# parent id, an eta) cannot grow it.
_FIXED_HEADERS: dict[tuple[Any, ...], tuple[str, str]] = {}
_FIXED_HEADERS_MAX = 1024


def new_id() -> str:
    """A random task id, as str(uuid.uuid4()) makes one (version 4, RFC 4122 variant),
    taken from ids made ahead a few dozen at a time (new_ids): one system call each time
    the pool runs dry, not one an id."""
    try:
        return _POOL.pop()
    except IndexError:
        _POOL.extend(new_ids(_POOL_SIZE))
        return _POOL.pop()


# Ids made ahead for new_id. list.pop is one step under the interpreter's lock, so no two
# threads take the same; a forked child empties its copy (as `random` reseeds), or it would
# hand out the ids its parent hands out next.
_POOL: list[str] = []
_POOL_SIZE = 64
os.register_at_fork(after_in_child=_POOL.clear)


def new_ids(n: int) -> list[str]:
    """`n` ids as new_id makes them, from one read of the system's random source, laid out
    with a few strided copies for them all (no Python step an id)."""
    hexed = os.urandom(16 * n).hex().encode()
    out = bytearray(37 * n)  # each id's 36 characters and a space
    for digit, column in enumerate(_ID_COLUMNS):
        out[column::37] = hexed[digit::32]
    dashes = b"-" * n
    for column in (8, 13, 18, 23):
        out[column::37] = dashes
    out[36::37] = b" " * n
    out[14::37] = b"4" * n  # version 4, then the RFC 4122 variant (as new_id's bits)
    out[19::37] = hexed[16::32].translate(_VARIANT)
    return out.decode().split()


# Where an id's 32 hex digits go among its 36 characters (8-4-4-4-12, dashes between), and
# the variant's digit for each random one: its two high bits 10 (new_id's b[8] & 0x3F | 0x80).
_ID_COLUMNS = [*range(8), *range(9, 13), *range(14, 18), *range(19, 23), *range(24, 36)]
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _scalars(args: Any, kwargs: Any) -> bool:
    """Whether `args` (a list or tuple) and `kwargs` (a mapping) hold only strings, numbers,
    booleans and None: what every serializer writes the same way each time."""
    return (
        type(args) in (list, tuple)
        and all(type(value) in _SCALARS for value in args)
        and (not kwargs or all(type(value) in _SCALARS for value in kwargs.values()))
    )


class MessageError(ValueError):
    """The body is not a beatq message (corrupt header or wrong version)."""


@dataclass
class Message:
    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    queue: str = "celery"
    eta: float | None = None
    expires: float | None = None
    retries: int = 0
    parent: str | None = None
    root: str | None = None
    group: str | None = None
    priority: int | None = None
    sent: float = 0.0
    content_type: str = "application/json"
    content_encoding: str | None = None
    requeued: int = 0

    def header(self) -> dict[str, Any]:
        header: dict[str, Any] = {
            "id": self.id,
            "task": self.task,
            "eta": self.eta,
            "expires": self.expires,
            "retries": self.retries,
            "parent": self.parent,
            "root": self.root,
            "group": self.group,
            "queue": self.queue,
            "priority": self.priority,
            "sent": self.sent,
            "v": VERSION,
            "ct": self.content_type,
            "ce": self.content_encoding,
        }
        if self.requeued:  # absent, not 0, on every message never put back
            header["requeued"] = self.requeued
        return header

    def again(self, args: list[Any], kwargs: dict[str, Any], id: str | None = None) -> Message:
        """The same call options with a new id (`id`, else a fresh one) and these
        arguments (a batch of calls)."""
        return Message(
            id or new_id(),
            self.task,
            args,
            kwargs,
            self.options,
            self.queue,
            self.eta,
            self.expires,
            self.retries,
            self.parent,
            self.root,
            self.group,
            self.priority,
        )

    def encode(
        self,
        serializer: str = "json",
        compression: str | None = None,
        signer: Signer | None = None,
    ) -> bytes:
        """Serialize once: the body that goes to the broker, signed by `signer` if given
        (the one place a message is signed: see signing.py)."""
        if not self.sent:
            self.sent = time.time()
        ct, ce, payload = serializers.encode(
            [self.args, self.kwargs, self.options], serializer, compression
        )
        self.content_type, self.content_encoding = ct, ce
        body = self._header_json().encode() + b"\n" + payload
        return body if signer is None else signer.sign(body)

    def copies(
        self,
        calls: Sequence[tuple[Iterable[Any] | None, Mapping[str, Any] | None]],
        signer: Signer | None = None,
    ) -> list[tuple[str, bytes]]:
        """Id and body of a copy of this message (encoded already) for each (args, kwargs)
        of `calls`: a fresh id, these arguments, all else this message's, its send time too
        (the copies go out with it, in one step).

        Each body is byte for byte what `again(args, kwargs, id).encode(...)` with this
        message's send time, content type and encoding makes; what the copies share (the
        header bar the id, the payload's options) is encoded once."""
        before, after = self._header_parts()
        # a fresh id is hex digits and dashes: JSON writes it as it is, quoted
        rest = f'"{before}"sent":{self._sent_text()}{after}}}\n'
        payload = serializers.payload_encoder(
            self.options, self.content_type, self.content_encoding
        )
        sign = None if signer is None else signer.sign
        out = []
        last: Any = None  # the arguments `data` was encoded from
        last_kwargs: Any = None
        same: bool | None = None  # whether they encode alike every time (None: not known)
        data = b""
        for id_, (args, kwargs) in zip(new_ids(len(calls)), calls, strict=True):
            # calls given as one object ([(x,)] * n) encode once, when what they hold
            # cannot differ from one encode to the next
            if args is not last or kwargs is not last_kwargs:
                last, last_kwargs, same = args, kwargs, None
                data = payload(list(args or ()), dict(kwargs or {}))
            elif same is None:
                same = _scalars(args, kwargs)
            if same is False:
                data = payload(list(args or ()), dict(kwargs or {}))
            body = f'{{"id":"{id_}{rest}'.encode() + data
            out.append((id_, body if sign is None else sign(body)))
        return out

    def _sent_text(self) -> str:
        """The send time as JSON writes it (repr, for the float it always is)."""
        sent = self.sent
        return repr(sent) if type(sent) is float else _HEADER_ENCODER.encode(sent)

    def _header_json(self) -> str:
        before, after = self._header_parts()
        id_ = self.id
        # what _HEADER_ENCODER.encode writes for a str (ensure_ascii), without its frame
        id_text = _ascii_string(id_) if type(id_) is str else _HEADER_ENCODER.encode(id_)
        sent = self.sent
        sent_text = repr(sent) if type(sent) is float else _HEADER_ENCODER.encode(sent)
        return f'{{"id":{id_text}{before}"sent":{sent_text}{after}}}'

    def _header_parts(self) -> tuple[str, str]:
        """The header's members but its id and send time, as the two runs of text that go
        between the id and "sent", and between the send time and the closing brace.

        Two layouts, both kept as they always were: a message without an eta, an expiry
        or a requeue count puts "sent" right after "id"; any other keeps header()'s order
        (the send time after the priority)."""
        key = (
            self.task,
            self.eta,
            type(self.eta),  # 1 == 1.0, but JSON writes them apart
            self.expires,
            type(self.expires),
            self.requeued,
            self.retries,
            self.parent,
            self.root,
            self.group,
            self.queue,
            self.priority,
            self.content_type,
            self.content_encoding,
        )
        parts = _FIXED_HEADERS.get(key)
        if parts is None:
            header = self.header()
            names = list(header)
            at = names.index("sent")
            if self.eta is None and self.expires is None and not self.requeued:
                rest = self._members(header, names[1:at] + names[at + 1 :])
                parts = (",", "," + rest)
            else:
                mid = self._members(header, names[1:at])
                parts = ("," + mid + ",", "," + self._members(header, names[at + 1 :]))
            if len(_FIXED_HEADERS) >= _FIXED_HEADERS_MAX:
                _FIXED_HEADERS.clear()
            _FIXED_HEADERS[key] = parts
        return parts

    @staticmethod
    def _members(header: dict[str, Any], names: list[str]) -> str:
        """The JSON members of `header` named, in that order, without braces."""
        return _HEADER_ENCODER.encode({name: header[name] for name in names})[1:-1]


def requeued_body(body: bytes, count: int, signer: Signer | None = None) -> bytes:
    """`body` with its header's `requeued` set to `count`, its payload byte for byte (so
    its serializer and compression stay), signed again by `signer` when given."""
    header = read_header(body)
    header.pop("sig", None)  # it covered the old header
    header["requeued"] = count
    payload = body[body.index(b"\n") + 1 :]
    again = _HEADER_ENCODER.encode(header).encode() + b"\n" + payload
    return again if signer is None else signer.sign(again)


def read_header(body: bytes) -> dict[str, Any]:
    """The header of a body, without touching its payload; MessageError if it is not one."""
    head, sep, _ = body.partition(b"\n")
    try:
        if head[:2] == b'{"':  # as beatq writes it: json.loads(head) in fewer steps
            header = _loads_header(head.decode("utf-8", "surrogatepass"))
        else:  # json.loads reads UTF-16 and -32 too, and a BOM
            header = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"corrupt message header: {exc}") from None
    if not sep or not isinstance(header, dict) or header.get("v") != VERSION:
        raise MessageError("not a beatq message (no version 1 header)")
    if not isinstance(header.get("id"), str) or not isinstance(header.get("task"), str):
        raise MessageError("message header lacks its id or task name")
    return header


# The header fields a decoded message uses, by what each may hold (all may be null/absent but
# `ct`; `v`, `id` and `task` are read_header's). Fields not named here (another version's,
# `sig`) are left alone.
_TEXT_FIELDS = ("ce", "queue", "parent", "root", "group")
_TIME_FIELDS = ("eta", "expires", "sent")
_COUNT_FIELDS = ("retries", "priority", "requeued")


def check_header(header: dict[str, Any]) -> None:
    """Raise MessageError, one line naming the field, unless every field a worker uses holds
    what it should.

    The one place a header is validated, whole, before any of it is used: a message with
    a missing `ct` or `"retries": "abc"` is refused here (a worker dead-letters it) instead
    of raising deep inside the worker on every delivery, forever.
    """
    ct = header.get("ct")
    if not isinstance(ct, str) or not ct:
        raise _bad_field(header, "ct", 'a content type such as "application/json"')
    for name in _TEXT_FIELDS:
        value = header.get(name)
        if value is not None and not isinstance(value, str):
            raise _bad_field(header, name, "a string or null")
    for name in _TIME_FIELDS:
        value = header.get(name)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise _bad_field(header, name, "POSIX seconds (a finite number) or null")
    for name in _COUNT_FIELDS:
        value = header.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise _bad_field(header, name, "a whole number >= 0 or null")


def _signatures(value: Any) -> bool:
    """Whether `value` is a list of signature dicts: a task's (its name in "task") or a
    canvas's (its kind in "subtask_type"); what they hold is checked as they are used."""
    return isinstance(value, list) and all(
        isinstance(sig, dict)
        and (isinstance(sig.get("task"), str) or isinstance(sig.get("subtask_type"), str))
        for sig in value
    )


def _limit(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value >= 0
    )


def _links(value: Any) -> bool:
    return _signatures([value] if isinstance(value, dict) else value)


def _chord(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("id"), str)
        and isinstance(value.get("size"), int)
        and _signatures([value.get("body")])
    )


_ID = (lambda v: isinstance(v, str), "a string or null")
_LIMIT = (_limit, "seconds (a number >= 0) or null")
_FLAG = (lambda v: isinstance(v, bool), "true, false or null")
_OBJECT = (lambda v: isinstance(v, dict), "an object or null")
_LINKS = (_links, "a signature, a list of signatures or null")
# The payload options a worker reads, each with what it must pass and what it should be;
# the others are left alone.
OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(("time_limit", "soft_time_limit"), _LIMIT),
    **dict.fromkeys(("acks_late", "ignore_result"), _FLAG),
    **dict.fromkeys(("task_id", "group_id", "parent_id", "root_id"), _ID),
    **dict.fromkeys(("headers", "chain_extra"), _OBJECT),
    **dict.fromkeys(("link", "link_error"), _LINKS),
    "chain": (_signatures, "a list of signatures or null"),
    "chord": (_chord, "a chord join (id, size, body) or null"),
}


def check_options(options: dict[str, Any]) -> None:
    """Raise MessageError, one line naming the option, unless each payload option a worker
    reads holds what it should (OPTION_RULES): the header's check (check_header) for the
    payload's third part, one look per option the message has. A `"link": 5` would
    otherwise raise after the task ran, leave it claimed, and run it again after every
    visibility timeout."""
    for name, value in options.items():
        rule = OPTION_RULES.get(name)
        if rule is not None and value is not None and not rule[0](value):
            raise MessageError(f"payload option {name!r} is {_shown(value)}; expected {rule[1]}")


def _bad_field(header: dict[str, Any], name: str, expected: str) -> MessageError:
    if name not in header:
        return MessageError(f"header field {name!r} is missing; expected {expected}")
    return MessageError(f"header field {name!r} is {_shown(header[name])}; expected {expected}")


def _shown(value: Any) -> str:
    """`value` as a refusal quotes it: its repr, cut to 60 characters."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def decode(body: bytes, accept: list[str] | None) -> Message:
    """The Message in `body`.

    Raises MessageError for a corrupt or malformed header (see check_header) or payload
    options (check_options),
    serializers.ContentDisallowed for a content type not in `accept`,
    serializers.DecodeError for a corrupt payload.
    """
    header = read_header(body)
    check_header(header)
    payload = body[body.index(b"\n") + 1 :]
    data = serializers.decode(payload, header["ct"], header.get("ce"), accept)
    try:
        args, kwargs, options = data
        args, kwargs, options = list(args), dict(kwargs), dict(options or {})
    except (TypeError, ValueError):
        raise serializers.DecodeError("message payload is not [args, kwargs, options]") from None
    check_options(options)
    get = header.get
    return Message(
        id=header["id"],
        task=header["task"],
        args=args,
        kwargs=kwargs,
        options=options,
        queue=get("queue") or "celery",
        eta=get("eta"),
        expires=get("expires"),
        retries=int(get("retries") or 0),
        parent=get("parent"),
        root=get("root"),
        group=get("group"),
        priority=get("priority"),
        sent=float(get("sent") or 0.0),
        content_type=header["ct"],
        content_encoding=get("ce"),
        requeued=int(get("requeued") or 0),
    )
