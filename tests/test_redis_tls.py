"""TLS and ACL Redis end to end (SPEC §9, §15): a worker, a beat and a client over
`rediss://` as a Redis user limited to beatq's key prefix.

The test makes its own CA and server certificate with `openssl`, and starts a
redis-server that listens on TLS only, with the default user off and one ACL user,
`beatq`, allowed the keys under the test's prefix and no dangerous command. A wrong
password or an untrusted certificate gives one line and exit code 4.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from beatq import chord
from tests.conftest import ROOT, WorkerProcess, free_port, point_app, scaled, wait_for, wait_ready
from tests.proj import journal

PREFIX = "bqtls"
PASSWORD = "s3cret-tls-pw"


@dataclass(frozen=True)
class TlsRedis:
    port: int
    ca: Path
    folder: Path

    def url(self, password: str = PASSWORD, ca: bool = True) -> str:
        query = f"?ssl_ca_certs={self.ca}" if ca else ""
        return f"rediss://beatq:{password}@127.0.0.1:{self.port}/0{query}"

    def env(self, url: str, prefix: str = PREFIX) -> dict[str, str]:
        return {
            **os.environ,
            "BEATQ_BROKER_URL": url,
            "BEATQ_TEST_PREFIX": prefix,
            "BEATQ_TEST_JOURNAL": str(self.folder / "journal"),
            "PYTHONPATH": str(ROOT),
        }


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path) -> None:
    """ca.crt, and server.crt/server.key for 127.0.0.1 signed by it."""
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=beatq test CA",
        cwd=folder,
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=folder,
    )  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.crt",
        cwd=folder,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: the test makes its certificates with it")
    folder = tmp_path_factory.mktemp("tls")
    (folder / "journal").mkdir()
    make_certificates(folder)
    port = free_port()
    log = folder / "redis.log"
    argv = [
        binary,
        "--port", "0",  # TLS only
        "--tls-port", str(port),
        "--bind", "127.0.0.1",
        "--tls-cert-file", str(folder / "server.crt"),
        "--tls-key-file", str(folder / "server.key"),
        "--tls-ca-cert-file", str(folder / "ca.crt"),
        "--tls-auth-clients", "no",
        "--save", "",
        "--appendonly", "no",
        "--user", "default", "off",
        # beatq's keys and nothing else; no KEYS, FLUSHALL, CONFIG, DEBUG, ...
        "--user", "beatq", "on", f">{PASSWORD}", f"~{PREFIX}:*", "&*", "+@all", "-@dangerous",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    server = TlsRedis(port, folder / "ca.crt", folder)
    client = redis.Redis.from_url(server.url())

    def up() -> bool:
        if process.poll() is not None:
            return True
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(up, 10, f"redis-server with TLS on port {port}")
        if process.poll() is not None:
            text = log.read_text(errors="replace")
            if "tls" in text.lower():  # e.g. "Bad directive" for tls-port
                pytest.skip(f"redis-server was built without TLS: {text.strip()[-200:]}")
            raise AssertionError(f"redis-server did not start:\n{text}")
        yield server
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
        process.wait()


def beatq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beatq", "-A", "tests.proj", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )


def test_the_acl_user_reaches_only_beatqs_keys(tls_redis: TlsRedis):
    client = redis.Redis.from_url(tls_redis.url())
    with client:
        client.set(f"{PREFIX}:probe", b"1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("somebody-else:probe")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
        client.delete(f"{PREFIX}:probe")


def test_worker_beat_and_client_over_tls_as_the_acl_user(
    tls_redis: TlsRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from tests.proj.tasks import add, cv_xsum

    url = tls_redis.url()
    env = tls_redis.env(url)
    for key in ("BEATQ_BROKER_URL", "BEATQ_TEST_PREFIX", "BEATQ_TEST_JOURNAL"):
        monkeypatch.setenv(key, env[key])
    app = point_app(url, PREFIX)
    schedule = tmp_path / "tls.yaml"
    schedule.write_text(
        "schedules:\n  tls-tick: {task: tests.proj.tasks.sleep, every: 1s, args: [0, tls-beat]}\n"
    )
    # -E: events (a stream, XADD) go through the same user
    worker = WorkerProcess(
        ["-A", "tests.proj", "worker", "-n", "tls-worker", "-c", "2", "-E"],
        env,
        tmp_path / "worker.log",
    )
    beat = WorkerProcess(
        ["-A", "tests.proj", "beat", "-s", str(schedule), "--lease-ttl", "1.5"],
        env,
        tmp_path / "beat.log",
    )
    try:
        wait_ready(app.broker, "tls-worker", lambda: worker.process.poll() is None, worker.log)
        assert add.delay(2, 2).get(timeout=scaled(20)) == 4
        assert chord((add.s(i, i) for i in range(4)), cv_xsum.s())().get(timeout=scaled(20)) == 12
        wait_for(
            lambda: any(line.startswith("tls-beat:start") for line in journal("runs")),
            20,
            "the beat's run over TLS",
        )
        assert app.broker.get_lease("beat") is not None
        done = beatq(env, "inspect", "stats")
        assert done.returncode == 0 and "tls-worker" in done.stdout, done.stderr
        done = beatq(env, "call", "tests.proj.tasks.add", "--args", "[20, 22]")
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in worker.log() + beat.log()
    finally:
        beat.stop()
        worker.stop()
        app.close()


@pytest.mark.parametrize("command", ["worker", "beat", "call"])
@pytest.mark.parametrize(
    "case, says",
    [
        ("wrong password", "refused the login: invalid username-password pair"),
        ("no CA", "TLS certificate not trusted"),
        ("keys the ACL forbids", "refused a command"),
    ],
)
def test_a_wrong_password_an_untrusted_certificate_or_the_acl_exits_4_in_one_line(
    tls_redis: TlsRedis, command: str, case: str, says: str
):
    prefix = PREFIX
    if case == "wrong password":
        url = tls_redis.url(password="not-the-password")
    elif case == "no CA":
        url = tls_redis.url(ca=False)
    else:
        url, prefix = tls_redis.url(), "not-beatqs"
    args = {
        "worker": ["worker", "-P", "solo"],
        "beat": ["beat"],
        "call": ["call", "tests.proj.tasks.add", "--args", "[1, 2]"],
    }[command]
    done = beatq(tls_redis.env(url, prefix), *args)
    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"Error: Redis at rediss://beatq:***@127.0.0.1:{tls_redis.port}/0")
    assert says in lines[0]
    assert PASSWORD not in done.stderr and "not-the-password" not in done.stderr
