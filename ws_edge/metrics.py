"""The edge's Prometheus metrics, in a registry of each app's own (two edges in one process stay apart)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from ctxmeter.metrics import LATENCY_BUCKETS, PartMetrics

PREFIX: Final = "ctxmeter_edge"


class EdgeMetrics(PartMetrics):
    def __init__(self) -> None:
        super().__init__(PREFIX)
        reg = self.registry
        self.connections = Gauge(f"{PREFIX}_connections", "Open WebSocket connections.", registry=reg)
        self.sessions = Gauge(
            f"{PREFIX}_sessions", "Sessions with local sockets (one NATS subscription each).", registry=reg
        )
        self.frames_sent = Counter(f"{PREFIX}_frames_sent", "Frames written to sockets.", registry=reg)
        self.frames_coalesced = Counter(
            f"{PREFIX}_frames_coalesced",
            "Frames replaced by a newer one before they were sent (per session or per slow socket).",
            registry=reg,
        )
        self.stale_dropped = Counter(
            f"{PREFIX}_stale_events_dropped", "Events older (by KV revision) than one already sent.", registry=reg
        )
        self.state_reused = Counter(
            f"{PREFIX}_states_reused",
            "New sockets sent their session's held state (a recent bucket read, and every event since) "
            "instead of reading the bucket.",
            registry=reg,
        )
        self.revisions_reset = Counter(
            f"{PREFIX}_revisions_reset",
            "Times the bucket was behind a session's held revision (a forged event, or a bucket made anew) "
            "and its state replaced what sockets held.",
            registry=reg,
        )
        self.bad_events = Counter(
            f"{PREFIX}_bad_events_dropped", "Messages on an events subject that are not a valid event.", registry=reg
        )
        self.slow_closed = Counter(
            f"{PREFIX}_slow_sockets_closed", "Sockets closed because a write stayed blocked too long.", registry=reg
        )
        self.policy_closed = Counter(
            f"{PREFIX}_sockets_closed_by_policy",
            "Sockets closed for a client's behaviour.",
            ["reason"],
            registry=reg,
        )
        self.rejected = Counter(
            f"{PREFIX}_upgrades_rejected", "WebSocket upgrades refused before upgrading.", ["reason"], registry=reg
        )
        self.nats_reconnects = Counter(f"{PREFIX}_nats_reconnects", "Reconnections to NATS.", registry=reg)
        self.nats_disconnects = Counter(f"{PREFIX}_nats_disconnects", "Disconnections from NATS.", registry=reg)
        # Read when scraped, from the part's current connection (``follow``).
        self.nats_connected = Gauge(f"{PREFIX}_nats_connected", "1 while connected to NATS, else 0.", registry=reg)
        self.http_latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "HTTP requests served, by route template.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.otlp_records = Counter(
            f"{PREFIX}_otlp_records",
            "OpenTelemetry records received (spans, log records, metric data points): accepted (applied, "
            "duplicate, stale, superseded by a newer one in the export, or moving no meter) or rejected, by reason.",
            ["signal", "outcome", "reason"],
            registry=reg,
        )
        self.nats_latency = Histogram(
            f"{PREFIX}_nats_request_duration_seconds",
            "NATS requests made to the functions.",
            ["operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
