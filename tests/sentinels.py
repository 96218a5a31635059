"""A Redis master, its replicas and the sentinels that watch them, as real processes on
free loopback ports (the tests of sentinel://, tests/test_sentinel.py).

Every process is started here and stopped by its pid. The master asks for a password
(MASTER_PASSWORD, also the replicas' `masterauth`), the sentinels for another one
(SENTINEL_PASSWORD): a client needs both, each where it belongs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port, wait_for

SERVICE = "mymaster"
MASTER_PASSWORD = "master-pw"
SENTINEL_PASSWORD = "sentinel-pw"
DOWN_AFTER_MS = 1000  # a master unanswered this long is down for a sentinel
FAILOVER_TIMEOUT_MS = 2000


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit("redis-server is not installed (apt-get install redis-server)", 1)
    return binary


class Topology:
    """A master, `replicas` replicas of it and `sentinels` sentinels, in `folder`."""

    def __init__(
        self, folder: Path, replicas: int = 2, sentinels: int = 3, tls: bool = False
    ) -> None:
        """`tls`: every process speaks TLS only, with a certificate signed by a CA of the
        test's own (tests/test_redis_tls.py makes them), which clients must name."""
        self.folder = folder
        self.tls = tls
        self.servers: dict[int, subprocess.Popen[bytes]] = {}  # redis-server by port
        self.watchers: dict[int, subprocess.Popen[bytes]] = {}  # sentinel by port
        self.first_master = free_port()
        self.replica_ports = [free_port() for _ in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]

    def url(self, db: int = 0, password: str = MASTER_PASSWORD) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        if self.tls:
            return f"sentinel+tls://:{password}@{hosts}/{SERVICE}/{db}?ssl_ca_certs={self.ca}"
        return f"sentinel://:{password}@{hosts}/{SERVICE}/{db}"

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def _tls(self, port: int) -> list[str]:
        """The directives that make a server or sentinel listen on `port` with TLS only."""
        if not self.tls:
            return ["port", str(port)]
        return [
            *("port", "0", "tls-port", str(port), "tls-replication", "yes"),
            *("tls-cert-file", str(self.folder / "server.crt")),
            *("tls-key-file", str(self.folder / "server.key")),
            *("tls-ca-cert-file", str(self.ca), "tls-auth-clients", "no"),
        ]

    # -- processes ---------------------------------------------------------------------
    def start(self) -> None:
        if self.tls:
            from tests.test_redis_tls import make_certificates

            make_certificates(self.folder)
        self._server(self.first_master)
        for port in self.replica_ports:
            self._server(port, replica_of=self.first_master)
        wait_for(self._synced, 20, "the replicas to sync")
        for port in self.sentinel_ports:
            self._sentinel(port)
        for port in self.sentinel_ports:
            wait_for(lambda p=port: self._sees_all(p), 20, f"sentinel on port {port} to see all")

    def _server(self, port: int, replica_of: int | None = None) -> None:
        tls = self._tls(port)
        argv = [
            _binary(),
            *[f"--{word}" if i % 2 == 0 else word for i, word in enumerate(tls)],
            *("--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--requirepass", MASTER_PASSWORD, "--masterauth", MASTER_PASSWORD),
            *("--repl-diskless-sync-delay", "0", "--dir", str(self.folder)),
            *("--dbfilename", f"dump-{port}.rdb"),
        ]
        if replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        log = open(self.folder / f"redis-{port}.log", "wb")
        self.servers[port] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: self._ping(port), 10, f"redis-server on port {port}")

    def _sentinel(self, port: int) -> None:
        conf = self.folder / f"sentinel-{port}.conf"
        tls = self._tls(port)
        directives = "".join(f"{tls[i]} {tls[i + 1]}\n" for i in range(0, len(tls), 2))
        conf.write_text(
            f"{directives}bind 127.0.0.1\ndir {self.folder}\n"
            f"requirepass {SENTINEL_PASSWORD}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.first_master} 2\n"
            f"sentinel auth-pass {SERVICE} {MASTER_PASSWORD}\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 2\n"
        )
        log = open(self.folder / f"sentinel-{port}.log", "wb")
        self.watchers[port] = subprocess.Popen(
            [_binary(), str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_for(lambda: self._ping(port, SENTINEL_PASSWORD), 10, f"sentinel on port {port}")

    def stop(self) -> None:
        for process in [*self.watchers.values(), *self.servers.values()]:
            if process.poll() is None:
                process.kill()
            process.wait()

    def kill(self, port: int) -> None:
        """kill -9 the server on `port`."""
        process = self.servers[port]
        process.kill()
        process.wait()

    # -- what they say -----------------------------------------------------------------
    def _client(self, port: int, password: str = MASTER_PASSWORD) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.ca)} if self.tls else {}
        return redis.Redis(port=port, password=password, socket_timeout=2, **tls)

    def _ping(self, port: int, password: str = MASTER_PASSWORD) -> bool:
        try:
            with self._client(port, password) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def _synced(self) -> bool:
        """Every replica online as the master sees it (WAIT counts only those)."""
        with self._client(self.first_master) as client:
            info = client.info("replication")
        states = [info.get(f"slave{i}", {}).get("state") for i in range(len(self.replica_ports))]
        return states == ["online"] * len(self.replica_ports)

    def _sees_all(self, port: int) -> bool:
        with self._client(port, SENTINEL_PASSWORD) as client:
            state = client.execute_command("SENTINEL", "MASTER", SERVICE)
        fields = dict(zip(state[::2], state[1::2])) if isinstance(state, list) else state
        fields = {_text(k): _text(v) for k, v in fields.items()}
        others = len(self.sentinel_ports) - 1
        return (
            int(fields["num-slaves"]) == len(self.replica_ports)
            and int(fields["num-other-sentinels"]) == others
        )

    def master(self) -> int | None:
        """The port of the master the sentinels agree on now (None: they do not agree)."""
        seen = set()
        for port in self.sentinel_ports:
            try:
                with self._client(port, SENTINEL_PASSWORD) as client:
                    addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            except redis.RedisError:
                return None
            seen.add(int(addr[1]))
        return seen.pop() if len(seen) == 1 else None

    def master_client(self) -> redis.Redis:
        """A client of the master (the first one when no sentinel watches)."""
        port = self.master() if self.sentinel_ports else self.first_master
        assert port is not None, "the sentinels do not agree on a master"
        return self._client(port)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
