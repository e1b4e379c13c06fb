"""Change events (issue 18): what changed before an incident, from the stack the team already has.

``ksm.py`` reads kube-state-metrics through Prometheus (rollouts, new ReplicaSets, images, ConfigMap
edits), ``grafana.py`` Grafana annotations tagged as deploys; ``poller.py`` polls both on
``changes.poll_interval`` and stores the events (deduplicated by key). The change webhook
(``POST /api/v1/changes``) lives with the service's routes; reports read the store through the
pipeline's ``ChangeSource`` port.
"""

from agentic_observability.changes.grafana import GrafanaDeploys
from agentic_observability.changes.ksm import KubeStateMetrics, entity_for
from agentic_observability.changes.poller import ChangePoller, ChangeReader

__all__ = ["ChangePoller", "ChangeReader", "GrafanaDeploys", "KubeStateMetrics", "entity_for"]
