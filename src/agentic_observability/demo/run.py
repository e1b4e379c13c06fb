"""``agentic-obs demo``: the main job, end to end on embedded defaults.

Starts a synthetic shop exporter, a real Prometheus scraping it with alert rules, a real Alertmanager
routed to the service, and the service itself (webhook + one PromQL watch, incident memory on Qdrant
Edge, actions to the local ``actions.jsonl``). A CPU hog hits carts after ~30 s; it trips the watch
and the front-end latency alert, which become one incident (the alert joins the watch's incident as
the same fault). The demo prints every report as it arrives and as it resolves, with the incident's
members, then sends feedback on it (confirmed cause and the fix). The same fault returns, 20 s after
a "new version" of carts rolled out (issue 18): the shop's kube-state-metrics series show the new
image (the service polls them every 5 s), and a CI system announces the deploy on
``POST /api/v1/changes``. The new report names the change at its top ("What changed: carts: image
v1.4.2 → v1.4.3 at …, 20 s before the onset"), which the demo prints, and recalls the first
incident ("seen before", with the fix). Each incident's chart
(``/api/v1/incidents/{id}/chart.png``) is saved in the demo's work directory and its path printed.
Exit 0 once every incident of both rounds has resolved, each round was one incident and the second
round's report named the rollout; 1 if not within the time limit, or otherwise.

Remediation (issue 22) is on, with one catalogue entry: ``shop-restart``, an ``http`` action that POSTs
to the shop's own restart endpoint for a carts cause, approvable by the demo on-call ``U0DEMOOPS``. The
demo prints the action the report proposes; the file sink records it too (``proposed`` in the analyze
line). With ``--approve`` the demo then plays that on-call pressing *Approve* in Slack: a
``block_actions`` payload in Slack's documented shape, signed with the signing secret this run made up
(SLACK_SIGNING_SECRET's role), posted to ``/api/v1/slack/interactions``. It prints the incident's audit
as it grows (approved, dry run, ran, then the follow-up's verdict ``remediation.follow_up`` later) and
what the service said to the person through the press's ``response_url`` (a local stand-in for Slack).
The approval is simulated; everything after the signed request is the service's own path.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from agentic_observability.config import Config, FileConfig, Secrets
from agentic_observability.demo.shop import HOP_SECONDS, Restart, ShopCollector, shop_app
from agentic_observability.demo.stack import ManagedProcess, free_port, start_alertmanager, start_prometheus
from agentic_observability.service import init_app
from agentic_observability.service.app import INSTALL_ID

FAULTS = ((30.0, 45.0), (140.0, 40.0))  # (at, for) seconds after start: the same fault, twice
NEW_VERSION = "v1.4.3"  # every shop service runs v1.4.2 until a deploy
DEPLOY = (
    120.0,
    "carts",
    f"registry.example/shop/carts:{NEW_VERSION}",
)  # (at, service, image): before round 2
CI_EVENT = {  # what a CI system posts to /api/v1/changes once it has rolled the new version out
    "service": "carts",
    "namespace": "shop",
    "workload": "deployment/carts",
    "kind": "deploy",
    "summary": f"deploy carts {NEW_VERSION} (pipeline 812)",
    "old": "v1.4.2",
    "new": NEW_VERSION,
    "link": "https://ci.example/shop/carts/pipelines/812",
    "id": "ci-shop-carts-812",
}
TIME_LIMIT = 300.0
FEEDBACK = {
    "root_cause": "carts",
    "resolution": "stopped the runaway batch job on carts",
    "correct": True,
}
REMEDIATION = "shop-restart"  # the demo catalogue's one entry
ON_CALL = {"id": "U0DEMOOPS", "username": "demo-oncall", "name": "demo-oncall", "team_id": "T0DEMO"}
FOLLOW_UP = "45s"  # remediation.follow_up: the verdict comes this long after the run
FOLLOW_UP_EVENTS = ("recovered", "not-recovered")
PRESS_AFTER = 20.0  # seconds after the proposal: the on-call presses even if no page joined by then


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def demo_remediation(shop_port: int) -> dict[str, Any]:
    """One allowlisted action: the shop's own rollout restart of carts, for a carts cause, approved by the
    demo on-call. The URL is fixed (a catalogue URL is not a template); the body is."""
    return {
        "enabled": True,
        "follow_up": FOLLOW_UP,
        "actions": [
            {
                "name": REMEDIATION,
                "kind": "http",
                "description": "rollout restart of carts by the shop's own endpoint",
                "cause": "carts",
                "url": f"http://127.0.0.1:{shop_port}/restart/carts",
                "body": {
                    "incident": "{incident.id}",
                    "title": "{incident.title}",
                    "cause": "{cause}",
                    "requested_by": "agentic-obs {action}",
                },
                "approvers": [ON_CALL["id"]],
            }
        ],
    }


def demo_config(
    workdir: Path,
    prometheus_url: str,
    port: int,
    token: str,
    shop_port: int | None = None,
    signing_secret: str | None = None,
    slack_url: str | None = None,
) -> Config:
    """The demo's config. With ``shop_port``: remediation on (``demo_remediation``). ``signing_secret``
    is SLACK_SIGNING_SECRET's value (a secret: never in the file); ``slack_url`` the local stand-in for
    Slack, where the service may answer a press (its ``response_url`` is on that host)."""
    extra: dict[str, Any] = {}
    if shop_port is not None:
        extra["remediation"] = demo_remediation(shop_port)
    if slack_url is not None:
        extra["actions"] = {"slack": {"api_url": slack_url}}
    file = FileConfig.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": port},
            "prometheus": {"url": prometheus_url, "timeout": "5s"},
            "storage": {"path": str(workdir / "state")},
            "investigation": {
                "evidence_window": "5m",
                "baseline": "5m",
                "after": "2m",
                "signals": [
                    {"name": "cpu", "query": "max by (service) (shop_cpu_usage_ratio)"},
                    {"name": "latency_p90", "query": "max by (service) (shop_request_latency_seconds)"},
                ],
                "calls": [
                    {"caller": "front-end", "callee": "orders"},
                    {"caller": "front-end", "callee": "catalogue"},
                    {"caller": "orders", "callee": "carts"},
                    {"caller": "orders", "callee": "payment"},
                ],
            },
            "changes": {"poll_interval": "5s"},  # the shop's kube-state-metrics series, polled
            "watches": [
                {
                    "name": "CartsCpuSaturated",
                    "query": 'shop_cpu_usage_ratio{service="carts"}',
                    "interval": "2s",
                    "for": "4s",
                    "above": 0.8,
                    "resolve_after": 2,
                }
            ],
            **extra,
        }
    )
    given = {"webhook_token": token, **({"slack_signing_secret": signing_secret} if signing_secret else {})}
    return Config(file=file, secrets=Secrets.model_validate(given), source="<demo>")


async def _start_site(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def print_report(incident: dict[str, Any]) -> None:
    report = incident.get("report") or {}
    _say(f"incident {incident['id']} [{incident['status']}] {incident['title']}")
    for member in incident.get("members") or []:
        names = ", ".join(member["alertnames"])
        print(
            f"    + {names} [{member['status']}] since {member['started_at']}: {member['joined']['reason']}"
        )
    for line in str(report.get("summary", "(no report yet)")).splitlines():
        print(f"    {line}", flush=True)


def changed_line(incident: dict[str, Any]) -> str | None:
    """The report's "What changed: …" line, when it names a change before the onset."""
    summary = str((incident.get("report") or {}).get("summary", ""))
    return next((line for line in summary.splitlines() if line.startswith("What changed: ")), None)


