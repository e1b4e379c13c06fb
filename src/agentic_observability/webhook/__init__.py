"""The aiohttp service: the composition root. ``init_app()`` wires config, store, adapters and workers."""

from agentic_observability.webhook.app import init_app

__all__ = ["init_app"]
