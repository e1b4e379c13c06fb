"""Thin async adapters to external systems. Leaves: they import only config, errors and models."""
