"""The I/O-bound endpoint of relay mode (issue 5): a sync view that blocks ~50 ms, as a query would.

Not part of ``mixed``: the endpoint lands with relay mode, where workers serve HTTP and
`make scaling` will show requests/s growing with workers on it. Until then the stack
answers 404, which the users report once, with the reason, before they stop.
"""

from __future__ import annotations

from locust import FastHttpUser, between, tag, task
from locust.exception import StopUser

from .config import SETTINGS

MISSING = f"GET {SETTINGS.io_path} answered 404: the I/O-bound endpoint comes with relay mode (issue 5)"


class BlockingIOUser(FastHttpUser):
    """Hits IO_PATH (default ``/io/``) with a short think time."""

    scenario = "io"
    weight = 1
    wait_time = between(*SETTINGS.think(0.5, 2))
    default_headers = {"Host": SETTINGS.host_header}

    @tag("io")
    @task
    def blocking_view(self) -> None:
        missing = False
        with self.client.get(SETTINGS.io_path, name=SETTINGS.io_path, catch_response=True) as response:
            if response.status_code == 404:
                response.failure(MISSING)
                missing = True
        if missing:
            raise StopUser()
