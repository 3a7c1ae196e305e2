"""Seeing the deployment work: who answers, what is queued, which workers are busy.

- ``identity``: ``<role>/<hostname>``, as ``X-Served-By`` and the relay name servers.
- ``status``: queue depth and oldest message age per channel and shard, live workers.
- ``worker_state``: each worker's published state (channels, busy, counters).
- ``metrics``: a worker's Prometheus ``/metrics`` (extra ``metrics``).
- ``probe``: container healthchecks (``python -m channels_kit.observe.probe``).
"""
