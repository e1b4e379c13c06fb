"""A synthetic shop cluster with injected faults: the one living cluster the demo, the tests and the
benchmarks share.

Services call each other (``CALLS``): front-end -> orders -> carts, front-end -> catalogue, orders
-> payment. In each fault window (``at`` seconds after start, for ``duration`` seconds; a third
element names the service hit, carts by default) that service suffers a CPU hog: its CPU saturates,
its latency climbs, and the latency of its callers follows, ``HOP_SECONDS`` later per call. Two
faults on services with no call between them (carts and catalogue) are two faults, each with its own
callers' symptoms.

Each service runs ``Cluster.pods`` pods. With ``churn_every`` set, every pod is replaced after that
many seconds (a rollout, a node drain): its series stop and a new pod's start, as in a real cluster.
In the last ``drain`` seconds of its life a pod gets no traffic, so its error ratio
(``rate(errors) / rate(requests)``) is 0/0. ``kube_pod_info`` is exported in kube-state-metrics' shape.

Each service is a Deployment, exported as kube-state-metrics does (issue 18's change events):
``kube_deployment_metadata_generation``, ``kube_deployment_labels`` (``label_app_kubernetes_io_name``),
``kube_replicaset_created`` and ``kube_replicaset_owner`` for each ReplicaSet, and per pod
``kube_pod_owner`` and ``kube_pod_container_info{image}``. A deploy (``deploys``: ``(at, service,
image)``, ``at`` seconds after start, like the fault windows) rolls out a new image of one service:
its generation moves, a new ReplicaSet (named after the image) owns its pods and they report the new
image. The pods keep their names and their metrics are untouched: a deploy is a change event, and
what follows it is up to the fault windows.

A rollout restart (``POST /restart/{service}`` on ``shop_app``, or ``ShopCollector.restart``) is what
the remediation demo runs: the restarted service's current fault window ends at that moment (its
callers recover ``HOP_SECONDS`` later per hop, as at a fault's end) and its pods are replaced (new
names, ages from the restart). Restarts are recorded with their time and ``Idempotency-Key``; a
repeat with a key already seen does nothing more.

Values are computed from the time and the recorded restarts alone (``families(now)``; a restart
counts from its moment on), so the same cluster is scraped live (``shop_app``) or rendered as history
for ``promtool tsdb create-blocks-from openmetrics`` (``history_openmetrics``).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

SERVICES = ("front-end", "orders", "carts", "catalogue", "payment")
BASE_LATENCY = {"front-end": 0.12, "orders": 0.08, "carts": 0.05, "catalogue": 0.04, "payment": 0.06}
BASE_CPU = {"front-end": 0.30, "orders": 0.25, "carts": 0.20, "catalogue": 0.15, "payment": 0.10}
CALLS = (("front-end", "orders"), ("orders", "carts"), ("front-end", "catalogue"), ("orders", "payment"))
HOP_SECONDS = 4.0  # a callee's fault reaches each caller this much later
FAULT_SERVICE = "carts"  # hit when a fault window names no service
NAMESPACE = "shop"
REQUESTS_PER_POD = 10.0  # per second, while a pod serves
IMAGE = "registry.example/shop/{service}:v1.4.2"  # every service's image until a deploy
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generated names (k8s.io/apimachinery rand)


@dataclass(frozen=True)
class Cluster:
    pods: int = 2  # per service
    churn_every: float = 0.0  # seconds a pod lives before it is replaced; 0: never
    drain: float = 10.0  # the last seconds of a pod's life without traffic


@dataclass(frozen=True)
class Restart:
    service: str
    at: float  # unix seconds
    key: str | None  # the request's Idempotency-Key, when it had one


@dataclass(frozen=True)
class Pod:
    service: str
    name: str
    age: float  # seconds since this pod started
    draining: bool


class ShopCollector(Collector):
    def __init__(
        self,
        faults: Sequence[tuple[float, float] | tuple[float, float, str]],
        started: float | None = None,
        cluster: Cluster | None = None,
        deploys: Sequence[tuple[float, str, str]] = (),
    ) -> None:
        self.started = time.time() if started is None else started
        # (at, duration, service) windows, seconds after start
        self.faults = tuple((f[0], f[1], f[2] if len(f) > 2 else FAULT_SERVICE) for f in faults)
        self.deploys = tuple(sorted(deploys))  # (at, service, image), seconds after start
        self.cluster = cluster or Cluster()
        self.restarts: list[Restart] = []  # in time order
        self._rng = random.Random(7)

    def restart(self, service: str, now: float | None = None, key: str | None = None) -> Restart:
        """A rollout restart of ``service`` at ``now``; with a ``key`` seen before, that restart again
        (nothing more happens)."""
        if service not in SERVICES:
            raise KeyError(service)
        if key is not None:
            for done in self.restarts:
                if done.key == key:
                    return done
        record = Restart(service, time.time() if now is None else now, key)
        bisect.insort(self.restarts, record, key=lambda r: r.at)
        return record

    def windows(self, now: float) -> list[tuple[float, float, str]]:
        """The fault windows (at, duration, service) as seen at ``now``: a restart of the service hit,
        recorded by ``now`` and inside its window, ends that window at the restart."""
        found = []
        for at, duration, hit in self.faults:
            start = self.started + at
            for done in self.restarts:
                if done.at > now:
                    break
                if done.service == hit and start <= done.at < start + duration:
                    duration = done.at - start
                    break
            found.append((at, duration, hit))
        return found

    def fault_level(self, service: str, now: float) -> float:
        """0..1: how strongly ``service`` feels a fault right now (ramps up over 3 s)."""
        levels = [0.0]
        for at, duration, hit in self.windows(now):
            hops = call_distance(service, hit)
            if hops is None:
                continue
            lag = hops * HOP_SECONDS
            elapsed = now - self.started - at - lag
            if elapsed >= 0 and now - self.started <= at + duration + lag:
                levels.append(min(elapsed / 3.0, 1.0))
        return max(levels)

    def hog(self, service: str, now: float) -> float:
        """0..1: the CPU hog on ``service`` itself (only the service a fault hits burns CPU)."""
        levels = [0.0]
        for at, duration, hit in self.windows(now):
            elapsed = now - self.started - at
            if hit == service and 0 <= elapsed <= duration:
                levels.append(min(elapsed / 3.0, 1.0))
        return max(levels)

    def pods(self, service: str, now: float) -> list[Pod]:
        """The pods of ``service`` alive at ``now``; replacements are staggered across pods. After a
        restart every pod is new: its name carries the restart's number, its age counts from it."""
        restarted = [r.at for r in self.restarts if r.service == service and r.at <= now]
        since = restarted[-1] if restarted else self.started
        prefix = f"{service}-r{len(restarted)}" if restarted else service
        elapsed, life, found = now - since, self.cluster.churn_every, []
        for index in range(self.cluster.pods):
            if life <= 0:
                found.append(Pod(service, f"{prefix}-{index}", elapsed, False))
                continue
            shifted = elapsed + life * index / self.cluster.pods
            generation, age = divmod(shifted, life)
            draining = age >= life - self.cluster.drain
            if restarted:
                age = min(age, elapsed)  # the first pods after a restart are as old as the restart
            found.append(Pod(service, f"{prefix}-{int(generation)}-{index}", age, draining))
        return found

    def releases(self, service: str, now: float) -> list[tuple[float, str]]:
        """(since, image) of each image ``service`` has run by ``now``, oldest first: the first from
        the start, one per deploy of it."""
        found = [(self.started, IMAGE.format(service=service))]
        for at, hit, image in self.deploys:
            if hit == service and self.started + at <= now:
                found.append((self.started + at, image))
        return found

    def image(self, service: str, now: float) -> str:
        """The image ``service`` runs at ``now``."""
        return self.releases(service, now)[-1][1]

    def collect(self) -> Iterator[Metric]:
        yield from self.families(time.time())

    def families(self, now: float) -> list[Metric]:
        latency = GaugeMetricFamily("shop_request_latency_seconds", "p90 request latency", labels=["service"])
        cpu = GaugeMetricFamily("shop_cpu_usage_ratio", "CPU used, fraction of the limit", labels=["service"])
        requests = CounterMetricFamily("shop_requests", "Requests served", labels=["service"])
        for service in SERVICES:
            level = self.fault_level(service, now)
            wobble = self._wobble(service, now)
            latency.add_metric([service], BASE_LATENCY[service] * wobble + level * 1.1)
            cpu.add_metric([service], self._cpu(service, self.hog(service, now), wobble))
            requests.add_metric([service], (now - self.started) * 20.0)
        return [latency, cpu, requests, *self._pod_families(now), *self._workload_families(now)]

    def _pod_families(self, now: float) -> list[Metric]:
        labels = ["namespace", "service", "pod"]
        cpu = GaugeMetricFamily("shop_pod_cpu_usage_ratio", "CPU used by one pod", labels=labels)
        served = CounterMetricFamily("shop_pod_requests", "Requests a pod served", labels=labels)
        errors = CounterMetricFamily("shop_pod_errors", "Requests a pod failed", labels=labels)
        info = GaugeMetricFamily(
            "kube_pod_info", "kube-state-metrics pod info", labels=["namespace", "pod", "created_by_name"]
        )
        images = GaugeMetricFamily(
            "kube_pod_container_info",
            "kube-state-metrics container info",
            labels=["namespace", "pod", "container", "image"],
        )
        owners = GaugeMetricFamily(
            "kube_pod_owner",
            "kube-state-metrics pod owner",
            labels=["namespace", "pod", "owner_kind", "owner_name"],
        )
        for service in SERVICES:
            level, hog = self.fault_level(service, now), self.hog(service, now)
            image = self.image(service, now)
            for pod in self.pods(service, now):
                images.add_metric([NAMESPACE, pod.name, service, image], 1.0)
                owners.add_metric([NAMESPACE, pod.name, "ReplicaSet", replicaset_name(service, image)], 1.0)
                key = [NAMESPACE, service, pod.name]
                cpu.add_metric(key, self._cpu(service, hog, self._wobble(pod.name, now)))
                # a draining pod serves nothing more: its counters stand still, so rate/rate is 0/0
                serving = max(pod.age - (self.cluster.drain if pod.draining else 0.0), 0.0)
                total = min(pod.age, serving) * REQUESTS_PER_POD
                served.add_metric(key, total)
                errors.add_metric(key, total * (0.01 + 0.2 * level))
                info.add_metric([NAMESPACE, pod.name, service], 1.0)
        return [cpu, served, errors, info, images, owners]

    def _workload_families(self, now: float) -> list[Metric]:
        """Each service's Deployment and ReplicaSets, as kube-state-metrics exports them."""
        generation = GaugeMetricFamily(
            "kube_deployment_metadata_generation", "Deployment generation", labels=["namespace", "deployment"]
        )
        labels = GaugeMetricFamily(
            "kube_deployment_labels",
            "Deployment labels",
            labels=["namespace", "deployment", "label_app_kubernetes_io_name"],
        )
        created = GaugeMetricFamily(
            "kube_replicaset_created", "ReplicaSet creation time", labels=["namespace", "replicaset"]
        )
        owner = GaugeMetricFamily(
            "kube_replicaset_owner",
            "ReplicaSet owner",
            labels=["namespace", "replicaset", "owner_kind", "owner_name"],
        )
        for service in SERVICES:
            releases = self.releases(service, now)
            generation.add_metric([NAMESPACE, service], float(len(releases)))
            labels.add_metric([NAMESPACE, service, service], 1.0)
            for since, image in releases:
                name = replicaset_name(service, image)
                created.add_metric([NAMESPACE, name], float(int(since)))
                owner.add_metric([NAMESPACE, name, "Deployment", service], 1.0)
        return [generation, labels, created, owner]

    def _wobble(self, name: str, now: float) -> float:
        return 1 + 0.05 * math.sin(now / 7 + len(name)) + self._rng.uniform(-0.03, 0.03)

    @staticmethod
    def _cpu(service: str, hog: float, wobble: float) -> float:
        return min(BASE_CPU[service] * wobble + 0.7 * hog, 1.0)