def _shown_as(incident: dict[str, Any]) -> tuple[Any, ...]:
    """What changes a printed incident: its report, its members and their status."""
    generated = (incident.get("report") or {}).get("generated_at")
    return (generated, tuple((m["id"], m["status"]) for m in incident.get("members") or []))


def _say_proposals(incident: dict[str, Any], proposed: set[tuple[str, str]], approve: bool) -> None:
    """Each remediation the report proposes, once: what it would do and who may approve it."""
    for proposal in (incident.get("report") or {}).get("remediation") or []:
        seen = (incident["id"], str(proposal.get("action")))
        if seen in proposed:
            continue
        if not approve:
            how = "`agentic-obs demo --approve` plays that press"
        elif not proposed:
            how = "the demo approves it once the on-call is paged"
        else:
            how = "the demo approves only the first round's: this one stays a proposal"
        proposed.add(seen)
        who = ", ".join(proposal.get("approvers") or []) or "nobody"
        _say(
            f"incident {incident['id']}: Proposed: {proposal.get('does')} "
            f"(approve in Slack: button 'Approve: {proposal.get('action')}', approvers {who}; {how})"
        )


async def _watch_incidents(
    http: aiohttp.ClientSession,
    api: str,
    deadline: float,
    shown: dict[str, Any],
    more_than: int,
    proposed: set[tuple[str, str]],
    approve: bool,
) -> list[dict[str, Any]] | None:
    """Print each report as it appears or changes, and the remediation it proposes; the incidents once
    there are more than ``more_than`` and every one has resolved, None at the deadline."""
    while time.monotonic() < deadline:
        async with http.get(f"{api}/api/v1/incidents") as response:
            incidents = (await response.json())["incidents"]
        for incident in reversed(incidents):
            now_shown = _shown_as(incident)
            if now_shown[0] and shown.get(incident["id"]) != now_shown:
                first_time = incident["id"] not in shown
                shown[incident["id"]] = now_shown
                print_report(incident)
                line = changed_line(incident)
                if line and first_time:
                    _say(f"incident {incident['id']}: {line}")
                if incident["status"] == "firing":
                    _say_proposals(incident, proposed, approve)
        everyone_done = all((i.get("report") or {}).get("status") == "resolved" for i in incidents)
        if len(incidents) > more_than and everyone_done and len(shown) == len(incidents):
            return list(incidents)
        await asyncio.sleep(1.0)
    return None


