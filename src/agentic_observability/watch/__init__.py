"""PromQL watches: the poller that queries and scores each series (``poller.py``) and the episode
tracker that turns scores into incident episodes (``episodes.py``)."""

from agentic_observability.watch.poller import WatchPoller

__all__ = ["WatchPoller"]
