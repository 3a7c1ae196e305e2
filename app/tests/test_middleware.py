import asyncio
import socket

from django.db import OperationalError, ProgrammingError
from django.http import HttpRequest, HttpResponse

from channels_kit.middleware import SERVED_BY_HEADER, DatabaseUnavailableMiddleware, ServedByMiddleware
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


def test_an_unreachable_database_is_a_503_with_retry_after_and_other_errors_stay_errors():
    middleware = DatabaseUnavailableMiddleware(lambda request: HttpResponse())
    request = HttpRequest()
    request.method, request.path = "GET", "/"
    response = middleware.process_exception(request, OperationalError("connection refused"))
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert middleware.process_exception(request, ProgrammingError("no such table")) is None
