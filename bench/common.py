"""Shared pieces of the benchmark scripts: a throwaway nats-server, percentiles, printing."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ctxmeter.natsserver import NatsServerProcess as NatsProcess


@contextlib.contextmanager
def nats_server() -> Iterator[NatsProcess]:
    with tempfile.TemporaryDirectory(prefix="ctxmeter-bench-") as store:
        server = NatsProcess(Path(store))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def functions_process(nats_url: str, bucket: str) -> Iterator[subprocess.Popen[bytes]]:
    """``ctxmeter functions`` in its own process, as deployed."""
    env = {"CTXMETER_KV_BUCKET": bucket, "PATH": str(Path(sys.executable).parent)}
    process = subprocess.Popen(
        [sys.executable, "-m", "ctxmeter_cli", "--log-level", "WARNING", "functions", "--nats-url", nats_url],
        env=env,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=20)


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary_ms(samples: Sequence[float]) -> str:
    return (
        f"p50 {percentile(samples, 0.5) * 1e3:8.2f} ms  p99 {percentile(samples, 0.99) * 1e3:8.2f} ms"
        f"  mean {statistics.fmean(samples) * 1e3:8.2f} ms"
    )


class Timer:
    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
