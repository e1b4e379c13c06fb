"""The Kubernetes side of remediation: a rollout restart and a scale, over lightkube's AsyncClient.

Why lightkube (``lightkube>=1.0``), not kubernetes-asyncio or kr8s:
- it is async-native with typed resources (``Deployment``, ``DeploymentScale``) and typed signatures
  (py.typed), so mypy checks our calls; kubernetes-asyncio is the OpenAPI-generated client (a very large
  package of untyped ``*_with_http_info`` methods) and kr8s is a kubectl-like object API whose
  ``scale()`` and ``rollout`` helpers decide the request shapes for us;
- every write takes ``dry_run=True`` (the ``dryRun=All`` query parameter) and a ``patch_type``, so we
  send exactly what ``kubectl rollout restart`` sends (a strategic-merge patch of one annotation) and
  a PUT of the ``scale`` subresource (the ``update`` verb the chart's Role grants), nothing more;
- its configuration is an object we build (a kubeconfig file or the in-cluster service account, whose
  rotated token it re-reads), and an API refusal is one ``ApiError`` carrying the Kubernetes ``Status``.

Reads and dry runs are retried (``reads`` guard); a real PATCH or PUT is sent once (``writes`` guard,
breaker only): after a failure the caller looks again before acting (the restart compares its
``restartedAt``; a scale with an approved target sees it reached). Every failure comes back as an
``Outcome`` with the API's reason, never as an exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube import ConfigError as KubeConfigError
from lightkube.models.autoscaling_v1 import ScaleSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment, DeploymentScale, StatefulSet, StatefulSetScale
from lightkube.types import PatchType

from agentic_observability.config import RemediationKubernetes, redact_url
from agentic_observability.errors import UpstreamError, UpstreamUnavailableError
from agentic_observability.integrations.resilience import Guard
from agentic_observability.remediation.outcome import Outcome

T = TypeVar("T")

FIELD_MANAGER = "agentic-observability"  # who changed it, in the object's managedFields
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # the annotation `kubectl rollout restart` sets
_WORKLOADS: dict[str, tuple[Any, Any, str]] = {
    "Deployment": (Deployment, DeploymentScale, "deployments"),
    "StatefulSet": (StatefulSet, StatefulSetScale, "statefulsets"),
}


class KubeRefused(UpstreamError):
    """The API refused (403, 404, 409, 422, bad client config): retrying will not help, and it says
    nothing about the API server's health (a guard must exclude it from its breaker)."""


class KubeUnavailable(UpstreamUnavailableError):
    """Timeout, connection failure, 429 or 5xx: a read may be retried."""


def kube_guards(fail_max: int = 5, reset_after: float = 30.0) -> tuple[Guard, Guard]:
    """(reads, writes): reads and dry runs retried twice, real writes never; both with a breaker."""
    reads = Guard(
        "kubernetes", retries=2, fail_max=fail_max, reset_after=reset_after, excluded=(KubeRefused,)
    )
    writes = Guard(
        "kubernetes", retries=0, fail_max=fail_max, reset_after=reset_after, excluded=(KubeRefused,)
    )
    return reads, writes


def kube_config(settings: RemediationKubernetes) -> KubeConfig:
    """The kubeconfig file when one is named; else in-cluster, $KUBECONFIG, ~/.kube/config (lightkube's
    own order). Raises lightkube's ConfigError (or OSError, KeyError) when none can be loaded."""
    if settings.kubeconfig:
        return KubeConfig.from_file(settings.kubeconfig)
    return KubeConfig.from_env()


@dataclass(frozen=True)
class _Target:
    kind: str  # Deployment | StatefulSet
    name: str
    namespace: str

    @property
    def what(self) -> str:
        return f"{self.kind} {self.name} in namespace {self.namespace}"

    @property
    def plural(self) -> str:
        return str(_WORKLOADS[self.kind][2])


