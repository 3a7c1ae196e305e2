"""Deploying a project the kit did not write: found, configured for production, served.

- ``discover``: what a project directory holds (settings module from ``manage.py``,
  dependencies); the standard library only, so it also runs on the host before a build.
- ``overlay``: the kit's production settings applied over the project's own.
- ``settings``: the settings module to run with (``DJANGO_SETTINGS_MODULE``); the overlay
  over ``KIT_PROJECT_SETTINGS``.
- ``urls``: the kit's health views, then the project's own URLs.
- ``asgi`` / ``wsgi``: the project's ``ASGI_APPLICATION`` / ``WSGI_APPLICATION``.
- ``describe``: what the kit found, as the ``kit_project`` command prints it.
"""
