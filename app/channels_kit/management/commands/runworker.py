"""``manage.py runworker``: serve background channels with the kit's ``KitWorker``.

manage.py runworker                                   # every channel the project routes
manage.py runworker --exclude-channels=thumbnail      # all but the slow one
manage.py runworker --only-channels=thumbnail --concurrency=2
manage.py runworker --metrics-port=9100                # Prometheus /metrics on :9100
manage.py runworker --relay                            # also HTTP and WebSockets (relay mode)
manage.py runworker --relay --only-channels='http.*'   # relay mode, web pages only
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.management.commands import runworker
from channels.routing import get_default_application
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError

from channels_kit.conf import asgi_mode, env_float, env_int, env_list, env_str, install_hint
from channels_kit.layers.base import inspector_for
from channels_kit.observe.consumer_errors import send_consumer_errors_to_stderr
from channels_kit.relay.handler import RelayHandler
from channels_kit.relay.protocol import HTTP_CHANNELS, WEBSOCKET_CHANNELS
from channels_kit.variables import allowed_for
from channels_kit.worker.mode_guard import ModeGuard, ModeMismatch
from channels_kit.worker.selection import NoChannelsError, routed_channels, routed_protocols, select_channels
from channels_kit.worker.server import DEFAULT_LAYER_WAIT_SECONDS, KitWorker, LayerUnreachable
from channels_kit.worker.slots import HeldMessages

logger = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_FILE = "/tmp/channels-kit/worker.heartbeat"
DEFAULT_CONCURRENCY = 1
# Relay mode: requests and WebSocket events each run on an instance of their own, and
# async views (long-poll) wait without a thread, so more of them run side by side.
DEFAULT_HTTP_CONCURRENCY = 8
DEFAULT_WEBSOCKET_CONCURRENCY = 16
# Relay mode: a request or event still running after this long (a long-poll, a slow
# echo) frees its slot for the next one, while fewer than DEFAULT_HELD_MAX are held.
DEFAULT_RELEASE_SECONDS = 1.0
DEFAULT_HELD_MAX = 200
# Below compose's stop_grace_period (30 s) for the worker services, so the drain
# ends before Docker's SIGKILL.
DEFAULT_GRACE_PERIOD_SECONDS = 25.0
IN_MEMORY_WORKER = (
    "the channel layer is Channels' in-memory one, which lives inside one process: a worker of "
    "its own would never get what the web processes send. Name a Redis server (REDIS_URLS, or a "
    "platform's REDIS_URL), or run the web server and the workers in one process: manage.py runall"
)


def split_globs(values: list[str] | None, env_name: str) -> list[str]:
    """Globs from repeated (or comma-separated) options; from ``env_name`` when none was given."""
    if values is None:
        return env_list(env_name)
    return [glob.strip() for value in values for glob in value.split(",") if glob.strip()]


def relay_channels(application: Any) -> list[str]:
    """The work channels of relay mode for the protocols ``application`` routes."""
    protocols = routed_protocols(application)
    return [
        *(HTTP_CHANNELS if "http" in protocols else ()),
        *(WEBSOCKET_CHANNELS if "websocket" in protocols else ()),
    ]


def option_or_env(value, env_name: str, default, read=env_int, flag: str = ""):
    """A command-line value, else the environment's, else ``default``; either within the range
    ``VARIABLES`` gives ``env_name`` (``ImproperlyConfigured`` naming ``flag`` or the variable)."""
    if value is None:
        return read(env_name, default)
    allowed = allowed_for(env_name)
    if allowed is not None and not allowed.admits(value):
        described = allowed.describe(whole=read is env_int)
        raise ImproperlyConfigured(f"{flag or env_name} must be {described}, not {value!r}")
    return value


def mode_guard(channel_layer: Any, relay: bool) -> ModeGuard | None:
    """Outside relay mode, on a layer that shares worker state: the guard that stops this
    worker when relay interfaces run beside it."""
    inspector = inspector_for(channel_layer)
    if relay or inspector is None or not inspector.shares_worker_state:
        return None
    return ModeGuard(inspector, asgi_mode() or "direct")


@dataclass(frozen=True)
class WorkerOptions:
    """What ``runworker`` was asked for: its options, or their environment variables."""

    only: list[str]
    exclude: list[str]
    concurrency: int
    http_concurrency: int
    websocket_concurrency: int
    grace_period: float
    metrics_port: int
    relay: bool
    heartbeat_interval: float
    layer_wait: float
    release_after: float
    held_max: int


def read_options(options: dict) -> WorkerOptions:
    """The command's options, each falling back on its environment variable, checked (a bad
    one is a ``CommandError``)."""
    try:
        only = split_globs(options["only_channels"], "WORKER_ONLY_CHANNELS")
        exclude = split_globs(options["exclude_channels"], "WORKER_EXCLUDE_CHANNELS")
        concurrency = option_or_env(
            options["concurrency"], "WORKER_CONCURRENCY", DEFAULT_CONCURRENCY, flag="--concurrency"
        )
        http_concurrency = option_or_env(
            options["http_concurrency"],
            "WORKER_HTTP_CONCURRENCY",
            DEFAULT_HTTP_CONCURRENCY,
            flag="--http-concurrency",
        )
        websocket_concurrency = option_or_env(
            options["websocket_concurrency"],
            "WORKER_WEBSOCKET_CONCURRENCY",
            DEFAULT_WEBSOCKET_CONCURRENCY,
            flag="--websocket-concurrency",
        )
        grace_period = option_or_env(
            options["grace_period"],
            "WORKER_GRACE_PERIOD_SECONDS",
            DEFAULT_GRACE_PERIOD_SECONDS,
            env_float,
            flag="--grace-period",
        )
        metrics_port = option_or_env(options["metrics_port"], "WORKER_METRICS_PORT", 0, flag="--metrics-port")
        relay = options["relay"] or asgi_mode() == "relay"
        heartbeat_interval = env_float("WORKER_HEARTBEAT_INTERVAL", 5.0)
        layer_wait = env_float("WORKER_LAYER_WAIT_SECONDS", DEFAULT_LAYER_WAIT_SECONDS)
        release_after = env_float("WORKER_RELEASE_SECONDS", DEFAULT_RELEASE_SECONDS)
        held_max = env_int("WORKER_HELD_MAX", DEFAULT_HELD_MAX)
    except ImproperlyConfigured as exc:
        raise CommandError(str(exc)) from None
    return WorkerOptions(
        only=only,
        exclude=exclude,
        concurrency=concurrency,
        http_concurrency=http_concurrency,
        websocket_concurrency=websocket_concurrency,
        grace_period=grace_period,
        metrics_port=metrics_port,
        relay=relay,
        heartbeat_interval=heartbeat_interval,
        layer_wait=layer_wait,
        release_after=release_after,
        held_max=held_max,
    )


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
            "--relay",
            action="store_true",
            default=None,
            help="Relay mode: also serve the HTTP requests and WebSocket events that the "
            "interface servers relay (http.request, websocket.*), through the project's ASGI "
            "application (default: on when ASGI_MODE=relay).",
        )
        parser.add_argument(
            "--http-concurrency",
            type=int,
            metavar="N",
            help="Relay mode: HTTP requests in flight in this process (env WORKER_HTTP_CONCURRENCY, "
            f"default {DEFAULT_HTTP_CONCURRENCY}).",
        )
        parser.add_argument(
            "--websocket-concurrency",
            type=int,
            metavar="N",
            help="Relay mode: WebSocket events in flight per websocket.* channel in this process "
            f"(env WORKER_WEBSOCKET_CONCURRENCY, default {DEFAULT_WEBSOCKET_CONCURRENCY}).",
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
            help="File touched while the worker runs (env WORKER_HEARTBEAT_FILE, default "
            f"{DEFAULT_HEARTBEAT_FILE}; --heartbeat-file='' turns it off).",
        )

    def handle(self, *args, **options) -> None:
        opts = read_options(options)
        only, exclude, metrics_port = opts.only, opts.exclude, opts.metrics_port
        if metrics_port:
            try:
                from channels_kit.observe.metrics import MetricsServer
            except ImportError as exc:
                raise CommandError(
                    f"--metrics-port needs prometheus-client ({exc}): {install_hint('metrics')}"
                ) from None

        application = get_default_application()
        named, routed = list(options["channels"]), routed_channels(application)
        relayed = relay_channels(application) if opts.relay else []
        try:
            channels = select_channels([*named, *routed, *relayed], only=only, exclude=exclude)
        except NoChannelsError as exc:
            raise CommandError(str(exc)) from None
        channel_layer = get_channel_layer(options["layer"])
        if channel_layer is None:
            raise CommandError("You do not have any CHANNEL_LAYERS configured.")
        if isinstance(channel_layer, InMemoryChannelLayer):
            raise CommandError(IN_MEMORY_WORKER)

        send_consumer_errors_to_stderr()
        logger.info(
            "runworker: serving %s (named %s, routed %s, relayed %s, only %s, exclude %s)",
            ", ".join(channels),
            named,
            routed,
            relayed,
            only,
            exclude,
        )
        channel_concurrency = {channel: opts.http_concurrency for channel in HTTP_CHANNELS} | {
            channel: opts.websocket_concurrency for channel in WEBSOCKET_CHANNELS
        }
        heartbeat = options["heartbeat_file"]
        worker = KitWorker(
            application=application,
            channels=channels,
            channel_layer=channel_layer,
            concurrency=opts.concurrency,
            channel_concurrency=channel_concurrency,
            relay_handler=RelayHandler(application, channel_layer) if set(relayed) & set(channels) else None,
            relay_channels=relayed,
            grace_period=opts.grace_period,
            heartbeat_path=Path(heartbeat) if heartbeat else None,
            heartbeat_interval=opts.heartbeat_interval,
            layer_wait=opts.layer_wait,
            held=HeldMessages(opts.held_max, opts.release_after) if opts.held_max else None,
            mode_guard=mode_guard(channel_layer, opts.relay),
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
        except (LayerUnreachable, ModeMismatch) as exc:
            raise CommandError(str(exc)) from None
        finally:
            if metrics:
                metrics.close()
