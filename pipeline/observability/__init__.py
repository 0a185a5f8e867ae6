"""Observability: traces, metrics, model drift, health, and log-safe text."""
