"""The baseline server of ``bench/local.py``: a bare Starlette endpoint, served by uvicorn
with the options ``runs-fleet serve`` gives it (no lifespan, no access log, no server
header, asyncio loop, the same HTTP implementation).

``POST /webhook`` reads the whole body and answers 202 with no body; ``GET /ready``
answers 200. Usage: ``python bench/bare_server.py HOST:PORT``; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import socket
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def webhook(request: Request) -> Response:
    await request.body()
    return Response(status_code=202)


async def ready(request: Request) -> Response:
    return Response(status_code=200)


def main() -> None:
    host, _, port = sys.argv[1].rpartition(":")
    app = Starlette(
        routes=[
            Route("/webhook", webhook, methods=["POST"]),
            Route("/ready", ready, methods=["GET"]),
        ]
    )
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, server_header=False
    )
    sock = socket.create_server((host, int(port)))
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


if __name__ == "__main__":
    main()
