"""EVENT_LOOP: the loop under Daphne's Twisted reactor and the workers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import uvloop

from channels_kit.event_loop import loop_name, new_event_loop


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(None, "uvloop"), ("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")],
)
def test_the_setting_names_the_loop(monkeypatch, setting, expected):
    if setting is None:
        monkeypatch.delenv("EVENT_LOOP", raising=False)
    else:
        monkeypatch.setenv("EVENT_LOOP", setting)
    assert loop_name() == expected
    loop = new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop) == (expected == "uvloop")
    finally:
        loop.close()


def test_an_unknown_loop_is_an_error(monkeypatch):
    monkeypatch.setenv("EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="EVENT_LOOP"):
        loop_name()


# In a fresh interpreter (a reactor is installed once per process): the kit's server module,
# imported first, puts Twisted's reactor on the chosen loop, and Daphne's server keeps it.
REACTOR_PROBE = """
import asyncio
import channels_kit.interface_server as kit
import daphne.server
from twisted.internet import reactor
print(kit.EVENT_LOOP, type(reactor._asyncioEventloop).__module__.split(".")[0])
"""


@pytest.mark.parametrize("setting", ["uvloop", "asyncio"])
def test_daphne_runs_on_the_chosen_loop(setting):
    env = {**os.environ, "EVENT_LOOP": setting}
    result = subprocess.run(
        [sys.executable, "-c", REACTOR_PROBE], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == [setting, setting]
