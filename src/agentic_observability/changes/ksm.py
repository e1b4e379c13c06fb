"""Change events from kube-state-metrics, read through Prometheus (no agent on the nodes).

Over a window ``[start, end]`` (the poller's, see ``poller.py``) each becomes a ``Change``:

* ``kube_{deployment,statefulset,daemonset}_metadata_generation`` moved: the workload's spec changed
  (kind ``rollout``, "spec changed: generation 5 → 6"). When the Deployment's
  ``kube_deployment_spec_replicas`` (a StatefulSet's ``kube_statefulset_replicas``) moved at the same
  moment, it was a scale (an HPA, a person): kind ``other``, "scaled 2 → 4 replicas", which the
  ranking does not count.
* ``kube_replicaset_created`` within the window, after an older ReplicaSet of the same workload: a
  new ReplicaSet (kind ``replicaset``), its workload from ``kube_replicaset_owner``.
* ``kube_pod_container_info{image}``: a workload's container whose pods started running an image no
  pod of it ran just before (kind ``image``, "image v1.4.2 → v1.4.3"). A pod's workload comes from
  ``kube_pod_owner`` (a ReplicaSet, then that ReplicaSet's ``kube_replicaset_owner``); a pod without
  those series is mapped by its name: the ``-<pod-template-hash>-<5 chars>`` of a Deployment's pod, the
  ``-<ordinal>`` of a StatefulSet's, the ``-<5 chars>`` of a DaemonSet's are stripped.
* ``kube_configmap_metadata_resource_version`` moved (kind ``config``). A ConfigMap whose version
  moves more than ``LEASE_MOVES`` times in a window is a lock or a heartbeat, not an edit, and is left out.

The entity (what the investigation ranks, e.g. a service) is the first label of ``entity_from``
found on the workload's series merged with its ``kube_<kind>_labels`` (the Kubernetes labels
kube-state-metrics exports, as allowlisted by its ``--metric-labels-allowlist``); ``workload`` is the
workload's own name, so a list ending with it always finds one.

Nothing is kept between polls but the window: every event's dedup key is made of what it changed
(``ksm:<ns>/<workload>:generation:<n>``), so a re-poll of an overlapping window, or the first poll
after a restart looking back over the same changes, stores nothing twice.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agentic_observability.models import Change, ChangeKind, Sample, Series

WORKLOAD_KINDS = ("deployment", "statefulset", "daemonset")
_GENERATION = '{__name__=~"kube_(deployment|statefulset|daemonset)_metadata_generation"}'
_REPLICAS = '{__name__=~"kube_deployment_spec_replicas|kube_statefulset_replicas"}'
_WORKLOAD_LABELS = '{__name__=~"kube_(deployment|statefulset|daemonset|configmap)_labels"}'
_IMAGES = "max by (namespace, pod, container, image) (kube_pod_container_info)"
_CONFIG_VERSION = "kube_configmap_metadata_resource_version"
LEASE_MOVES = 3  # a ConfigMap whose version moves more often than this in one window is a lock
# the alphabet of Kubernetes' generated names (pod-template-hash, the random suffix): no vowels, no 0, 1, 3
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_DEPLOYMENT_POD = re.compile(rf"^(?P<name>.+)-{_SAFE}{{5,10}}-{_SAFE}{{5}}$")
_STATEFUL_POD = re.compile(r"^(?P<name>.+)-\d+$")
_DAEMON_POD = re.compile(rf"^(?P<name>.+)-{_SAFE}{{5}}$")
_RS_HASH = re.compile(rf"^(?P<name>.+)-{_SAFE}{{5,10}}$")


class PromQL(Protocol):
    async def query(self, expr: str, at: float | None = None) -> list[Sample]: ...

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]: ...


@dataclass(frozen=True)
class _Event:
    at: float
    kind: ChangeKind
    summary: str
    key: str
    old: str | None = None
    new: str | None = None


@dataclass(frozen=True)
class Workload:
    namespace: str
    kind: str  # deployment | statefulset | daemonset | configmap | job | …
    name: str


def entity_for(labels: Mapping[str, str], entity_from: Sequence[str]) -> str | None:
    """The first of ``entity_from`` with a non-empty value in ``labels``."""
    return next((labels[name] for name in entity_from if labels.get(name)), None)


def pod_workload_by_name(namespace: str, pod: str) -> Workload:
    """A pod's workload from its name alone (no ``kube_pod_owner``): the Deployment's pod-template-hash
    and random suffix, a StatefulSet's ordinal, or a DaemonSet's random suffix stripped."""
    for pattern, kind in ((_DEPLOYMENT_POD, "deployment"), (_STATEFUL_POD, "statefulset")):
        found = pattern.match(pod)
        if found:
            return Workload(namespace, kind, found["name"])
    found = _DAEMON_POD.match(pod)
    return Workload(namespace, "daemonset", found["name"]) if found else Workload(namespace, "pod", pod)


def image_text(old: str, new: str) -> str:
    """ "image v1.4.2 → v1.4.3" when only the tag (or digest) moved, else both references whole."""
    old_repo, old_tag = _split_image(old)
    new_repo, new_tag = _split_image(new)
    if old_repo == new_repo and old_tag and new_tag:
        return f"image {old_tag} → {new_tag}"
    return f"image {old} → {new}"


def _split_image(image: str) -> tuple[str, str]:
    if "@" in image:
        repo, _, digest = image.partition("@")
        return repo, digest[:19]  # sha256: and 12 hex digits, as people quote a digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    return (image[:colon], image[colon + 1 :]) if colon > slash else (image, "")


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


class KubeStateMetrics:
    """Reads one window of kube-state-metrics series and returns the changes in it."""

    name = "ksm"

    def __init__(self, prometheus: PromQL, entity_from: Sequence[str], step: float) -> None:
        self._prometheus = prometheus
        self._entity_from = tuple(entity_from)
        self._step = step

    async def changes(self, start: float, end: float) -> list[Change]:
        step = max(self._step, (end - start) / 1000, 1.0)  # well under Prometheus's 11,000 points
        labels = await self._workload_labels(end)
        owners = await self._owners(end, end - start + 2 * step)
        found: list[Change] = []
        found += await self._generations(start, end, step, labels)
        found += await self._replicasets(start, end, labels, owners)
        found += await self._images(start, end, step, labels, owners)
        found += await self._configmaps(start, end, step, labels)
        return found

    # -- the workload's labels (for the entity) and owners (pod -> ReplicaSet -> Deployment) ---------

    async def _workload_labels(self, at: float) -> dict[Workload, dict[str, str]]:
        found: dict[Workload, dict[str, str]] = {}
        for sample in await self._prometheus.query(_WORKLOAD_LABELS, at=at):
            kind = sample.labels.get("__name__", "").removeprefix("kube_").removesuffix("_labels")
            name = sample.labels.get(kind, "")
            if name:
                found[Workload(sample.labels.get("namespace", ""), kind, name)] = dict(sample.labels)
        return found

    async def _owners(self, at: float, window: float) -> dict[tuple[str, str, str], Workload]:
        """(namespace, "pod" | "replicaset", name) -> its owner, for every pod and ReplicaSet seen in
        the window (the old image's pods may be gone by now)."""
        owners: dict[tuple[str, str, str], Workload] = {}
        for kind, metric in (("pod", "kube_pod_owner"), ("replicaset", "kube_replicaset_owner")):
            seen = f"last_over_time({metric}[{int(window)}s])"
            expr = f"max by (namespace, {kind}, owner_kind, owner_name) ({seen})"
            for sample in await self._prometheus.query(expr, at=at):
                lab = sample.labels
                if lab.get("owner_name") and lab.get("owner_name") != "<none>":
                    owner = Workload(
                        lab.get("namespace", ""), lab.get("owner_kind", "").lower(), lab["owner_name"]
                    )
                    owners[(owner.namespace, kind, lab.get(kind, ""))] = owner
        return owners

    def _pod_workload(
        self, owners: Mapping[tuple[str, str, str], Workload], namespace: str, pod: str
    ) -> Workload:
        owner = owners.get((namespace, "pod", pod))
        if owner is None:
            return pod_workload_by_name(namespace, pod)
        if owner.kind == "replicaset":
            return self._replicaset_workload(owners, namespace, owner.name)
        return owner

    @staticmethod
    def _replicaset_workload(
        owners: Mapping[tuple[str, str, str], Workload], namespace: str, replicaset: str
    ) -> Workload:
        owner = owners.get((namespace, "replicaset", replicaset))
        if owner is not None:
            return owner
        found = _RS_HASH.match(replicaset)
        return Workload(namespace, "deployment", found["name"] if found else replicaset)

    def _change(
        self,
        workload: Workload,
        labels: Mapping[Workload, Mapping[str, str]],
        series_labels: Mapping[str, str],
        event: _Event,
    ) -> Change | None:
        """A Change of ``workload``, its entity from its labels; None when no entity label is found."""
        merged = {
            **series_labels,
            **labels.get(workload, {}),
            workload.kind: workload.name,
            "workload": workload.name,
        }
        entity = entity_for(merged, self._entity_from)
        if entity is None:
            return None
        return Change(
            source="ksm",
            at=event.at,
            entity=entity,
            kind=event.kind,
            summary=event.summary,
            dedup_key=event.key,
            namespace=workload.namespace or None,
            workload=f"{workload.kind}/{workload.name}",
            old=event.old,
            new=event.new,
        )

    # -- generation (spec changes), told apart from scales ------------------------------------------

    async def _generations(
        self, start: float, end: float, step: float, labels: Mapping[Workload, Mapping[str, str]]
    ) -> list[Change]:
        moves: dict[Workload, list[tuple[float, float, float]]] = {}
        for series in await self._prometheus.query_range(_GENERATION, start, end, step):
            workload = _series_workload(series.labels, "_metadata_generation")
            if workload is not None:
                moves[workload] = _moves(series)
        scales: dict[Workload, list[tuple[float, float, float]]] = {}
        for series in await self._prometheus.query_range(_REPLICAS, start, end, step):
            suffix = "_spec_replicas" if "deployment" in series.labels.get("__name__", "") else "_replicas"
            workload = _series_workload(series.labels, suffix)
            if workload is not None:
                scales[workload] = _moves(series)
        found = []
        for workload, generation_moves in moves.items():
            for at, old, new in generation_moves:
                scaled = next((s for s in scales.get(workload, []) if abs(s[0] - at) <= step), None)
                found.append(self._generation_change(workload, labels, at, old, new, scaled))
        return [c for c in found if c is not None]

    def _generation_change(
        self,
        workload: Workload,
        labels: Mapping[Workload, Mapping[str, str]],
        at: float,
        old: float,
        new: float,
        scaled: tuple[float, float, float] | None,
    ) -> Change | None:
        kind: ChangeKind = "other" if scaled else "rollout"
        summary = (
            f"scaled {scaled[1]:g} → {scaled[2]:g} replicas"
            if scaled
            else f"spec changed: generation {old:g} → {new:g}"
        )
        key = f"ksm:{workload.namespace}/{workload.kind}/{workload.name}:generation:{new:g}"
        return self._change(workload, labels, {}, _Event(at, kind, summary, key, f"{old:g}", f"{new:g}"))

    # -- new ReplicaSets ------------------------------------------------------------------------------

    async def _replicasets(
        self,
        start: float,
        end: float,
        labels: Mapping[Workload, Mapping[str, str]],
        owners: Mapping[tuple[str, str, str], Workload],
    ) -> list[Change]:
        """ReplicaSets created in the window after an older one of the same workload (a Deployment
        keeps its old ReplicaSets, ``revisionHistoryLimit``): a new workload's first is no change."""
        by_workload: dict[Workload, list[tuple[float, str]]] = {}
        for sample in await self._prometheus.query("kube_replicaset_created", at=end):
            namespace, name = sample.labels.get("namespace", ""), sample.labels.get("replicaset", "")
            if name:
                workload = self._replicaset_workload(owners, namespace, name)
                by_workload.setdefault(workload, []).append((sample.value, name))
        found = []
        for workload, created in by_workload.items():
            created.sort()
            for (_, before), (at, name) in itertools.pairwise(created):
                if not start <= at <= end:
                    continue
                key = f"ksm:{workload.namespace}/replicaset/{name}:created"
                event = _Event(at, "replicaset", f"new ReplicaSet {name}", key, old=before, new=name)
                change = self._change(workload, labels, {}, event)
                if change is not None:
                    found.append(change)
        return found

    # -- images -------------------------------------------------------------------------------------

    async def _images(
        self,
        start: float,
        end: float,
        step: float,
        labels: Mapping[Workload, Mapping[str, str]],
        owners: Mapping[tuple[str, str, str], Workload],
    ) -> list[Change]:
        # per (workload, container): image -> (first seen, last seen, the first pod that ran it)
        seen: dict[tuple[Workload, str], dict[str, tuple[float, float, str]]] = {}
        for series in await self._prometheus.query_range(_IMAGES, start - 2 * step, end, step):
            lab = series.labels
            if not series.timestamps or not lab.get("image") or not lab.get("pod"):
                continue
            workload = self._pod_workload(owners, lab.get("namespace", ""), lab["pod"])
            images = seen.setdefault((workload, lab.get("container", "")), {})
            mine = (series.timestamps[0], series.timestamps[-1], lab["pod"])
            known = images.get(lab["image"], mine)
            since, pod = min((known[0], known[2]), (mine[0], mine[2]))
            images[lab["image"]] = (since, max(known[1], mine[1]), pod)
        found = []
        for (workload, container), images in seen.items():
            for image, (first, _, pod) in images.items():
                change = self._image_change(workload, container, labels, images, image, first, pod, start)
                if change is not None:
                    found.append(change)
        return found

    def _image_change(
        self,
        workload: Workload,
        container: str,
        labels: Mapping[Workload, Mapping[str, str]],
        images: Mapping[str, tuple[float, float, str]],
        image: str,
        first: float,
        pod: str,
        start: float,
    ) -> Change | None:
        """``image`` began in the window, after another image of the same container: the one whose pods
        ran latest before it is the old one. A container's first image (a new workload) is no change."""
        if first < start:
            return None
        earlier = [
            (last, other) for other, (since, last, _) in images.items() if other != image and since < first
        ]
        if not earlier:
            return None
        old = max(earlier)[1]
        summary = image_text(old, image)
        if container and container != workload.name:
            summary += f" (container {container})"
        where = f"{workload.namespace}/{workload.kind}/{workload.name}"
        key = f"ksm:{where}:image:{container}:{_short_hash(old, image, pod)}"
        return self._change(workload, labels, {}, _Event(first, "image", summary, key, old, image))

    # -- ConfigMaps ---------------------------------------------------------------------------------

    async def _configmaps(
        self, start: float, end: float, step: float, labels: Mapping[Workload, Mapping[str, str]]
    ) -> list[Change]:
        found = []
        for series in await self._prometheus.query_range(_CONFIG_VERSION, start, end, step):
            name = series.labels.get("configmap", "")
            moves = _moves(series)
            if not name or len(moves) > LEASE_MOVES:
                continue
            workload = Workload(series.labels.get("namespace", ""), "configmap", name)
            for at, old, new in moves:
                summary = f"ConfigMap {name} edited (resource version {old:.0f} → {new:.0f})"
                key = f"ksm:{workload.namespace}/configmap/{name}:version:{new:.0f}"
                event = _Event(at, "config", summary, key, f"{old:.0f}", f"{new:.0f}")
                change = self._change(workload, labels, series.labels, event)
                if change is not None:
                    found.append(change)
        return found


def _series_workload(labels: Mapping[str, str], suffix: str) -> Workload | None:
    kind = labels.get("__name__", "").removeprefix("kube_").removesuffix(suffix)
    name = labels.get(kind, "")
    return Workload(labels.get("namespace", ""), kind, name) if kind in WORKLOAD_KINDS and name else None


def _moves(series: Series) -> list[tuple[float, float, float]]:
    """(when, old value, new value) of each point whose value differs from the point before."""
    points: Iterable[tuple[float, float]] = zip(series.timestamps, series.values, strict=True)
    found, previous = [], None
    for at, value in points:
        if previous is not None and value != previous and value == value:  # NaN is a gap, not a move
            found.append((at, previous, value))
        if value == value:
            previous = value
    return found