class Kube:
    """The two workload operations; the lightkube client is built on first use (a service with no
    Kubernetes action never reads a kubeconfig)."""

    def __init__(self, settings: RemediationKubernetes, timeout: float, reads: Guard, writes: Guard) -> None:
        self._settings = settings
        self._timeout = timeout
        self._reads = reads
        self._writes = writes
        self._client: AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def rollout_restart(
        self, namespace: str, kind: str, name: str, restarted_at: str, dry_run: bool
    ) -> Outcome:
        """Set the template's restartedAt annotation to ``restarted_at`` (fixed by the caller at
        approval), unless the workload already carries exactly it: then nothing is sent."""
        target, resource = _Target(kind, name, namespace), _WORKLOADS[kind][0]
        changes = {"restartedAt": restarted_at}
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at}}}}}
        try:
            current = await self._call(lambda c: c.get(resource, name, namespace=namespace), "get", target)
            if _restarted_at(current) == restarted_at:
                done = f"{target.what} was already restarted at {restarted_at}: nothing to do"
                return Outcome(True, done, dry_run, already=True, changes=changes)
            patched = await self._call(
                lambda c: c.patch(
                    resource,
                    name,
                    patch,
                    namespace=namespace,
                    patch_type=PatchType.STRATEGIC,
                    dry_run=dry_run,
                ),
                "patch",
                target,
                write=not dry_run,
            )
        except (KubeRefused, UpstreamUnavailableError) as failed:
            return Outcome(False, str(failed), dry_run)
        if _restarted_at(patched) != restarted_at:
            return Outcome(
                False, f"the API server answered the patch of {target.what} without the annotation", dry_run
            )
        done = "dry run accepted: rollout restart" if dry_run else "rollout restart"
        return Outcome(
            True, f"{done} of {target.what} (restartedAt {restarted_at})", dry_run, changes=changes
        )

    async def scale(
        self,
        namespace: str,
        kind: str,
        name: str,
        scale_by: int,
        min_replicas: int,
        max_replicas: int,
        target: int | None,
        dry_run: bool,
    ) -> Outcome:
        """Set the scale subresource's replicas to ``target`` (fixed at approval: idempotent) or, when
        None, to the current count plus ``scale_by`` within [min_replicas, max_replicas]; refused when
        that changes nothing (already at the bound) or would move the wrong way."""
        workload, resource = _Target(kind, name, namespace), _WORKLOADS[kind][1]
        try:
            current = await self._call(
                lambda c: c.get(resource, name, namespace=namespace), "get", workload, scale=True
            )
            replicas = int(current.spec.replicas or 0) if current.spec is not None else 0
            decided = scale_target(replicas, scale_by, min_replicas, max_replicas, target)
            unchanged = {"replicas": [replicas, replicas]}
            if isinstance(decided, str):
                return Outcome(False, f"{workload.what} {decided}", dry_run, changes=unchanged)
            if decided == replicas:
                done = f"{workload.what} already has {replicas} replicas: nothing to do"
                return Outcome(True, done, dry_run, already=True, changes=unchanged)
            # The resourceVersion read above makes the PUT conditional: a change in between is a 409.
            version = current.metadata.resourceVersion if current.metadata is not None else None
            body = resource(
                metadata=ObjectMeta(name=name, namespace=namespace, resourceVersion=version),
                spec=ScaleSpec(replicas=decided),
            )
            answered = await self._call(
                lambda c: c.replace(body, name, namespace=namespace, dry_run=dry_run),
                "update",
                workload,
                scale=True,
                write=not dry_run,
            )
        except (KubeRefused, UpstreamUnavailableError) as failed:
            return Outcome(False, str(failed), dry_run)
        shown = answered.spec.replicas if answered.spec is not None else None
        if shown != decided:
            return Outcome(
                False, f"the API server answered the scale of {workload.what} with {shown} replicas", dry_run
            )
        done = "dry run accepted: scale" if dry_run else "scaled"
        return Outcome(
            True,
            f"{done} {workload.what} from {replicas} to {decided} replicas",
            dry_run,
            changes={"replicas": [replicas, decided]},
        )

    def _connect(self) -> AsyncClient:
        if self._client is None:
            try:
                config = kube_config(self._settings).get(self._settings.context)
                assert config is not None  # get() raises rather than return None without a default
                timeout = httpx2.Timeout(self._timeout)
                self._client = AsyncClient(config, timeout=timeout, field_manager=FIELD_MANAGER)
            except (KubeConfigError, OSError, KeyError, ValueError) as exc:
                raise KubeRefused(f"Kubernetes client configuration: {type(exc).__name__}: {exc}") from exc
        return self._client

    async def _call(
        self,
        call: Callable[[AsyncClient], Awaitable[T]],
        verb: str,
        target: _Target,
        scale: bool = False,
        write: bool = False,
    ) -> T:
        """One request through a guard: ``write`` (a real change) through the one that never retries."""
        client = self._connect()
        resource = f"{target.plural}/scale" if scale else target.plural

        async def once() -> T:
            try:
                async with asyncio.timeout(self._timeout):
                    return await call(client)
            except httpx2.HTTPStatusError as exc:  # lightkube's ApiError (a Status body) is one too
                raise _refusal(exc, verb, resource, target) from exc
            except (TimeoutError, httpx2.TimeoutException) as exc:
                doing = f"{verb} {resource} in {target.namespace}"
                raise KubeUnavailable(
                    f"the Kubernetes API did not answer within {self._timeout:g}s ({doing}){_maybe(write)}"
                ) from exc
            except httpx2.TransportError as exc:
                server = redact_url(str(client.config.cluster.server))
                raise KubeUnavailable(
                    f"cannot reach the Kubernetes API at {server}: {type(exc).__name__}: {exc}{_maybe(write)}"
                ) from exc

        return await (self._writes if write else self._reads).call(once)


