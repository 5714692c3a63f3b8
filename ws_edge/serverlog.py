"""aiohttp's own lines about the requests it parses, made fit for ctxmeter's log.

aiohttp logs a request it cannot parse (a request line or header over 8 KiB, bad framing) as an ERROR
with a traceback quoting the first 100 bytes of the offending line, a ``?token=`` included. That is the
client's fault, not the edge's, and anyone can send such requests: each becomes one INFO line, its
reason cut short with any token removed (the log's rate limit then bounds a flood of them).
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp.http_exceptions import HttpProcessingError

from ctxmeter.limits import LOG_EXCERPT_CHARS
from ctxmeter.logs import redact
from schemas.excerpt import shorten

# The logger aiohttp's request handler writes to (aiohttp.log.server_logger).
SERVER_LOGGER: Final = "aiohttp.server"


class MalformedRequests(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and error.code < 500:
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "malformed request from %s: %s"
            record.args = (peer, shorten(redact(f"{error.code} {error.message}"), LOG_EXCERPT_CHARS))
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


def install() -> None:
    """Put the filter on aiohttp's server logger, once per process."""
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(one, MalformedRequests) for one in logger.filters):
        logger.addFilter(MalformedRequests())
