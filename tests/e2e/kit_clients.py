"""The HTTP client the end-to-end tests share with tests/native and tests/swarm (which put this
folder on sys.path): one request, errors as responses rather than exceptions."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def fetch(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None, timeout: float = 30
) -> Response:
    """One HTTP request; an error status comes back as a Response, not an exception."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Response(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers), error.read())
