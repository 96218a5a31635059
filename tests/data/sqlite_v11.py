"""Writes sqlite_v11.db.gz, the schema-11 file that tests/contract/test_stores.py upgrades.

Run with the beatq of schema 11 (main at 0385d89) on the path, from this folder:
    PYTHONPATH=/path/to/that/tree python sqlite_v11.py
Its messages, in every state the upgrade must keep, are listed in the test.
"""

from __future__ import annotations

import gzip
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from beatq.brokers import Outgoing, ResultWrite, connect
from beatq.brokers.sqlite_db import SCHEMA_VERSION

assert SCHEMA_VERSION == 11, SCHEMA_VERSION
HERE = Path(__file__).resolve().parent

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "v11.db"
    b = connect(f"sqlite:///{path}")
    now = time.time()
    b.send([Outgoing("q", "h1", b'{"h": 1}')])
    head = b.claim(["q"], 1, 60)
    b.send(
        [
            Outgoing("q", "r1", b'{"r": 1}', ack_at_claim=True),
            Outgoing("q", "r2", b'{"r": 2}'),
            Outgoing("q", "r3", b'{"r": 3}'),
            Outgoing("q", "p1", b'{"p": 1}', priority=5, ack_at_claim=True),
        ]
    )
    b.release(head.claims)  # h1 back at the head of q
    b.send([Outgoing("w", "w1", b'{"w": 1}'), Outgoing("w", "w2", b'{"w": 2}')])
    b.claim(["w"], 1, 10**8)  # w1: claimed for years
    b.claim(["w"], 1, 0.01)  # w2: its claim expires at once
    b.send([Outgoing("d", "d1", b'{"d": 1}', eta=now + 10**8)])  # delayed for years
    b.send([Outgoing("d", "d2", b'{"d": 2}', eta=now + 1)])  # due by the time a test runs
    b.send([Outgoing("x", "x1", b"not json")])
    b.dead_letter(b.claim(["x"], 1, 60).claims[0], "bad body")
    b.finish(results=[ResultWrite("t1", b'{"status": "SUCCESS"}', 10**8)])
    b.close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.execute("VACUUM")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 11
    raw.close()
    data = path.read_bytes()
(HERE / "sqlite_v11.db.gz").write_bytes(gzip.compress(data, mtime=0))
print(f"{len(data)} bytes, {os.path.getsize(HERE / 'sqlite_v11.db.gz')} compressed")
