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

With LOADTEST_SPEC (a project's description, spec.py) the generic scenarios run instead:

    project-pages  GET the description's paths, by weight, checking each status
    project-ws     WebSocket members of rooms send the description's message; WSDELIVER = send ->
                   each copy that must come back (echo: the sender; broadcast: the room)
    mixed          both parts the description has
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


def selected_scenarios(
    value: str, classes: dict[str, list[type[User]]] | None = None, mixed: tuple[str, ...] = MIXED
) -> list[str]:
    """Scenario names from SCENARIO (``mixed`` expands); exits with the choices on a bad name."""
    classes = DEMO_CLASSES if classes is None else classes
    names: list[str] = []
    for name in (part.strip() for part in value.split(",")):
        if name == "mixed":
            names.extend(mixed)
        elif name in classes:
            names.append(name)
        elif name:
            choices = ", ".join([*classes, "mixed"])
            raise SystemExit(f"SCENARIO: unknown scenario {name!r}; choose from: {choices}")
    return names or list(mixed)


def expose(selected: list[str], classes: dict[str, list[type[User]]] | None = None) -> None:
    """Put every user class in this module, the unselected ones abstract (Locust runs the others)."""
    for name, user_classes in (DEMO_CLASSES if classes is None else classes).items():
        for user_class in user_classes:
            user_class.abstract = name not in selected
            globals()[user_class.__name__] = user_class


def project_classes(path: str) -> dict[str, list[type[User]]]:
    """The generic scenarios of the description at ``path``; exits with the reason when it is wrong."""
    from scenarios.project import user_classes
    from spec import SpecError, check_scenarios, load

    display = os.environ.get("LOADTEST_SPEC_SOURCE") or path
    try:
        spec = load(path, display)
        check_scenarios(spec, os.environ.get("SCENARIO", "mixed"))
    except SpecError as exc:
        raise SystemExit(f"LOADTEST_SPEC: {exc}") from None
    return user_classes(spec)


DEMO_CLASSES: dict[str, list[type[User]]] = {name: [cls] for name, cls in USER_CLASSES.items()}
SPEC = os.environ.get("LOADTEST_SPEC", "")
if SPEC:
    CLASSES = project_classes(SPEC)
    SELECTED = selected_scenarios(os.environ.get("SCENARIO", "mixed"), CLASSES, tuple(CLASSES))
else:
    CLASSES = DEMO_CLASSES
    SELECTED = selected_scenarios(os.environ.get("SCENARIO", "mixed"))
expose(SELECTED, CLASSES)


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
