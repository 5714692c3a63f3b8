"""The edge fixtures (a real edge in front of the in-process functions on real NATS), for OTLP tests."""

from tests.edge.conftest import edge, http, make_edge

__all__ = ["edge", "http", "make_edge"]
