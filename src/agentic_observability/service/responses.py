"""The service's one error shape: ``{"error", "detail", "field"?}``, for every route and middleware."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError


def error_response(status: int, error: str, detail: str, field: str | None = None) -> web.Response:
    body = {"error": error, "detail": detail, **({"field": field} if field is not None else {})}
    return web.json_response(body, status=status)


def invalid_body(exc: ValidationError, what: str) -> web.Response:
    """A 400 naming every field pydantic rejected, the first one as ``field``."""
    problems = [(".".join(str(p) for p in e["loc"]) or "(body)", e["msg"]) for e in exc.errors()]
    detail = "; ".join(f"{field}: {msg}" for field, msg in problems)
    return error_response(400, f"invalid {what}", detail, problems[0][0])
