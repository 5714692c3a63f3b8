"""The one place that reaches into nats.py's micro endpoints: stats of requests answered from a task.

nats.py's micro ``Endpoint`` counts a request's time and error only around its handler callback. The
functions answer each request in a task of its own (so a 4 MiB count does not hold up small requests),
so the callback returns at once and would report every request as instant and successful. There is no
public hook for this; ``EndpointStats`` below writes the endpoint's private counters that
``$SRV.STATS`` reports. ``tests/functions/test_discovery.py`` fails loudly if a nats-py upgrade renames
them, and pyproject pins nats-py to the versions checked.
"""

from __future__ import annotations

import time
from typing import Any

from nats.micro.request import Request
from nats.micro.service import Service

# The private attributes of nats.micro.service.Endpoint written here.
_ENDPOINT_FIELDS = ("_num_requests", "_num_errors", "_last_error", "_processing_time", "_average_processing_time")


class EndpointStats:
    """Adds a request's processing time and outcome to its micro endpoint's stats."""

    def __init__(self, endpoint: Any) -> None:
        missing = [name for name in _ENDPOINT_FIELDS if not hasattr(endpoint, name)]
        if missing:
            raise RuntimeError(f"nats.micro Endpoint lacks {missing}: this nats-py is not supported")
        self._endpoint = endpoint

    @classmethod
    def of_last_endpoint(cls, service: Service) -> EndpointStats:
        """The stats of the endpoint most recently added to ``service``."""
        return cls(service._endpoints[-1])

    def record(self, started_ns: int, error: str | None) -> None:
        endpoint = self._endpoint
        endpoint._processing_time += time.perf_counter_ns() - started_ns
        endpoint._average_processing_time = int(endpoint._processing_time / max(1, endpoint._num_requests))
        if error is not None:
            endpoint._num_errors += 1
            endpoint._last_error = error


def expects_reply(request: Request) -> bool:
    """Whether the request has a reply subject (a plain publish has none, and no reply is built for it).
    nats.py's micro ``Request`` keeps its message private; its ``respond`` reads the same field."""
    return bool(request._msg.reply)
