"""The peer of the ingester in bench_ingest.py: aiohttp that only parses the JSON body.

It does what any webhook receiver must do at least (read the body, parse it,
check it is an object, answer), with no checks, no Kafka and no metrics: the
ceiling our ingester is measured against.
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvloop
from aiohttp import web


async def webhook(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return web.Response(status=400)
    if not isinstance(body, dict):
        return web.Response(status=400)
    return web.Response(body=b'{"status":"accepted"}', content_type="application/json")


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_post("/webhooks/whatsapp", webhook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(int(sys.argv[1])))
