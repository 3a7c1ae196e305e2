"""HTTP pages: the chat page, a room's history and the liveness probe, at a reader's pace."""

from __future__ import annotations

import random

from locust import FastHttpUser, between, tag, task

from .config import SETTINGS
from .rooms import ROOMS


class PageUser(FastHttpUser):
    """Someone reading: opens the chat page, reloads a room's history, and a monitor's /healthz."""

    scenario = "pages"
    weight = 4
    wait_time = between(*SETTINGS.think(2, 8))
    default_headers = {"Host": SETTINGS.host_header}

    def room(self) -> str:
        """A room the chat users of this process talk in, else the demo's lobby."""
        rooms = ROOMS.known()
        return random.choice(rooms) if rooms else "lobby"

    @tag("pages")
    @task(3)
    def chat_page(self) -> None:
        self.client.get(f"/?room={self.room()}", name="/?room=[room]")

    @tag("pages")
    @task(2)
    def history(self) -> None:
        self.client.get(f"/history/{self.room()}/", name="/history/[room]/")

    @tag("pages")
    @task(1)
    def healthz(self) -> None:
        self.client.get("/healthz")
