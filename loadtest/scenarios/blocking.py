"""The I/O-bound endpoint: ``GET IO_PATH`` (``/io/``), a sync view that blocks 50 ms, as a query would.

Not part of ``mixed``: it is the scenario of `make scaling`'s ``io`` axis, which runs it in
relay mode, where each worker serves one request at a time, to show requests/s growing with
the workers.
"""

from __future__ import annotations

from locust import FastHttpUser, between, tag, task

from .config import SETTINGS


class BlockingIOUser(FastHttpUser):
    """Hits IO_PATH (default ``/io/``) with a short think time."""

    scenario = "io"
    weight = 1
    wait_time = between(*SETTINGS.think(0.5, 2))
    default_headers = {"Host": SETTINGS.host_header}

    @tag("io")
    @task
    def blocking_view(self) -> None:
        self.client.get(SETTINGS.io_path, name=SETTINGS.io_path)
