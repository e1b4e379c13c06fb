"""Bearer-token or basic-auth check for the webhook, the incident API and the MCP endpoint.

Alertmanager sends either ``Authorization: Bearer <token>`` (http_config.authorization) or basic auth
(http_config.basic_auth); for basic auth the password must equal the token (any username). Both
comparisons are constant-time. The MCP endpoint (/mcp) needs the same credentials. Health, metrics
and the API description stay open for probes, as does everything else outside /api/ (/metrics, the
/docs page and its Swagger UI files under /docs/static).
An incident's chart also opens with the signature its links carry (``?sig=``, see
``outbox.messages.chart_signature``): PagerDuty fetches images without credentials.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from agentic_observability.outbox.messages import chart_signature
from agentic_observability.service.keys import TOKEN
from agentic_observability.service.responses import error_response

_CHART_PATH = re.compile(r"/api/v1/incidents/([^/]+)/chart\.png")
OPEN_PATHS = frozenset(
    {"/api/v1/health", "/api/v1/health/ready", "/metrics", "/api/v1/metrics", "/api/v1/openapi.json", "/docs"}
    | {"/api/v1/slack/interactions"}  # Slack cannot send the token: its signature is checked there instead
)


def credentials_valid(header: str, token: str) -> bool:
    scheme, _, value = header.partition(" ")
    try:
        # aiohttp keeps bytes that are not UTF-8 as surrogates; such a header is simply wrong (a 401),
        # and encoding it strictly would raise (a 500).
        presented = value.strip().encode()
    except UnicodeEncodeError:
        return False
    expected = token.encode()
    if scheme.lower() == "bearer":
        return hmac.compare_digest(presented, expected)
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(presented, validate=True)
        except (binascii.Error, ValueError):
            return False
        _, _, password = decoded.partition(b":")
        return hmac.compare_digest(password, expected)
    return False


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app.get(TOKEN)
    if token is None or request.path in OPEN_PATHS or not _secured(request.path):
        return await handler(request)
    if _signed_chart(request, token):
        return await handler(request)
    if not credentials_valid(request.headers.get("Authorization", ""), token):
        response = error_response(401, "unauthorized", "send 'Authorization: Bearer <token>' or basic auth")
        response.headers["WWW-Authenticate"] = 'Bearer realm="agentic-obs", Basic realm="agentic-obs"'
        return response
    return await handler(request)


def _secured(path: str) -> bool:
    return path.startswith("/api/") or path == "/mcp" or path.startswith("/mcp/")


def _signed_chart(request: web.Request, token: str) -> bool:
    """A GET of one incident's chart with the signature its links carry."""
    chart = _CHART_PATH.fullmatch(request.path)
    if chart is None or request.method not in ("GET", "HEAD"):
        return False
    presented = request.query.get("sig", "")
    expected = chart_signature(token, chart.group(1))
    return hmac.compare_digest(presented.encode(errors="replace"), expected.encode())
