"""The functions' Prometheus metrics, in a registry of each runtime's own (two in one process stay apart)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from ctxmeter.metrics import LATENCY_BUCKETS, PartMetrics

PREFIX: Final = "ctxmeter_functions"


class FunctionsMetrics(PartMetrics):
    def __init__(self, *, report_logs: bool = True) -> None:
        super().__init__(PREFIX, report_logs=report_logs)
        reg = self.registry
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Requests handled, by endpoint and outcome (ok or the error code).",
            ["endpoint", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "Requests rejected, by error code; reply=none for plain publishes, which nobody hears about.",
            ["code", "reply"],
            registry=reg,
        )
        self.cas_retries = Counter(
            f"{PREFIX}_cas_retries",
            "Compare-and-set writes refused because another writer got there first (each is retried).",
            registry=reg,
        )
        self.conflicts = Counter(
            f"{PREFIX}_conflicts",
            "Changes given up as conflict after every compare-and-set attempt lost.",
            registry=reg,
        )
        self.keys_window_full = Counter(
            f"{PREFIX}_keys_window_full",
            "Keyed changes refused (conflict) because their session's idempotency window held the most keys "
            "applied within it: a session written with keys faster than the window can tell apart from retries.",
            registry=reg,
        )
        self.duplicates = Counter(
            f"{PREFIX}_duplicates",
            "Changes whose idempotency key was already applied (answered, not applied).",
            registry=reg,
        )
        self.replies_refused = Counter(
            f"{PREFIX}_replies_refused",
            "Requests refused unanswered because their reply subject is not an inbox (CTXMETER_INBOX_PREFIX), "
            "by endpoint ($SRV for discovery).",
            ["endpoint"],
            registry=reg,
        )
        self.events = Counter(f"{PREFIX}_events_published", "Events published on ctxmeter.events.<sid>.", registry=reg)
        self.store_bytes = Gauge(
            f"{PREFIX}_store_bytes",
            "Bytes the bucket (store=state) and the history stream (store=history) hold, read every 15 s.",
            ["store"],
            registry=reg,
        )
        self.store_max_bytes = Gauge(
            f"{PREFIX}_store_max_bytes",
            "Their limits (-1: none); the bucket refuses writes (store_full) once full, the history drops its oldest.",
            ["store"],
            registry=reg,
        )
        self.nats_reconnects = Counter(f"{PREFIX}_nats_reconnects", "Reconnections to NATS.", registry=reg)
        self.nats_disconnects = Counter(f"{PREFIX}_nats_disconnects", "Disconnections from NATS.", registry=reg)
        # Read when scraped, from the part's current connection (``follow``).
        self.nats_connected = Gauge(f"{PREFIX}_nats_connected", "1 while connected to NATS, else 0.", registry=reg)
