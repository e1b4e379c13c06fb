"""Grafana through grafana-client's AsyncGrafanaApi: one annotation per incident (created once, then
PATCHed: always with its tags, since a PATCH with an empty tag list clears them), and dashboard
provisioning into a folder with stable uids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grafana_client import AsyncGrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from agentic_observability.errors import DeliveryError
from agentic_observability.integrations.delivery import connection_failure, http_failure
from agentic_observability.integrations.resilience import Guard
from agentic_observability.models import OutboxItem


class GrafanaSink:
    name = "grafana"

    def __init__(self, api: AsyncGrafanaApi, guard: Guard) -> None:
        self.api = api
        self.guard = guard

    @classmethod
    def create(cls, url: str, token: str | None, timeout: float, guard: Guard) -> GrafanaSink:
        return cls(AsyncGrafanaApi.from_url(url, credential=token, timeout=timeout), guard)

    async def deliver(self, item: OutboxItem) -> str | None:
        return await self.guard.call(lambda: self._deliver(item))

    async def _deliver(self, item: OutboxItem) -> str | None:
        body = item.payload
        try:
            ref = item.ref or await self._find(body["tags"])
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

    async def _find(self, tags: Sequence[str]) -> str | None:
        """An annotation created before a crash, before its id was recorded: reuse it, never duplicate."""
        incident_tag = next(t for t in tags if t.startswith("incident:"))
        found = await self.api.annotations.find_annotations(tags=[incident_tag], limit=1)
        return str(found[0]["id"]) if found else None

    async def provision(self, folder_title: str, dashboards: Sequence[Mapping[str, Any]]) -> list[str]:
        """Create the folder if needed and save each dashboard by its uid, overwriting older versions."""
        return await self.guard.call(lambda: self._provision(folder_title, dashboards))

    async def _provision(self, folder_title: str, dashboards: Sequence[Mapping[str, Any]]) -> list[str]:
        folder_uid = "agentic-obs"
        try:
            try:
                await self.api.folder.get_folder(folder_uid)
            except GrafanaClientError as exc:
                if exc.status_code != 404:
                    raise
                await self.api.folder.create_folder(folder_title, uid=folder_uid)
            saved = []
            for dashboard in dashboards:
                body = {"dashboard": {**dashboard, "id": None}, "folderUid": folder_uid, "overwrite": True}
                await self.api.dashboard.update_dashboard(body)
                saved.append(str(dashboard["uid"]))
            return saved
        except GrafanaException as exc:
            raise _failure(exc) from exc
        except (TimeoutError, OSError) as exc:
            raise connection_failure(self.name, exc) from exc


def _failure(exc: GrafanaException) -> DeliveryError:
    response: Any = exc.response
    headers = dict(getattr(response, "headers", None) or {})
    return http_failure("grafana", int(exc.status_code or 0), str(exc.message), headers)
