"""``manage.py runworker``: serve background channels with the kit's ``KitWorker``.

    manage.py runworker                                   # every channel the project routes
    manage.py runworker --exclude-channels=thumbnail      # all but the slow one
    manage.py runworker --only-channels=thumbnail --concurrency=2
    manage.py runworker --metrics-port=9100                # Prometheus /metrics on :9100
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import get_channel_layer
from channels.management.commands import runworker
from channels.routing import get_default_application
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError

from channels_kit.channel_selection import NoChannelsError, routed_channels, select_channels
from channels_kit.conf import env_float, env_int, env_list, env_str
from channels_kit.metrics import MetricsServer
from channels_kit.slots import errors_logger
from channels_kit.worker import KitWorker

logger = logging.getLogger("channels_kit.worker")

DEFAULT_HEARTBEAT_FILE = "/tmp/channels-kit/worker.heartbeat"
DEFAULT_CONCURRENCY = 1
# Below compose's stop_grace_period (30 s) for the worker services, so the drain
# ends before Docker's SIGKILL.
DEFAULT_GRACE_PERIOD_SECONDS = 25.0


def split_globs(values: list[str] | None, env_name: str) -> list[str]:
    """Globs from repeated (or comma-separated) options; from ``env_name`` when none was given."""
    if values is None:
        return env_list(env_name)
    return [glob.strip() for value in values for glob in value.split(",") if glob.strip()]


def send_consumer_errors_to_stderr() -> None:
    """Send consumer tracebacks to stderr, as the seed promises, unless the project's
    ``LOGGING`` already gives ``channels_kit.worker.errors`` handlers of its own."""
    if errors_logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    errors_logger.addHandler(handler)
    errors_logger.propagate = False


class Command(runworker.Command):
    """Run a worker for the project's routed channels, filtered by globs (see ``--help``)."""

    help = (
        "Run a Channels worker. It serves the channels named here plus every channel the "
        "project's ASGI application routes (ChannelNameRouter), narrowed by --only-channels "
        "and --exclude-channels. SIGTERM/SIGINT: finish in-flight messages, then exit."
    )

    def add_arguments(self, parser) -> None:
        # Not super(): upstream makes channel names required; here they are optional extras.
        parser.add_argument(
            "--layer", default=DEFAULT_CHANNEL_LAYER, help="Channel layer alias, if not the default."
        )
        parser.add_argument("channels", nargs="*", help="Channels to serve besides the routed ones.")
        parser.add_argument(
            "--only-channels",
            action="append",
            metavar="GLOB",
            help="Serve only channels matching one of these globs, e.g. 'http.*' (repeatable, "
            "or comma-separated; env WORKER_ONLY_CHANNELS).",
        )
        parser.add_argument(
            "--exclude-channels",
            action="append",
            metavar="GLOB",
            help="Do not serve channels matching these globs, e.g. 'thumbnail' (repeatable, "
            "or comma-separated; env WORKER_EXCLUDE_CHANNELS).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            metavar="N",
            help="Messages in flight per channel in this process (env WORKER_CONCURRENCY, "
            f"default {DEFAULT_CONCURRENCY}).",
        )
        parser.add_argument(
            "--grace-period",
            type=float,
            metavar="SECONDS",
            help="On SIGTERM, how long in-flight messages get to finish (env "
            f"WORKER_GRACE_PERIOD_SECONDS, default {DEFAULT_GRACE_PERIOD_SECONDS:g}).",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="Serve Prometheus metrics on this port at /metrics (env WORKER_METRICS_PORT; "
            "0, the default, turns it off).",
        )
        parser.add_argument(
            "--heartbeat-file",
            default=env_str("WORKER_HEARTBEAT_FILE", DEFAULT_HEARTBEAT_FILE),
            help="File touched while the worker runs ('' to disable; env WORKER_HEARTBEAT_FILE).",
        )

    def handle(self, *args, **options) -> None:
        try:
            only = split_globs(options["only_channels"], "WORKER_ONLY_CHANNELS")
            exclude = split_globs(options["exclude_channels"], "WORKER_EXCLUDE_CHANNELS")
            concurrency = options["concurrency"]
            if concurrency is None:
                concurrency = env_int("WORKER_CONCURRENCY", DEFAULT_CONCURRENCY)
            grace_period = options["grace_period"]
            if grace_period is None:
                grace_period = env_float("WORKER_GRACE_PERIOD_SECONDS", DEFAULT_GRACE_PERIOD_SECONDS)
            metrics_port = options["metrics_port"]
            if metrics_port is None:
                metrics_port = env_int("WORKER_METRICS_PORT", 0)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if concurrency < 1:
            raise CommandError(f"--concurrency must be at least 1, not {concurrency}")
        if grace_period < 0:
            raise CommandError(f"--grace-period must not be negative, not {grace_period:g}")
        if not 0 <= metrics_port <= 65535:
            raise CommandError(f"--metrics-port must be 0 (off) or a port number, not {metrics_port}")

        application = get_default_application()
        named, routed = list(options["channels"]), routed_channels(application)
        try:
            channels = select_channels([*named, *routed], only=only, exclude=exclude)
        except NoChannelsError as exc:
            raise CommandError(str(exc)) from None
        channel_layer = get_channel_layer(options["layer"])
        if channel_layer is None:
            raise CommandError("You do not have any CHANNEL_LAYERS configured.")

        send_consumer_errors_to_stderr()
        logger.info(
            "runworker: serving %s (named %s, routed %s, only %s, exclude %s)",
            ", ".join(channels),
            named,
            routed,
            only,
            exclude,
        )
        heartbeat = options["heartbeat_file"]
        worker = KitWorker(
            application=application,
            channels=channels,
            channel_layer=channel_layer,
            concurrency=concurrency,
            grace_period=grace_period,
            heartbeat_path=Path(heartbeat) if heartbeat else None,
            heartbeat_interval=env_float("WORKER_HEARTBEAT_INTERVAL", 5.0),
        )
        metrics = None
        if metrics_port:
            try:
                metrics = MetricsServer(worker, metrics_port)
            except OSError as exc:
                raise CommandError(f"cannot serve metrics on port {metrics_port}: {exc}") from None
            logger.info("runworker: Prometheus metrics on :%d/metrics", metrics.port)
        try:
            worker.run()
        finally:
            if metrics:
                metrics.close()
