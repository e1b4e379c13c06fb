"""``/mcp``: the MCP tools over streamable HTTP, on the service's own aiohttp server and bearer auth.

The SDK's streamable HTTP transport is an ASGI application (its session manager). Rather than run a
second server, each aiohttp request is handed to it as one ASGI call (``call_asgi``). The manager
runs stateless with JSON responses: every POST carries a whole JSON-RPC exchange and gets one JSON
answer, so no session lives between requests (replicas behind a load balancer need no affinity) and
no response streams (the answers are bounded anyway). Without sessions there is no server-to-client
stream: only POST is routed, and GET (or DELETE) answers 405, as the specification allows.

The manager needs an anyio task group for its whole life; it runs in a task of its own, so the
group is entered and left in one task whichever tasks start and stop the app.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from aiohttp import web
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from multidict import CIMultiDict

from agentic_observability.service.keys import CONFIG
from agentic_observability.service.mcp import IncidentServer
from agentic_observability.service.responses import error_response
from agentic_observability.service.routes.webhook import read_body

MCP_PATH = "/mcp"
SESSION_MANAGER = web.AppKey("mcp_session_manager", StreamableHTTPSessionManager)
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection"})

routes = web.RouteTableDef()


@routes.post(MCP_PATH)
async def mcp_endpoint(request: web.Request) -> web.Response:
    """One MCP JSON-RPC exchange (the auth middleware has checked the bearer token)."""
    body = await read_body(request)  # 408 if it stalls; 413 past server.max_body_bytes
    return await call_asgi(request.app[SESSION_MANAGER].handle_request, request, body)


async def mcp_ctx(app: web.Application) -> AsyncIterator[None]:
    """The MCP server and its session manager, alive while the app is; stopped first on shutdown."""
    server = IncidentServer(app)
    # A discarded Starlette app is how the SDK hands out a configured manager (MCPServer.session_manager).
    server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        max_request_body_size=app[CONFIG].file.server.max_body_bytes,
        # Host/Origin checks guard a server without credentials against DNS rebinding; /mcp needs the
        # bearer token (when server.auth is on), and the service answers whatever Host it is given.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with manager.run():
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold(), name="mcp-session-manager")
    ready = asyncio.create_task(started.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        ready.cancel()
        await task  # it ended before starting: raise what stopped it
    app[SESSION_MANAGER] = manager
    yield
    stop.set()
    await task


async def call_asgi(asgi: Any, request: web.Request, body: bytes) -> web.Response:
    """Run one ASGI HTTP call for ``request`` (its body already read) and answer what it sent."""
    done = asyncio.Event()
    delivered = False
    start: MutableMapping[str, Any] = {"status": 500, "headers": []}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # after the body, the next event is the end of the exchange
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    try:
        await asgi(_scope(request), receive, send)
    finally:
        done.set()
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in start["headers"]:
        if name.decode("latin-1").lower() not in _HOP_BY_HOP:
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
    status, body = int(start["status"]), b"".join(chunks)
    if status >= 400 and not headers.get("Content-Type", "").startswith("application/json"):
        # The SDK answers some refusals (a missing Accept header, say) in plain text: every error of
        # this API has one JSON shape, the SDK's text kept as its detail.
        return error_response(status, "mcp request refused", body.decode(errors="replace")[:500])
    return web.Response(status=status, body=body, headers=headers)


def _scope(request: web.Request) -> dict[str, Any]:
    transport = request.transport
    server = transport.get_extra_info("sockname") if transport else None
    client = transport.get_extra_info("peername") if transport else None
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode(),
        "root_path": "",
        "query_string": request.query_string.encode(),
        "headers": [(name.lower(), value) for name, value in request.raw_headers],
        "server": tuple(server[:2]) if isinstance(server, tuple) else None,
        "client": tuple(client[:2]) if isinstance(client, tuple) else None,
    }
