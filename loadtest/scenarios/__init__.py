"""The kit's Locust scenarios: one user class per scenario, chosen by SCENARIO (see locustfile.py)."""

from __future__ import annotations

from locust import User

from .blocking import BlockingIOUser
from .chat import ChatUser, FanoutUser
from .longpoll import LongPollUser
from .pages import PageUser
from .tasks import TaskUser

USER_CLASSES: dict[str, type[User]] = {
    "pages": PageUser,
    "chat": ChatUser,
    "fanout": FanoutUser,
    "tasks": TaskUser,
    "longpoll": LongPollUser,
    "io": BlockingIOUser,
}
# What `mixed` runs, with each class's weight: `io` waits for relay mode (issue 5).
MIXED = ("pages", "chat", "fanout", "tasks", "longpoll")

__all__ = [
    "MIXED",
    "USER_CLASSES",
    "BlockingIOUser",
    "ChatUser",
    "FanoutUser",
    "LongPollUser",
    "PageUser",
    "TaskUser",
]
