"""Telemetry: per-period counters, the bounded on-disk spool, Prometheus metrics."""
