"""Baseline (a) of ``bench_edge``: the least an aiohttp WebSocket relay can do.

No hub, no throttle, no NATS: one loop per session builds the same frames the publisher builds for
the edge, at the same rate, and sends each straight to that session's sockets (``await ws.send_str``
in a loop). A socket gets one frame on open, like the edge's current-state frame.

Run by ``bench_edge`` as ``python -m bench.raw_ws_server --port P --tag T --sessions N --rate R``;
``POST /bench/start`` starts the session loops, ``POST /bench/stop`` stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
from typing import Final

from aiohttp import web

from bench.edge_load import FrameMaker, phase, session_ids

ROUTE: Final = "/api/ws/counters/{sid}"


class RawRelay:
    def __init__(self, sessions: list[str], rate: float) -> None:
        self.sessions = sessions
        self.rate = rate
        self.sockets: dict[str, set[web.WebSocketResponse]] = {sid: set() for sid in sessions}
        self.makers = {sid: FrameMaker(sid) for sid in sessions}
        self.tasks: list[asyncio.Task[None]] = []

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        sid = request.match_info["sid"]
        if sid not in self.sockets:
            raise web.HTTPNotFound()
        ws = web.WebSocketResponse(compress=False, heartbeat=30.0)
        await ws.prepare(request)
        peers = self.sockets[sid]
        peers.add(ws)
        try:
            await ws.send_str(self.makers[sid].current().decode())
            async for _ in ws:
                pass
        finally:
            peers.discard(ws)
        return ws

    async def session_loop(self, index: int) -> None:
        sid = self.sessions[index]
        maker, peers = self.makers[sid], self.sockets[sid]
        loop = asyncio.get_running_loop()
        period = 1.0 / self.rate
        due = loop.time() + phase(index, len(self.sessions), period)
        while True:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due += period
            text = maker.next().decode()
            for ws in list(peers):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(text)

    async def start(self, request: web.Request) -> web.Response:
        if not self.tasks:
            self.tasks = [asyncio.create_task(self.session_loop(i)) for i in range(len(self.sessions))]
        return web.json_response({"started": len(self.tasks)})

    async def stop(self, request: web.Request | None = None) -> web.Response:
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return web.json_response({"stopped": len(tasks)})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


async def on_shutdown(app: web.Application) -> None:
    relay: RawRelay = app[RELAY]
    await relay.stop()
    for peers in relay.sockets.values():
        for ws in list(peers):
            with contextlib.suppress(Exception):
                await ws.close()


RELAY: Final = web.AppKey("relay", RawRelay)


def create_app(sessions: list[str], rate: float) -> web.Application:
    relay = RawRelay(sessions, rate)
    app = web.Application()
    app[RELAY] = relay
    app.router.add_get(ROUTE, relay.websocket)
    app.router.add_post("/bench/start", relay.start)
    app.router.add_post("/bench/stop", relay.stop)
    app.router.add_get("/healthz", relay.healthz)
    app.on_shutdown.append(on_shutdown)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    app = create_app(session_ids(args.tag, args.sessions), args.rate)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
