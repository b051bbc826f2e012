"""Benchmarks: ``make bench*`` runs them (``python -m benchmarks.<name>``); never imported by the service."""
