"""agentic-observability: a Prometheus/Grafana-native incident analyst."""

__version__ = "0.1.0"
