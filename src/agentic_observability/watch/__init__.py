"""PromQL watches: the poller that queries and scores each series (``poller.py``); the episode rules
it applies live in ``detectors/episodes.py``, shared with ``agentic-obs detect`` so that detect is a
faithful replay of a watch."""

from agentic_observability.watch.poller import WatchPoller

__all__ = ["WatchPoller"]