def replicaset_name(service: str, image: str) -> str:
    """A ReplicaSet's name: the Deployment's and a pod-template hash (here of the image alone), in the
    alphabet of Kubernetes' generated names."""
    digest = hashlib.sha256(image.encode()).digest()
    return f"{service}-{''.join(_NAME_ALPHABET[b % len(_NAME_ALPHABET)] for b in digest[:9])}"


def call_distance(caller: str, callee: str) -> int | None:
    """Calls from ``caller`` down to ``callee`` (0: the same service); None when it never reaches it."""
    frontier, seen, hops = {caller}, {caller}, 0
    while frontier:
        if callee in frontier:
            return hops
        frontier = {b for a, b in CALLS if a in frontier} - seen
        seen |= frontier
        hops += 1
    return None


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shop_app(collector: ShopCollector) -> web.Application:
    """``GET /metrics`` (the scrape) and ``POST /restart/{service}`` (a rollout restart: the demo's
    remediation target; a JSON body is accepted and its fields ignored)."""
    registry = CollectorRegistry()
    registry.register(collector)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def restart(request: web.Request) -> web.Response:
        service = request.match_info["service"]
        if service not in SERVICES:
            error = f"unknown service {service!r}; the shop runs {', '.join(SERVICES)}"
            return web.json_response({"error": error, "service": service}, status=404)
        raw = await request.read()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return web.json_response({"error": "the body must be a JSON object"}, status=400)
        done = collector.restart(service, key=request.headers.get("Idempotency-Key") or None)
        return web.json_response({"restarted": done.service, "at": _iso(done.at)})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/restart/{service}", restart)
    return app


def history_openmetrics(collector: ShopCollector, start: float, end: float, step: float) -> str:
    """The cluster from ``start`` to ``end`` as OpenMetrics text with timestamps, for ``promtool tsdb
    create-blocks-from openmetrics`` (history a live scrape could not produce in a test's time)."""
    by_family: dict[str, tuple[str, dict[str, list[str]]]] = {}
    moment = start
    while moment <= end:
        for family in collector.families(moment):
            _, series = by_family.setdefault(family.name, (family.type, {}))
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                key = f"{sample.name}{{{labels}}}"  # one series' samples stay together, in time order
                series.setdefault(key, []).append(f"{key} {sample.value!r} {moment:.3f}")
        moment += step
    out = []
    for name, (kind, series) in by_family.items():
        out.append(f"# TYPE {name} {kind}")
        out.extend(line for lines in series.values() for line in lines)
    out.append("# EOF")
    return "\n".join(out) + "\n"
