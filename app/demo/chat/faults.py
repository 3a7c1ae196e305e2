"""``DEMO_FAULT_RATE``: a share of requests answered 500, to play a release with a bug.

Set it on a new image (``docker commit --change 'ENV DEMO_FAULT_RATE=1' ...``) and
watch a staged rollout (``make deploy TAG=... CANARY=0.5``) stop at the canary.
Health checks are never faulted.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseServerError

HEALTH_PATHS = ("/healthz", "/readyz")


class FaultInjectionMiddleware:
    """Answers ``DEMO_FAULT_RATE`` (0-1) of the requests with 500; off (0) by default."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.rate = settings.DEMO_FAULT_RATE
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _fault(self, request: HttpRequest) -> HttpResponse | None:
        if self.rate > 0 and request.path not in HEALTH_PATHS and random.random() < self.rate:
            return HttpResponseServerError("injected fault (DEMO_FAULT_RATE)\n", content_type="text/plain")
        return None

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self._acall(request)
        return self._fault(request) or self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return self._fault(request) or await self.get_response(request)