async def _save_charts(
    http: aiohttp.ClientSession, api: str, incidents: list[dict[str, Any]], workdir: Path
) -> None:
    """Each incident's chart as the API draws it, saved as ``chart-<id>.png``; or why there is none."""
    for incident in incidents:
        async with http.get(f"{api}/api/v1/incidents/{incident['id']}/chart.png") as response:
            if response.status != 200:
                why = (await response.json(content_type=None) or {}).get("detail", f"HTTP {response.status}")
                _say(f"incident {incident['id']}: no chart ({why})")
                continue
            path = workdir / f"chart-{incident['id']}.png"
            path.write_bytes(await response.read())
        _say(f"incident {incident['id']}: chart saved to {path}")


async def _two_rounds(
    api: str, token: str, deadline: float, workdir: Path, approval: Approval | None = None
) -> bool:
    shown: dict[str, Any] = {}
    proposed: set[tuple[str, str]] = set()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        approving = asyncio.create_task(approval.run(http, api, deadline)) if approval else None
        try:
            done = await _rounds(http, api, deadline, workdir, shown, proposed, approval is not None)
            if approving is None:
                return done
            approved = await asyncio.wait_for(approving, max(deadline - time.monotonic(), 1.0))
            return done and approved
        except TimeoutError:
            _say("the remediation's follow-up did not come within the time limit")
            return False
        finally:
            if approving is not None and not approving.done():
                approving.cancel()


async def _rounds(
    http: aiohttp.ClientSession,
    api: str,
    deadline: float,
    workdir: Path,
    shown: dict[str, Any],
    proposed: set[tuple[str, str]],
    approve: bool,
) -> bool:
    first = await _watch_incidents(http, api, deadline, shown, 0, proposed, approve)
    if first is None:
        return False
    await _save_charts(http, api, first, workdir)
    if not _one_incident(1, first):
        return False
    alerted = first[0]
    async with http.post(f"{api}/api/v1/incidents/{alerted['id']}/feedback", json=FEEDBACK) as response:
        response.raise_for_status()
    _say(f"feedback on incident {alerted['id']}: {FEEDBACK}")
    _say("round 1 done; the same fault returns shortly ...")
    both = await _watch_incidents(http, api, deadline, shown, len(first), proposed, approve)
    if both is None:
        return False
    second = both[: len(both) - len(first)]
    await _save_charts(http, api, second, workdir)
    return _one_incident(2, second) and _named_the_rollout(second)


