"""Observability sinks: Prometheus metrics, the JSON access log, and the status listener."""
