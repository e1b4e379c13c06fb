"""Root-cause ranking (pure; no I/O)."""

from agentic_observability.investigation.rank import (
    Candidate,
    RankConfig,
    SignalEvidence,
    SignalSeries,
    rank_entities,
)

__all__ = ["Candidate", "RankConfig", "SignalEvidence", "SignalSeries", "rank_entities"]
