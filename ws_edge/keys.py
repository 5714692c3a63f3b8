"""The app's typed state keys, in one module so handlers and the app factory share them."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from nats.aio.client import Client as NATS

from ctxmeter.connection import NatsConnection
from ctxmeter.settings import Settings
from ws_edge.hub import Hub
from ws_edge.metrics import EdgeMetrics
from ws_edge.overview import Overview
from ws_edge.rpc import FunctionsClient
from ws_edge.security import ConnectionGate, IpRateLimiter

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", EdgeMetrics)
GATE = web.AppKey("gate", ConnectionGate)
# The per-IP rate of requests that change state (POST).
WRITES = web.AppKey("writes", IpRateLimiter)
CONNECTION = web.AppKey("connection", NatsConnection)
NC = web.AppKey("nc", NATS)
HUB = web.AppKey("hub", Hub)
OVERVIEW = web.AppKey("overview", Overview)
FUNCTIONS = web.AppKey("functions", FunctionsClient)
# The attribute names OpenTelemetry ingest reads (the mapping rules' and the session attributes setting's).
OTLP_WANTED = web.AppKey("otlp_wanted", frozenset[str])
# Another part's metrics, rendered in the Prometheus text format.
MetricsSource = Callable[[], bytes]
MORE_METRICS = web.AppKey("more_metrics", tuple[MetricsSource, ...])
