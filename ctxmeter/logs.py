"""Logs: readable lines on a terminal, JSON lines for machines, carrying the subject and session id.

``CTXMETER_LOG_FORMAT`` picks one (``text``, ``json``); ``auto`` (the default) writes text when
standard error is a terminal and JSON lines otherwise (a supervisor, a container, a file).

What a client can make happen often must not make the log grow with it: each kind of line (its logger
and message template, or the ``kind`` a caller names) is written at most ``LOG_BURST`` times per
``LOG_INTERVAL_S``; the lines held back are counted (``suppressed_counts``, a metric of each part) and
the next line of that kind says how many. And no token reaches a log: whatever is written, a
``token=`` (a browser's ``?token=``, say, quoted in an error about its request) is replaced with ``***``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, TextIO

from ctxmeter.limits import LOG_BURST, LOG_INTERVAL_S, LOG_KIND_CHARS, MAX_LOG_KINDS

# Fields callers pass through ``extra=`` that belong in the structured record; ``suppressed`` is set here.
CONTEXT_FIELDS: Final = ("subject", "session_id", "code", "path", "peer", "url", "suppressed")

LogFormat = Literal["auto", "text", "json"]

# A token's value in a query string or anything quoting one, percent-encoded or not (``access_token=``
# too): up to the next separator, quote or space. Replaced with ``REDACTED``.
_TOKEN: Final = re.compile(r"(token(?:=|%3d))[^\s&;#\"'\\<>]*", re.IGNORECASE)
REDACTED: Final = "***"


def redact(text: str) -> str:
    """``text`` with the value of every ``token=`` replaced."""
    if "oken" not in text and "OKEN" not in text:
        return text
    return _TOKEN.sub(rf"\1{REDACTED}", text)


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
        return redact(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    """``12:03:04 WARNING functions.service  request rejected: ... (session_id=abc code=invalid_json)``."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{clock} {record.levelname:<7} {record.name:<18} {record.getMessage()}"
        if context := _context(record):
            line += " (" + " ".join(f"{name}={value}" for name, value in context.items()) + ")"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


# -- rate limiting ------------------------------------------------------------------------------

# Lines held back since the process started, by logger: read by each part's metrics when scraped.
_suppressed: Counter[str] = Counter()
_suppressed_lock = threading.Lock()
# Where kinds beyond MAX_LOG_KINDS are counted together.
OTHER_KINDS: Final = "(other kinds)"


def suppressed_counts() -> dict[str, int]:
    """Log lines held back by the rate limit so far in this process, by logger name."""
    with _suppressed_lock:
        return dict(_suppressed)


@dataclass
class _Window:
    ends: float
    written: int = 0
    held_back: int = 0


class RateLimit(logging.Filter):
    """At most ``burst`` lines of each kind per ``interval``; the first line of a kind after some were
    held back carries ``suppressed`` (how many). A line's kind is the ``kind`` its caller gave in
    ``extra``, else its logger, level and message template (never the arguments: those vary per line)."""

    def __init__(
        self, burst: int = LOG_BURST, interval: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._burst = burst
        self._interval = interval
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def _kind(self, record: logging.LogRecord) -> str:
        named = getattr(record, "kind", None)
        kind = str(named) if named is not None else f"{record.name}|{record.levelno}|{record.msg}"
        return kind[:LOG_KIND_CHARS]

    def filter(self, record: logging.LogRecord) -> bool:
        kind = self._kind(record)
        with self._lock:
            now = self._clock()
            window = self._windows.get(kind)
            if window is None:
                if len(self._windows) >= MAX_LOG_KINDS:
                    self._forget_ended(now)
                if len(self._windows) >= MAX_LOG_KINDS:
                    kind = OTHER_KINDS
                    window = self._windows.get(kind)
                if window is None:
                    window = self._windows[kind] = _Window(ends=now + self._interval)
            if now >= window.ends:
                if window.held_back:
                    record.suppressed = window.held_back
                window.ends, window.written, window.held_back = now + self._interval, 0, 0
            if window.written < self._burst:
                window.written += 1
                return True
            window.held_back += 1
        with _suppressed_lock:
            _suppressed[record.name] += 1
        return False

    def _forget_ended(self, now: float) -> None:
        # A kind whose window ended with nothing held back has nothing left to report.
        for kind in [kind for kind, window in self._windows.items() if now >= window.ends and not window.held_back]:
            del self._windows[kind]


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


def handler(log_format: LogFormat = "auto", stream: TextIO | None = None) -> logging.Handler:
    """The handler ctxmeter logs through: rate-limited per kind, tokens redacted, text or JSON."""
    out = stream if stream is not None else sys.stderr
    made = logging.StreamHandler(out)
    as_text = log_format == "text" or (log_format == "auto" and out.isatty())
    made.setFormatter(TextFormatter() if as_text else JsonFormatter())
    made.addFilter(RateLimit())
    return made


def configure(level: str = "INFO", log_format: LogFormat = "auto") -> None:
    root = logging.getLogger()
    root.handlers[:] = [handler(log_format)]
    root.setLevel(level)
