"""Relay mode: interface servers that run no project code, and workers that run all of it.

Interface side (Daphne, the relay image):

- ``asgi``: ``application``, the relay configured from the environment.
- ``interface``: the ASGI application itself, and the HTTP half of it.
- ``websocket``: one client socket: its events out to the workers, their replies back.
- ``settings``: how the relay behaves (``RelaySettings``) and what it counts (``RelayStats``).
- ``groups``: one layer membership per interface server and group, local fan-out.
- ``resend``: work messages whose worker died: noticed, and sent again.
- ``worker_watch``: which relay channels live workers serve, as the interface sees it.

Worker side (``runworker --relay``):

- ``handler``: runs relayed requests and events through the project's ASGI application.
- ``http_exchange``: one relayed HTTP request, the application's ``receive`` and ``send``.
- ``outbox``: the worker's replies to an interface, batched, and its alive beats.
- ``consumer_state``: how a consumer's state travels with each event.

Both:

- ``protocol``: channel names, message types and the scope on the wire, described for
  other implementations in ``docs/relay-protocol.md`` of the kit's repository.
- ``clock``: the layer server's time, by which deadlines and start windows are set and judged.
"""
