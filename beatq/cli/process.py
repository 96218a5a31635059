"""What a long-running command (worker, beat) does about its process, as Celery's do:
a pidfile that keeps a second copy from starting, and `%h`-style names.

    -n NAME@%h          %h the host name, %n its first label, %d the rest (the domain),
                        %% a percent sign (Celery's `host_format`)
    --logfile/--pidfile also %p, the worker's full node name

`%i` and `%I` (Celery's pool process index, for a file per child) are refused: beatq's
children log through the worker's own handler, into one file.
"""

from __future__ import annotations

import errno
import os
import re
import socket

from ..exceptions import ConfigurationError

_KEYS = re.compile(r"%(.)")


def expand(value: str, node: str | None = None, hostname: str | None = None) -> str:
    """`value` with %h, %n, %d (and %p, the node name, when given) expanded."""
    host = hostname or socket.gethostname()
    name, _, domain = host.partition(".")
    known = {"h": host, "n": name, "d": domain, "%": "%"}
    if node is not None:
        known["p"] = node

    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in known:
            return known[key]
        if key in "iI":
            raise ConfigurationError(
                f"{value!r}: %{key} (a file per pool process) is not offered: beatq's pool "
                "children log into the worker's file; drop %" + key
            )
        allowed = ", ".join(f"%{k}" for k in known)
        raise ConfigurationError(f"{value!r}: unknown %{key}; use {allowed}")

    return _KEYS.sub(one, value)


class Pidfile:
    """A file holding this process's id while it runs. A pidfile that names a live
    process stops a second copy from starting; one left by a dead process is replaced."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.pid = os.getpid()

    def acquire(self) -> None:
        """Write this process's id, or raise ConfigurationError if another runs."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                other = self._read()
                if other is not None and other != self.pid and _alive(other):
                    raise ConfigurationError(
                        f"pidfile {self.path} names process {other}, which is running: "
                        "stop it first, or give another --pidfile"
                    ) from None
                try:  # stale (its process is gone) or unreadable: replace it
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            except OSError as exc:
                raise ConfigurationError(f"cannot write pidfile {self.path}: {exc}") from None
            with os.fdopen(fd, "w") as file:
                file.write(f"{self.pid}\n")
            return
        raise ConfigurationError(f"cannot take pidfile {self.path}: it keeps reappearing")

    def release(self) -> None:
        """Remove the pidfile if it still names this process."""
        if self._read() == self.pid:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _read(self) -> int | None:
        try:
            with open(self.path) as file:
                return int(file.read().strip() or "0") or None
        except (OSError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # alive, another user's
    return True
