"""Relay mode: interface servers that run no project code, and workers that run all of it.

- ``protocol``: channel names, message types, the scope on the wire.
- ``interface``: the ASGI application Daphne serves (HTTP, long-poll, WebSocket).
- ``groups``: one layer membership per interface server and group, local fan-out.
- ``asgi``: that application, configured from the environment.
- ``worker``: runs relayed requests and events through the project's ASGI application.
- ``consumers``: how a consumer's state travels with each event.

The protocol is described in ``docs/relay-protocol.md``.
"""
