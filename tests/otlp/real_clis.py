"""Running the real agent CLIs offline: Claude Code against the Anthropic stand-in, Codex against the OpenAI
Responses stand-in (``tests/otlp/standin.py``), both exporting OTLP to a given endpoint.

Also captures fixtures: ``python -m tests.otlp.real_clis claude|codex OUT_DIR [CLI ARGS...]`` runs the CLI
with the stand-in as both its provider and its OTLP endpoint, and writes each export to OUT_DIR."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from tests.otlp.standin import Script, StandIn

CLI_TIMEOUT_S: Final = 120.0
# Where the CLIs are: these variables, else PATH (they are large npm packages, not installed in CI).
CLAUDE_VARIABLE: Final = "CTXMETER_TEST_CLAUDE"
CODEX_VARIABLE: Final = "CTXMETER_TEST_CODEX"
CODEX_SESSION_LINE: Final = re.compile(r"session id: ([0-9a-f-]{36})")

CLAUDE_USAGE: Final = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 0,
    "output_tokens": 40,
}
CODEX_USAGE: Final = {
    "input_tokens": 1500,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 120,
    "output_tokens_details": {"reasoning_tokens": 64},
    "total_tokens": 1620,
}


def cli(variable: str, name: str) -> str | None:
    return os.environ.get(variable) or shutil.which(name)


@dataclass
class Ran:
    returncode: int
    out: str
    err: str


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def run(argv: list[str], env: dict[str, str], cwd: Path) -> Ran:
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(CLI_TIMEOUT_S):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def claude_env(home: Path, provider: str, otlp: str, protocol: str = "http/protobuf") -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": provider,
        "ANTHROPIC_API_KEY": "sk-ant-stand-in",
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
        "OTEL_LOGS_EXPORT_INTERVAL": "500",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }


def codex_home(home: Path, provider: str, otlp_logs: str, protocol: str = "binary") -> dict[str, str]:
    """A CODEX_HOME whose config sends the model's requests to the stand-in and its logs to ``otlp_logs``."""
    codex = home / ".codex"
    codex.mkdir(parents=True, exist_ok=True)
    (codex / "config.toml").write_text(
        f"""model = "gpt-5"
model_provider = "standin"

[model_providers.standin]
name = "Stand-in"
base_url = "{provider}/v1"
wire_api = "responses"
env_key = "STANDIN_API_KEY"

[otel]
environment = "test"
log_user_prompt = false
exporter = {{ otlp-http = {{ endpoint = "{otlp_logs}", protocol = "{protocol}" }} }}
"""
    )
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "CODEX_HOME": str(codex), "STANDIN_API_KEY": "sk"}


async def capture(which: str, out_dir: Path, args: list[str]) -> None:
    standin = StandIn(Script(anthropic=[CLAUDE_USAGE], openai=[CODEX_USAGE]))
    runner, url = await serve(standin.app)
    home = out_dir / "home"
    try:
        if which == "claude":
            binary = cli(CLAUDE_VARIABLE, "claude")
            ran = await run([str(binary), *(args or ["-p", "say hi"])], claude_env(home, url, url), home)
        else:
            binary = cli(CODEX_VARIABLE, "codex")
            env = codex_home(home, url, f"{url}/v1/logs")
            ran = await run([str(binary), *(args or ["exec", "--skip-git-repo-check", "say hi"])], env, home)
        print(ran.returncode, ran.out[-2000:], ran.err[-2000:])
        await asyncio.sleep(2)  # the last exports leave as the CLI exits
    finally:
        await runner.cleanup()
    for index, (signal, content_type, body) in enumerate(standin.exports):
        suffix = "json" if "json" in content_type else "pb"
        (out_dir / f"{which}-{index:02d}.{signal}.{suffix}").write_bytes(body)


if __name__ == "__main__":
    target = Path(sys.argv[2])
    (target / "home").mkdir(parents=True, exist_ok=True)
    asyncio.run(capture(sys.argv[1], target, sys.argv[3:]))
