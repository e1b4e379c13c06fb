"""Change events from Grafana annotations tagged as deploys (``changes.grafana_tag``, "deploy").

Read through the Grafana client the service already has (grafana-client's ``AsyncGrafanaApi``,
``annotations.find_annotations``) when ``actions.grafana.url`` is set. The entity is a tag
``service:<name>`` (or ``<entity_label>:<name>``, ``app:<name>``), else the first word of the text
("carts: v1.4.3 rolled out", "carts v1.4.3"). An annotation is one event, keyed by its id.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agentic_observability.models import Change

MAX_ANNOTATIONS = 1000  # per poll; a window with more is not a deploy history
SUMMARY_LIMIT = 300
_TAGS = re.compile(r"<[^>]*>")
_FIRST_WORD = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.-]*)")


class Annotations(Protocol):
    async def find_annotations(
        self,
        time_from: Any = None,
        time_to: Any = None,
        alert_id: Any = None,
        dashboard_id: Any = None,
        dashboard_uid: Any = None,
        panel_id: Any = None,
        user_id: Any = None,
        ann_type: Any = None,
        tags: Any = None,
        limit: Any = None,
    ) -> Any: ...


class GrafanaApi(Protocol):
    @property
    def annotations(self) -> Annotations: ...


def annotation_text(raw: object) -> str:
    """The annotation's text as one plain line (Grafana keeps it as HTML)."""
    plain = html.unescape(_TAGS.sub(" ", str(raw or "")))
    line = " ".join(plain.split())
    return line if len(line) <= SUMMARY_LIMIT else line[: SUMMARY_LIMIT - 1] + "…"


def annotation_entity(annotation: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """From a tag ``<key>:<name>`` (the first key that has one), else the text's first word."""
    tags = [str(t) for t in annotation.get("tags") or []]
    for key in keys:
        for tag in tags:
            name, _, value = tag.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    found = _FIRST_WORD.match(annotation_text(annotation.get("text")))
    return found[1] if found else None


class GrafanaDeploys:
    """Annotations tagged ``tag`` in a window, as change events."""

    name = "grafana"

    def __init__(self, api: GrafanaApi, tag: str, entity_label: str) -> None:
        self._api = api
        self._tag = tag
        self._keys = tuple(dict.fromkeys((entity_label, "service", "app")))

    async def changes(self, start: float, end: float) -> list[Change]:
        found = await self._api.annotations.find_annotations(
            time_from=int(start * 1000),
            time_to=int(end * 1000),
            ann_type="annotation",
            tags=[self._tag],
            limit=MAX_ANNOTATIONS,
        )
        changes = []
        for annotation in found if isinstance(found, list) else []:
            change = self._change(annotation)
            if change is not None:
                changes.append(change)
        return changes

    def _change(self, annotation: Mapping[str, Any]) -> Change | None:
        entity = annotation_entity(annotation, self._keys)
        when = annotation.get("time")
        if entity is None or not isinstance(when, int | float) or annotation.get("id") is None:
            return None
        summary = annotation_text(annotation.get("text")) or f"{self._tag} annotation"
        return Change(
            source="grafana",
            at=float(when) / 1000,
            entity=entity,
            kind="deploy",
            summary=summary,
            dedup_key=f"grafana:{annotation['id']}",
        )
