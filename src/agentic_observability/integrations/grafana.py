"""Grafana through grafana-client's AsyncGrafanaApi: one annotation per incident (created once, then
PATCHed: always with its tags, since a PATCH with an empty tag list clears them), and dashboard
provisioning into a folder with stable uids.

Where grafana-client and Grafana need help:
- grafana-client appends ``api`` to the URL's path as given (``construct_api_url`` in
  grafana_client/client.py), so ``https://ex.com/grafana`` would call ``https://ex.com/grafanaapi``:
  a path gets its trailing slash here.
- grafana-client raises with the decoded body only (``GrafanaException.response``), never the HTTP
  answer, so a 429's or 503's ``Retry-After`` would be lost: the sink keeps the headers (see
  ``_keep_response_headers``) and the outbox retries no earlier than Grafana asked.
- A dashboard that Grafana provisions from files (or the Helm chart's sidecar) cannot be saved over
  the API: 400 "Cannot save provisioned dashboard" (``ErrDashboardCannotSaveProvisionedDashboard`` in
  Grafana's pkg/services/dashboards/errors.go). That answer means "already there", not a failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from grafana_client import AsyncGrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from agentic_observability.errors import DeliveryError
from agentic_observability.integrations.delivery import connection_failure, http_failure
from agentic_observability.integrations.resilience import Guard
from agentic_observability.models import OutboxItem

log = logging.getLogger(__name__)

FOLDER_UID = "agentic-obs"
PROVISIONED = "Cannot save provisioned dashboard"
# The crash-window search looks from a day before the incident (its onset, or when the action was
# queued, whichever is earlier) until now. Grafana matches annotations whose [time, timeEnd] overlaps
# [from, to] (``a.epoch <= to AND a.epoch_end >= from`` in its annotations store), so an annotation
# left by an older incident with the same tag, outside that window, is never patched.
SEARCH_BEFORE = 86_400.0
CLOCK_SKEW = 300.0


def api_url(url: str) -> str:
    """``url`` with a trailing slash on a non-empty path, the form grafana-client needs for a Grafana
    served under a sub-path (``https://ex.com/grafana`` -> ``https://ex.com/grafana/``)."""
    parts = urlsplit(url)
    if parts.path and not parts.path.endswith("/"):
        parts = parts._replace(path=parts.path + "/")
    return urlunsplit(parts)


class GrafanaSink:
    name = "grafana"

    def __init__(self, api: AsyncGrafanaApi, guard: Guard) -> None:
        self.api = api
        self.guard = guard
        _keep_response_headers(api.client)

    @classmethod
    def create(cls, url: str, token: str | None, timeout: float, guard: Guard) -> GrafanaSink:
        return cls(AsyncGrafanaApi.from_url(api_url(url), credential=token, timeout=timeout), guard)

    async def deliver(self, item: OutboxItem) -> str | None:
        return await self.guard.call(lambda: self._deliver(item))

    async def _deliver(self, item: OutboxItem) -> str | None:
        body = item.payload
        try:
            ref = item.ref or await self._find(body, item.created_at)
            if ref is None:
                created = await self.api.annotations.add_annotation(
                    dashboard_uid=body.get("dashboardUID"),
                    panel_id=body.get("panelId"),
                    time_from=body["time"],
                    time_to=body.get("timeEnd"),
                    tags=list(body["tags"]),
                    text=body["text"],
                )
                return str(created["id"])
            await self.api.annotations.partial_update_annotation(
                ref,
                time_from=body["time"],
                time_to=body.get("timeEnd"),
                tags=list(body["tags"]),
                text=body["text"],
            )
            return ref
        except GrafanaException as exc:
            raise _failure(exc) from exc
        except (TimeoutError, OSError) as exc:
            raise connection_failure(self.name, exc) from exc

    async def _find(self, body: Mapping[str, Any], queued_at: float) -> str | None:
        """An annotation created before a crash, before its id was recorded: reuse it, never duplicate.
        Searched by the incident's tag (which carries the install id) within the incident's time."""
        incident_tag = next(t for t in body["tags"] if t.startswith("incident:"))
        onset = float(body["time"]) / 1000
        found = await self.api.annotations.find_annotations(
            time_from=int((min(onset, queued_at) - SEARCH_BEFORE) * 1000),
            time_to=int((max(onset, time.time()) + CLOCK_SKEW) * 1000),
            ann_type="annotation",
            tags=[incident_tag],
            limit=1,
        )
        return str(found[0]["id"]) if found else None

    async def provision(self, folder_title: str, dashboards: Sequence[Mapping[str, Any]]) -> list[str]:
        """Create the folder if needed and save each dashboard by its uid, overwriting older versions.
        Returns the uids saved; one that Grafana provisions from files is left as it is (logged once)."""
        return await self.guard.call(lambda: self._provision(folder_title, dashboards))

    async def _provision(self, folder_title: str, dashboards: Sequence[Mapping[str, Any]]) -> list[str]:
        try:
            try:
                await self.api.folder.get_folder(FOLDER_UID)
            except GrafanaClientError as exc:
                if exc.status_code != 404:
                    raise
                await self.api.folder.create_folder(folder_title, uid=FOLDER_UID)
            saved, by_files = [], []
            for dashboard in dashboards:
                body = {"dashboard": {**dashboard, "id": None}, "folderUid": FOLDER_UID, "overwrite": True}
                try:
                    await self.api.dashboard.update_dashboard(body)
                except GrafanaClientError as exc:
                    if not _provisioned_by_files(exc):
                        raise
                    by_files.append(str(dashboard["uid"]))
                    continue
                saved.append(str(dashboard["uid"]))
        except GrafanaException as exc:
            raise _failure(exc) from exc
        except (TimeoutError, OSError) as exc:
            raise connection_failure(self.name, exc) from exc
        if by_files:
            log.info(
                "Grafana already provisions these dashboards from files, left as they are: %s "
                "(actions.grafana.provision_dashboards: false stops pushing them)",
                ", ".join(by_files),
            )
        return saved


def _provisioned_by_files(exc: GrafanaClientError) -> bool:
    body: Any = exc.response
    message = body.get("message") if isinstance(body, dict) else body
    return exc.status_code == 400 and PROVISIONED.lower() in str(message).lower()


def _keep_response_headers(client: Any) -> None:
    """grafana-client turns each HTTP answer into data or an exception in one static step,
    ``_extract_from_response(r, accept_empty_json)``; wrapped on this client, the exception it raises
    also carries the answer's headers (read by ``_failure``). Were the step renamed in a later
    grafana-client, nothing is wrapped and a retry falls back to the outbox's own backoff."""
    extract = getattr(type(client), "_extract_from_response", None)
    if extract is None:
        log.warning("grafana-client changed: Grafana's Retry-After cannot be read")
        return

    def extract_keeping_headers(response: Any, accept_empty_json: bool) -> Any:
        try:
            return extract(response, accept_empty_json)
        except GrafanaException as exc:
            exc.headers = dict(response.headers)  # type: ignore[attr-defined]
            raise

    client._extract_from_response = extract_keeping_headers


def _failure(exc: GrafanaException) -> DeliveryError:
    headers = getattr(exc, "headers", None)
    return http_failure("grafana", int(exc.status_code or 0), str(exc.message), headers)
