"""Deployment kit for Django Channels: channel layer, worker command, probes.

Modules, from the bottom up (a module imports only from those below it, or its own subpackage):

- ``variables``: the environment variables the package reads, and their lookalikes.
- ``event_loop``: the processes' asyncio event loop (uvloop when installed).
- ``drops``: messages dropped (full channel, refused, given up on): a WARNING and a counter.
- ``layers``: the channel layer backends and their contract (subpackage).
- ``conf``: ``CHANNEL_LAYERS`` and the other settings, from the environment.
- ``observe``: identities, queue status, worker state, metrics, probes (subpackage).
- ``relay``: relay mode, interface and worker halves (subpackage).
- ``worker``: the worker tier, ``KitWorker``; it runs relay mode's handler too (subpackage).
- ``lifespan``: ASGI lifespan events for a server that sends none (Daphne).
- ``interface_server``: Daphne as the kit runs it, with a drain on SIGTERM and lifespan events.
- ``health``: ``/healthz`` and ``/readyz``.
- ``urls``: the health views as a URL module.
- ``middleware``: ``X-Served-By``, and a quick 503 while the database is away.
- ``consumers``: consumer helpers (fan-out for both modes, lean dispatch).
- ``checks``: Django system checks of the kit's place in a project.
- ``apps``: the Django app config.
- ``project``: deploying a project the kit did not write (subpackage).
- ``management``: the ``manage.py`` commands (subpackage).
- ``testing``: the channel layer conformance suite (subpackage).
"""

__version__ = "0.1.0"
