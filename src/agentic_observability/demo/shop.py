"""A small exporter of synthetic shop metrics with injected faults.

Services call each other front-end -> orders -> carts (and catalogue, payment). In each fault window
(``at`` seconds after start, for ``duration`` seconds) carts suffers a CPU hog: its CPU saturates, its
latency climbs, and the latency of its callers (orders, front-end) follows a little later.
Values are computed at scrape time from the elapsed time, so there is no background task.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

SERVICES = ("front-end", "orders", "carts", "catalogue", "payment")
BASE_LATENCY = {"front-end": 0.12, "orders": 0.08, "carts": 0.05, "catalogue": 0.04, "payment": 0.06}
BASE_CPU = {"front-end": 0.30, "orders": 0.25, "carts": 0.20, "catalogue": 0.15, "payment": 0.10}
PROPAGATION = {"carts": 0.0, "orders": 4.0, "front-end": 8.0}  # seconds after the fault each one feels it
FAULT_SERVICE = "carts"


class ShopCollector(Collector):
    def __init__(self, faults: Sequence[tuple[float, float]], started: float | None = None) -> None:
        self.started = time.time() if started is None else started
        self.faults = tuple(faults)  # (at, duration) windows, seconds after start
        self._rng = random.Random(7)

    def fault_level(self, service: str, now: float) -> float:
        """0..1: how strongly ``service`` feels a fault right now (ramps up over 3 s)."""
        lag = PROPAGATION.get(service)
        if lag is None:
            return 0.0
        levels = [0.0]
        for at, duration in self.faults:
            elapsed = now - self.started - at - lag
            if elapsed >= 0 and now - self.started <= at + duration + lag:
                levels.append(min(elapsed / 3.0, 1.0))
        return max(levels)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = time.time()
        latency = GaugeMetricFamily("shop_request_latency_seconds", "p90 request latency", labels=["service"])
        cpu = GaugeMetricFamily("shop_cpu_usage_ratio", "CPU used, fraction of the limit", labels=["service"])
        requests = CounterMetricFamily("shop_requests", "Requests served", labels=["service"])
        for service in SERVICES:
            level = self.fault_level(service, now)
            wobble = 1 + 0.05 * math.sin(now / 7 + len(service)) + self._rng.uniform(-0.03, 0.03)
            latency.add_metric([service], BASE_LATENCY[service] * wobble + level * 1.1)
            hog = 0.7 * level if service == FAULT_SERVICE else 0.0
            cpu.add_metric([service], min(BASE_CPU[service] * wobble + hog, 1.0))
            requests.add_metric([service], (now - self.started) * 20.0)
        yield from (latency, cpu, requests)


def shop_app(collector: ShopCollector) -> web.Application:
    registry = CollectorRegistry()
    registry.register(collector)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
