"""Django middleware that stamps every response with the server that produced it."""

from __future__ import annotations

from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from channels_kit.observe.identity import server_identity

SERVED_BY_HEADER = "X-Served-By"


class ServedByMiddleware:
    """Adds ``X-Served-By: <role>/<hostname>``; works under WSGI and ASGI alike."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.identity = server_identity()
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self._acall(request)
        return self._stamp(self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return self._stamp(await self.get_response(request))

    def _stamp(self, response: HttpResponse) -> HttpResponse:
        response[SERVED_BY_HEADER] = self.identity
        return response
