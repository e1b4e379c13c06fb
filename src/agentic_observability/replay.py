"""``agentic-obs replay FILE``: run a recorded webhook body through the same path a live one takes
(parse -> inbox -> incident -> pipeline) and return the reports, without starting the HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from agentic_observability import pipeline
from agentic_observability.config import Config
from agentic_observability.errors import BadInputError
from agentic_observability.integrations.prometheus import PrometheusClient
from agentic_observability.service.routes.webhook import parse_webhook
from agentic_observability.store import open_store


def read_body(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read: {exc.strerror or exc}", field=str(path)) from exc


async def replay_body(raw: bytes, config: Config, storage: str) -> list[dict[str, Any]]:
    alerts = parse_webhook(raw)
    store = await open_store(storage)
    try:
        await store.accept(alerts)
        jobs, _ = await store.ingest_pending()
        async with aiohttp.ClientSession() as session:
            prometheus = PrometheusClient.from_config(config, session)  # the service's credentials too
            deps = pipeline.PipelineDeps(
                metrics=prometheus,
                investigation=config.file.investigation,
                grafana_url=config.file.actions.grafana.url,
            )
            reports = []
            for job in jobs:
                incident = await store.get_incident(job.incident_id)
                if incident is None:
                    continue
                report = await pipeline.run(incident, deps)
                await store.complete_job(job.id, incident.id, report.to_dict())
                reports.append({"incident_id": incident.id, **report.to_dict()})
        return reports
    finally:
        await store.close()
