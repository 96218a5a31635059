"""A Redis Cluster of three masters, each with one replica, as real processes on free
loopback ports (the tests of redis+cluster://: the contract suite, tests/test_cluster.py).

Every process is started here and stopped by its pid. The nodes time a master out after
NODE_TIMEOUT_MS, so a killed master's replica is promoted within a few seconds, and they
serve their own slots while another shard has no master (cluster-require-full-coverage
no: what beatq's README asks of a production cluster too).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port, wait_for

NODE_TIMEOUT_MS = 1000
MASTERS = 3


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.exit(f"{name} is not installed (apt-get install redis-server redis-tools)", 1)
    return found


class Cluster:
    """MASTERS masters and one replica of each, their files in `folder`."""

    def __init__(self, folder: Path, masters: int = MASTERS, tls: bool = False) -> None:
        """`tls`: every node speaks TLS only, to clients and to each other, with a
        certificate signed by a CA of the test's own (tests/test_redis_tls.py makes them)."""
        self.folder = folder
        self.tls = tls
        self.ports = [free_port() for _ in range(masters * 2)]
        self.bus_ports = {port: free_port() for port in self.ports}
        self.servers: dict[int, subprocess.Popen[bytes]] = {}

    def url(self) -> str:
        """A redis+cluster:// URL naming two of the nodes (either finds the rest)."""
        hosts = f"127.0.0.1:{self.ports[0]},127.0.0.1:{self.ports[1]}"
        if self.tls:
            return f"rediss+cluster://{hosts}/?ssl_ca_certs={self.folder / 'ca.crt'}"
        return f"redis+cluster://{hosts}/"

    def client(self, port: int) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.folder / "ca.crt")} if self.tls else {}
        return redis.Redis(port=port, socket_timeout=1, **tls)

    def _server(self, port: int) -> None:
        folder = self.folder / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        if self.tls:
            listen = [
                *("--port", "0", "--tls-port", str(port), "--tls-cluster", "yes"),
                *("--tls-replication", "yes", "--tls-auth-clients", "no"),
                *("--tls-cert-file", str(self.folder / "server.crt")),
                *("--tls-key-file", str(self.folder / "server.key")),
                *("--tls-ca-cert-file", str(self.folder / "ca.crt")),
            ]
        else:
            listen = ["--port", str(port)]
        args = [
            *listen,
            *("--bind", "127.0.0.1", "--dir", str(folder)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-port", str(self.bus_ports[port])),
            *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
            *("--cluster-require-full-coverage", "no"),
            *("--cluster-replica-validity-factor", "0"),  # any replica may be promoted
            *("--repl-diskless-sync-delay", "0"),  # a replica syncs at once (default: 5 s)
        ]
        self.servers[port] = subprocess.Popen(
            [_binary("redis-server"), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        if self.tls:
            from tests.test_redis_tls import make_certificates

            make_certificates(self.folder)
        for port in self.ports:
            self._server(port)
        for port in self.ports:
            wait_for(
                lambda p=port: self._answers(p) or self.servers[p].poll() is not None,
                10,
                f"cluster node on port {port}",
            )
            if self.servers[port].poll() is not None:  # its port was taken meanwhile
                raise AssertionError(f"cluster node on port {port} exited at start")
        created = subprocess.run(
            [
                _binary("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
                *(["--tls", "--cacert", str(self.folder / "ca.crt")] if self.tls else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=60,
        )
        if created.returncode != 0:
            raise AssertionError(f"redis-cli --cluster create failed:\n{created.stdout.decode()}")
        wait_for(self.ok, 30, "the cluster to agree on its slots")

    def _answers(self, port: int) -> bool:
        try:
            with self.client(port) as client:
                return bool(client.ping())
        except redis.ConnectionError:
            return False

    def ok(self) -> bool:
        """Every live node says the cluster is ok and knows MASTERS masters with slots,
        and every live replica has synced with its master."""
        for port, process in self.servers.items():
            if process.poll() is not None:
                continue
            try:
                with self.client(port) as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    if isinstance(info, bytes):
                        info = info.decode()
                    if "cluster_state:ok" not in str(info):
                        return False
                    slots = client.execute_command("CLUSTER", "SLOTS")
                    if len(slots) < len(self.ports) // 2:
                        return False
                    replication = client.info("replication")
                    if replication["role"] == "slave" and (
                        replication["master_link_status"] != "up"
                        or replication["master_sync_in_progress"]
                    ):
                        return False  # a replica promoted before it synced has nothing
            except (redis.ConnectionError, redis.TimeoutError):
                return False
        return True

    def master_of(self, key: str) -> int:
        """The port of the master that serves `key` now."""
        for port, process in self.servers.items():
            if process.poll() is not None:
                continue
            with self.client(port) as client:
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return int(master[1])
        raise AssertionError(f"no live node knows who serves {key!r}")

    def replica_of(self, master: int) -> int:
        """The port of `master`'s replica."""
        with self.client(master) as client:
            info = client.info("replication")
        return int(info["slave0"]["port"])

    def slot_owner(self, slot: int) -> int:
        """The port of the master that serves `slot` now."""
        for port, process in self.servers.items():
            if process.poll() is not None:
                continue
            with self.client(port) as client:
                for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return int(master[1])
        raise AssertionError(f"no live node knows who serves slot {slot}")

    def masters(self) -> list[int]:
        """The ports of the live masters."""
        found = []
        for port, process in self.servers.items():
            if process.poll() is None:
                with self.client(port) as client:
                    if client.info("replication")["role"] == "master":
                        found.append(port)
        return found

    def _id(self, port: int) -> str:
        with self.client(port) as client:
            found = client.execute_command("CLUSTER", "MYID")
        return found.decode() if isinstance(found, bytes) else str(found)

    def begin_migration(self, slot: int, to: int) -> int:
        """Mark `slot` IMPORTING on master `to` and MIGRATING on its master now, as
        `redis-cli --cluster reshard` does first; the port of the source."""
        source = self.slot_owner(slot)
        with self.client(to) as target:
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self._id(source))
        with self.client(source) as node:
            node.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self._id(to))
        return source

    def migrate_keys(
        self,
        slot: int,
        source: int,
        to: int,
        count: int = 1000,
        first: bytes = b"",
        unless: bytes = b"",
    ) -> int:
        """MIGRATE up to `count` keys of `slot` from `source` to `to`, those whose name
        holds `first` before the others, none whose name holds `unless`; how many moved."""
        with self.client(source) as node:
            keys = node.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10000)
            if unless:
                keys = [k for k in keys if unless not in k]
            keys = sorted(keys, key=lambda k: first not in k)[:count] if first else keys[:count]
            if keys:
                node.execute_command("MIGRATE", "127.0.0.1", to, "", 0, 5000, "KEYS", *keys)
        return len(keys)

    def end_migration(self, slot: int, source: int, to: int) -> None:
        """Give `slot` to `to` on every master (the target first, then the source, as
        redis-cli does), and wait until the cluster is ok."""
        owner = self._id(to)
        for port in [to, source, *(p for p in self.masters() if p not in (to, source))]:
            with self.client(port) as node:
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner)
        wait_for(self.ok, 30, "the cluster to agree on its slots")

    def move_slot(self, slot: int, to: int) -> int:
        """Move `slot` and its keys to master `to` at once; the port of its old master."""
        source = self.begin_migration(slot, to)
        while self.migrate_keys(slot, source, to):
            pass
        self.end_migration(slot, source, to)
        return source

    def kill(self, port: int) -> None:
        """kill -9 the node on `port`."""
        process = self.servers[port]
        process.kill()
        process.wait()

    def restart(self, port: int) -> None:
        """Start the node on `port` again (killed: it comes back as a replica of the
        master that took its place) and wait until the cluster is ok."""
        self._server(port)
        wait_for(lambda: self._answers(port), 10, f"cluster node on port {port}")
        wait_for(self.ok, 30, "the cluster to be whole again")

    def stop(self) -> None:
        for process in self.servers.values():
            if process.poll() is None:
                process.kill()
                process.wait()
