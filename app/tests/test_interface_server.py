"""The kit's Daphne server: what it adds to Daphne's own before any connection."""

from __future__ import annotations

from channels_kit.interface_server import KitDaphneServer, with_backlog


async def app(scope, receive, send):  # never called: no server runs here
    raise AssertionError


def test_tcp_endpoints_get_a_listen_backlog_others_are_left_alone():
    assert (
        with_backlog("tcp:port=8000:interface=0.0.0.0", 1024)
        == "tcp:port=8000:interface=0.0.0.0:backlog=1024"
    )
    assert with_backlog("tcp:port=8000:backlog=64", 1024) == "tcp:port=8000:backlog=64"
    assert with_backlog("unix:/run/daphne.sock", 1024) == "unix:/run/daphne.sock"
    assert with_backlog("tcp:port=8000", 0) == "tcp:port=8000"


def test_the_server_listens_with_the_configured_backlog(monkeypatch):
    monkeypatch.setenv("DAPHNE_LISTEN_BACKLOG", "2048")
    monkeypatch.setenv("DAPHNE_METRICS_PORT", "0")
    server = KitDaphneServer(
        application=app, endpoints=["tcp:port=8000:interface=0.0.0.0", "fd:domain=INET:fileno=3"]
    )
    assert server.endpoints == ["tcp:port=8000:interface=0.0.0.0:backlog=2048", "fd:domain=INET:fileno=3"]
    monkeypatch.delenv("DAPHNE_LISTEN_BACKLOG")
    default = KitDaphneServer(application=app, endpoints=["tcp:port=8000"])
    assert default.endpoints == ["tcp:port=8000:backlog=1024"]
