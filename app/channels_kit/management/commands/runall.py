"""``manage.py runall``: one-process mode, Daphne and the workers in one process.

For platforms that allow a single process type: Daphne serves HTTP, long-poll and
WebSockets and, on the same event loop, a ``KitWorker`` serves every channel the project
routes (sync consumers on threads of their own). Not for production at scale: with
Channels' in-memory layer (no Redis named) groups and background channels reach no other
process, so it says so, and it refuses to start when the platform runs more than one web
process (``WEB_REPLICAS``, or a ``DYNO`` such as ``web.2``). With a Redis layer it is one
more process of the deployment and scales like the others.

    manage.py runall                    # on SERVER_BIND:PORT (0.0.0.0:8000)
    manage.py runall --port 5000

It exits non-zero when it cannot listen (the port is taken), and when its worker fails
(its layer did not answer at start, or a listener failed).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.routing import get_default_application
from django.core.exceptions import ImproperlyConfigured
from django.core.management import BaseCommand, CommandError

from channels_kit.conf import env_float, env_int, env_str, install_hint
from channels_kit.observe.consumer_errors import send_consumer_errors_to_stderr
from channels_kit.variables import Allowed, allowed_for
from channels_kit.worker.selection import routed_channels
from channels_kit.worker.server import DEFAULT_LAYER_WAIT_SECONDS, KitWorker, LayerUnreachable

logger = logging.getLogger(__name__)

IN_MEMORY_WARNING = (
    "one-process mode with Channels' in-memory layer: groups and background channels reach no "
    "other process. Run exactly one web process, or name a Redis server (REDIS_URLS or REDIS_URL)"
)


def other_web_processes() -> str | None:
    """What says that more than one web process runs (and would not share an in-memory layer)."""
    replicas = env_int("WEB_REPLICAS", 1)
    if replicas > 1:
        return f"WEB_REPLICAS={replicas}"
    dyno = env_str("DYNO")
    numbered = re.fullmatch(r"[\w-]+\.(\d+)", dyno)
    if numbered and int(numbered.group(1)) > 1:
        return f"DYNO={dyno} (the platform runs several of this process)"
    return None


class Command(BaseCommand):
    """Serve HTTP, WebSockets and the project's background channels from one process."""

    help = (
        "One-process mode: Daphne and the workers in one process, for platforms that allow a "
        "single process type. SIGTERM/SIGINT: stop serving, let running consumers finish, exit."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--bind", help="Address to listen on (env SERVER_BIND, default 0.0.0.0).")
        parser.add_argument("--port", type=int, help="Port to listen on (env PORT, default 8000).")
        parser.add_argument(
            "--layer", default=DEFAULT_CHANNEL_LAYER, help="Channel layer alias, if not the default."
        )

    @staticmethod
    def _from_env(options: dict) -> tuple[str, int, float, float, dict[str, int]]:
        """Address, port, grace period, layer wait and Daphne's settings, from the options
        and the environment (a bad variable is a ``CommandError``)."""
        try:
            bind = options["bind"] or env_str("SERVER_BIND", "0.0.0.0")
            port = options["port"] if options["port"] is not None else env_int("PORT", 8000)
            ports = allowed_for("PORT") or Allowed()
            if not ports.admits(port):
                raise ImproperlyConfigured(f"--port must be {ports.describe(whole=True)}, not {port}")
            grace_period = env_float("WORKER_GRACE_PERIOD_SECONDS", 25.0)
            layer_wait = env_float("WORKER_LAYER_WAIT_SECONDS", DEFAULT_LAYER_WAIT_SECONDS)
            settings = {
                "http_timeout": env_int("DAPHNE_HTTP_TIMEOUT", 120),
                "websocket_connect_timeout": env_int("DAPHNE_WEBSOCKET_CONNECT_TIMEOUT", 20),
                "websocket_max_message_size": env_int("WS_MAX_MESSAGE_BYTES", 65536),
                "application_close_timeout": env_int("DAPHNE_APPLICATION_CLOSE_TIMEOUT", 10),
                "ping_interval": env_int("DAPHNE_PING_INTERVAL", 20),
                "ping_timeout": env_int("DAPHNE_PING_TIMEOUT", 30),
            }
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        return bind, port, grace_period, layer_wait, settings

    @staticmethod
    def _layer(alias: str) -> Any:
        """The channel layer; Channels' in-memory one only when no other web process runs."""
        layer = get_channel_layer(alias)
        if layer is None:
            raise CommandError("You do not have any CHANNEL_LAYERS configured.")
        if isinstance(layer, InMemoryChannelLayer):
            others = other_web_processes()
            if others:
                raise CommandError(
                    f"one-process mode with Channels' in-memory layer, but {others}: each process would "
                    "have a layer of its own, and groups would silently miss the others' sockets. Name a "
                    "Redis server (REDIS_URLS or REDIS_URL), or run a single web process."
                )
            logger.warning(IN_MEMORY_WARNING)
        return layer

    def handle(self, *args, **options) -> None:
        bind, port, grace_period, layer_wait, settings = self._from_env(options)
        layer = self._layer(options["layer"])
        try:
            # The kit's server module installs Twisted's asyncio reactor (on EVENT_LOOP's
            # loop, which the worker then shares): import it before anything of Twisted.
            from channels_kit.interface_server import KitDaphneServer  # isort: skip
            from daphne.endpoints import build_endpoint_description_strings
            from twisted.internet import defer, reactor
        except ImportError as exc:
            raise CommandError(f"runall needs Daphne ({exc}): {install_hint('daphne')}") from None

        application = get_default_application()
        channels = routed_channels(application)
        worker = (
            KitWorker(
                application=application,
                channels=channels,
                channel_layer=layer,
                grace_period=grace_period,
                layer_wait=max(0.0, layer_wait),
            )
            if channels
            else None
        )
        send_consumer_errors_to_stderr()
        failed: list[BaseException] = []

        def start_worker() -> None:
            if worker is None:
                logger.info("runall: the project routes no channel; serving HTTP and WebSockets only")
                return
            task = asyncio.ensure_future(worker.arun())

            def ended(done: asyncio.Future) -> None:
                if not done.cancelled() and done.exception() is not None:
                    failed.append(done.exception())
                    logger.error("runall: the worker failed (%r); stopping", done.exception())
                    if reactor.running:
                        reactor.stop()

            task.add_done_callback(ended)

            def drain() -> defer.Deferred:
                worker.request_stop("shutting down")
                return defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.wait({task})))

            reactor.addSystemEventTrigger("before", "shutdown", drain)
            logger.info("runall: workers serve %s in this process", ", ".join(channels))

        class RunallServer(KitDaphneServer):
            """Daphne's server, keeping why it could not listen (Daphne only logs it)."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.listen_failures: list[str] = []

            def listen_error(self, failure: Any) -> None:  # a Twisted Failure
                self.listen_failures.append(failure.getErrorMessage())
                super().listen_error(failure)

        server = RunallServer(
            application=application,
            endpoints=build_endpoint_description_strings(host=bind, port=port),
            proxy_forwarded_address_header="X-Forwarded-For",
            proxy_forwarded_port_header="X-Forwarded-Port",
            proxy_forwarded_proto_header="X-Forwarded-Proto",
            ready_callable=start_worker,
            **settings,
        )
        logger.info("runall: Daphne on %s:%d", bind, port)
        server.run()
        if server.listen_failures or not server.listening_addresses:
            why = "; ".join(server.listen_failures) or "Daphne did not start listening"
            raise CommandError(f"runall cannot listen on {bind}:{port}: {why}")
        if failed and isinstance(failed[0], LayerUnreachable):
            raise CommandError(str(failed[0]))
        if failed:
            raise CommandError(f"the worker failed: {failed[0]!r}")
