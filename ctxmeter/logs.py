"""Logs: readable lines on a terminal, JSON lines for machines, carrying the subject and session id.

``CTXMETER_LOG_FORMAT`` picks one (``text``, ``json``); ``auto`` (the default) writes text when
standard error is a terminal and JSON lines otherwise (a supervisor, a container, a file).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Final, Literal

from ctxmeter.limits import LOG_INTERVAL_S

# Fields callers pass through ``extra=`` that belong in the structured record.
CONTEXT_FIELDS: Final = ("subject", "session_id", "code", "path", "peer", "url")

LogFormat = Literal["auto", "text", "json"]


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {name: value for name in CONTEXT_FIELDS if (value := getattr(record, name, None)) is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``12:03:04 WARNING functions.service  request rejected: ... (session_id=abc code=invalid_json)``."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{clock} {record.levelname:<7} {record.name:<18} {record.getMessage()}"
        if context := _context(record):
            line += " (" + " ".join(f"{name}={value}" for name, value in context.items()) + ")"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class Occasional:
    """One kind of event that may come in floods: logged when it first happens, then at most once per
    ``interval``, each line saying how many happened since the one before (the exact count is a metric)."""

    def __init__(self, logger: logging.Logger, level: int, interval: float = LOG_INTERVAL_S) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._unlogged = 0
        self._next_line_at = 0.0

    def happened(self, message: str, *args: object, extra: Mapping[str, object] | None = None) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now < self._next_line_at:
            return
        self._next_line_at = now + self._interval
        count, self._unlogged = self._unlogged, 0
        self._logger.log(self._level, f"{message} (%d since the last such line)", *args, count, extra=extra)


def configure(level: str = "INFO", log_format: LogFormat = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    as_text = log_format == "text" or (log_format == "auto" and sys.stderr.isatty())
    handler.setFormatter(TextFormatter() if as_text else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
