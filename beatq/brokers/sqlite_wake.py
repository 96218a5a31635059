"""Wake-ups across the processes of one SQLite file, without polling (Linux).

SQLite cannot notify another process. Beside the file `x.db`, `x.db-wake` is a small
file every process maps into memory: a 32-bit *change word* that committers bump, which
waiters sleep on with a futex (a kernel wait queue keyed by the word's place in the
file, so it works between processes), and one byte per process *slot*, set while a
thread of that process waits. A commit then costs one memory read when nobody waits, a
word bump and one `futex(FUTEX_WAKE)` system call when someone does; a waiter wakes
within microseconds of a commit instead of at its next poll.

Slots. A process takes a free slot the first time it waits, with a `lockf` lock on
that byte of the file, held for its life (the kernel drops it when the process dies,
however it dies; a slot's byte left set by a killed process only costs committers a
system call until the slot is taken again and cleared). A process that finds no free
slot among `SLOTS`, or a system without futexes or this file, keeps polling
(sqlite_db.Database.poll).

Order. A waiter sets its slot's byte, reads the change word, then checks the file
(`PRAGMA data_version`), and sleeps only while the word still has the value it read.
A committer commits, then reads the bytes, then bumps the word and wakes. So a commit
the waiter's check missed was made before the committer read the byte the waiter had
set: its bump changes the word, and the sleep does not begin or ends. Two committers
that bump together may write the same value; the waiter's check then came after both
commits, which it saw.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import platform
import sys
import threading
from collections.abc import Callable

SIZE = 4096  # bytes of the wake file
WORD = 0  # offset of the change word
FLAGS = 64  # offset of the first slot's byte
SLOTS = 256  # processes that can wait on one file without polling
FUTEX_WAIT = 0
FUTEX_WAKE = 1
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _futex_call() -> Callable[[int, int, int, int | None], int] | None:
    """libc's syscall() bound to futex, or None where this cannot work."""
    number = _SYS_FUTEX.get(platform.machine().lower())
    if not sys.platform.startswith("linux") or number is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # a CDLL call releases the GIL
        call = libc.syscall
    except (OSError, AttributeError):
        return None
    call.restype = ctypes.c_long
    # syscall(SYS_futex, address, op, value, timeout, address2, value3)
    call.argtypes = [
        ctypes.c_long,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_uint32,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
    ]

    def futex(address: int, op: int, value: int, timeout: int | None) -> int:
        return call(number, address, op, value, timeout, None, 0)

    return futex


_futex = _futex_call()


class Wake:
    """This process's view of one file's wake file (see the module's docstring)."""

    def __init__(self, db_path: str) -> None:
        path = db_path + "-wake"
        try:
            mode = os.stat(db_path).st_mode & 0o666
        except OSError:
            mode = 0o644
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), mode)
        try:
            if os.fstat(fd).st_size < SIZE:
                os.ftruncate(fd, SIZE)  # zeros; a concurrent opener's ftruncate is the same
            self.map = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.word = ctypes.c_uint32.from_buffer(self.map, WORD)
        self.address = ctypes.addressof(self.word)
        self.lock = threading.Lock()
        self.slot: int | None = None  # taken at the first wait
        self.waiting = 0  # threads of this process in `wait`
        self.pid = os.getpid()

    def _take_slot(self) -> int | None:
        for slot in range(SLOTS):
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, FLAGS + slot)
            except OSError:
                continue  # another live process holds it
            self.map[FLAGS + slot] = 0  # a killed holder's mark
            return slot
        return None

    def waits(self) -> bool:
        """Whether this process can wait here (it has, or just took, a slot)."""
        with self.lock:
            if self.slot is None:
                self.slot = self._take_slot()
            return self.slot is not None

    def begin(self) -> None:
        """A thread of this process starts waiting (`waits()` was True)."""
        with self.lock:
            self.waiting += 1
            self.map[FLAGS + self.slot] = 1  # type: ignore[operator]

    def end(self) -> None:
        with self.lock:
            self.waiting -= 1
            if not self.waiting:
                self.map[FLAGS + self.slot] = 0  # type: ignore[operator]

    def value(self) -> int:
        """The change word, read before checking the file."""
        return self.word.value

    def sleep(self, seen: int, timeout: float) -> None:
        """Sleep up to `timeout` seconds while the change word is `seen`."""
        whole = int(timeout)
        span = _Timespec(whole, int((timeout - whole) * 1e9))
        _futex(self.address, FUTEX_WAIT, seen, ctypes.addressof(span))

    def changed(self) -> None:
        """After a commit: wake the waiters, if any."""
        if self.map.find(b"\x01", FLAGS, FLAGS + SLOTS) < 0:
            return
        self.word.value = (self.word.value + 1) & 0xFFFFFFFF
        _futex(self.address, FUTEX_WAKE, 0x7FFFFFFF, None)


_wakes: dict[str, Wake | None] = {}
_wakes_lock = threading.Lock()


def wake_of(db_path: str) -> Wake | None:
    """This process's Wake for the file, or None where waits poll (see the docstring)."""
    if _futex is None:
        return None
    db_path = os.path.realpath(db_path)  # one wake file whichever link names the file
    with _wakes_lock:
        if db_path not in _wakes:
            try:
                _wakes[db_path] = Wake(db_path)
            except (OSError, ValueError):
                _wakes[db_path] = None
        return _wakes[db_path]


def _after_fork_in_child() -> None:
    global _wakes, _wakes_lock
    # the parent's slots are its own (a lockf lock is not inherited): take new ones
    _wakes, _wakes_lock = {}, threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def registry() -> object:
    """The process's registry of Wakes: a new one after a fork (cached lookups compare it)."""
    return _wakes