def _named_the_rollout(incidents: list[dict[str, Any]]) -> bool:
    """The second round followed a new version of carts: its report must say so at the top."""
    lines = [line for line in map(changed_line, incidents) if line]
    if not lines or "carts" not in lines[0]:
        _say("round 2: the report did not name the rollout of carts before the fault")
        return False
    _say(f"round 2 followed a new version of carts, and the report says so: {lines[0]}")
    return True


async def announce_deploy(api: str, token: str, shop: ShopCollector) -> None:
    """At the deploy's moment (``DEPLOY``), as a CI system would once its rollout is done: the change
    event to ``POST /api/v1/changes``. The shop's image label moves on its own at the same moment."""
    at = shop.started + DEPLOY[0]
    await asyncio.sleep(max(at - time.time(), 0.0))
    event = {**CI_EVENT, "at": at}
    _say(f"CI rolled out carts {NEW_VERSION} (image {DEPLOY[2]}); POST /api/v1/changes {json.dumps(event)}")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.post(f"{api}/api/v1/changes", json=event) as response,
        ):
            _say(f"POST /api/v1/changes: HTTP {response.status} {await response.text()}")
    except aiohttp.ClientError as exc:
        _say(f"POST /api/v1/changes failed: {exc}")


# -- --approve: the on-call presses Approve in Slack (simulated by a signed request) ---------------------


