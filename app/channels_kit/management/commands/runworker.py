"""``manage.py runworker``: Channels' worker command, run by the kit's ``HeartbeatWorker``."""

from __future__ import annotations

from pathlib import Path

from channels.management.commands import runworker

from channels_kit.conf import env_float, env_str
from channels_kit.worker import HeartbeatWorker

DEFAULT_HEARTBEAT_FILE = "/tmp/channels-kit/worker.heartbeat"


class Command(runworker.Command):
    """Run a worker server for the given channels (see ``--help``)."""

    help = "Run a Channels worker for the given channels, with a heartbeat file for healthchecks."

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--heartbeat-file",
            default=env_str("WORKER_HEARTBEAT_FILE", DEFAULT_HEARTBEAT_FILE),
            help="File touched while the worker runs ('' to disable; env WORKER_HEARTBEAT_FILE).",
        )

    def handle(self, *args, **options) -> None:
        heartbeat = options["heartbeat_file"]

        def build_worker(**kwargs) -> HeartbeatWorker:
            return HeartbeatWorker(
                heartbeat_path=Path(heartbeat) if heartbeat else None,
                heartbeat_interval=env_float("WORKER_HEARTBEAT_INTERVAL", 5.0),
                **kwargs,
            )

        self.worker_class = build_worker
        super().handle(*args, **options)
