"""Locust scenarios for the Channels deployment kit (`make loadtest`; loadtest/README.md).

Pick scenarios with SCENARIO, a comma-separated list of

    pages     GET /?room=..., /history/<room>/, /healthz at a reader's pace
    chat      WebSocket members of small rooms post; WSDELIVER = send -> receipt on every other member
    fanout    one large room per Locust process: every post fans out to all its members
    tasks     POST /tasks/ {"channel": "tasks", "sleep": TASK_SLEEP}, poll until done (TASK events)
    longpoll  GET /poll/<room>/ while room members post (LPDELIVER)
    io        the 50 ms I/O-bound endpoint of relay mode (issue 5; 404 until then)
    mixed     pages, chat, fanout, tasks and longpoll, by weight (the default)

Every task is also tagged with its scenario's name, so `--tags chat tasks` (or
`--exclude-tags fanout`) selects the same way from the classes SCENARIO loaded.
"""

from __future__ import annotations

import os
from typing import Any

from locust import User, events
from locust.env import Environment
from scenarios import MIXED, USER_CLASSES

# Imported for their event listeners: the summary writer and the run bounds.
from scenarios import limits as _limits  # noqa: F401
from scenarios import metrics as _metrics  # noqa: F401


def selected_scenarios(value: str) -> list[str]:
    """Scenario names from SCENARIO (``mixed`` expands); exits with the choices on a bad name."""
    names: list[str] = []
    for name in (part.strip() for part in value.split(",")):
        if name == "mixed":
            names.extend(MIXED)
        elif name in USER_CLASSES:
            names.append(name)
        elif name:
            choices = ", ".join([*USER_CLASSES, "mixed"])
            raise SystemExit(f"SCENARIO: unknown scenario {name!r}; choose from: {choices}")
    return names or list(MIXED)


def expose(selected: list[str]) -> None:
    """Put every user class in this module, the unselected ones abstract (Locust runs the others)."""
    for name, user_class in USER_CLASSES.items():
        user_class.abstract = name not in selected
        globals()[user_class.__name__] = user_class


SELECTED = selected_scenarios(os.environ.get("SCENARIO", "mixed"))
expose(SELECTED)


def _task_tags(user_class: type[User]) -> list[set[str]]:
    return [set(getattr(task, "locust_tag_set", ())) for task in user_class.tasks]


@events.init.add_listener
def drop_untagged_classes(environment: Environment, **_kwargs: Any) -> None:
    """With --tags/--exclude-tags, drop the classes left without a task (Locust would fail to start them)."""
    options = environment.parsed_options
    tags = set(getattr(options, "tags", None) or ())
    exclude = set(getattr(options, "exclude_tags", None) or ())
    if not tags and not exclude:
        return
    kept = [
        user_class
        for user_class in environment.user_classes
        if any((not tags or task & tags) and not task & exclude for task in _task_tags(user_class))
    ]
    if not kept:
        raise SystemExit(f"no scenario has a task tagged {sorted(tags)} (excluding {sorted(exclude)})")
    environment.user_classes[:] = kept
