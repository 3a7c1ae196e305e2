"""``manage.py kit_project``: what the kit found in the project it deploys (``--json`` for scripts)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from channels_kit.project.describe import describe, summary


class Command(BaseCommand):
    help = (
        "Show what the kit derives from this project: settings module, ASGI and WSGI applications, "
        "routed channels, static files, migrations, and the settings it replaced."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="one line of JSON, for scripts")

    def handle(self, *args, **options) -> None:
        found = describe()
        self.stdout.write(json.dumps(found) if options["json"] else summary(found))
