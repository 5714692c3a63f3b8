"""``ctxmeter``: run the whole thing (``up``), one part, count locally, or export the schemas."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ctxmeter import logs
from ctxmeter.bucket import StoreUnavailable
from ctxmeter.connection import NatsConnectError
from ctxmeter.natsserver import NatsServerError
from ctxmeter.settings import Settings
from functions.registry import ModelsFileError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Flags every part that connects to NATS takes, each also a CTXMETER_<NAME> variable.
NATS_FLAGS = ("nats_url", "nats_creds", "nats_nkey", "nats_token", "nats_tls_ca", "nats_tls_cert", "nats_tls_key")
# Flags of the edge (``ctxmeter edge`` and ``ctxmeter up``).
EDGE_FLAGS = ("host", "port", "otlp_port", "tls_cert", "tls_key")
# The functions' service connection (requests in, replies out) as a NATS user of its own.
SERVICE_FLAGS = ("nats_service_url", "nats_service_creds", "nats_service_nkey")


def _settings(args: argparse.Namespace, *names: str) -> Settings:
    """Settings from CTXMETER_* variables, overridden by the flags the user gave; logs set up from them."""
    overrides = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    settings = Settings(**overrides)
    logs.configure(args.log_level.upper(), settings.log_format)
    return settings


def _run(main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``main`` until SIGINT/SIGTERM sets its stop event; uvloop when available."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop
    except ImportError:
        asyncio.run(runner())
    else:
        uvloop.run(runner())
    return 0


# -- commands -------------------------------------------------------------------------------


def cmd_functions(args: argparse.Namespace) -> int:
    from functions.runner import run_functions

    settings = _settings(args, *NATS_FLAGS, *SERVICE_FLAGS, "metrics_port")
    return _run(lambda stop: run_functions(settings, stop))


def cmd_edge(args: argparse.Namespace) -> int:
    from ws_edge.app import run_edge

    settings = _settings(args, *NATS_FLAGS, *EDGE_FLAGS)
    return _run(lambda stop: run_edge(settings, stop))


def cmd_up(args: argparse.Namespace) -> int:
    from ctxmeter_cli.up import run_up

    settings = _settings(args, *NATS_FLAGS, *EDGE_FLAGS, "nats_port", "nats_monitor_port", "store")
    start_nats = args.nats_url is None and "CTXMETER_NATS_URL" not in os.environ
    return _run(lambda stop: run_up(settings, stop, start_nats=start_nats))


def cmd_count(args: argparse.Namespace) -> int:
    from functions.counting import count_text_now
    from functions.errors import CtxmeterError
    from functions.registry import ModelRegistry
    from schemas.models import Encoding

    text = args.text if args.text is not None else sys.stdin.read()
    try:
        registry = ModelRegistry.load(Settings().models_file)
        tokenizer = registry.resolve(args.model, Encoding(args.encoding) if args.encoding else None)
    except CtxmeterError as error:
        print(f"ctxmeter count: {error.message}", file=sys.stderr)
        return 2
    tokens = count_text_now(text, tokenizer.encoding)
    if args.json:
        from schemas.models import TokenCount

        reply = TokenCount(count=tokens, model=tokenizer.model, encoding=tokenizer.encoding, exact=tokenizer.exact)
        print(reply.model_dump_json())
    else:
        print(tokens)
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from schemas.export import ASYNCAPI_FILE, SCHEMA_DIR, write_asyncapi, write_schemas
    from schemas.typescript import write_typescript

    for path in write_schemas(Path(args.out) if args.out else SCHEMA_DIR):
        print(path)
    # The AsyncAPI document and the clients' TypeScript declarations go beside the JSON files by default;
    # with --out, only the AsyncAPI document, where --asyncapi says.
    asyncapi = Path(args.asyncapi) if args.asyncapi else None if args.out else ASYNCAPI_FILE
    if asyncapi is not None:
        print(write_asyncapi(asyncapi))
    if not args.out:
        for path in write_typescript():
            print(path)
    return 0


# -- parser ---------------------------------------------------------------------------------


def _add_nats_flags(parser: argparse.ArgumentParser, url_help: str = "NATS server URL(s), comma-separated") -> None:
    parser.add_argument("--nats-url", help=url_help)
    parser.add_argument("--nats-creds", type=Path, help="a NATS .creds file")
    parser.add_argument("--nats-nkey", type=Path, help="a file holding an nkey seed")
    parser.add_argument("--nats-token", help="a NATS token (prefer CTXMETER_NATS_TOKEN: flags show in ps)")
    parser.add_argument("--nats-tls-ca", type=Path, help="CA certificate(s) of the NATS servers")
    parser.add_argument("--nats-tls-cert", type=Path, help="client certificate for NATS mutual TLS")
    parser.add_argument("--nats-tls-key", type=Path, help="key of the client certificate")


def _add_edge_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="edge address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, help="edge HTTP/WebSocket port (8000)")
    parser.add_argument("--otlp-port", type=int, help="also serve OTLP/HTTP on this port (4318 by convention)")
    parser.add_argument(
        "--tls-cert", type=Path, help="certificate chain (PEM): serve HTTPS and wss:// (needs --tls-key)"
    )
    parser.add_argument("--tls-key", type=Path, help="private key (PEM) of --tls-cert")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctxmeter", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="embedded nats-server, the functions and the edge, in one process")
    _add_edge_flags(up)
    _add_nats_flags(up, url_help="use this NATS; start no embedded server")
    up.add_argument("--nats-port", type=int, help="embedded nats-server client port (4222)")
    up.add_argument("--nats-monitor-port", type=int, help="embedded nats-server monitoring port (8222; 0 = off)")
    up.add_argument("--store", type=Path, help="embedded JetStream store directory (./.ctxmeter)")
    up.set_defaults(func=cmd_up)

    functions = commands.add_parser("functions", help="run the NATS functions alone")
    _add_nats_flags(functions)
    functions.add_argument("--nats-service-url", help="URL(s) with user:password@ of the service connection's user")
    functions.add_argument("--nats-service-creds", type=Path, help="the service connection's .creds file")
    functions.add_argument("--nats-service-nkey", type=Path, help="the service connection's nkey seed file")
    functions.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (off by default)")
    functions.set_defaults(func=cmd_functions)

    edge = commands.add_parser("edge", help="run the WebSocket/HTTP edge alone")
    _add_nats_flags(edge)
    _add_edge_flags(edge)
    edge.set_defaults(func=cmd_edge)

    count = commands.add_parser("count", help="count tokens locally (no NATS needed)")
    count.add_argument("text", nargs="?", help="the text; read from stdin when omitted")
    count.add_argument("--model", help="model name, e.g. gpt-4o")
    count.add_argument("--encoding", choices=["o200k_base", "cl100k_base"], help="tiktoken encoding")
    count.add_argument("--json", action="store_true", help="print the TokenCount reply as JSON")
    count.set_defaults(func=cmd_count)

    schemas = commands.add_parser(
        "schemas", help="write the JSON Schema files, the AsyncAPI document and the TypeScript payload types"
    )
    schemas.add_argument("--out", help="directory of the JSON Schema files (schemas/json)")
    schemas.add_argument("--asyncapi", help="the AsyncAPI file (schemas/asyncapi.yaml; not written with --out alone)")
    schemas.set_defaults(func=cmd_schemas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level.upper())
    try:
        code: int = args.func(args)
    except ValidationError as invalid:
        print(f"ctxmeter: invalid setting: {invalid}", file=sys.stderr)
        return 2
    except (NatsServerError, NatsConnectError, StoreUnavailable, ModelsFileError, OSError) as failure:
        # A port already in use, a store that cannot be written: say so, without a traceback.
        print(f"ctxmeter: {failure}", file=sys.stderr)
        return 1
    return code


def entry() -> Any:
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())


if __name__ == "__main__":
    entry()
