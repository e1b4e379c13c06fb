"""``agentic-obs mcp``: the MCP tools over stdio, as a bridge to a running service's ``/mcp``.

Why a bridge and not a second server in the agent's process: the embedded incident memory (Qdrant
Edge) opens in one process only, the running service's; and feedback must reach that service, whose
outbox re-remembers it. So this process serves stdio with the SDK's low-level server and forwards
every listing, call and read with the SDK's client over streamable HTTP, bearer token and all.
Answers pass through unchanged, tool errors included; a service that cannot be reached is a clear
error, at startup on stderr and later in the answer to the call that found it gone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx2
import mcp_types as types
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from agentic_observability import __version__
from agentic_observability.config import Config
from agentic_observability.errors import AgenticObsError

log = logging.getLogger(__name__)
T = TypeVar("T")
MCP_PATH = "/mcp"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0  # a root-cause ranking over many signals can take a while


class ServiceUnreachableError(AgenticObsError):
    """The running service's /mcp could not be reached (or refused the token)."""


def service_url(config: Config, url: str | None) -> str:
    """The service's /mcp: ``url`` (its base, or /mcp itself), else server.public_url, else loopback."""
    base = url or (str(config.file.server.public_url) if config.file.server.public_url else None)
    base = base or f"http://127.0.0.1:{config.file.server.port}"
    base = base.rstrip("/")
    return base if urlsplit(base).path.endswith(MCP_PATH) else base + MCP_PATH


class Bridge:
    """Forwards one stdio MCP connection's requests to the service, each over a connection of its
    own (the service is stateless, so nothing is lost): one that fails, because the service restarted
    or went away, fails only its own request, named, and the next one connects afresh."""

    def __init__(self, http: httpx2.AsyncClient, url: str) -> None:
        self.http, self.url = http, url

    def server(self) -> Server[Any]:
        return Server(
            "agentic-observability",
            version=__version__,
            instructions=f"A bridge to the agentic-observability service at {self.url}.",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
        )

    def client(self) -> Client:
        # cache=None: every listing reaches the service (a restarted one may list other tools)
        transport = streamable_http_client(self.url, http_client=self.http)
        return Client(transport, cache=None, mode="legacy", read_timeout_seconds=READ_TIMEOUT)

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        cursor = params.cursor if params else None
        return await self._forward("tools/list", lambda c: c.list_tools(cursor=cursor))

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments = params.arguments or {}
        return await self._forward(f"tools/call {params.name}", lambda c: c.call_tool(params.name, arguments))

    async def list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        cursor = params.cursor if params else None
        return await self._forward("resources/list", lambda c: c.list_resources(cursor=cursor))

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        cursor = params.cursor if params else None
        return await self._forward(
            "resources/templates/list", lambda c: c.list_resource_templates(cursor=cursor)
        )

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        return await self._forward(f"resources/read {uri}", lambda c: c.read_resource(uri))

    async def _forward(self, what: str, call: Callable[[Client], Awaitable[T]]) -> T:
        """The service's answer; its protocol errors pass through, a transport failure is named."""
        try:
            async with self.client() as client:
                return await call(client)
        except Exception as exc:
            cause = _innermost(exc)
            if isinstance(cause, MCPError):
                raise cause from None
            log.warning("%s: the service at %s failed: %s", what, self.url, _describe(cause))
            detail = (
                f"the agentic-observability service at {self.url} could not answer {what}: {_describe(cause)}"
            )
            raise MCPError(code=types.INTERNAL_ERROR, message=detail) from None


async def serve_stdio(url: str, token: str | None) -> None:
    """Check the service answers (or raise ServiceUnreachableError), then serve stdio until it closes."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx2.Timeout(CONNECT_TIMEOUT, read=READ_TIMEOUT)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        await _preflight(http, url, bool(token))
        bridge = Bridge(http, url)
        try:
            async with bridge.client() as client:  # an MCP server there, not just any HTTP server
                await client.list_tools()
        except Exception as exc:
            raise ServiceUnreachableError(f"{_unreachable(url)}: {_describe(_innermost(exc))}") from None
        server = bridge.server()
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())


async def _preflight(http: httpx2.AsyncClient, url: str, with_token: bool) -> None:
    """Whether the service answers there and takes the token, told plainly (the MCP client would
    only say "Server returned an error response"). A GET is enough: any answer but 401/403 will do."""
    try:  # streamed, and closed unread: a server that opens an event stream on GET must not hold us
        async with http.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
            status = response.status_code
    except httpx2.HTTPError as exc:
        raise ServiceUnreachableError(f"{_unreachable(url)}: {_describe(exc)}") from None
    if status in (401, 403):
        hint = "check the token" if with_token else "set AGENTIC_OBS_WEBHOOK_TOKEN to the service's token"
        raise ServiceUnreachableError(f"the service at {url} refused the credentials ({hint})")


def _unreachable(url: str) -> str:
    return f"cannot reach the agentic-observability service at {url} (is `agentic-obs serve` running? --url)"


def _innermost(exc: BaseException) -> BaseException:
    """The first real cause inside the task-group wrappers anyio raises."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