def scale_target(current: int, scale_by: int, low: int, high: int, target: int | None) -> int | str:
    """The replica count to set, or why not (a phrase that follows the workload's name)."""
    if target is not None:
        if not low <= target <= high:
            return f"cannot be scaled to the approved {target} replicas: outside {low}-{high}"
        return target
    wanted = min(max(current + scale_by, low), high)
    if scale_by > 0 and wanted <= current:
        return f"already has {current} replicas; max_replicas is {high}: not scaled"
    if scale_by < 0 and wanted >= current:
        return f"already has {current} replicas; min_replicas is {low}: not scaled"
    return wanted


def _restarted_at(obj: Any) -> str | None:
    template = getattr(getattr(obj, "spec", None), "template", None)
    metadata = getattr(template, "metadata", None)
    annotations = getattr(metadata, "annotations", None) or {}
    return annotations.get(RESTARTED_AT)


def _refusal(exc: httpx2.HTTPStatusError, verb: str, resource: str, target: _Target) -> UpstreamError:
    """The API's answer in words: a Status message when there is one."""
    code, namespace = exc.response.status_code, target.namespace
    message = _status_message(exc)
    if code == 401:
        return KubeRefused("unauthorized: the Kubernetes API refused the service account's credentials")
    if code == 403:
        return KubeRefused(
            f"forbidden: the service account may not {verb} {resource} in {namespace} "
            "(see the chart's remediation RBAC)"
        )
    if code == 404:
        return KubeRefused(f"not found: {target.what}")
    if code == 409:
        return KubeRefused(f"conflict: {target.what} changed while this ran; nothing was changed ({message})")
    if code == 429 or code >= 500:
        return KubeUnavailable(f"the Kubernetes API answered HTTP {code} to {verb} {resource}: {message}")
    return KubeRefused(
        f"the Kubernetes API refused to {verb} {resource} in {namespace}: HTTP {code}: {message}"
    )


def _status_message(exc: httpx2.HTTPStatusError) -> str:
    if isinstance(exc, ApiError) and exc.status is not None and exc.status.message:
        return str(exc.status.message)[:300]
    return " ".join(exc.response.text.split())[:300] or exc.response.reason_phrase


def _maybe(write: bool) -> str:
    return "; the change may have been made: running it again looks before acting" if write else ""
