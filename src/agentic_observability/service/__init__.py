"""The aiohttp service: the composition root. ``init_app()`` wires config, store, adapters and workers."""

from agentic_observability.service.app import init_app

__all__ = ["init_app"]
