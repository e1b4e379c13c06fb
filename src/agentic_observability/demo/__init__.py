"""The demo: a real Prometheus + Alertmanager, a synthetic shop with an injected fault, and the service."""
