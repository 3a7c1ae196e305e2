"""A POST whose worker is killed mid-request, in relay mode: it runs at most once, and the
client hears so at once.

``POST /tasks/?ms=10000`` stores its task, then holds the answer 10 s; as soon as the task
is stored, every web worker's process is killed with ``kill -9`` (Docker restarts them). POST is not in
``RELAY_RESEND_METHODS`` (only RFC 9110's idempotent methods are), so the interface does
not send the request again to the restarted workers (which would store a second task):
four missed beats after the kill it answers 502, saying the request may have run in part.
The tasks stored with the request's token are counted in PostgreSQL: exactly one.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid

from test_worker_kill import kill_9, relay_stats, restarts

from conftest import compose, http, parts, wait_container_healthy, wait_for

pytestmark = parts("relay")

HOLD_MS = 10000


def tasks_with_token(token: str) -> int:
    query = f"SELECT count(*) FROM chat_task WHERE payload->>'token' = '{token}'"
    script = f'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -Atc "{query}"'
    return int(compose("exec", "-T", "db", "sh", "-c", script).stdout.strip())


def test_a_post_whose_worker_is_killed_runs_at_most_once_and_gets_a_clear_502(capsys):
    workers = compose("ps", "--quiet", "worker").stdout.split()
    assert workers, "no web worker runs"
    counts_before = {container: restarts(container) for container in workers}
    before = relay_stats()
    token = uuid.uuid4().hex
    body = json.dumps({"channel": "tasks", "token": token}).encode()
    headers = {"Content-Type": "application/json"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        answer = pool.submit(http, "POST", f"/tasks/?ms={HOLD_MS}", body, headers)
        wait_for(lambda: tasks_with_token(token) == 1, 60, "the POST's task stored")
        killed_at = time.monotonic()
        for container in workers:
            kill_9(container)
        response = answer.result(60)
        answered_after = time.monotonic() - killed_at
    for container in workers:
        deadline = time.monotonic() + 30
        while restarts(container) <= counts_before[container] and time.monotonic() < deadline:
            time.sleep(0.5)
        wait_container_healthy(container, 90)
    time.sleep(2)  # a copy sent again would have run by now on the restarted workers
    ran = tasks_with_token(token)
    after = relay_stats()
    resent, lost = (
        sum(after[s].get(kind, 0) - before.get(s, {}).get(kind, 0) for s in after)
        for kind in ("http_resent", "http_worker_lost")
    )
    with capsys.disabled():
        print(
            f"\n  POST killed mid-run: status {response.status} {answered_after:.1f} s after the kill"
            f" ({time.monotonic() - started:.1f} s in all), ran {ran} time(s),"
            f" resent {resent}, worker lost {lost}: {response.body[:160]!r}"
        )
    assert ran == 1, f"the POST ran {ran} times"
    assert response.status == 502, (response.status, response.body, "answered before the kill?")
    assert b"may have run in part" in response.body
    assert answered_after < 10, f"answered {answered_after:.1f} s after the kill"
    assert resent == 0 and lost == 1
