import asyncio
import socket

from django.http import HttpRequest, HttpResponse

from channels_kit.middleware import SERVED_BY_HEADER, ServedByMiddleware
from channels_kit.observe.identity import server_identity


def test_identity_is_role_and_hostname(monkeypatch):
    monkeypatch.setenv("SERVER_ROLE", "worker")
    assert server_identity() == f"worker/{socket.gethostname()}"
    monkeypatch.delenv("SERVER_ROLE")
    assert server_identity().startswith("django/")


def test_sync_and_async_responses_are_stamped(monkeypatch):
    monkeypatch.setenv("SERVER_ROLE", "daphne")

    def sync_view(request):
        return HttpResponse("sync")

    async def async_view(request):
        return HttpResponse("async")

    sync_response = ServedByMiddleware(sync_view)(HttpRequest())
    async_response = asyncio.run(ServedByMiddleware(async_view)(HttpRequest()))
    expected = f"daphne/{socket.gethostname()}"
    assert sync_response[SERVED_BY_HEADER] == expected
    assert async_response[SERVED_BY_HEADER] == expected
