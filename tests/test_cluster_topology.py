"""What `beatq status` and the dashboard read of a Redis Cluster (`Store.topology`):
read every 2 s by the dashboard, it opens no connection per read."""

from __future__ import annotations

import uuid

import pytest

from beatq.brokers import Outgoing, connect
from tests.conftest import CLUSTER, wait_for


@pytest.fixture
def cluster(request: pytest.FixtureRequest, cluster_url: str):
    return request.config.stash[CLUSTER]


def clients_and_connections(cluster) -> dict[int, tuple[int, int]]:
    """Each master's (clients connected now, connections it ever accepted), less the one
    asking."""
    found = {}
    for port in cluster.masters():
        with cluster.client(port) as node:
            listed = len(node.client_list()) - 1
            found[port] = (listed, int(node.info("stats")["total_connections_received"]))
    return found


def test_topology_reads_reuse_their_connections_and_close_them_with_the_backend(
    cluster, cluster_url: str
) -> None:
    before = clients_and_connections(cluster)
    b = connect(cluster_url, {"global_keyprefix": f"bqt-{uuid.uuid4().hex[:12]}"})
    b.send([Outgoing(f"tp{i}", f"m{i}", b"x") for i in range(6)])
    first = b.topology()
    assert sum(len(s.queues) for s in first.shards) == 6
    start = clients_and_connections(cluster)
    for _ in range(30):
        assert b.topology().shards == first.shards
    after = clients_and_connections(cluster)
    # each read since the first: no new connection on any master, none left open
    for port, (listed, received) in after.items():
        asked = 2  # the connections `after` was asked over (cluster.masters(), then its own)
        assert received - start[port][1] == asked, (port, received, start[port][1])
        assert listed == start[port][0], (port, listed, start[port][0])
    b.close()
    wait_for(
        lambda: all(c[0] == before[p][0] for p, c in clients_and_connections(cluster).items()),
        5,
        "the backend's connections closed",
    )
