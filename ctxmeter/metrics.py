"""What the functions' and the edge's Prometheus metrics share: a registry of each part's own (two parts,
or two edges, in one process stay apart) and the latency buckets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ctxmeter.connection import NatsConnection
from ctxmeter.logs import suppressed_counts

# Seconds: state changes take about a millisecond and HTTP requests a few; a 4 MiB count about 100 ms;
# the tail shows a slow NATS or JetStream.
LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class SuppressedLogLines(Collector):
    """The process's log lines held back by the rate limit (``ctxmeter.logs``), by logger, when scraped."""

    def __init__(self, prefix: str) -> None:
        self._name = f"{prefix}_log_lines_suppressed"

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            self._name,
            "Log lines not written because their kind exceeded its rate (this process, by logger).",
            labels=["logger"],
        )
        for logger, count in sorted(suppressed_counts().items()):
            family.add_metric([logger], count)
        yield family


class PartMetrics:
    def __init__(self, prefix: str, *, report_logs: bool = True) -> None:
        """``report_logs``: this registry reports the process's suppressed log lines (one part per process
        does: ``ctxmeter up`` serves both parts' metrics on one page)."""
        self.registry = CollectorRegistry(auto_describe=True)
        if report_logs:
            self.registry.register(SuppressedLogLines(prefix))

    def follow(self, gauge: Gauge, *connections: NatsConnection) -> None:
        """``gauge`` reads 1 while every one of ``connections`` is connected (a part's newest after a restart)."""
        gauge.set_function(lambda: 1.0 if all(connection.connected for connection in connections) else 0.0)

    def render(self) -> bytes:
        """The Prometheus text exposition of this part's metrics."""
        return generate_latest(self.registry)
