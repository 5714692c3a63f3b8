"""A NATS responder that answers each request with its length, and does nothing else.

``bench.count`` times a round trip of the same 100 KB request to it, interleaved with the function's
and tiktoken's: what the transport alone costs (client, nats-server, a responder reading the request and
replying), so the function's own time is what is left of its latency after tiktoken and that.

Run by ``bench.count``: ``python -m bench.echo NATS_URL SUBJECT``; prints ``ready`` once subscribed.
"""

from __future__ import annotations

import asyncio
import sys

import nats
import uvloop
from nats.aio.msg import Msg


async def serve(url: str, subject: str) -> None:
    nc = await nats.connect(url)

    async def answer(msg: Msg) -> None:
        await msg.respond(b'{"count":%d}' % len(msg.data))

    await nc.subscribe(subject, cb=answer)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1], sys.argv[2]))
