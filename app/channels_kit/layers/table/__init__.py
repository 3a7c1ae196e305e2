"""Channel layers whose messages are rows of a table that every process shares.

The same-host layer (a SQLite file) and the PostgreSQL layer differ only in their store:
how rows are kept, taken and counted. Everything above it is here, once.

- ``store``: what a store offers (``MessageStore``) and a message as it holds one (``Row``).
- ``layer``: ``TableChannelLayer``, the Channels layer API over a store, with one poller
  per event loop that fetches for every waiting ``receive()``.
- ``inspector``: queue figures and worker states read from the store, for
  ``channels_status`` and ``/metrics``.
"""

from channels_kit.layers.table.layer import TableChannelLayer
from channels_kit.layers.table.store import MessageStore, Row

__all__ = ["MessageStore", "Row", "TableChannelLayer"]
