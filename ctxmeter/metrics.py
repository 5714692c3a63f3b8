"""What the functions' and the edge's Prometheus metrics share: a registry of each part's own (two parts,
or two edges, in one process stay apart) and the latency buckets."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from ctxmeter.connection import NatsConnection

# Seconds: state changes take about a millisecond and HTTP requests a few; a 4 MiB count about 100 ms;
# the tail shows a slow NATS or JetStream.
LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class PartMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

    def follow(self, gauge: Gauge, *connections: NatsConnection) -> None:
        """``gauge`` reads 1 while every one of ``connections`` is connected (a part's newest after a restart)."""
        gauge.set_function(lambda: 1.0 if all(connection.connected for connection in connections) else 0.0)

    def render(self) -> bytes:
        """The Prometheus text exposition of this part's metrics."""
        return generate_latest(self.registry)
