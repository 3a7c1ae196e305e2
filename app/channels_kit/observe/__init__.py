"""Seeing the deployment work: who answers, what is queued, which workers are busy.

- ``identity``: ``server_identity()``, ``<role>/<hostname>``, one per container, as
  ``X-Served-By`` and the relay name servers.
- ``worker_state``: each worker's published state (channels, busy, counters), its
  per-channel counters (``ChannelStats``) and ``worker_identity()``, ``<hostname>:<pid>``,
  one per worker process.
- ``consumer_errors``: the one logger of consumer tracebacks (named
  ``channels_kit.worker.errors``), for the worker and relay mode alike.
- ``status``: queue depth and oldest message age per channel and shard, live workers.
- ``metrics``: a worker's Prometheus ``/metrics`` (extra ``metrics``).
- ``daphne_metrics``: a Daphne process's Prometheus ``/metrics`` (``DAPHNE_METRICS_PORT``).
- ``probe``: container healthchecks (``python -m channels_kit.observe.probe``).
"""
