"""``LocalChannelLayer``: a channel layer for the processes of one host, with no server.

Every process opens the same SQLite file (``store``); the layer API, the poller and the
guarantees are the table layer's (``channels_kit.layers.table``). Other processes' sends
are seen within ``max_poll`` seconds (1 ms after a message, doubling while idle); this
process's own wake its pollers at once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from channels_kit.layers.local.store import Store
from channels_kit.layers.table import TableChannelLayer

DEFAULT_PATH = Path(tempfile.gettempdir()) / "channels-kit-layer.sqlite3"


class LocalChannelLayer(TableChannelLayer):
    """A channel layer shared by the processes of one host through one SQLite file (no server)."""

    def __init__(self, path: str | Path | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.path = Path(path) if path else DEFAULT_PATH

    def open_store(self) -> Store:
        return Store(self.path, process_id=f"{os.uname().nodename}:{os.getpid()}:{self.client_prefix}")
