"""The one place that reaches into nats.py's micro service: stats of requests answered from a task, the
reply subject of a request, and discovery answers sent only to reply subjects the functions accept.

nats.py's micro ``Endpoint`` counts a request's time and error only around its handler callback. The
functions answer each request in a task of its own (so a 4 MiB count does not hold up small requests),
so the callback returns at once and would report every request as instant and successful. There is no
public hook for this; ``EndpointStats`` below writes the endpoint's private counters that
``$SRV.STATS`` reports. ``tests/functions/test_discovery.py`` fails loudly if a nats-py upgrade renames
them, and pyproject pins nats-py to the versions checked.

The service's own discovery handlers ($SRV.PING, INFO, STATS) answer whatever reply subject a request
names, and have no hook either: ``GuardedService`` overrides them to ask first.
``tests/functions/test_replies.py`` fails if a nats-py upgrade stops calling them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.micro.request import Request
from nats.micro.service import Service, ServiceConfig

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


def reply_subject(request: Request) -> str:
    """The request's reply subject, empty for a plain publish (which gets no reply). nats.py's micro
    ``Request`` keeps its message private; its ``respond`` reads the same field."""
    return request._msg.reply


def expects_reply(request: Request) -> bool:
    """Whether the request has a reply subject (a plain publish has none, and no reply is built for it)."""
    return bool(reply_subject(request))


# The discovery handlers of nats.micro.service.Service that GuardedService wraps; it subscribes them by
# these names in ``start``.
_DISCOVERY_HANDLERS = ("_handle_ping_request", "_handle_info_request", "_handle_stats_request")
DISCOVERY_LABEL = "$SRV"

# Asked before answering: may a reply go to this subject (the endpoint's label for counting)?
ReplyCheck = Callable[[str, str], bool]


class GuardedService(Service):
    """A micro service whose discovery handlers answer only when ``may_reply(reply, "$SRV")`` says so;
    a discovery request published without a reply subject is dropped (nats.py would raise)."""

    def __init__(self, client: NATS, config: ServiceConfig, may_reply: ReplyCheck) -> None:
        missing = [name for name in _DISCOVERY_HANDLERS if not callable(getattr(Service, name, None))]
        if missing:
            raise RuntimeError(f"nats.micro Service lacks {missing}: this nats-py is not supported")
        super().__init__(client, config)
        self._may_reply = may_reply

    def _answers(self, msg: Msg) -> bool:
        return bool(msg.reply) and self._may_reply(msg.reply, DISCOVERY_LABEL)

    async def _handle_ping_request(self, msg: Msg) -> None:
        if self._answers(msg):
            await super()._handle_ping_request(msg)

    async def _handle_info_request(self, msg: Msg) -> None:
        if self._answers(msg):
            await super()._handle_info_request(msg)

    async def _handle_stats_request(self, msg: Msg) -> None:
        if self._answers(msg):
            await super()._handle_stats_request(msg)
