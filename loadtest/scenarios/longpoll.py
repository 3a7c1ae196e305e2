"""Long-poll clients: ``GET /poll/<room>/`` in a loop, while members of the room post over WebSocket.

Each user waits on its room's next message (``?timeout=POLL_TIMEOUT``; 204 when none
came) and posts a message of its own every 2-6 s over a chat socket, so the scenario
runs alone. The HTTP row ``/poll/[room]/`` is the wait; the LPDELIVER row is the delay
from a message's send to its arrival in a long-poll answer. A stack without the
endpoint answers 404: the users report it once, with the reason, and stop.
"""

from __future__ import annotations

import itertools
import json
import random
import time

import gevent
from locust import FastHttpUser, between, tag, task
from locust.exception import StopUser

from .config import SETTINGS
from .metrics import LONG_POLL_NAME, POLL_DELIVER, fire
from .rooms import ROOMS
from .ws import ChatSocket

MISSING = (
    "GET /poll/<room>/ answered 404: this stack has no long-poll endpoint "
    "(it comes with the traffic-splitting issue); run another SCENARIO"
)
# The poster never posts faster than this, whatever THINK_SCALE says.
MIN_POST_INTERVAL = 0.2
_ids = itertools.count(1)


class LongPollUser(FastHttpUser):
    """A long-poll client (a browser without WebSockets) in a room of POLL_ROOM_SIZE members."""

    scenario = "longpoll"
    weight = 1
    # A browser re-polls at once; a short pause keeps an erroring server from being hammered.
    wait_time = between(0.05, 0.2)
    default_headers = {"Host": SETTINGS.host_header}
    network_timeout = SETTINGS.poll_timeout + 20.0

    def on_start(self) -> None:
        self.room = ROOMS.assign("poll", SETTINGS.poll_room_size)
        self.socket = ChatSocket(self.environment, self.room, lambda _frame: None)
        self.socket.connect()
        self.poster = gevent.spawn(self._post_now_and_then)

    def on_stop(self) -> None:
        self.poster.kill(block=False)
        self.socket.close()

    def _post_now_and_then(self) -> None:
        # Killed by on_stop: lives as long as the user.
        while True:
            low, high = SETTINGS.think(2, 6)
            gevent.sleep(max(random.uniform(low, high), MIN_POST_INTERVAL))
            if not self.socket.alive:
                self.socket.close()
                if not self.socket.connect():
                    continue
            message_id = f"{SETTINGS.run_prefix}-lp{next(_ids)}"
            self.socket.send_json({"message": json.dumps({"lt": message_id, "t": time.time()})})

    @tag("longpoll")
    @task
    def poll(self) -> None:
        url = f"/poll/{self.room}/?timeout={SETTINGS.poll_timeout:g}"
        missing = False
        with self.client.get(url, name=LONG_POLL_NAME, catch_response=True) as response:
            if response.status_code == 404:
                response.failure(MISSING)
                missing = True
            elif response.status_code == 204:
                response.success()
            elif response.status_code == 200:
                self._delivered(response.text or "")
            else:
                response.failure(f"expected 200 or 204, got {response.status_code}")
        if missing:
            raise StopUser()

    def _delivered(self, text: str) -> None:
        try:
            body = json.loads(json.loads(text)["message"])
            sent = float(body["t"])
        except (ValueError, TypeError, KeyError):
            return  # a message from someone else
        fire(self.environment, POLL_DELIVER, "longpoll room", sent)
