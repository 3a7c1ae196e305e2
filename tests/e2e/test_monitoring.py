"""The `monitoring` profile (MONITORING=on): Prometheus finds and scrapes every worker and every
Daphne replica, loads the kit's alerts, and every query of the Grafana dashboard runs; the
figures an operator reads during a fault are there (connections open, relay counters,
shards reached, workers serving each channel)."""

import json
import os
import urllib.parse
import urllib.request

import pytest

from conftest import REPO, compose, http, parts, service_hosts, wait_for

PROMETHEUS = f"http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '9090')}"
DASHBOARD = REPO / "images/prometheus/dashboards/channels-kit.json"
ALERTS = {
    "ChannelsQueueTooOld",
    "ChannelsNoWorker",
    "ChannelsRelayNoWorker",
    "ChannelsRedisShardDown",
    "DaphneDown",
}

pytestmark = [
    *parts("direct", "relay"),
    pytest.mark.skipif(
        "prometheus" not in compose("ps", "--services", "--status", "running").stdout.split(),
        reason="the stack runs without MONITORING=on",
    ),
]


def api(path: str, **params: str) -> dict:
    url = f"{PROMETHEUS}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def test_every_worker_and_daphne_is_scraped_and_up():
    expected = {
        "workers": len(service_hosts("worker")) + len(service_hosts("worker-slow")),
        "daphne": len(service_hosts("daphne")),
    }

    def healthy():
        targets = api("targets")["activeTargets"]
        up = {
            job: sum(t["labels"]["job"] == job and t["health"] == "up" for t in targets) for job in expected
        }
        return up == expected and up

    wait_for(healthy, 60, f"{expected} targets up")


def test_the_kits_alerts_are_loaded_and_quiet():
    rules = [rule for group in api("rules")["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules if rule["type"] == "alerting"} == ALERTS

    def quiet():  # an alert of an earlier test's fault (a shard stopped) resolves by itself
        firing = [a["labels"]["alertname"] for a in api("alerts")["alerts"] if a["state"] == "firing"]
        return not firing

    wait_for(quiet, 90, "no alert firing")


def test_every_dashboard_query_runs_and_the_core_figures_are_there():
    http("GET", "/readyz")  # some traffic through the relay, for its counters
    exprs = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    assert len(exprs) >= 12
    for expr in exprs:
        api("query", query=expr)  # a syntax or type error fails here
    for metric in ("channels_queue_depth", "channels_workers_serving", "daphne_connections_open"):
        wait_for(lambda m=metric: api("query", query=m)["result"], 30, f"{metric} scraped")
    if os.environ.get("KIT_ASGI_MODE") == "relay":

        def workers_seen():  # the states republish within a heartbeat after an earlier fault
            serving = api("query", query="relay_workers_serving")["result"]
            channels = {r["metric"]["channel"] for r in serving}
            everyone = all(r["value"][1] == "1" for r in serving)
            return channels == {"http.request", "websocket.connect"} and everyone

        wait_for(workers_seen, 60, "the relays seeing live workers for their channels")

    def shards_up():
        shards = api("query", query="channels_redis_shard_up")["result"]
        return shards and all(r["value"][1] == "1" for r in shards)

    wait_for(shards_up, 60, "every process reaching every shard")
