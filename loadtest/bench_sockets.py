"""Idle WebSockets one server process holds: ``loadtest/bin/bench-sockets`` runs this on the host.

Client processes (``node/sockets-client.js``, pinned apart from the server) open sockets
in steps; after each step the server process's resident memory is read from /proc (its
host pid) and a sample of sockets is pinged. Prints one JSON line per step, then one
with the limits that could bind. Stops at the first step with a failed handshake, a
closed socket or an unanswered ping.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_files_limit(pid: int) -> str:
    try:
        lines = Path(f"/proc/{pid}/limits").read_text().splitlines()
    except OSError:
        return "? (the server is gone)"
    return next((line.split()[3] for line in lines if line.startswith("Max open files")), "?")


def sysctl(name: str) -> str:
    try:
        return Path("/proc/sys/" + name.replace(".", "/")).read_text().split("\n")[0].replace("\t", " ")
    except OSError:
        return "?"


class Client:
    """One sockets-client.js process, driven line by line."""

    def __init__(self, url: str, cpus: str, host: str | None) -> None:
        env = dict(os.environ, WS_HOST=host or "")
        command = ["taskset", "-c", cpus, "node", str(HERE / "node" / "sockets-client.js"), url]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def ask(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def answer(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("a sockets client died")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.ask("quit")
            self.process.wait(30)
        except Exception:  # noqa: BLE001 - it is going away anyway
            self.process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True, help="host pid of the server process to measure")
    parser.add_argument("--steps", required=True, help="socket counts, e.g. '1000 5000 10000'")
    parser.add_argument("--clients", type=int, default=2, help="client processes (each has its own fd limit)")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--host", default=None, help="Host header to send")
    parser.add_argument("--pings", type=int, default=100)
    args = parser.parse_args()
    steps = [int(n) for n in args.steps.split()]
    clients = [Client(args.url, args.client_cpus, args.host) for _ in range(args.clients)]
    baseline = rss_kb(args.pid)
    ok = True
    try:
        for total in steps:
            share = [
                total // len(clients) + (1 if i < total % len(clients) else 0) for i in range(len(clients))
            ]
            started = time.monotonic()
            for client, n in zip(clients, share, strict=True):
                client.ask(f"open {n}")
            opened = [client.answer() for client in clients]
            seconds = time.monotonic() - started
            time.sleep(2)
            held = sum(o["held"] for o in opened)
            rss = rss_kb(args.pid)
            for client in clients:
                client.ask(f"ping {args.pings // len(clients)}")
            pinged = [client.answer() for client in clients]
            line = {
                "target": args.target,
                "sockets": held,
                "rss_mb": round(rss / 1024, 1),
                "kb_per_socket": round((rss - baseline) / held, 1) if held else None,
                "connects_per_s": round(held / seconds) if seconds else None,
                "failed": sum(o["failed"] for o in opened),
                "error": next((o["error"] for o in opened if o["error"]), None),
                "closed": max(p["closed"] for p in pinged),
                "pinged": sum(p["pinged"] for p in pinged),
                "answered": sum(p["answered"] for p in pinged),
                "baseline_mb": round(baseline / 1024, 1),
            }
            line["passed"] = (
                line["failed"] == 0
                and line["closed"] == 0
                and line["answered"] == line["pinged"]
                and held == total
            )
            print(json.dumps(line), flush=True)
            if not line["passed"]:
                ok = False
                break
    finally:
        for client in clients:
            client.close()
    limits = {
        "target": args.target,
        "limits": {
            "server_open_files": open_files_limit(args.pid),
            "client_open_files_per_process": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
            "client_processes": len(clients),
            "net.core.somaxconn": sysctl("net.core.somaxconn"),
            "net.ipv4.ip_local_port_range": sysctl("net.ipv4.ip_local_port_range"),
            "fs.file-max": sysctl("fs.file-max"),
        },
    }
    print(json.dumps(limits), flush=True)
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(main())
