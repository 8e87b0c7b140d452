"""Prometheus metrics: definitions, multiprocess plumbing, and the broker gauges."""
