"""Prometheus metrics of a worker and of a beat, served over HTTP with `--metrics-port`.

Needs prometheus_client (`pip install 'beatq[metrics]'`). Each process serves its own
registry at `http://HOST:PORT/metrics`:

    beatq_tasks_total{name,state}                 tasks finished here, by outcome:
                                                  SUCCESS, FAILURE, RETRY, REVOKED,
                                                  REJECTED, DEAD_LETTERED
    beatq_task_runtime_seconds{name}              histogram of run times (success, failure)
    beatq_queue_depth{queue}                      ready messages of the worker's queues (read
                                                  from the broker at each scrape)
    beatq_worker_active_tasks / _reserved_tasks   running, and claimed waiting for a slot
    beatq_beat_dispatched_total{entry}            runs sent by this beat
    beatq_beat_dispatch_lateness_seconds{entry}   histogram: send time minus the run's slot
    beatq_beat_missed_runs_total{entry}           runs given up by catch-up (downtime)
    beatq_beat_leader                             1 while this beat holds the lease
    beatq_beat_lease_age_seconds                  how long the current leader has led
    beatq_beat_lease_remaining_seconds            its lease's time left (0: no leader)

Prefork: tasks run in child processes, but the parent counts them: each child reports
its task's outcome and run time with the "done" it sends back over its pipe, and a
child that dies is counted by the parent that replaces it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .app import Beatq

RUNTIME_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
LATENESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(
            "--metrics-port needs the prometheus_client package: "
            "pip install 'beatq[metrics]' (or pip install prometheus_client)"
        ) from None
    return prometheus_client


class Metrics:
    """One process's registry, its HTTP server, and the worker's and beat's instruments."""

    def __init__(self) -> None:
        prom = _client()
        self.prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        self.server: Any = None
        self.tasks = prom.Counter(
            "beatq_tasks", "Tasks finished here, by outcome.", ["name", "state"],
            registry=self.registry,
        )  # fmt: skip
        self.runtime = prom.Histogram(
            "beatq_task_runtime_seconds", "How long tasks ran (success or failure).", ["name"],
            buckets=RUNTIME_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.dispatched = prom.Counter(
            "beatq_beat_dispatched", "Runs sent by this beat.", ["entry"], registry=self.registry
        )
        self.lateness = prom.Histogram(
            "beatq_beat_dispatch_lateness_seconds", "Send time minus the run's scheduled slot.",
            ["entry"], buckets=LATENESS_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.missed = prom.Counter(
            "beatq_beat_missed_runs", "Runs given up by catch-up after downtime.", ["entry"],
            registry=self.registry,
        )  # fmt: skip
        self.leader = prom.Gauge(
            "beatq_beat_leader", "1 while this beat holds the leader lease.",
            registry=self.registry,
        )  # fmt: skip

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics on host:port (0: any free port); the port it listens on."""
        try:
            self.server, _ = self.prom.start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise ConfigurationError(
                f"--metrics-port {port}: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        return int(self.server.server_port)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- worker ----------------------------------------------------------------------------
    def task_done(self, name: str, state: str, runtime: float | None) -> None:
        self.tasks.labels(name, state).inc()
        if runtime is not None and state in ("SUCCESS", "FAILURE"):
            self.runtime.labels(name).observe(runtime)

    def watch_worker(
        self,
        app: Beatq,
        queues: list[str],
        active: Callable[[], int],
        reserved: Callable[[], int],
        autoscale: Callable[[], dict[str, Any] | None] = lambda: None,
    ) -> None:
        """Report the queues' depths and the worker's load, read at each scrape; with
        --autoscale, its child processes and decisions."""
        collector = _WorkerCollector(self.prom, app, queues, active, reserved, autoscale)
        self.registry.register(collector)

    # -- beat ------------------------------------------------------------------------------
    def beat_dispatched(self, entry: str, lateness: float) -> None:
        self.dispatched.labels(entry).inc()
        self.lateness.labels(entry).observe(max(lateness, 0.0))

    def beat_missed(self, entry: str, count: int) -> None:
        self.missed.labels(entry).inc(count)

    def beat_leading(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    def watch_lease(self, app: Beatq, lease_name: str) -> None:
        """Report the leader lease's age and time left, read from the broker at each scrape."""
        self.registry.register(_LeaseCollector(self.prom, app, lease_name))


class _WorkerCollector:
    def __init__(
        self,
        prom: Any,
        app: Beatq,
        queues: list[str],
        active: Callable[[], int],
        reserved: Callable[[], int],
        autoscale: Callable[[], dict[str, Any] | None] = lambda: None,
    ) -> None:
        self.prom, self.app, self.queues = prom, app, queues
        self.active, self.reserved, self.autoscale = active, reserved, autoscale

    def describe(self) -> list[Any]:
        return []  # collected at scrape time only

    def collect(self) -> Iterator[Any]:
        gauge = self.prom.metrics_core.GaugeMetricFamily
        depth = gauge("beatq_queue_depth", "Ready messages in the queue.", labels=["queue"])
        try:
            for queue in self.queues:
                depth.add_metric([queue], self.app.broker.queue_length(queue))
        except Exception:  # a broker down: the scrape still answers with the rest
            pass
        yield depth
        yield gauge("beatq_worker_active_tasks", "Tasks running now.", value=self.active())
        yield gauge(
            "beatq_worker_reserved_tasks", "Tasks claimed, waiting for a slot.",
            value=self.reserved(),
        )  # fmt: skip
        scaling = self.autoscale()
        if scaling is not None:
            yield gauge(
                "beatq_worker_pool_processes", "Prefork child processes now (--autoscale).",
                value=scaling["processes"],
            )  # fmt: skip
            decisions = self.prom.metrics_core.CounterMetricFamily(
                "beatq_worker_autoscale_decisions",
                "Children started (grow) and retired (shrink) by --autoscale.",
                labels=["direction"],
            )
            decisions.add_metric(["grow"], scaling["grown"])
            decisions.add_metric(["shrink"], scaling["shrunk"])
            yield decisions


class _LeaseCollector:
    def __init__(self, prom: Any, app: Beatq, lease_name: str) -> None:
        self.prom, self.app, self.lease_name = prom, app, lease_name

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        gauge = self.prom.metrics_core.GaugeMetricFamily
        try:
            lease = self.app.broker.get_lease(self.lease_name)
        except Exception:
            return
        age = time.time() - lease.since if lease is not None and lease.since else 0.0
        yield gauge("beatq_beat_lease_age_seconds", "How long the leader has led.", value=age)
        yield gauge(
            "beatq_beat_lease_remaining_seconds", "Time left on the leader's lease.",
            value=lease.remaining if lease is not None else 0.0,
        )  # fmt: skip
