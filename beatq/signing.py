"""Signed messages: an HMAC-SHA256 of each message's header and payload, with a shared key.

With `security_key` set, every message an app sends (clients, the beat, a worker's
callbacks, chord unlocks and retries: all go through `Message.encode`) carries a
signature, and a worker runs only messages whose signature one of its keys confirms;
the rest go to the dead letters (see worker/execute.py).

Wire form. The signature is the header's first member, so the header stays one line of
JSON that every reader (brokers, `inspect`, the dashboard) parses as before::

    {"sig":"<64 hex digits>","id":"…",…}\\n<payload>

The MAC covers every byte after `{"sig":"<hex>",`: all the header's other members and
the payload. An unsigned body is the same bytes from `"id"` on, so signing inserts the
member and verifying hashes a slice of the body, with no re-encoding on either side.

The setting (`security_key`, or the environment variable `BEATQ_SECURITY_KEY`) is a key,
`file:PATH` naming a key file, or a list of those. A key file holds one key per line.
The first key signs; all of them verify (rotation: put the new key first, keep the old
one until no message signed with it is left, then drop it).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .exceptions import ConfigurationError

SIG_START = b'{"sig":"'
SIG_HEX = 64  # hex digits of an HMAC-SHA256
SIGNED_FROM = len(SIG_START) + SIG_HEX + 2  # after the closing quote and the comma
MIN_KEY = 16  # bytes: a shorter key is guessable

UNSIGNED = "unsigned message refused: security_key is set"
BAD = "bad signature: not signed with any accepted security_key"


class Signer:
    """Signs bodies with the first of `keys`, verifies them with any.

    >>> signer = Signer([b"new-key-0123456789", b"old-key-0123456789"])
    >>> signer.refusal(signer.sign(b'{"id":"1"}\\nx')) is None
    True
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigurationError("security_key: no key given")
        self.keys = tuple(keys)
        # Each key's HMAC state, keyed once: a message copies it (half the cost of
        # keying an HMAC for every message).
        self.keyed = tuple(hmac.new(key, digestmod="sha256") for key in self.keys)

    def _mac(self, keyed: hmac.HMAC, data: memoryview) -> bytes:
        mac = keyed.copy()
        mac.update(data)
        return mac.hexdigest().encode()

    def sign(self, body: bytes) -> bytes:
        """`body` (an unsigned message: a JSON header object, a newline, the payload)
        with its signature as the header's first member."""
        rest = memoryview(body)[1:]  # after the header's opening brace
        return b"".join((SIG_START, self._mac(self.keyed[0], rest), b'",', rest))

    def refusal(self, body: bytes) -> str | None:
        """None if `body` is signed with one of the keys, else why it is refused (one
        line). Digests are compared in constant time."""
        if not body.startswith(SIG_START):
            return UNSIGNED
        given = body[len(SIG_START) : len(SIG_START) + SIG_HEX]
        if body[SIGNED_FROM - 2 : SIGNED_FROM] != b'",':
            return BAD
        signed = memoryview(body)[SIGNED_FROM:]
        valid = False
        for keyed in self.keyed:  # every key, so the time taken says nothing of which matched
            valid |= hmac.compare_digest(self._mac(keyed, signed), given)
        return None if valid else BAD


def signer_for(setting: Any) -> Signer | None:
    """The Signer for a `security_key` setting, or None when it is unset (or empty).

    Raises ConfigurationError for a key file that cannot be read, an empty key or one
    shorter than MIN_KEY bytes."""
    if not setting:
        return None
    items = [setting] if isinstance(setting, (str, bytes, os.PathLike)) else list(setting)
    keys: list[bytes] = []
    for item in items:
        keys += _keys_of(item)
    if not keys:
        raise ConfigurationError("security_key: no key given (an empty list or key file)")
    return Signer(keys)


def _keys_of(item: Any) -> list[bytes]:
    if isinstance(item, str) and item.startswith("file:"):
        item = Path(item[len("file:") :])
    if isinstance(item, os.PathLike):
        try:
            text = Path(item).read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"security_key: cannot read key file {os.fspath(item)!r}: {exc.strerror}"
            ) from None
        keys = [line.strip() for line in text.splitlines() if line.strip()]
        where = f"key file {os.fspath(item)!r}"
    elif isinstance(item, (str, bytes)):
        keys = [item.encode() if isinstance(item, str) else item]
        where = "a key"
    else:
        raise ConfigurationError(
            f"security_key: {type(item).__name__} is not a key; give a string, "
            "'file:PATH', a path, or a list of those"
        )
    for key in keys:
        if len(key) < MIN_KEY:
            raise ConfigurationError(
                f"security_key: {where} is {len(key)} bytes; use at least {MIN_KEY} random "
                "bytes, e.g. python -c 'import secrets; print(secrets.token_hex(32))'"
            )
    return keys
