"""``manage.py channels_status``: queue depth and oldest message age per channel and shard,
and the live workers, read from the channel layer (see ``channels_kit.observe.status``).

    manage.py channels_status              # a table
    manage.py channels_status --json       # the same figures as JSON
    manage.py channels_status --watch 2    # refresh every 2 s until Ctrl-C
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import get_channel_layer
from django.core.management import BaseCommand, CommandError

from channels_kit.layers.base import ChannelLayer, LayerInspector
from channels_kit.observe.status import LayerStatus, StatusUnavailable, gather_status, require_inspector


def format_age(seconds: float) -> str:
    """``4.2s``, ``3m05s``, ``1h02m``: short enough for a table column."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def table(header: Sequence[str], rows: list[Sequence[Any]], right: set[int]) -> list[str]:
    """Rows as aligned text columns; columns in ``right`` are right-aligned (numbers)."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]


def logs_to_stderr() -> None:
    """Point every logging handler that writes to standard output at standard error."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
                handler.setStream(sys.stderr)


def render(status: LayerStatus) -> str:
    """The readable report: queues per channel and shard with totals, then the workers."""
    taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.taken_at))
    prefix = f", prefix {status.prefix!r}" if status.prefix else ""
    shards = "1 shard" if status.shards == 1 else f"{status.shards} shards"
    lines = [f"channel layer {status.backend}{prefix}, {shards}, at {taken}"]
    if status.note:
        lines.append(f"note: {status.note}")
    lines.append("")

    rows: list[Sequence[Any]] = []
    for channel in status.channels:
        total = status.total(channel)
        if total.depth:
            # Every shard, empty ones too: an uneven spread is worth seeing.
            for shard in range(status.shards):
                figures = status.figures(channel, shard)
                age = format_age(figures.oldest_age) if figures.depth else "-"
                rows.append((channel, shard, figures.depth, age))
        rows.append((channel, "total", total.depth, format_age(total.oldest_age) if total.depth else "-"))
    if rows:
        lines += table(("CHANNEL", "SHARD", "DEPTH", "OLDEST"), rows, right={1, 2, 3})
    else:
        lines.append("no queued messages and no channel served")
    lines.append("")

    if status.workers:
        now = status.taken_at
        # Worker figures are as of each worker's last heartbeat: SEEN says how old they are.
        lines += table(
            ("HOST", "PID", "CHANNELS", "BUSY", "HANDLED", "FAILED", "UP", "SEEN"),
            [
                (
                    w.host,
                    w.pid,
                    ",".join(w.channels),
                    w.busy,
                    w.handled,
                    w.failed,
                    format_age(max(0.0, now - w.started)),
                    format_age(max(0.0, now - w.updated)) + " ago",
                )
                for w in status.workers
            ],
            right={1, 3, 4, 5, 6, 7},
        )
    elif not status.note:
        lines.append("no live workers")
    if not status.note:
        lines.append(f"{status.workers_busy} of {status.workers_live} workers busy")
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Show the channel layer's load: queue depth and oldest message age per channel and shard, "
        "and the live workers (channels, busy, handled, failed)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--layer", default=DEFAULT_CHANNEL_LAYER, help="Channel layer alias, if not the default."
        )
        parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
        parser.add_argument(
            "--watch",
            type=float,
            metavar="SECONDS",
            help="Print again every SECONDS until interrupted.",
        )

    def handle(self, *args, **options) -> None:
        layer = get_channel_layer(options["layer"])
        if layer is None:
            raise CommandError("You do not have any CHANNEL_LAYERS configured.")
        watch = options["watch"]
        if watch is not None and watch <= 0:
            raise CommandError(f"--watch must be a positive number of seconds, not {watch:g}")
        if options["json"]:
            logs_to_stderr()  # stdout carries the JSON only, whatever a library logs meanwhile
        try:
            inspector = require_inspector(layer)
            asyncio.run(self._report(layer, inspector, as_json=options["json"], every=watch))
        except KeyboardInterrupt:
            pass  # the way out of --watch
        except StatusUnavailable as exc:
            raise CommandError(str(exc)) from None

    async def _report(
        self, layer: ChannelLayer, inspector: LayerInspector, *, as_json: bool, every: float | None
    ) -> None:
        # One event loop for every round: the layer's Redis clients are bound to it.
        clear = every is not None and not as_json and sys.stdout.isatty()
        try:
            while True:
                status = await gather_status(layer)
                text = (
                    json.dumps(status.to_dict(), indent=None if every else 2) if as_json else render(status)
                )
                if clear:
                    self.stdout.write("\033[H\033[J", ending="")
                self.stdout.write(text)
                if every is None:
                    return
                if not as_json and not clear:
                    self.stdout.write("")
                self.stdout.flush()
                await asyncio.sleep(every)
        finally:
            await inspector.close()
