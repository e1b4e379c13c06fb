"""Embedders: text features of an incident -> a unit vector.

The default, ``hashing``, needs no download and no network: weighted tokens of the alert (name,
labels, words of its title and summary) and of the evidence (the suspected cause and its strongest
signals) are hashed into a fixed number of signed buckets. Incidents that share the cause service and
the signal that moved land close together, which is what recall needs. ``huggingface:<model>`` uses
Hugging Face feature extraction instead (a sentence-embedding model behind the Inference API or TEI).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from agentic_observability.errors import ConfigError, UpstreamUnavailableError
from agentic_observability.models import PastIncident

_WORD = re.compile(r"[a-z0-9][a-z0-9_.-]{1,40}")
# Labels that identify a replica or a scrape target, not a kind of failure: they only add noise.
NOISY_LABELS = frozenset({"instance", "pod", "pod_name", "container_id", "uid", "job", "endpoint"})


class Embedder(Protocol):
    name: str
    dimension: int

    async def embed(self, incidents: Sequence[PastIncident]) -> list[list[float]]: ...


def incident_features(incident: PastIncident) -> list[tuple[str, float]]:
    """Weighted tokens describing an incident; the order of evidence matters, so weights fall off."""
    features: list[tuple[str, float]] = [(f"alertname={incident.alertname}", 2.0)]
    if incident.cause:
        features.append((f"cause={incident.cause}", 3.0))
    if incident.service:
        features.append((f"service={incident.service}", 1.0))
    for rank, signal in enumerate(incident.signals[:4]):
        weight = 2.5 / (rank + 1)
        what = signal.split("~", 1)[0]  # entity:signal{labels}, without the magnitude
        features.append((f"signal={signal}", weight))
        features.append((f"what={what}", weight / 2))
        features.append((f"kind={what.split(':', 1)[-1].split('{', 1)[0]}", weight / 4))
    for key, value in sorted(incident.labels.items()):
        if key not in NOISY_LABELS and key != "alertname":
            features.append((f"label:{key}={value}", 0.7))
    for word in set(_WORD.findall(f"{incident.title} {incident.summary}".lower())):
        features.append((f"word={word}", 0.3))
    return features


def incident_text(incident: PastIncident) -> str:
    """A plain-language rendering for text embedding models."""
    signals = ", ".join(incident.signals[:4]) or "none"
    labels = ", ".join(f"{k}={v}" for k, v in sorted(incident.labels.items()) if k not in NOISY_LABELS)
    return (
        f"Alert {incident.alertname} on {incident.service or 'unknown service'}. {incident.title}. "
        f"Cause: {incident.cause or 'unknown'}. Signals: {signals}. Labels: {labels}. {incident.summary}"
    )


def _bucket(token: str, dimension: int) -> tuple[int, float]:
    digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
    number = int.from_bytes(digest, "little")
    return number % dimension, (1.0 if (number >> 63) & 1 else -1.0)


def _normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm > 0 else vector


class HashingEmbedder:
    """Signed feature hashing of weighted tokens; deterministic across processes and machines."""

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension
        self.name = f"hashing-v1-{dimension}"

    def embed_features(self, features: Iterable[tuple[str, float]]) -> list[float]:
        vector = [0.0] * self.dimension
        for token, weight in features:
            index, sign = _bucket(token, self.dimension)
            vector[index] += sign * weight
        return _normalise(vector)

    async def embed(self, incidents: Sequence[PastIncident]) -> list[list[float]]:
        return [self.embed_features(incident_features(i)) for i in incidents]


class HuggingFaceEmbedder:
    """Feature extraction through huggingface-hub's AsyncInferenceClient (HF Inference, TEI, ...)."""

    def __init__(self, model: str, client: Any, dimension: int) -> None:
        self.name = f"huggingface:{model}"
        self.dimension = dimension
        self._model = model
        self._client = client

    async def embed(self, incidents: Sequence[PastIncident]) -> list[list[float]]:
        return await self.embed_texts([incident_text(i) for i in incidents])

    async def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        try:
            rows = [await self._client.feature_extraction(text, model=self._model) for text in texts]
        except Exception as exc:  # the client raises many types; all mean "no embedding now"
            raise UpstreamUnavailableError(f"feature extraction failed: {exc}") from exc
        return [_normalise([float(v) for v in _flatten(row)]) for row in rows]


def _flatten(row: Any) -> list[float]:
    values = row.tolist() if hasattr(row, "tolist") else row
    while values and isinstance(values[0], list):  # [1, dim] or [1, tokens, dim]: mean-pool tokens
        if len(values) == 1:
            values = values[0]
        else:
            values = [sum(column) / len(values) for column in zip(*values, strict=True)]
    return list(values)


async def make_embedder(spec: str, client_factory: Callable[[], Any] | None = None) -> Embedder:
    """``hashing`` / ``hashing:<dimension>`` or ``huggingface:<model>`` (probes the dimension once)."""
    kind, _, argument = spec.partition(":")
    if kind == "hashing":
        try:
            return HashingEmbedder(int(argument) if argument else 256)
        except ValueError as exc:
            raise ConfigError(f"memory.embedder: {spec!r}: the hashing dimension must be a number") from exc
    if kind == "huggingface" and argument and client_factory is not None:
        client = client_factory()
        probe = HuggingFaceEmbedder(argument, client, 0)
        dimension = len((await probe.embed_texts(["probe"]))[0])
        return HuggingFaceEmbedder(argument, client, dimension)
    raise ConfigError(
        f"memory.embedder: unknown embedder {spec!r}; use 'hashing', 'hashing:<dimension>' "
        "or 'huggingface:<model id>'"
    )
