"""Runs (or dry-runs) one approved proposal. Deciding *whether* it may run (who approved, the
guardrails, the idempotency record) is the caller's; this checks only that the proposal still is what
the catalogue allows (the entry exists, same kind, the namespace still listed, the same url), since a
stored proposal may be older than the config, then acts and answers with an ``Outcome``.

``at`` is the approval time: it fixes the restart's ``restartedAt`` (so a second run changes nothing).
``planned`` is the dry run's ``changes``, recorded before the real run: a scale then sets exactly the
replica count the dry run planned (``changes["replicas"][1]``), and a restart the planned
``restartedAt``, so a repeat after a crash asks for the same end state and finds it already done.
Without it a scale computes its target from the current count. ``key`` is the idempotency key per
incident and action, sent to http receivers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from agentic_observability.config import RemediationAction, RemediationConfig, Secrets
from agentic_observability.integrations.resilience import Guard
from agentic_observability.remediation import http_action
from agentic_observability.remediation.catalogue import Proposal, is_object_name
from agentic_observability.remediation.kube import Kube, kube_guards
from agentic_observability.remediation.outcome import Outcome

__all__ = ["Executor", "Outcome", "restarted_at"]

log = logging.getLogger(__name__)


def restarted_at(at: float) -> str:
    """The restart annotation's value for an approval at ``at``: RFC 3339 UTC, whole seconds."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Executor:
    def __init__(self, config: RemediationConfig, secrets: Secrets, session: aiohttp.ClientSession) -> None:
        self._config = config
        self._secrets = secrets
        self._session = session
        self._kube: Kube | None = None  # built on the first Kubernetes action (it reads a kubeconfig)
        self._http_guards: dict[str, Guard] = {}

    async def dry_run(self, proposal: Proposal, key: str, at: float) -> Outcome:
        return await self._perform(proposal, key, at, dry_run=True)

    async def run(
        self, proposal: Proposal, key: str, at: float, planned: Mapping[str, Any] | None = None
    ) -> Outcome:
        return await self._perform(proposal, key, at, dry_run=False, planned=planned or {})

    async def close(self) -> None:
        if self._kube is not None:
            await self._kube.close()

    async def _perform(
        self, proposal: Proposal, key: str, at: float, dry_run: bool, planned: Mapping[str, Any] | None = None
    ) -> Outcome:
        entry = self._entry(proposal)
        try:
            if isinstance(entry, str):
                outcome = Outcome(False, f"{proposal.action}: not run: {entry}", dry_run)
            elif entry.kind == "http":
                outcome = await self._http(entry, proposal, key, dry_run)
            else:
                outcome = await self._kubernetes(entry, proposal, at, dry_run, planned or {})
        except Exception as exc:  # an outcome, never a raise: the run must be recorded either way
            log.exception("remediation %s failed unexpectedly", proposal.action)
            outcome = Outcome(
                False, f"{proposal.action}: failed unexpectedly ({type(exc).__name__})", dry_run
            )
        log.info(
            "remediation %s%s: %s: %s",
            proposal.action,
            " (dry run)" if dry_run else "",
            "ok" if outcome.ok else "not ok",
            outcome.detail,
        )
        return outcome

    def _entry(self, proposal: Proposal) -> RemediationAction | str:
        """The catalogue entry ``proposal`` still matches, or why it does not."""
        if not self._config.enabled:
            return "remediation is disabled"
        entry = self._config.action(proposal.action)
        if entry is None:
            return "the action is no longer in the catalogue"
        if entry.kind != proposal.kind:
            return f"the catalogue's {entry.name} is now {entry.kind}, not {proposal.kind}"
        target = proposal.target
        if entry.kind == "http":
            return entry if target.get("url") == entry.url else "its url is no longer the catalogue's"
        namespace, workload = target.get("namespace", ""), target.get("workload", "")
        if namespace not in entry.namespaces:
            return f"namespace {namespace!r} is not in its allowlist ({', '.join(entry.namespaces)})"
        if target.get("workload_kind") != entry.workload_kind:
            return f"the catalogue's {entry.name} acts on a {entry.workload_kind}"
        if not is_object_name(workload):
            return f"workload {workload!r} is not a Kubernetes object name"
        return entry

    async def _kubernetes(
        self,
        entry: RemediationAction,
        proposal: Proposal,
        at: float,
        dry_run: bool,
        planned: Mapping[str, Any],
    ) -> Outcome:
        kube = self._kubernetes_client()
        namespace, kind, name = (proposal.target[k] for k in ("namespace", "workload_kind", "workload"))
        if entry.kind == "kubernetes.rollout_restart":
            stamp = planned.get("restartedAt") or restarted_at(at)
            return await kube.rollout_restart(namespace, kind, name, str(stamp), dry_run)
        assert entry.min_replicas is not None and entry.max_replicas is not None  # checked at load
        target = _planned_target(planned)
        if isinstance(target, str):
            return Outcome(False, f"{proposal.action}: not run: {target}", dry_run)
        return await kube.scale(
            namespace, kind, name, entry.scale_by, entry.min_replicas, entry.max_replicas, target, dry_run
        )

    def _kubernetes_client(self) -> Kube:
        if self._kube is None:
            reads, writes = kube_guards()
            self._kube = Kube(self._config.kubernetes, self._config.timeout, reads, writes)
        return self._kube

    async def _http(self, entry: RemediationAction, proposal: Proposal, key: str, dry_run: bool) -> Outcome:
        assert entry.url is not None  # checked at load
        body, headers = proposal.params.get("body") or {}, proposal.params.get("headers") or {}
        if not isinstance(body, Mapping) or not isinstance(headers, Mapping):
            return Outcome(
                False, f"{entry.name}: not run: the proposal's body or headers are not objects", dry_run
            )
        headers = {str(k): str(v) for k, v in headers.items()}
        if dry_run:
            return http_action.describe(entry.url, body, key)
        token = None
        if entry.token_env is not None:
            secret = self._secrets.remediation_tokens.get(entry.token_env)
            if secret is None or not secret.get_secret_value():
                return Outcome(False, f"{entry.name}: not run: {entry.token_env} is not set", dry_run)
            token = secret.get_secret_value()
        guard = self._http_guards.setdefault(entry.name, http_action.http_guard(entry.name))
        return await http_action.post(
            self._session,
            entry.url,
            body,
            headers,
            token,
            key,
            self._config.timeout,
            guard,
            token_header=(entry.token_header, entry.token_scheme),
        )


def _planned_target(planned: Mapping[str, Any]) -> int | str | None:
    """The replica count the dry run planned (``changes["replicas"] == [before, after]``), None when
    nothing was planned, or why the record cannot be used."""
    replicas = planned.get("replicas")
    if replicas is None:
        return None
    if not isinstance(replicas, list | tuple) or len(replicas) != 2:
        return f"the planned replicas {replicas!r} are not [before, after]"
    after = replicas[1]
    if isinstance(after, bool) or not isinstance(after, int):
        return f"the planned target {after!r} is not a whole number of replicas"
    return after
