"""A reference point for ``context.add``: the least a Python NATS function can do per update.

One nats-py subscription; per request a task that does one plain ``kv.put`` and replies. No
validation, no compare-and-set, no event. Run by bench_functions in its own process:
``python -m bench.bare_handler NATS_URL BUCKET``; it prints ``ready`` once subscribed.
"""

from __future__ import annotations

import asyncio
import sys

import nats
import uvloop
from nats.aio.msg import Msg

SUBJECT_PREFIX = "bench.bare"
REPLY = b'{"ok":true}'


async def serve(url: str, bucket: str) -> None:
    nc = await nats.connect(url)
    kv = await nc.jetstream().key_value(bucket)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(msg: Msg) -> None:
        await kv.put("context." + msg.subject.rsplit(".", 1)[-1], msg.data)
        await nc.publish(msg.reply, REPLY)

    async def dispatch(msg: Msg) -> None:
        task = asyncio.create_task(handle(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await nc.subscribe(f"{SUBJECT_PREFIX}.*", cb=dispatch)
    await nc.flush()
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1], sys.argv[2]))
