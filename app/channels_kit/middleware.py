"""Django middleware of the kit: which server answered, and a quick 503 while the database is away.

- ``ServedByMiddleware``: ``X-Served-By: <role>/<hostname>`` on every response.
- ``DatabaseUnavailableMiddleware``: a view that fails because the database cannot be
  reached (restarting, stopped, network) answers 503 with ``Retry-After`` instead of 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from channels_kit.observe.identity import server_identity

logger = logging.getLogger(__name__)

SERVED_BY_HEADER = "X-Served-By"
# What a 503 for an unreachable database tells clients to wait before trying again (seconds).
DATABASE_RETRY_AFTER_SECONDS = 5


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


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """Turns a view's ``OperationalError``/``InterfaceError`` (no connection to the database)
    into 503 with ``Retry-After``: clients and load balancers see "try again shortly", at
    once, rather than a 500. Other database errors (a bad query) stay errors."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.warning("database unavailable for %s %s: %s", request.method, request.path, exception)
        response = HttpResponse(
            "The database is unavailable; try again shortly.\n", status=503, content_type="text/plain"
        )
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response
