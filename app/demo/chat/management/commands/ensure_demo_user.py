"""``manage.py ensure_demo_user``: create (or re-password) the demo login from the environment.

The ``migrate`` role runs it after the migrations. ``DEMO_USER`` (default ``demo``)
gets the password ``DEMO_PASSWORD``, which `make up` generates into ``.env``; with
no password set nothing is created, so no image ships a working default login.
"""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create or update the demo user from DEMO_USER / DEMO_PASSWORD (skipped without a password)."

    def handle(self, *args, **options) -> None:
        username = os.environ.get("DEMO_USER", "").strip() or "demo"
        password = os.environ.get("DEMO_PASSWORD", "")
        if not password:
            self.stdout.write("DEMO_PASSWORD is empty: no demo user")
            return
        if len(password) < 12:
            raise CommandError("DEMO_PASSWORD must have at least 12 characters")
        user, created = get_user_model().objects.get_or_create(username=username)
        user.set_password(password)
        user.save()
        self.stdout.write(f"demo user {username!r} {'created' if created else 'updated'}")
