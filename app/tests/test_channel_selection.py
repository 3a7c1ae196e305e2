"""Which channels runworker serves: routed names found through middleware, filtered by globs."""

import pytest
from channels.middleware import BaseMiddleware
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter
from django.core.management import CommandError, call_command
from django.test import override_settings

from channels_kit.worker.selection import NoChannelsError, routed_channels, select_channels
from tests.workerproject.consumers import JobConsumer

CANDIDATES = ["http.request", "websocket.receive", "thumbnail", "tasks", "thumbnail.big"]


def test_no_filter_keeps_every_candidate_once_in_order():
    assert select_channels([*CANDIDATES, "tasks"]) == CANDIDATES


def test_only_globs_keep_matches_of_any():
    web = select_channels(CANDIDATES, only=["http.*", "websocket.*"])
    assert web == ["http.request", "websocket.receive"]
    assert select_channels(CANDIDATES, only=["thumbnail"]) == ["thumbnail"]


def test_exclude_globs_drop_matches_of_any():
    assert select_channels(CANDIDATES, exclude=["thumbnail"]) == [
        "http.request",
        "websocket.receive",
        "tasks",
        "thumbnail.big",
    ]
    assert select_channels(CANDIDATES, exclude=["thumbnail*", "*.*"]) == ["tasks"]


def test_only_and_exclude_combine():
    assert select_channels(CANDIDATES, only=["thumbnail*"], exclude=["*.big"]) == ["thumbnail"]


def test_globs_are_case_sensitive_like_channel_names():
    assert select_channels(["Tasks", "tasks"], only=["tasks"]) == ["tasks"]


def test_nothing_left_names_candidates_and_filters():
    with pytest.raises(NoChannelsError) as caught:
        select_channels(["tasks", "thumbnail"], only=["http.*"], exclude=["tasks"])
    text = str(caught.value)
    assert "['tasks', 'thumbnail']" in text
    assert "['http.*']" in text and "--only-channels" in text
    assert "--exclude-channels ['tasks']" in text
    with pytest.raises(NoChannelsError, match=r"candidates \(none\)"):
        select_channels([])


def test_routed_channels_look_through_middleware():
    consumer = JobConsumer.as_asgi()
    app = BaseMiddleware(
        ProtocolTypeRouter(
            {
                "websocket": URLRouter([]),
                "channel": BaseMiddleware(BaseMiddleware(ChannelNameRouter({"b": consumer, "a": consumer}))),
            }
        )
    )
    assert routed_channels(app) == ["b", "a"]


def test_routed_channels_without_a_channel_protocol_is_empty():
    assert routed_channels(ProtocolTypeRouter({"websocket": URLRouter([])})) == []
    assert routed_channels(JobConsumer.as_asgi()) == []

    class SelfWrapping:
        def __init__(self):
            self.inner = self

    assert routed_channels(SelfWrapping()) == []


@override_settings(ASGI_APPLICATION="tests.workerproject.asgi.application")
def test_runworker_refuses_to_start_with_nothing_to_serve():
    with pytest.raises(CommandError) as caught:
        call_command("runworker", "extra", "--only-channels=jobs*", "--exclude-channels=jobs,jobs.*")
    text = str(caught.value)
    assert "no channel left to serve" in text
    assert "['extra', 'jobs', 'jobs.slow']" in text
    assert "['jobs*']" in text and "['jobs', 'jobs.*']" in text


@override_settings(ASGI_APPLICATION="tests.workerproject.asgi.application")
def test_runworker_reads_filters_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORKER_ONLY_CHANNELS", "http.*, websocket.*")
    with pytest.raises(CommandError, match=r"--only-channels \['http\.\*', 'websocket\.\*'\]"):
        call_command("runworker")


def test_relay_mode_adds_the_work_channels_of_the_routed_protocols():
    from channels_kit.management.commands.runworker import relay_channels

    async def http_app(scope, receive, send):
        pass

    both = ProtocolTypeRouter({"http": http_app, "websocket": URLRouter([])})
    assert relay_channels(both) == [
        "http.request",
        "websocket.connect",
        "websocket.receive",
        "websocket.disconnect",
        "websocket.event",
    ]
    assert relay_channels(ProtocolTypeRouter({"channel": ChannelNameRouter({})})) == []
    # A bare application (Django's ASGIHandler, say) is an HTTP one.
    assert relay_channels(http_app) == ["http.request"]
