"""What `beatq status` and the dashboard read of a Redis Cluster (`Store.topology`):
read every 2 s by the dashboard, it opens no connection per read."""

from __future__ import annotations

import uuid

from beatq.brokers import Outgoing, connect
from tests.conftest import wait_for


def connections_named(cluster, name: str) -> set[tuple[int, str]]:
    """(port, client id) of each connection to a master that goes by `name`."""
    found = set()
    for port in cluster.masters():
        with cluster.client(port) as node:
            for client in node.client_list():
                if client.get("name") == name:
                    found.add((port, client["id"]))
    return found


def placed(topology) -> list[tuple[str, tuple, tuple]]:
    """Each shard's master, slot ranges and queues."""
    return [(s.master.address, s.slots, s.queues) for s in topology.shards]


def accepted(cluster) -> dict[int, int]:
    """How many connections each master has accepted since it started."""
    found = {}
    for port in cluster.masters():
        with cluster.client(port) as node:
            found[port] = int(node.info("stats")["total_connections_received"])
    return found


def test_topology_reads_reuse_their_connections_and_close_them_with_the_backend(
    cluster, cluster_url: str
) -> None:
    name = f"topo-{uuid.uuid4().hex[:8]}"  # the backend's connections go by it
    url = f"{cluster_url}?client_name={name}"
    b = connect(url, {"global_keyprefix": f"bqt-{uuid.uuid4().hex[:12]}"})
    b.send([Outgoing(f"tp{i}", f"m{i}", b"x") for i in range(6)])
    first = b.topology()
    assert sum(len(s.queues) for s in first.shards) == 6
    start = connections_named(cluster, name)
    assert len({port for port, _ in start}) == len(first.shards)  # every master's asked
    before = accepted(cluster)
    for _ in range(30):  # (a replica's lag changes from read to read)
        assert placed(b.topology()) == placed(first)
    after = accepted(cluster)
    # not one a read on any master (a few at most from elsewhere: this test's own)
    assert all(after[port] - before[port] < 10 for port in after), (before, after)
    assert connections_named(cluster, name) == start  # the same connections, still open
    b.close()
    wait_for(lambda: not connections_named(cluster, name), 5, "the backend's connections closed")
