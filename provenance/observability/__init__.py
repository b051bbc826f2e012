"""Observability: Prometheus metrics (``metrics``), the ``/metrics`` endpoint and request ids (``http``), JSON logs
(``logs``)."""