def slack_headers(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """What Slack sends with a request (docs.slack.dev/authentication/verifying-requests-from-slack):
    its time and ``v0=`` HMAC-SHA256 of ``v0:{time}:{body}`` under the app's signing secret."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def approve_press(install_id: str, incident: Mapping[str, Any], response_url: str) -> str:
    """The form body Slack posts when ``ON_CALL`` presses *Approve* on the incident's parent message
    (a block_actions payload, docs.slack.dev/reference/interaction-payloads/block_actions-payload). The
    button's action_id is the one the parent carries: ``agentic_obs:approve.<entry>:<install>:<id>``;
    its value, the target the parent showed (the service refuses an approval of a changed proposal)."""
    incident_id = incident["id"]
    proposal = next(p for p in incident["report"]["remediation"] if p.get("action") == REMEDIATION)
    shown = json.dumps(proposal.get("target") or {}, sort_keys=True)
    now = f"{time.time():.6f}"
    action_id = f"agentic_obs:approve.{REMEDIATION}:{install_id}:{incident_id}"
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": ON_CALL,
        "api_app_id": "A0DEMOAPP",
        "token": "verification-token-not-used",
        "container": {"type": "message", "message_ts": now, "channel_id": "C0DEMOINC", "is_ephemeral": False},
        "trigger_id": f"{time.time_ns()}.1.demo",
        "team": {"id": ON_CALL["team_id"], "domain": "demo"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": "C0DEMOINC", "name": "incidents"},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "remediation",
                "text": {"type": "plain_text", "text": f"Approve: {REMEDIATION}"},
                "style": "danger",
                "value": shown,
                "action_ts": now,
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


def slack_stand_in() -> web.Application:
    """Where the service answers the person who pressed (the press's ``response_url``): printed as Slack
    would show it to them alone."""

    async def answer(request: web.Request) -> web.Response:
        said = json.loads(await request.read() or b"{}")
        _say(f"Slack, to {ON_CALL['id']} alone: {said.get('text', said)}")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/actions/{press}", answer)
    return app


class Approval:
    """The on-call's press on *Approve* for the first incident that proposes the demo's action, then
    the incident's audit (``GET /api/v1/incidents/{id}``, ``remediation``) printed as it grows, until
    the follow-up's verdict."""

    def __init__(self, secret: str, install_id: str, slack_url: str, shop: ShopCollector) -> None:
        self.secret, self.install_id, self.slack_url, self.shop = secret, install_id, slack_url, shop

    async def run(self, http: aiohttp.ClientSession, api: str, deadline: float) -> bool:
        incident = await self._proposing(http, api, deadline)
        if incident is None:
            _say(f"no incident proposed {REMEDIATION} within the time limit: nothing to approve")
            return False
        body = approve_press(self.install_id, incident, f"{self.slack_url}/actions/1")
        _say(
            f"on-call {ON_CALL['id']} presses 'Approve: {REMEDIATION}' on incident {incident['id']} "
            "(simulated: a block_actions payload signed with this run's SLACK_SIGNING_SECRET, "
            "as Slack would send it)"
        )
        async with aiohttp.ClientSession() as slack:  # Slack sends no bearer token
            url = f"{api}/api/v1/slack/interactions"
            async with slack.post(url, data=body, headers=slack_headers(self.secret, body)) as response:
                _say(f"POST /api/v1/slack/interactions: HTTP {response.status}")
                if response.status != 200:
                    return False
        return await self._follow(http, api, incident["id"], deadline)

    @staticmethod
    async def _proposing(http: aiohttp.ClientSession, api: str, deadline: float) -> dict[str, Any] | None:
        """The first firing incident that proposes the demo's action, once the on-call has been paged:
        the Alertmanager alert joined it (or ``PRESS_AFTER`` seconds after the proposal, if none did).
        Pressing before the page would end the fault before its alert fires at all."""
        first_seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            async with http.get(f"{api}/api/v1/incidents") as response:
                incidents = (await response.json())["incidents"]
            for incident in reversed(incidents):
                names = [p.get("action") for p in (incident.get("report") or {}).get("remediation") or []]
                if incident["status"] != "firing" or REMEDIATION not in names:
                    continue
                since = first_seen.setdefault(incident["id"], time.monotonic())
                members = [", ".join(m["alertnames"]) for m in incident.get("members") or []]
                if members:
                    _say(f"the on-call was paged: {'; '.join(members)} joined incident {incident['id']}")
                    return dict(incident)
                if time.monotonic() - since >= PRESS_AFTER:
                    return dict(incident)
            await asyncio.sleep(0.5)
        return None

    async def _follow(self, http: aiohttp.ClientSession, api: str, incident_id: str, deadline: float) -> bool:
        printed = 0
        while time.monotonic() < deadline:
            async with http.get(f"{api}/api/v1/incidents/{incident_id}") as response:
                audit = (await response.json()).get("remediation") or []
            for entry in audit[printed:]:
                self._print(incident_id, entry)
            printed = len(audit)
            events = [e["event"] for e in audit]
            if any(e in ("failed", "refused") for e in events):
                return False
            if any(e in FOLLOW_UP_EVENTS for e in events):
                return True
            await asyncio.sleep(0.5)
        return False

    def _print(self, incident_id: str, entry: dict[str, Any]) -> None:
        text = (entry.get("detail") or {}).get("text", "")
        event, at = entry["event"], str(entry["at"])
        where = f"incident {incident_id} audit {at}"
        if event == "approved":
            _say(f"{where}: approved by {entry['by']}: {text}")
        elif event in FOLLOW_UP_EVENTS:
            _say(f"{where}: follow-up ({FOLLOW_UP} after the run): {event}: {text}")
        else:
            _say(f"{where}: {event}: {text}")
        if event == "ran":
            for done in self.shop.restarts:
                _say(f"shop: {self._restart_line(done)}")

    def _restart_line(self, done: Restart) -> str:
        moment = time.strftime("%H:%M:%S", time.localtime(done.at))
        line = f"{done.service} restarted at {moment} (Idempotency-Key {done.key})"
        for at, duration, hit in self.shop.faults:
            end = self.shop.started + at + duration
            if hit == done.service and self.shop.started + at <= done.at < end:
                line += (
                    f"; its CPU hog, due to last until {time.strftime('%H:%M:%S', time.localtime(end))}, "
                    f"ended {end - done.at:.0f} s early; its callers recover {HOP_SECONDS:g} s later per hop"
                )
        return line


def _one_incident(number: int, incidents: list[dict[str, Any]]) -> bool:
    """One incident per fault: the round's watch and Alertmanager alert must be one incident."""
    for incident in incidents:
        members = [", ".join(m["alertnames"]) for m in incident.get("members") or []]
        alerts = "; ".join([incident["title"].split(":")[0], *members])
        _say(f"round {number}: incident {incident['id']} holds {1 + len(members)} alert groups: {alerts}")
    if len(incidents) != 1:
        _say(f"round {number}: one fault became {len(incidents)} incidents (expected one)")
    return len(incidents) == 1


def _summarise_actions(path: Path) -> None:
    """What the file sink (the embedded stand-in for Grafana, Slack, PagerDuty) received."""
    if not path.exists():
        _say("no actions were written")
        return
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = Counter(f"{line['action']}" for line in lines)
    _say(f"{len(lines)} actions in {path}: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    for line in lines:
        if line["action"] == "analyze" and line.get("proposed"):
            _say(f"file sink, incident {line['incident_id']} analyze: proposed {'; '.join(line['proposed'])}")


async def run_demo(keep_running: bool = False, approve: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="agentic-obs-demo-"))
    token = secrets.token_urlsafe(24)
    signing_secret = secrets.token_hex(16)  # SLACK_SIGNING_SECRET for this run only
    procs: list[ManagedProcess] = []
    runners: list[web.AppRunner] = []
    try:
        shop_port, service_port, slack_port = free_port(), free_port(), free_port()
        shop = ShopCollector(FAULTS, deploys=[DEPLOY])
        runners.append(await _start_site(shop_app(shop), shop_port))
        slack_url = f"http://127.0.0.1:{slack_port}"
        runners.append(await _start_site(slack_stand_in(), slack_port))
        first_fault = FAULTS[0][0]
        _say(f"shop exporter on http://127.0.0.1:{shop_port}/metrics; carts CPU hog in {first_fault:.0f}s")
        _say(
            f"carts {NEW_VERSION} rolls out in {DEPLOY[0]:.0f}s, {FAULTS[1][0] - DEPLOY[0]:.0f}s before "
            "the fault's second round"
        )
        service_url = f"http://127.0.0.1:{service_port}"
        am = await asyncio.to_thread(
            start_alertmanager, workdir / "alertmanager", f"{service_url}/api/v1/webhook/alertmanager", token
        )
        procs.append(am)
        rules = workdir / "rules.yml"
        rules.write_text(resources.files("agentic_observability.demo").joinpath("rules.yml").read_text())
        prom = await asyncio.to_thread(
            start_prometheus, workdir / "prometheus", [f"127.0.0.1:{shop_port}"], [rules], am.url
        )
        procs.append(prom)
        _say(f"prometheus {prom.url}  alertmanager {am.url}  (state in {workdir})")
        config = demo_config(workdir, prom.url, service_port, token, shop_port, signing_secret, slack_url)
        service = init_app(config)
        runners.append(await _start_site(service, service_port))
        _say(f"agentic-obs on {service_url} (API docs {service_url}/docs); waiting for incidents ...")
        _say(
            f"remediation on: {REMEDIATION} (POST http://127.0.0.1:{shop_port}/restart/carts) for a carts "
            f"cause, approver {ON_CALL['id']}, follow-up {FOLLOW_UP} after a run"
        )
        if keep_running:
            return await _keep_running(service_url, token, prom, am)
        # the install id the service puts in its Slack buttons (the store's): the press must carry it
        approval = Approval(signing_secret, service[INSTALL_ID], slack_url, shop) if approve else None
        deploying = asyncio.create_task(announce_deploy(service_url, token, shop))
        try:
            done = await _two_rounds(service_url, token, time.monotonic() + TIME_LIMIT, workdir, approval)
        finally:
            deploying.cancel()
        _summarise_actions(workdir / "state" / "actions.jsonl")
        if done:
            _say("all incidents of both rounds resolved; demo finished")
            return 0
        _say(f"incidents did not all resolve within {TIME_LIMIT:.0f}s; logs in {workdir}")
        return 1
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        for proc in reversed(procs):
            proc.stop()


async def _keep_running(service_url: str, token: str, prom: ManagedProcess, am: ManagedProcess) -> int:
    _say(f"stack is up: service {service_url}, prometheus {prom.url}, alertmanager {am.url}; Ctrl-C stops it")
    _say(f"try: curl -H 'Authorization: Bearer {token}' {service_url}/api/v1/incidents  (demo-only token)")
    await asyncio.Event().wait()  # until Ctrl-C cancels the run (the CLI turns that into exit 0)
    return 0
