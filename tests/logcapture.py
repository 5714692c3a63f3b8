"""What ctxmeter's own log handler writes (rate limit, redaction, format included), for a test to read."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

from ctxmeter import logs


@contextlib.contextmanager
def written_log(log_format: logs.LogFormat = "json", level: int = logging.INFO) -> Iterator[io.StringIO]:
    """The text ``logs.handler`` writes while the block runs, as `ctxmeter` configures it for a process."""
    out = io.StringIO()
    handler = logs.handler(log_format, out)
    handler.setLevel(level)
    root = logging.getLogger()
    before = root.level
    root.addHandler(handler)
    root.setLevel(min(before, level) if before else level)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(before)
